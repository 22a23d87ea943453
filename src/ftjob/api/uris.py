"""URI types used by the spec.

Each annotation validates in Python and also emits the same rule as CEL into the generated CRD, so
`kubectl apply` and `ftjob validate` refuse the same strings with the same words.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

MAX_URI_LENGTH = 1024

# RE2- and Python-compatible patterns (the API server evaluates them with Go's regexp).
S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$"
HF_URI = r"^hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9._/-]*$"
FILE_URI = r"^file:///[^\s]*$"
LOCAL_PATH = r"^/[^\s]*$"
DOT_DOT_SEGMENT = r"(^|/)\.\.(/|$)"

URL_USERINFO = r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@"
"""A URL with `user[:password]@` before its host."""
_USERINFO_ANYWHERE = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@'\"<>]+@")


def mask_userinfo(text: str, mask: str = "[REDACTED]") -> str:
    """`text` with the `user:password` of every URL in it replaced by `mask`."""
    return _USERINFO_ANYWHERE.sub(lambda m: f"{m.group(1)}{mask}@", text)


_SCHEME_PATTERNS = {"s3": S3_URI, "hf": HF_URI, "file": FILE_URI, "path": LOCAL_PATH}
_SCHEME_HINTS = {
    "s3": "s3://bucket/key",
    "hf": "hf://org/name@revision",
    "file": "file:///absolute/path",
    "path": "/absolute/path",
}


@dataclass(frozen=True)
class UriRule:
    """Which URI forms a field accepts."""

    schemes: tuple[str, ...]

    @property
    def hint(self) -> str:
        return " or ".join(_SCHEME_HINTS[s] for s in self.schemes)

    def check(self, value: str) -> str:
        if re.search(DOT_DOT_SEGMENT, value):
            raise ValueError("must not contain '..' path segments")
        if value.startswith("s3://") and "s3" in self.schemes and not re.match(S3_URI, value):
            raise ValueError("must be a well-formed s3://bucket/key URI (bucket: 3-63 lowercase characters)")
        if value.startswith("hf://") and "hf" in self.schemes and not re.match(HF_URI, value):
            raise ValueError("must be hf://org/name@revision with the revision pinned")
        if not any(re.match(_SCHEME_PATTERNS[s], value) for s in self.schemes):
            raise ValueError(f"must be {self.hint}")
        return value

    def cel_rules(self) -> list[dict[str, str]]:
        """The same checks as `check`, as CRD x-kubernetes-validations."""
        accepted = " || ".join(f"self.matches({_cel_string(_SCHEME_PATTERNS[s])})" for s in self.schemes)
        rules = [
            {
                "rule": f"!self.matches({_cel_string(DOT_DOT_SEGMENT)})",
                "message": "must not contain '..' path segments",
            },
            {"rule": accepted, "message": f"must be {self.hint}"},
        ]
        if "s3" in self.schemes:
            rules.insert(
                1,
                {
                    "rule": f"!self.startsWith('s3://') || self.matches({_cel_string(S3_URI)})",
                    "message": "must be a well-formed s3://bucket/key URI (bucket: 3-63 lowercase characters)",
                },
            )
        return rules

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out["x-kubernetes-validations"] = self.cel_rules()
        return out


def _cel_string(pattern: str) -> str:
    """Quote a regex as a CEL raw string literal (no escaping needed for backslashes)."""
    assert "'" not in pattern
    return f"r'{pattern}'"


def _uri(*schemes: str) -> Any:
    rule = UriRule(schemes)
    return Annotated[str, Field(min_length=1, max_length=MAX_URI_LENGTH), AfterValidator(rule.check), rule]


ModelUri = _uri("hf", "s3", "file", "path")
DataUri = _uri("s3", "file")
OutputUri = _uri("s3", "file")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


def parse_s3_uri(uri: str) -> S3Location:
    """Split `s3://bucket/key` into bucket and key (the key may be empty)."""
    if not re.match(S3_URI, uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    return S3Location(bucket=bucket, key=key)


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    revision: str


def parse_hf_uri(uri: str) -> HubModel:
    """Split `hf://org/name@revision`."""
    if not re.match(HF_URI, uri):
        raise ValueError(f"not an hf://org/name@revision URI: {uri!r}")
    repo, _, revision = uri[len("hf://") :].partition("@")
    return HubModel(repo_id=repo, revision=revision)


def join_uri(base: str, *parts: str) -> str:
    """Join path parts onto a URI with exactly one slash between them."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


