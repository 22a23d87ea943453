"""The trainer's side of endpoint safety, against real HTTP servers on loopback: it never falls back to
another identity when the Secret a job names is missing from its environment, never talks to an endpoint
whose name resolves to the metadata service, and quotes a storage endpoint's answer only as a short,
single-line excerpt with URL credentials masked."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ftjob.api.storage import CredentialsSecretRef, StorageSpec
from ftjob_trainer.errors import ConfigInvalid, InputUnavailable
from ftjob_trainer.storage import open_storage
from ftjob_trainer.storage._base import StorageOptions
from ftjob_trainer.storage._s3 import EXCERPT_CHARS
from tests.support.s3_server import DUMMY_CREDENTIALS

FAST = StorageOptions(max_attempts=1, connect_timeout=2.0, read_timeout=2.0)
URI = "s3://bucket/data/train.jsonl"
# What a hostile or confused endpoint might send back: far more than a reason, over several lines, with a
# URL carrying credentials.
LONG_ANSWER = (
    "Refused.\nSee http://admin:hunter2@internal.example/debug for details.\r\n" + "ACCOUNT-DUMP " * 400
)


class Answering(ThreadingHTTPServer):
    """Answers every request with one S3 error document and counts the requests."""

    def __init__(self, message: str) -> None:
        self.message, self.requests = message, 0
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Answering

    def _answer(self) -> None:
        self.server.requests += 1
        body = f"<Error><Code>InvalidRequest</Code><Message>{self.server.message}</Message></Error>".encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[Answering]:
    answering = Answering(LONG_ANSWER)
    thread = threading.Thread(target=answering.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield answering
    answering.shutdown()
    thread.join()
    answering.server_close()


def test_an_endpoints_answer_is_quoted_only_as_a_short_sanitised_excerpt(server: Answering) -> None:
    storage = open_storage(StorageSpec(endpoint_url=server.url, path_style=True), DUMMY_CREDENTIALS, FAST)
    with pytest.raises(InputUnavailable) as raised:
        storage.read_bytes(URI)
    message = str(raised.value)
    assert message.startswith(
        f"{URI}: request refused: InvalidRequest (HTTP 400): Refused. See http://[REDACTED]@"
    )
    assert "hunter2" not in message and "\n" not in message and "\r" not in message
    quoted = message.split("(HTTP 400): ", 1)[1]
    assert len(quoted) == EXCERPT_CHARS and quoted.endswith("\u2026")


@pytest.mark.parametrize("session_token_key", [None, "AWS_SESSION_TOKEN"])
def test_a_named_secret_missing_from_the_environment_is_never_replaced_by_another_identity(
    server: Answering, session_token_key: str | None
) -> None:
    ref = CredentialsSecretRef(name="team-keys", session_token_key=session_token_key)
    spec = StorageSpec(endpoint_url=server.url, path_style=True, credentials_secret_ref=ref)
    # The node's identity, as boto3's default chain would find it: environment keys are the cheapest to show.
    env: dict[str, str] = {} if session_token_key is None else dict(DUMMY_CREDENTIALS)
    with pytest.raises(ConfigInvalid) as raised:
        open_storage(spec, env, FAST).read_bytes(URI)
    assert str(raised.value).startswith("spec.storage.credentialsSecretRef names Secret 'team-keys', but ")
    assert "refusing to fall back to the pod's or the node's identity" in str(raised.value)
    assert server.requests == 0


def test_an_endpoint_name_that_resolves_to_the_metadata_service_is_refused(
    server: Answering, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name the API cannot judge (any DNS record can point at 169.254.169.254): the trainer resolves it."""
    real = socket.getaddrinfo

    def resolve(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "objects.attacker.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    spec = StorageSpec(endpoint_url="http://objects.attacker.example", path_style=True)
    with pytest.raises(ConfigInvalid, match=r"resolves to 169\.254\.169\.254, a link-local"):
        open_storage(spec, DUMMY_CREDENTIALS, FAST).read_bytes(URI)
    # Loopback is where `ftjob local` finds its store: allowed.
    open_storage(StorageSpec(endpoint_url=server.url, path_style=True), DUMMY_CREDENTIALS, FAST)
