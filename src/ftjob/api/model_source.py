"""Where the base model comes from."""

from __future__ import annotations

from .common import SecretKeyRef
from .meta import ApiModel
from .uris import ModelUri


class BaseModelSpec(ApiModel):
    """The pretrained model the adapter is trained on top of."""

    uri: ModelUri
    """Model location: `hf://org/name@revision` (revision pinned: a commit, tag or branch),
    `s3://bucket/prefix/` holding a saved model folder, or a local path (`file://` or absolute) with
    `ftjob local` only (the operator refuses it: a trainer pod mounts no such volume)."""
    token_secret_ref: SecretKeyRef | None = None
    """Secret key holding a Hugging Face token, for gated or private `hf://` models."""
    trust_remote_code: bool = False
    """Allow model code shipped with the checkpoint to run. Leave off unless you trust the source."""
