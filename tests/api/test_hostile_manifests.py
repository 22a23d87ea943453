"""`ftjob validate` on hostile files: whatever the bytes, one clear error per problem, no traceback, bounded
time and memory. Hypothesis feeds it raw bytes, YAML-ish text and well-formed YAML of every shape."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftjob.bounded_yaml import YamlLimits
from ftjob.manifests import ManifestError, validate_file
from tests.api.test_cli_validate import ftjob

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
HEADER = "apiVersion: ftjob.dev/v1alpha1\nkind: FineTuneJob\n"
SECONDS = 3.0
"""Per file, on a loaded 2-core machine; the alias bombs below took 2.5 s (7 levels) to 20 s (8 levels)."""


def alias_bomb(levels: int, fan_out: int = 10) -> str:
    """`levels` anchors, each a list of `fan_out` aliases of the previous: fan_out**levels values."""
    lines = [HEADER + "metadata: {name: bomb, labels: {a: &a0 [" + ", ".join(['"lol"'] * fan_out) + "]}}"]
    lines += [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan_out) + "]" for i in range(1, levels)]
    lines.append(f"spec: {{baseModel: *a{levels - 1}}}")
    return "\n".join(lines) + "\n"


def outcome(path: Path) -> list[str]:
    """Every line `ftjob validate` would print, checked to be short single lines, within the time bound."""
    started = time.perf_counter()
    try:
        lines = [line for result in validate_file(path) for line in [result.name, *result.errors]]
    except ManifestError as exc:
        lines = [str(exc)]
    assert time.perf_counter() - started < SECONDS
    for line in lines:
        assert "\n" not in line and len(line) < 1000, line[:300]
    return lines


@pytest.mark.parametrize(
    ("content", "says"),
    [
        pytest.param(alias_bomb(8).encode(), "more than 20000 values with aliases expanded", id="alias-bomb"),
        pytest.param(
            (HEADER + "metadata: &m {name: x, labels: *m}\n").encode(),
            "an alias refers to a collection that contains it",
            id="recursive-alias",
        ),
        pytest.param(b"\xff\xfe\x00 not utf-8", "not UTF-8 text (byte 1 is 0xff)", id="non-utf8"),
        pytest.param(
            (HEADER + "spec: " + "[" * 100_000 + "]" * 100_000).encode(),
            "nested more than 32 levels deep (line 3, column 38)",
            id="deep-flow",
        ),
        pytest.param(
            (HEADER + "".join(" " * i + "a:\n" for i in range(60))).encode(),
            "nested more than 32 levels deep",
            id="deep-block",
        ),
        pytest.param(
            (HEADER + "metadata: {created: 2020-13-45}").encode(), "month must be in 1..12", id="bad-date"
        ),
        pytest.param(
            (HEADER + "spec: " + "7" * 5000).encode(), "Exceeds the limit (4300 digits)", id="huge-int"
        ),
        pytest.param(b"a: \x00", "control characters are not allowed", id="nul-byte"),
        pytest.param(b"a: *" + b"x" * 100_000, "found undefined alias", id="long-undefined-alias"),
        pytest.param(b"x" * (YamlLimits().max_bytes + 1), "larger than 1048576 bytes", id="too-large"),
        pytest.param(
            (HEADER + "metadata: [1, 2]\n").encode(),
            "metadata: must be an object (got [1, 2])",
            id="metadata-list",
        ),
        pytest.param(
            (HEADER + "metadata: {name: {a: 1}}\n").encode(),
            'metadata.name: must be a string (got {"a": 1})',
            id="name-mapping",
        ),
        pytest.param(b"- 1\n- 2\n", "document 1 is not a mapping", id="top-level-list"),
        pytest.param(b"apiVersion: [1]\nkind: {a: b}\n", '(got [1] {"a": "b"})', id="apiversion-not-string"),
    ],
)
def test_hostile_file_gets_one_clear_error(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    lines = outcome(path)
    assert any(says in line for line in lines), lines


def test_cli_prints_an_error_not_a_traceback(tmp_path: Path) -> None:
    files = []
    for index, content in enumerate([alias_bomb(9).encode(), b"\xff", (HEADER + "metadata: [1]\n").encode()]):
        files.append(tmp_path / f"{index}.yaml")
        files[-1].write_bytes(content)
    started = time.perf_counter()
    result = ftjob("validate", *map(str, files))
    assert time.perf_counter() - started < 20  # the interpreter's start included
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 5, result.stderr  # 2 errors, 1 invalid manifest with 2 lines


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    outcome(path)


YAML_ALPHABET = st.sampled_from(
    [
        *"[]{}:-&*!|>'\"#,?%@`\\\n\t ",
        "a",
        "b",
        "1",
        "0x",
        "~",
        "---",
        "&a",
        "*a",
        "!!set",
        "!!binary",
        "!!timestamp",
        "!!int",
        "<<",
    ]
)


@FUZZ
@given(st.lists(YAML_ALPHABET, max_size=80).map("".join))
def test_any_yaml_like_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes((HEADER + text).encode())
    outcome(path)


VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=40,
)


@FUZZ
@given(
    VALUES,
    st.sampled_from(
        ["metadata", "spec", "spec.baseModel", "spec.data", "spec.peft", "spec.resources", "apiVersion"]
    ),
)
def test_any_value_anywhere(tmp_path: Path, value: Any, where: str) -> None:
    doc: dict[str, Any] = {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "fuzz"},
        "spec": {
            "baseModel": {"uri": "hf://a/b@main"},
            "data": {"trainUri": "s3://bkt/t.jsonl"},
            "output": {"uri": "s3://bkt/o/"},
        },
    }
    node = doc
    *parents, leaf = where.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    outcome(path)


@settings(
    max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(1, 12), st.integers(2, 40))
def test_any_alias_bomb(tmp_path: Path, levels: int, fan_out: int) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(levels, fan_out))
    outcome(path)
