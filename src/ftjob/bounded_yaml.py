"""Load YAML nobody vetted (a manifest handed to `ftjob validate`) in bounded time and memory.

`yaml.safe_load` alone is not safe against hostile input:

- aliases share nodes, so 500 bytes can describe 10^8 values ("billion laughs"); anything that walks
  the result (validation, an error message quoting it) then takes minutes and gigabytes;
- the scanner's cost grows with the square of the nesting depth (100,000 `[` took 52 s with libyaml,
  5 minutes without), and the composer recurses once per level (`RecursionError`);
- constructors raise `ValueError` (a timestamp with month 13, a 5,000-digit integer), not `YAMLError`.

So the events are read first, lazily, and reading stops at the first limit crossed: input size, nesting
depth, aliases, and the number of values with every alias expanded. Only then are objects built, and
every failure is a `YamlRefused` with one line that never quotes more than a few dozen characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import yaml

# libyaml (C) parses about 20x faster; the pure-Python classes are the fallback where it is missing.
_LOADER: Final[type[yaml.SafeLoader]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MESSAGE_CHARS: Final = 200


@dataclass(frozen=True)
class YamlLimits:
    """Far above any real manifest (a FineTuneJob is ~100 values, 6 levels deep, a few KiB)."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 32
    max_aliases: int = 100
    max_values: int = 20_000
    """Scalars and collections in the whole file, every alias expanded."""


class YamlRefused(Exception):
    """The text is not YAML this module will return; `str()` says why in one line."""


def load_all_bounded(data: bytes, limits: YamlLimits = YamlLimits()) -> list[Any]:
    """The documents in `data` (UTF-8, optional byte order mark), empty documents left out."""
    if len(data) > limits.max_bytes:
        raise YamlRefused(f"larger than {limits.max_bytes} bytes ({len(data)} bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlRefused(f"not UTF-8 text (byte {exc.start + 1} is {data[exc.start]:#04x})") from None
    try:
        _check_shape(text, limits)
        documents = list(yaml.load_all(text, Loader=_LOADER))
    except YamlRefused:
        raise
    except yaml.MarkedYAMLError as exc:
        raise YamlRefused(f"not valid YAML: {_describe(exc)}") from None
    except yaml.YAMLError as exc:  # the reader's: a control character, a NUL byte
        raise YamlRefused(f"not valid YAML: {_clip(str(exc))}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Constructors raise plain ValueErrors: `2020-13-45` (an implicit timestamp), a 5,000-digit int.
        raise YamlRefused(f"not valid YAML: cannot build a value: {_clip(str(exc))}") from None
    return [doc for doc in documents if doc is not None]


def _check_shape(text: str, limits: YamlLimits) -> None:
    """Walk the events and stop at the first limit crossed, before any object is built."""
    values = aliases = 0
    # For each open collection: its anchor and the count of values before it started.
    open_nodes: list[tuple[str | None, int]] = []
    anchored: dict[str, int] = {}
    """Values under each anchor of the current document, aliases inside expanded."""
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append((event.anchor, values))
            values += 1
            if len(open_nodes) > limits.max_depth:
                raise YamlRefused(f"nested more than {limits.max_depth} levels deep{_at(event)}")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before = open_nodes.pop()
            if anchor is not None:
                anchored[anchor] = values - before
        elif isinstance(event, yaml.ScalarEvent):
            values += 1
            if event.anchor is not None:
                anchored[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > limits.max_aliases:
                raise YamlRefused(f"more than {limits.max_aliases} aliases (*name){_at(event)}")
            if any(event.anchor == anchor for anchor, _ in open_nodes):
                # `&a [*a]` builds a list that contains itself: no manifest (JSON) can be one.
                raise YamlRefused(f"an alias refers to a collection that contains it{_at(event)}")
            values += anchored.get(event.anchor or "", 1)
        elif isinstance(event, yaml.DocumentEndEvent):
            anchored.clear()  # anchors do not cross documents
        if values > limits.max_values:
            raise YamlRefused(
                f"more than {limits.max_values} values with aliases expanded{_at(event)}; "
                "a manifest this large is refused rather than read"
            )


def _at(event: yaml.Event) -> str:
    mark = event.start_mark
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _describe(exc: yaml.MarkedYAMLError) -> str:
    """What went wrong and where, without the snippet of input PyYAML would quote."""
    parts = [exc.context, exc.problem]
    text = "; ".join(_clip(part) for part in parts if part)
    mark = exc.problem_mark or exc.context_mark
    if mark is not None:
        text += f" (line {mark.line + 1}, column {mark.column + 1})"
    return text or "syntax error"


def _clip(text: str) -> str:
    """One line of at most _MESSAGE_CHARS characters: messages may quote an arbitrarily long token."""
    line = " ".join(text.split())
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3] + "..."
