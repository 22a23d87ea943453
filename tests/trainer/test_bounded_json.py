"""bounded_json: every failure of json.loads becomes one exception with a reason, nesting is capped."""

from __future__ import annotations

import contextlib
import json
import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftjob_trainer.bounded_json import MAX_DEPTH, JsonRefused, loads, nesting_depth_exceeds

FUZZ = settings(max_examples=300, deadline=None, database=None)

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param(
            "[" * 100_000 + "]" * 100_000, "arrays/objects nested more than 64 levels deep", id="deep-arrays"
        ),
        pytest.param(
            '{"a":' * 65 + "1" + "}" * 65, "arrays/objects nested more than 64 levels deep", id="deep-objects"
        ),
        pytest.param("[" * 100_000, "arrays/objects nested more than 64 levels deep", id="unclosed-deep"),
        pytest.param("1" * 5000, "a number is too long to read", id="5000-digit-number"),
        pytest.param('{"a": 1', "Expecting ',' delimiter at character 8", id="syntax-error"),
        pytest.param("", "Expecting value at character 1", id="empty"),
    ],
)
def test_refusals_have_a_reason(text: str, reason: str) -> None:
    with pytest.raises(JsonRefused, match="^" + re.escape(reason)):
        loads(text)


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = json.dumps({"text": "[" * 10_000 + '\\"{' * 100})
    assert not nesting_depth_exceeds(text)
    assert loads(text) == json.loads(text)


def test_the_limit_itself_is_accepted() -> None:
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(JsonRefused):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


@FUZZ
@given(JSON_VALUES)
def test_agrees_with_json_loads_on_ordinary_documents(value: Any) -> None:
    text = json.dumps(value)
    assert loads(text) == json.loads(text)


@FUZZ
@given(st.text(alphabet='[]{}"\\,:0123456789 ab', max_size=300))
def test_never_raises_anything_but_json_refused(text: str) -> None:
    with contextlib.suppress(JsonRefused):
        loads(text, max_depth=8)


def test_an_unterminated_string_of_escaped_quotes_is_scanned_in_linear_time() -> None:
    # `"\"\"\"...` without a closing quote made a string regex retry from every quote: 40 s for 80 KB.
    text = "[" * (MAX_DEPTH + 1) + '"' + '\\"' * 500_000
    started = time.perf_counter()
    with pytest.raises(JsonRefused, match="nested more than"):
        loads(text)
    assert time.perf_counter() - started < 1.0


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@FUZZ
@given(JSON_VALUES, st.integers(0, 6))
def test_measured_depth_is_the_documents_depth(value: Any, limit: int) -> None:
    assert nesting_depth_exceeds(json.dumps(value), limit) == (depth(value) > limit)
