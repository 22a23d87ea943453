"""The trainer's storage layer against a real moto S3 server (real boto3 over HTTP) and the local disk."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest

from ftjob.api.storage import StorageSpec
from ftjob_trainer.errors import ConfigInvalid, InputUnavailable, StorageUnreachable
from ftjob_trainer.storage import Storage, StorageOptions, open_storage
from tests.support.s3_server import (
    DUMMY_CREDENTIALS,
    REGION,
    S3Endpoint,
    new_bucket_name,
    set_iam_auth,
    start_s3_server,
    start_s3_server_process,
)

# The s3_server and s3_bucket fixtures; redundant (and harmless) once tests/conftest.py registers the plugin.

MiB = 1024 * 1024
# Small enough that a dead endpoint fails within about a second, large enough for a loaded CI machine.
FAST = StorageOptions(max_attempts=2, connect_timeout=2.0, read_timeout=2.0)
Store = tuple[Storage, str]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(params=["s3", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A storage and a root URI under which a test may write, for each scheme: one contract, two backends."""
    if request.param == "file":
        return open_storage(env={}, options=FAST), f"file://{tmp_path}/store"
    server: S3Endpoint = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    return open_storage(server.spec(), server.env(), FAST), f"s3://{bucket}/run"


@pytest.fixture
def s3_storage(s3_server: S3Endpoint) -> Storage:
    return open_storage(s3_server.spec(), s3_server.env(), FAST)


# --- round trips --------------------------------------------------------------------------------------


def test_file_round_trip_returns_sha256(store: Store, tmp_path: Path) -> None:
    storage, root = store
    payload = bytes(range(256)) * 400
    src = tmp_path / "in.bin"
    src.write_bytes(payload)
    dest = tmp_path / "out" / "in.bin"

    storage.upload_file(src, f"{root}/data/in.bin")
    digest = storage.download_file(f"{root}/data/in.bin", dest)

    assert digest == sha256(payload)
    assert dest.read_bytes() == payload
    assert files_under(dest.parent) == [dest]  # no temporary file left beside it


def test_bytes_round_trip_and_exists(store: Store) -> None:
    storage, root = store
    uri = f"{root}/meta/state.json"
    assert not storage.exists(uri)

    storage.write_bytes(uri, json.dumps({"step": 3}).encode())
    assert storage.exists(uri)
    assert json.loads(storage.read_bytes(uri)) == {"step": 3}

    storage.write_bytes(uri, b"{}")
    assert storage.read_bytes(uri) == b"{}"


def test_directory_round_trip(store: Store, tmp_path: Path) -> None:
    storage, root = store
    files = {"config.json": b"{}", "weights/a.safetensors": b"A" * 5000, "weights/deep/c.bin": b"C"}
    src = tmp_path / "model"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    # A sibling whose name starts with the same characters must not count as part of the folder.
    storage.write_bytes(f"{root}/models/m10/other.json", b"[]")

    written = storage.upload_dir(src, f"{root}/models/m1")
    digests = storage.download_prefix(f"{root}/models/m1/", tmp_path / "dl")

    assert written == [f"{root}/models/m1/{name}" for name in sorted(files)]
    assert storage.list_keys(f"{root}/models/m1") == sorted(files)
    assert digests == {name: sha256(data) for name, data in files.items()}
    assert {
        p.relative_to(tmp_path / "dl").as_posix(): p.read_bytes() for p in files_under(tmp_path / "dl")
    } == files


def test_delete_prefix_removes_only_that_folder(store: Store) -> None:
    storage, root = store
    for name in ["ckpt-1/a", "ckpt-1/b/c", "ckpt-10/a", "ckpt-2/a"]:
        storage.write_bytes(f"{root}/ckpts/{name}", b"x")

    assert storage.delete_prefix(f"{root}/ckpts/ckpt-1") == 2
    assert storage.list_keys(f"{root}/ckpts") == ["ckpt-10/a", "ckpt-2/a"]
    assert storage.delete_prefix(f"{root}/ckpts/ckpt-1") == 0
    assert storage.list_keys(f"{root}/nothing-here") == []


