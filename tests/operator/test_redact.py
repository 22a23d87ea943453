"""redact: credentials never leave the operator, even when the trainer quotes one."""

from __future__ import annotations

import pytest

from ftjob_operator.redact import redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        pytest.param("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE", id="aws-access-key-id"),
        pytest.param(
            "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI", id="aws-secret"
        ),
        pytest.param("hf token hf_abcdefghijklmnopqrstuvwxyz123456", "hf_abcdefghij", id="hf-token"),
        pytest.param('{"password": "hunter2hunter2"}', "hunter2hunter2", id="json-password"),
        pytest.param("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload", "eyJhbGci", id="bearer"),
    ],
)
def test_secrets_are_masked(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "[REDACTED]" in redact(text)


def test_ordinary_text_is_kept() -> None:
    text = 'secret "minio-creds" not found; s3://bucket/key: 403 Forbidden; token budget 1234'
    assert redact(text) == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("endpoint http://minio:s3cr3tpass@minio.storage:9000 refused", id="http-user-password"),
        pytest.param(
            'storage.endpointUrl: "https://AKIDEXAMPLE:s3cr3tpass@r2.example.com/"', id="quoted-https"
        ),
        pytest.param(
            "Could not connect to the endpoint URL: http://u:s3cr3tpass@10.0.0.1:9000/b?x", id="boto-error"
        ),
    ],
)
def test_credentials_in_urls_are_masked(text: str) -> None:
    assert "s3cr3tpass" not in redact(text)
    assert "://[REDACTED]@" in redact(text)


def test_urls_without_credentials_are_kept() -> None:
    text = "hf://org/name@main, s3://bucket/key@2, http://minio:9000/path@x and user@example.com"
    assert redact(text) == text


def test_a_stored_endpoint_with_credentials_reaches_no_status_or_event() -> None:
    # An object stored before the API refused such URLs: the operator reports it invalid, masked.
    from ftjob_operator.derive import derive_status
    from ftjob_operator.events import derive_events, event_body
    from ftjob_operator.settings import OperatorSettings

    from . import factories as f

    ftj = f.ftj({"storage": {"endpointUrl": "http://minio:s3cr3tpass@minio.storage:9000"}})
    status = derive_status(ftj, None, [], None, f.T0, OperatorSettings())
    events = [event_body(ftj, event, f.T0) for event in derive_events(None, status)]

    assert status["phase"] == "Failed"
    assert "spec.storage.endpointUrl: must not contain credentials" in status["message"]
    assert [event["reason"] for event in events] == ["SpecInvalid"]
    assert "s3cr3tpass" not in str(status) + str(events)
    assert "http://[REDACTED]@minio.storage:9000" in events[0]["message"]
