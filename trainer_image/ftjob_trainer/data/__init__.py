"""The data checklist, done for real: stream the chat JSONL, drop what cannot train well (counted by
reason, with samples and line numbers), deduplicate, split, measure token lengths, and fail early with
`DataInvalid` when too little remains.

Use `prepare_data`; everything else here is its parts.
"""

from .checks import DropReason
from .prepare import DataRejected, PreparedData, TokenCounter, prepare_data
from .report import DataReport, DropSample, DropSummary, InputReport, TokenStats

__all__ = [
    "DataRejected",
    "DataReport",
    "DropReason",
    "DropSample",
    "DropSummary",
    "InputReport",
    "PreparedData",
    "TokenCounter",
    "TokenStats",
    "prepare_data",
]
