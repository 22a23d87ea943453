"""The fast paths hold the same verdicts as the definitions: msgspec's typed decoding against `json.loads`
and the checks one by one, numpy's batch MinHash against `minhash` one example at a time, and worker
processes against the cleaning process."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftjob.api.data import CleaningSpec, DataSpec
from ftjob_trainer.data import prepare_data
from ftjob_trainer.data.batch import (
    BATCH_CHARS,
    BATCH_LINES,
    PARALLEL_BATCH_CHARS,
    WORKERS_ENV,
    BatchChecker,
    batches,
    worker_count,
)
from ftjob_trainer.data.checks import Message, _parse_slowly, parse_conversation
from ftjob_trainer.data.dedup import DedupIndex, Fingerprint, Signer, minhash, similarity

# Words that exercise the tokenizer's corners: case folding outside ASCII (ß, ﬁ, K as the Kelvin sign),
# NUL, punctuation, words of 8/9/64/65+ bytes (the chunked word hash and its blake2b fallback).
WORDS = [
    "alpha", "Beta", "GAMMA", "déjà", "ÉCOLE", "x_y", "42", "naïve", "ﬁne", "straße", "\u212a", "a\x00b",
    "!?", "  ", "\t", "abcdefgh", "abcdefghi", "x" * 64, "y" * 65, "z" * 300, "ü" * 40, "日本語", "🙂",
]  # fmt: skip


def random_chat(rng: random.Random) -> tuple[Message, ...]:
    def text(count: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(count)) + rng.choice(["", ".", " ,x"])

    turns = (Message("user", text(rng.randint(0, 6))), Message("assistant", text(rng.randint(0, 40))))
    return ((Message("system", "A shared system prompt."),) if rng.random() < 0.3 else ()) + turns


def test_batch_signatures_equal_one_at_a_time() -> None:
    rng = random.Random(5)
    conversations = [random_chat(rng) for _ in range(400)]

    batch = Signer(0.9).signatures(conversations)

    assert batch.dtype == np.uint32 and batch.shape == (400, 64)
    assert [row.tolist() for row in batch] == [list(minhash(c)) for c in conversations]


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9, 1.0])
def test_batch_band_keys_find_what_one_at_a_time_finds(threshold: float) -> None:
    rng = random.Random(9)
    bases = [random_chat(rng) for _ in range(60)]
    variants = [(*base[:-1], Message("assistant", base[-1].content + " extra")) for base in bases]
    batch_index, single_index = DedupIndex(threshold), DedupIndex(threshold)
    for line, print_ in enumerate(batch_index.signer.fingerprints(bases, [0] * len(bases)), start=1):
        batch_index.add(print_, line)
    for line, base in enumerate(bases, start=1):
        single_index.add(Fingerprint(base, near=True), line)

    for variant, print_ in zip(variants, batch_index.signer.fingerprints(variants, [1] * 60), strict=True):
        assert batch_index.find_near(print_) == single_index.find_near(Fingerprint(variant, near=True))


def test_index_similarity_is_the_signatures_similarity() -> None:
    rng = random.Random(2)
    first, second = random_chat(rng), random_chat(rng)
    index = DedupIndex(0.0 + 0.5)
    index.add(Fingerprint(first, near=True), 1)
    found = index.find_near(Fingerprint(first, near=True))

    assert found is not None and found.similarity == 1.0
    assert similarity(minhash(first), minhash(second)) < 0.5


# Chat-shaped documents with everything that makes the typed decoder step aside: extra keys, repeated
# keys, wrong types, lone surrogates, big numbers, NaN, deep nesting, unknown roles.
TEXT = st.text(
    st.characters(categories=["Cs"]) | st.sampled_from('[]{}"\\ \n\t') | st.characters(), max_size=12
)
VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
ROLE = st.sampled_from(["system", "user", "assistant", "tool", "User"])
MESSAGE = st.fixed_dictionaries(
    {"role": ROLE | VALUE, "content": TEXT | VALUE}, optional={"name": TEXT, "role ": ROLE}
)
DOCUMENT = st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=6) | VALUE}, optional={"id": VALUE})


def as_line(document: Any, style: int) -> str:
    if style == 0:
        return json.dumps(document)
    if style == 1:
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    # A repeated key: json.loads and msgspec both keep the last one.
    return '{"messages": [], ' + json.dumps(document)[1:]


@settings(max_examples=200, deadline=None, database=None)
@given(DOCUMENT, st.integers(0, 2), st.sampled_from([2, 4, 128]))
def test_typed_decoding_gives_the_verdict_of_json_loads(document: Any, style: int, max_messages: int) -> None:
    text = as_line(document, style)

    assert parse_conversation(text, max_messages=max_messages) == _parse_slowly(
        text, max_messages=max_messages
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"messages": [{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "a"}]}',
        '{"messages": [{"role": "user", "content": "hi", "content": "again"}, {"role": "assistant", "content": "a"}]}',
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "n": 1'
        + "0" * 5000
        + "}",
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "x": NaN}',
        ' {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\t',
    ],
)
def test_typed_decoding_edge_cases(text: str) -> None:
    assert parse_conversation(text) == _parse_slowly(text, max_messages=128)


def test_batches_are_bounded_by_lines_and_characters() -> None:
    long_lines = [len(batch) for batch in batches(["x" * 1000] * 100)]
    short_lines = [len(batch) for batch in batches(["x"] * 1000)]
    for_workers = [len(batch) for batch in batches(["x" * 1000] * 1000, parallel=True)]

    assert sum(long_lines) == 100 and max(long_lines) == -(-BATCH_CHARS // 1000)
    assert short_lines == [BATCH_LINES] * 3 + [1000 - 3 * BATCH_LINES]
    assert max(for_workers) == -(-PARALLEL_BATCH_CHARS // 1000) > max(long_lines)


def test_batch_checker_keeps_the_order_and_the_drops() -> None:
    result = BatchChecker(CleaningSpec()).check(
        [
            json.dumps(
                {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
            ),
            "not json",
            json.dumps(
                {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}
            ),
        ]
    )

    assert [type(item).__name__ for item in result.items] == ["Checked", "Drop", "Checked"]
    assert result.signatures is not None and result.signatures.shape == (2, 64)


def test_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert worker_count(1024) == 0
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert worker_count(1024) == 3


def test_worker_processes_give_the_same_files_and_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(11)
    rows = []
    for i in range(1500):
        conversation = random_chat(rng) if i % 7 else random_chat(random.Random(i // 70))
        rows.append(json.dumps({"messages": [m.as_dict() for m in conversation]}, ensure_ascii=i % 2 == 0))
        if i % 97 == 0:
            rows.append('{"messages": [')
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = DataSpec.model_validate({"trainUri": "file:///train.jsonl", "cleaning": {"minAssistantWords": 0}})

    def run(workers: str, out: str) -> tuple[str, str, str]:
        monkeypatch.setenv(WORKERS_ENV, workers)
        prepared = prepare_data(path, None, spec, seed=3, max_seq_length=64, out_dir=tmp_path / out)
        return (
            prepared.train_path.read_text(encoding="utf-8"),
            prepared.validation_path.read_text(encoding="utf-8"),
            prepared.report.to_json(),
        )

    local, parallel = run("0", "local"), run("2", "parallel")

    assert parallel == local
    report = json.loads(local[2])
    assert set(report["inputs"][0]["dropped"]) >= {"invalidJson", "duplicate"}
