"""An S3 endpoint for tests and local demos: moto in server mode, reached by real boto3 calls over HTTP.

Pytest fixtures (register with `pytest_plugins = ["tests.support.s3_server"]`):
    s3_server  - session-scoped `S3Endpoint` (url, dummy credentials, a path-style StorageSpec)
    s3_env     - the environment a trainer needs to reach it (dummy AWS_* credentials, region)
    s3_spec    - the `StorageSpec` that points at it
    s3_bucket  - a fresh, empty bucket per test, emptied and removed afterwards

Outside pytest:
    url, stop = start_s3_server()          # in this process, on a free port
    url, stop = start_s3_server_process()  # in a child process, with its own moto state
    python tests/support/s3_server.py --port 9000   # serve until Ctrl-C

moto keeps its state (buckets, IAM users, whether IAM is enforced) per process, shared by every server in
that process; use `start_s3_server_process` for anything that changes it globally, such as `set_iam_auth`.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from ftjob.api.storage import StorageSpec
from ftjob_cli.demo.embedded_s3 import HOST, start_embedded_s3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

REGION = "us-east-1"
# moto accepts any keys while IAM is not enforced; these only have to look like credentials.
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

Stop = Callable[[], None]


@dataclass(frozen=True)
class S3Endpoint:
    """Where a moto server listens, and how to reach it."""

    url: str

    def env(self) -> dict[str, str]:
        return {**DUMMY_CREDENTIALS, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}

    def spec(self, *, path_style: bool = True, verify_tls: bool = True) -> StorageSpec:
        return StorageSpec(endpoint_url=self.url, region=REGION, path_style=path_style, verify_tls=verify_tls)

    def client(self, *, verify_tls: bool = True) -> S3Client:
        """A plain boto3 client, for arranging and inspecting state behind the code under test."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            verify=verify_tls,
            config=Config(s3={"addressing_style": "path"}),
        )


def start_s3_server(port: int | None = None, *, tls: bool = False) -> tuple[str, Stop]:
    """Start moto in a thread of this process on `port` (default: a free one); returns (url, stop).

    With `tls`, it serves HTTPS with a freshly generated self-signed certificate.
    """
    if tls:
        # werkzeug logs one line per request at INFO; in a test run that buries everything else.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        return _start_tls_server(port or 0)
    return start_embedded_s3(port or 0)


def _start_tls_server(port: int) -> tuple[str, Stop]:
    # ThreadedMotoServer has no TLS option; these are the same parts it assembles, plus an ssl_context.
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        HOST, port, app, threaded=True, request_handler=MotoRequestHandler, ssl_context="adhoc"
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join()

    return f"https://{HOST}:{server.server_port}", stop


def start_s3_server_process(timeout: float = 60.0) -> tuple[str, Stop]:
    """Start moto in a child process (its own buckets, users and auth switch); returns (url, stop)."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--port", "0", "--stop-on-eof"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError(f"moto server process did not start (exit code {proc.wait()})")
    stdin = proc.stdin

    def stop() -> None:
        stdin.close()  # the child serves until its stdin closes
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return url, stop


def set_iam_auth(url: str, *, enabled: bool) -> None:
    """Make the moto server at `url` check signatures and IAM policies (or stop checking).

    This switch is global to the server's process: only use it on a `start_s3_server_process` server.
    """
    request = urllib.request.Request(
        f"{url}/moto-api/reset-auth",
        data=b"0" if enabled else b"inf",
        method="POST",
        # With urllib's default form content type, Flask consumes the body and moto reads an empty string.
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def empty_and_delete_bucket(client: S3Client, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys: list[ObjectIdentifierTypeDef] = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


def new_bucket_name() -> str:
    return f"ftjob-test-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    url, stop = start_s3_server()
    yield S3Endpoint(url)
    stop()


@pytest.fixture(scope="session")
def s3_env(s3_server: S3Endpoint) -> dict[str, str]:
    return s3_server.env()


@pytest.fixture(scope="session")
def s3_spec(s3_server: S3Endpoint) -> StorageSpec:
    return s3_server.spec()


@pytest.fixture
def s3_bucket(s3_server: S3Endpoint) -> Iterator[str]:
    client = s3_server.client()
    bucket = new_bucket_name()
    client.create_bucket(Bucket=bucket)
    yield bucket
    empty_and_delete_bucket(client, bucket)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a moto S3 endpoint for local runs of the trainer.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument(
        "--stop-on-eof", action="store_true", help="stop when stdin closes (for a parent process)"
    )
    args = parser.parse_args(argv)
    url, stop = start_s3_server(args.port)
    print(url, flush=True)
    try:
        if args.stop_on_eof:
            sys.stdin.read()
        else:
            print("serving; Ctrl-C to stop", file=sys.stderr, flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()


if __name__ == "__main__":
    main()