def test_large_object_streams_in_bounded_chunks(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    options = StorageOptions(max_attempts=2, chunk_size=1 * MiB, multipart_threshold=8 * MiB)
    storage = open_storage(s3_server.spec(), s3_server.env(), options)
    size = 30 * MiB
    src = tmp_path / "big.bin"
    with src.open("wb") as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))
    uri = f"s3://{s3_bucket}/big/model.bin"
    sent: list[int] = []
    received: list[int] = []

    storage.upload_file(src, uri, on_progress=sent.append)
    digest = storage.download_file(uri, tmp_path / "copy.bin", on_progress=received.append)

    assert sum(sent) == size
    # A multipart ETag ends in "-<parts>": the upload never needed the whole file in one request.
    assert s3_server.client().head_object(Bucket=s3_bucket, Key="big/model.bin")["ETag"].endswith('-4"')
    assert sum(received) == size
    assert max(received) <= options.chunk_size
    assert len(received) >= size // options.chunk_size
    assert digest == hashlib.file_digest(src.open("rb"), "sha256").hexdigest()
    assert (tmp_path / "copy.bin").stat().st_size == size


def test_virtual_host_addressing(
    s3_server: S3Endpoint, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing resolves `<bucket>.s3.moto.test`; an HTTP proxy stands in for DNS. The moto server is that
    # proxy: it accepts absolute-form request lines and, for a dotted host name, reads the bucket from the host.
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, s3_server.url)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    port = urlsplit(s3_server.url).port
    spec = StorageSpec(endpoint_url=f"http://s3.moto.test:{port}", region=REGION, path_style=False)
    uri = f"s3://{s3_bucket}/virtual/key.json"

    open_storage(spec, s3_server.env(), FAST).write_bytes(uri, b"virtual")

    assert (
        s3_server.client().get_object(Bucket=s3_bucket, Key="virtual/key.json")["Body"].read() == b"virtual"
    )
    # The same endpoint in path style sends host `s3.moto.test`, path `/<bucket>/...`: moto looks for bucket
    # "s3", which shows the toggle really changed how the request was addressed.
    path_style = open_storage(spec.model_copy(update={"path_style": True}), s3_server.env(), FAST)
    with pytest.raises(InputUnavailable, match="does not exist"):
        path_style.read_bytes(uri)


def test_folder_markers_are_skipped(
    s3_server: S3Endpoint, s3_bucket: str, s3_storage: Storage, tmp_path: Path
) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="m/sub/", Body=b"")
    client.put_object(Bucket=s3_bucket, Key="m/sub/x", Body=b"x")

    assert s3_storage.download_prefix(f"s3://{s3_bucket}/m", tmp_path) == {"sub/x": sha256(b"x")}


# --- keys that would escape the destination ------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("m/../../evil", "'..' segment"),
        ("m/sub/../../../evil", "'..' segment"),
        ("m//abs", "absolute"),
        ("m/a//b", "empty or '.' segment"),
        ("m/./b", "empty or '.' segment"),
    ],
)
def test_download_prefix_refuses_unsafe_keys(
    s3_server: S3Endpoint, s3_bucket: str, s3_storage: Storage, tmp_path: Path, key: str, problem: str
) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="m/ok", Body=b"ok")
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"evil")
    dest = tmp_path / "a" / "b" / "dest"

    with pytest.raises(InputUnavailable) as exc:
        s3_storage.download_prefix(f"s3://{s3_bucket}/m", dest)

    message = str(exc.value)
    assert message.startswith(f"s3://{s3_bucket}/{key}: refusing to download key ")
    assert problem in message
    assert files_under(tmp_path) == []  # checked before the first byte: not even the safe key landed


def test_download_prefix_refuses_symlink_escape(
    s3_server: S3Endpoint, s3_bucket: str, s3_storage: Storage, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside)
    s3_server.client().put_object(Bucket=s3_bucket, Key="m/link/payload", Body=b"evil")

    with pytest.raises(InputUnavailable, match="resolves outside the destination") as exc:
        s3_storage.download_prefix(f"s3://{s3_bucket}/m", dest)

    assert f"s3://{s3_bucket}/m/link/payload" in str(exc.value)
    assert list(outside.iterdir()) == []


# --- missing buckets and keys --------------------------------------------------------------------------

