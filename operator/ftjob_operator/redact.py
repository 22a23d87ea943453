"""Last line of defence against credentials in status, Events and logs.

The operator never reads a Secret, so it holds no credential of its own; but text it copies from the
trainer (termination message, log lines) or from the kubelet could quote one by accident.
"""

from __future__ import annotations

import re
from typing import Final

from ftjob.api.uris import mask_userinfo

MASK: Final = "[REDACTED]"

_PATTERNS: Final = (
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\bhf_[A-Za-z0-9]{20,}\b"),  # Hugging Face tokens
    re.compile(
        r"(?i)\b(aws_secret_access_key|aws_session_token|secret_access_key|hf_token|token|password)"
        r"(['\"]?\s*[=:]\s*['\"]?)[^\s'\",;]{8,}"
    ),
    re.compile(r"(?i)\b(authorization:\s*bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
)


def redact(text: str) -> str:
    # The API refuses endpoint URLs with credentials; a URL quoted from elsewhere (a trainer error, an old
    # object stored before that rule) may still carry `user:password@`.
    text = mask_userinfo(text, MASK)
    for pattern in _PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        elif pattern.groups == 1:
            text = pattern.sub(lambda m: f"{m.group(1)}{MASK}", text)
        else:
            text = pattern.sub(MASK, text)
    return text
