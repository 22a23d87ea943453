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
