"""`json.loads` for text nobody vetted: training data lines and generated answers.

`json.loads` can fail in more ways than `JSONDecodeError`: deep nesting raises `RecursionError` (the
parser recurses once per level), and a number with more than 4,300 digits raises a plain `ValueError`.
Either one, uncaught, made the trainer exit 1 and be retried on the same data. Here every failure is a
`JsonRefused` with a one-line reason, and nesting is measured before parsing, so the outcome does not
depend on how deep the caller's own stack happens to be.
"""

from __future__ import annotations

import json
import re
from typing import Final

MAX_DEPTH: Final = 64
"""Arrays and objects nested deeper than this are refused. A chat line needs 3 levels (object, messages
array, message object); 64 leaves room for structured extra keys and JSON answers."""

# A JSON string, escapes included. Removing strings leaves only structure, so brackets inside text do not
# count as nesting. The closing quote is optional: an unterminated string then ends the text in one match,
# where a required quote made the engine retry from every later quote (quadratic: 40 s for 80 KB).
_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")


class JsonRefused(ValueError):
    """The text is not JSON this module will return; `str()` says why in one line."""


def nesting_depth_exceeds(text: str, max_depth: int = MAX_DEPTH) -> bool:
    """Whether arrays/objects in `text` nest deeper than `max_depth` (brackets inside strings ignored).

    Linear in the text, and stops at the first bracket past the limit."""
    # Fast path, true for nearly every line: fewer opening brackets than the limit cannot nest past it.
    if text.count("[") + text.count("{") <= max_depth:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = 0
    for char in brackets:
        depth += 1 if char in "[{" else -1
        if depth > max_depth:
            return True
    return False


def loads(text: str, *, max_depth: int = MAX_DEPTH, position: str = "character") -> object:
    """Parse `text` as JSON; raise `JsonRefused` for anything that is not JSON or nests too deeply.

    `position` names where a syntax error is, in the message: "column" reads better for one line."""
    if nesting_depth_exceeds(text, max_depth):
        raise JsonRefused(f"arrays/objects nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise JsonRefused(f"{err.msg} at {position} {err.pos + 1}") from None
    except RecursionError:
        # Not reachable within MAX_DEPTH on a normal stack; kept so that no input can crash a caller.
        raise JsonRefused("nested too deeply to parse") from None
    except ValueError as err:
        # int() refuses numbers with more than sys.get_int_max_str_digits() digits (4,300 by default).
        raise JsonRefused(f"a number is too long to read ({_first_sentence(str(err))})") from None


def _first_sentence(text: str) -> str:
    return text.split(":", 1)[0].split(";", 1)[0][:120]
