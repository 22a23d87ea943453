"""The FineTuneJob API (group ftjob.dev, version v1alpha1): one pydantic model, the single source of truth
for the CRD schema, the Helm chart's CRD copy, the API reference, the operator and the trainer."""

from .errors import format_validation_errors
from .meta import API_VERSION, GROUP, JOB_NAME_SUFFIX, KIND, MAX_NAME_LENGTH, PLURAL, SHORT_NAMES, VERSION
from .resource import FineTuneJob, ObjectMeta
from .spec import FineTuneJobSpec, SpecViolations, Violation, cross_field_violations
from .status import Artifacts, Condition, DatasetStats, FineTuneJobStatus, Metrics, Progress

__all__ = [
    "API_VERSION",
    "GROUP",
    "JOB_NAME_SUFFIX",
    "KIND",
    "MAX_NAME_LENGTH",
    "PLURAL",
    "SHORT_NAMES",
    "VERSION",
    "Artifacts",
    "Condition",
    "DatasetStats",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "Metrics",
    "ObjectMeta",
    "Progress",
    "SpecViolations",
    "Violation",
    "cross_field_violations",
    "format_validation_errors",
]