# -- endpoints that are never an object store ---------------------------------------------------------------
_HOST_END = r"\.?(:[0-9]*)?([/?#]|$)"
NEVER_STORAGE_ENDPOINT = (
    r"(?i)^https?://("
    r"169\.254\.[0-9.]+"  # IPv4 link-local: AWS, Azure, GCP, OCI metadata; ECS task credentials
    r"|0\.0\.0\.0"
    r"|\[fe[89ab][0-9a-f]:[^\]]*\]"  # IPv6 link-local, fe80::/10
    r"|\[[0:]+\]"  # IPv6 unspecified, ::
    r"|\[[^\]]*\.[^\]]*\]"  # IPv6 with an embedded IPv4 address (::ffff:169.254.169.254)
    r"|metadata\.google\.internal|metadata\.goog|metadata|instance-data|instance-data\.ec2\.internal"
    r"|100\.100\.100\.200|\[fd00:ec2::254\]"
    r")" + _HOST_END
)
"""An endpoint whose host is the node's metadata service (link-local or a known metadata name or address),
or an unspecified address."""
NUMERIC_ENDPOINT = r"(?i)^https?://(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}" + _HOST_END
"""A host that resolvers read as an IPv4 address: `2852039166`, `0xa9fea9fe`, `0251.0376.0251.0376`."""
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
DOTTED_QUAD_ENDPOINT = rf"^https?://{_OCTET}(\.{_OCTET}){{3}}" + _HOST_END
"""The one numeric form a reader (and the rule above) recognises: four decimal octets, no leading zeros."""


METADATA_ADDRESSES = ("100.100.100.200", "fd00:ec2::254")
"""Metadata services outside link-local space (Alibaba Cloud; AWS over IPv6)."""


def endpoint_host(url: str) -> str:
    """The host of an http(s) URL, lower-cased, IPv6 without brackets ("" when there is none)."""
    return (urlsplit(url).hostname or "").lower()


def is_never_storage_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """For a resolved address: link-local (the metadata service), unspecified, or a known metadata address;
    an IPv4-mapped IPv6 address is judged by its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_link_local or address.is_unspecified or str(address) in METADATA_ADDRESSES


def endpoint_host_is_safe(url: str) -> bool:
    """False for an endpoint on the metadata service, an unspecified address, or a numeric host that is no
    dotted quad. Loopback passes: it is the normal endpoint of `ftjob local`, and in a trainer pod only the
    pod itself (the cluster guardrail refuses it there; docs/multi-tenant.md). A name that resolves to such
    an address is the trainer's to refuse (it resolves it) and the egress NetworkPolicy's."""
    if re.match(NEVER_STORAGE_ENDPOINT, url):
        return False
    return not re.match(NUMERIC_ENDPOINT, url) or re.match(DOTTED_QUAD_ENDPOINT, url) is not None


ENDPOINT_HOST_CEL = (
    f"!self.matches({_cel_string(NEVER_STORAGE_ENDPOINT)})"
    f" && (!self.matches({_cel_string(NUMERIC_ENDPOINT)}) || self.matches({_cel_string(DOTTED_QUAD_ENDPOINT)}))"
)
"""`endpoint_host_is_safe` in CEL, for the CRD: the same regular expressions (RE2 and Python agree on them)."""