Operation = Callable[[Storage, str, Path], object]
OPERATIONS: dict[str, Operation] = {
    "download_file": lambda s, uri, tmp: s.download_file(uri, tmp / "x"),
    "download_prefix": lambda s, uri, tmp: s.download_prefix(uri, tmp / "x"),
    "upload_file": lambda s, uri, tmp: s.upload_file(Path(__file__), uri),
    "upload_dir": lambda s, uri, tmp: s.upload_dir(Path(__file__).parent, uri),
    "read_bytes": lambda s, uri, tmp: s.read_bytes(uri),
    "write_bytes": lambda s, uri, tmp: s.write_bytes(uri, b"x"),
    "exists": lambda s, uri, tmp: s.exists(uri),
    "list_keys": lambda s, uri, tmp: s.list_keys(uri),
    "delete_prefix": lambda s, uri, tmp: s.delete_prefix(uri),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_missing_bucket(s3_storage: Storage, tmp_path: Path, operation: str) -> None:
    bucket = new_bucket_name()
    uri = f"s3://{bucket}/data/train.jsonl"

    with pytest.raises(InputUnavailable) as exc:
        OPERATIONS[operation](s3_storage, uri, tmp_path)

    # upload_dir names the object it was writing; everything else the URI it was given.
    assert str(exc.value).startswith(f"s3://{bucket}/data/train.jsonl")
    assert str(exc.value).endswith(f": bucket '{bucket}' does not exist")


@pytest.mark.parametrize("operation", ["download_file", "read_bytes"])
def test_missing_key(s3_storage: Storage, s3_bucket: str, tmp_path: Path, operation: str) -> None:
    uri = f"s3://{s3_bucket}/data/train.jsonl"

    with pytest.raises(InputUnavailable) as exc:
        OPERATIONS[operation](s3_storage, uri, tmp_path)

    assert str(exc.value) == f"{uri}: no such key (bucket '{s3_bucket}' exists)"
    assert files_under(tmp_path) == []


def test_empty_prefix_is_not_a_model(store: Store, tmp_path: Path) -> None:
    storage, root = store
    with pytest.raises(InputUnavailable) as exc:
        storage.download_prefix(f"{root}/models/none", tmp_path / "dl")
    assert str(exc.value) == f"{root}/models/none: no objects under this prefix"


# --- access control (a moto server of its own: enforcing IAM is a per-process switch) -------------------


class IamWorld:
    def __init__(self, url: str, bucket: str, key_id: str, secret: str) -> None:
        self.endpoint = S3Endpoint(url)
        self.bucket = bucket
        self.key_id = key_id
        self.secret = secret

    def storage(self, key_id: str, secret: str) -> Storage:
        env = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
        return open_storage(self.endpoint.spec(), env, FAST)


@pytest.fixture(scope="module")
def iam_world() -> Iterator[IamWorld]:
    """A user who may read `allowed/*` and list the bucket, and nothing else."""
    url, stop = start_s3_server_process()
    try:
        endpoint = S3Endpoint(url)
        bucket = new_bucket_name()
        s3 = endpoint.client()
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="allowed/a.json", Body=b"ok")
        s3.put_object(Bucket=bucket, Key="denied/a.json", Body=b"secret")
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        iam.create_user(UserName="reader")
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/allowed/*"},
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"},
            ],
        }
        iam.put_user_policy(UserName="reader", PolicyName="read-allowed", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        set_iam_auth(url, enabled=True)
        yield IamWorld(url, bucket, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        stop()


def test_permitted_read_works_with_enforced_iam(iam_world: IamWorld) -> None:
    storage = iam_world.storage(iam_world.key_id, iam_world.secret)
    assert storage.read_bytes(f"s3://{iam_world.bucket}/allowed/a.json") == b"ok"


@pytest.mark.parametrize(
    ("operation", "key", "code"),
    [
        ("read_bytes", "denied/a.json", "AccessDenied"),
        ("download_file", "denied/a.json", "AccessDenied"),
        ("exists", "denied/a.json", "403"),
        ("write_bytes", "allowed/new.json", "AccessDenied"),
        ("upload_file", "allowed/new.json", "AccessDenied"),
    ],
)
def test_access_denied(iam_world: IamWorld, tmp_path: Path, operation: str, key: str, code: str) -> None:
    storage = iam_world.storage(iam_world.key_id, iam_world.secret)
    uri = f"s3://{iam_world.bucket}/{key}"

    with pytest.raises(InputUnavailable) as exc:
        OPERATIONS[operation](storage, uri, tmp_path)

    assert str(exc.value) == f"{uri}: access denied ({code})"


@pytest.mark.parametrize("wrong", ["key_id", "secret"])
def test_rejected_credentials(iam_world: IamWorld, wrong: str) -> None:
    key_id = "AKIAUNKNOWNKEY123456" if wrong == "key_id" else iam_world.key_id
    secret = "not-the-secret-0123456789" if wrong == "secret" else iam_world.secret
    uri = f"s3://{iam_world.bucket}/allowed/a.json"

    with pytest.raises(InputUnavailable) as exc:
        iam_world.storage(key_id, secret).read_bytes(uri)

    code = "InvalidAccessKeyId" if wrong == "key_id" else "SignatureDoesNotMatch"
    assert str(exc.value) == f"{uri}: credentials rejected ({code})"
    assert secret not in repr(exc.value)


# --- transient failures: retried a bounded number of times, then StorageUnreachable ----------------------


def test_refused_connection(tmp_path: Path) -> None:
    # Bound but not listening: connections are refused, and nothing else can take the port meanwhile.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        storage = open_storage(StorageSpec(endpoint_url=endpoint, path_style=True), DUMMY_CREDENTIALS, FAST)
        uri = "s3://bucket/data/train.jsonl"
        with pytest.raises(StorageUnreachable) as exc:
            storage.download_file(uri, tmp_path / "x")

    message = str(exc.value)
    assert message.startswith(
        f"{uri}: endpoint {endpoint} unreachable: Could not connect to the endpoint URL"
    )
    assert "max_attempts=2" in message


def test_silent_endpoint_times_out(tmp_path: Path) -> None:
    # Listening, so the kernel completes the handshake, but nobody ever answers.
    with socket.create_server(("127.0.0.1", 0)) as sock:
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        options = StorageOptions(max_attempts=2, connect_timeout=0.5, read_timeout=0.5)
        storage = open_storage(
            StorageSpec(endpoint_url=endpoint, path_style=True), DUMMY_CREDENTIALS, options
        )
        uri = "s3://bucket/data/train.jsonl"
        with pytest.raises(StorageUnreachable) as exc:
            storage.read_bytes(uri)

    assert str(exc.value).startswith(f"{uri}: endpoint {endpoint} unreachable: Read timeout on endpoint URL")


class CannedS3(ThreadingHTTPServer):
    """Answers every request with one S3 error document, and counts the requests."""

    def __init__(self, status: int, code: str) -> None:
        self.status, self.code, self.requests = status, code, 0
        super().__init__(("127.0.0.1", 0), _CannedHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _CannedHandler(BaseHTTPRequestHandler):
    server: CannedS3

    def _answer(self) -> None:
        self.server.requests += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = f"<Error><Code>{self.server.code}</Code><Message>canned</Message></Error>".encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def canned(request: pytest.FixtureRequest) -> Iterator[CannedS3]:
    status, code = request.param
    server = CannedS3(status, code)
    # A short poll interval: shutdown() waits for one, and the default half second adds up over tests.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.mark.parametrize(
    ("canned", "attempts"),
    [((503, "SlowDown"), 2), ((500, "InternalError"), 3), ((502, "BadGateway"), 3)],
    indirect=["canned"],
)
def test_server_errors_are_retried_then_unreachable(canned: CannedS3, attempts: int) -> None:
    options = StorageOptions(max_attempts=attempts, connect_timeout=2.0, read_timeout=2.0)
    storage = open_storage(StorageSpec(endpoint_url=canned.url, path_style=True), DUMMY_CREDENTIALS, options)
    uri = "s3://bucket/data/train.jsonl"

    with pytest.raises(StorageUnreachable) as exc:
        storage.read_bytes(uri)

    assert canned.requests == attempts
    assert str(exc.value) == (
        f"{uri}: endpoint {canned.url} answered {canned.code} (HTTP {canned.status}): canned "
        f"after {attempts} attempt(s)"
    )


@pytest.mark.parametrize(
    ("canned", "expected"),
    [((403, "AccessDenied"), "access denied (AccessDenied)"), ((400, "InvalidArgument"), "request refused")],
    indirect=["canned"],
)
def test_client_errors_are_not_retried(canned: CannedS3, expected: str) -> None:
    storage = open_storage(StorageSpec(endpoint_url=canned.url, path_style=True), DUMMY_CREDENTIALS, FAST)
    uri = "s3://bucket/data/train.jsonl"

    with pytest.raises(InputUnavailable) as exc:
        storage.read_bytes(uri)

    assert canned.requests == 1
    assert str(exc.value).startswith(f"{uri}: {expected}")


# --- TLS ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_url() -> Iterator[str]:
    url, stop = start_s3_server(tls=True)
    yield url
    stop()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_verification_toggle(tls_url: str, s3_bucket: str) -> None:
    # Same process as the session server, so the same moto state: the bucket exists behind TLS too.
    spec = StorageSpec(endpoint_url=tls_url, region=REGION, path_style=True, verify_tls=True)
    uri = f"s3://{s3_bucket}/tls.json"

    with pytest.raises(InputUnavailable) as exc:
        open_storage(spec, DUMMY_CREDENTIALS, FAST).read_bytes(uri)
    assert str(exc.value).startswith(f"{uri}: TLS failure talking to {tls_url} ")
    assert "CERTIFICATE_VERIFY_FAILED" in str(exc.value)

    unverified = open_storage(spec.model_copy(update={"verify_tls": False}), DUMMY_CREDENTIALS, FAST)
    unverified.write_bytes(uri, b"tls")
    assert unverified.read_bytes(uri) == b"tls"


# --- file:// failures ----------------------------------------------------------------------------------


@pytest.fixture
def local() -> Storage:
    return open_storage(env={}, options=FAST)


@pytest.mark.parametrize("operation", ["download_file", "read_bytes"])
def test_file_missing(local: Storage, tmp_path: Path, operation: str) -> None:
    uri = f"file://{tmp_path}/data/train.jsonl"
    with pytest.raises(InputUnavailable) as exc:
        OPERATIONS[operation](local, uri, tmp_path)
    assert str(exc.value) == f"{uri}: no such file or directory"
    assert not local.exists(uri)


def test_file_is_a_directory(local: Storage, tmp_path: Path) -> None:
    with pytest.raises(InputUnavailable) as exc:
        local.download_file(f"file://{tmp_path}", tmp_path / "x")
    assert str(exc.value) == f"file://{tmp_path}: is a directory, expected a file"


def test_file_parent_is_a_file(local: Storage, tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"")
    uri = f"file://{tmp_path}/plain/out.json"
    with pytest.raises(InputUnavailable) as exc:
        local.write_bytes(uri, b"{}")
    assert str(exc.value) == f"{uri}: a parent of this path is a file, not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_permission_denied(local: Storage, tmp_path: Path) -> None:
    secret = tmp_path / "locked.json"
    secret.write_bytes(b"{}")
    secret.chmod(0)
    with pytest.raises(InputUnavailable) as exc:
        local.read_bytes(f"file://{secret}")
    assert str(exc.value) == f"file://{secret}: permission denied"


# --- configuration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("gs://bucket/key", "unsupported storage URI"),
        ("s3://UPPER/key", "not a valid s3://bucket/key URI"),
        ("file://relative/path", "not a file:///absolute/path URI"),
    ],
)
def test_bad_uris_are_config_errors(local: Storage, uri: str, expected: str) -> None:
    with pytest.raises(ConfigInvalid) as exc:
        local.read_bytes(uri)
    assert str(exc.value).startswith(f"{uri}: {expected}")


def test_half_set_credentials_are_a_config_error(s3_server: S3Endpoint) -> None:
    storage = open_storage(s3_server.spec(), {"AWS_ACCESS_KEY_ID": "AKIAHALF"}, FAST)
    with pytest.raises(ConfigInvalid, match="AWS_SECRET_ACCESS_KEY is missing") as exc:
        storage.exists("s3://bucket/x")
    assert "AKIAHALF" not in str(exc.value)


def test_no_credentials_anywhere(
    s3_server: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Close every source of boto3's default chain: environment, shared files, instance metadata.
    for name in [*DUMMY_CREDENTIALS, "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    uri = "s3://bucket/data/train.jsonl"

    with pytest.raises(InputUnavailable) as exc:
        open_storage(s3_server.spec(), {}, FAST).read_bytes(uri)

    assert str(exc.value) == f"{uri}: no usable credentials: Unable to locate credentials"


def test_refuses_to_delete_a_whole_bucket(s3_storage: Storage, s3_bucket: str) -> None:
    with pytest.raises(ConfigInvalid, match="refusing to delete a whole bucket"):
        s3_storage.delete_prefix(f"s3://{s3_bucket}")


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="max_attempts must be >= 1"):
        StorageOptions(max_attempts=0)
