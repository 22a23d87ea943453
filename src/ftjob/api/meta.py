"""Identity of the API and the base class every spec model derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

GROUP = "ftjob.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SINGULAR = "finetunejob"
SHORT_NAMES = ("ftj",)
CATEGORIES = ("all", "ml", "ftjob")

# The child Job is named "<name>-train" and its pods "<job>-xxxxx"; the Job name also becomes the
# value of the `batch.kubernetes.io/job-name` label, which may not exceed 63 characters.
JOB_NAME_SUFFIX = "-train"
MAX_NAME_LENGTH = 52


class ApiModel(BaseModel):
    """Base for every API object: camelCase on the wire, unknown fields refused, docs from docstrings."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )
