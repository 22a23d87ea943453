"""The fast paths hold the same verdicts as the definitions: msgspec's typed decoding (a line, or a whole
block at once) against `json.loads` and the checks one by one, the compiled batch MinHash and exact key
against `minhash` and `exact_key` one example at a time, lines indexed a block at a time against one by
one, blocks of any size against each other, and threads against the cleaning thread."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftjob.api.data import CleaningSpec, DataSpec
from ftjob_trainer.data import batch, kernels, prepare, prepare_data
from ftjob_trainer.data.batch import WORKERS_ENV, BatchChecker, worker_count
from ftjob_trainer.data.checks import Message, _parse_slowly, parse_conversation
from ftjob_trainer.data.dedup import DedupIndex, Fingerprint, Signer, exact_key, minhash, similarity
from ftjob_trainer.data.reader import Block

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

    hashed = Signer(0.9).hash_batch(conversations, near=True)

    assert hashed.signatures is not None and hashed.bands is not None
    assert hashed.signatures.dtype == np.uint32 and hashed.signatures.shape == (400, 64)
    assert [row.tolist() for row in hashed.signatures] == [list(minhash(c)) for c in conversations]
    assert hashed.exact.tolist() == [exact_key(c) for c in conversations]
    assert (hashed.bands == Signer(0.9).band_keys(hashed.signatures)).all()
    assert (Signer(0.9).hash_batch(conversations, near=False).exact == hashed.exact).all()


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


def block_of(lines: list[str], first_number: int = 1) -> Block:
    data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass")
    return Block("unused", 0, len(data), first_number, data)


def same_results(one: batch.BlockResult, other: batch.BlockResult) -> None:
    assert one.numbers.tolist() == other.numbers.tolist()
    assert one.drops == other.drops
    assert one.checked.tolist() == other.checked.tolist()
    assert one.exact.tolist() == other.exact.tolist()
    assert one.content == other.content
    assert one.records == other.records and one.record_ends.tolist() == other.record_ends.tolist()
    assert (one.signatures is None) == (other.signatures is None)
    if one.signatures is not None and other.signatures is not None:
        assert one.signatures.tolist() == other.signatures.tolist()


def chat_line(rng: random.Random) -> str:
    conversation = random_chat(rng)
    roll = rng.random()
    if roll < 0.05:
        conversation = conversation[::-1]
    elif roll < 0.1:
        conversation = conversation[:1]
    elif roll < 0.15:
        conversation = (*conversation, Message("user", "again?"))
    return json.dumps({"messages": [m.as_dict() for m in conversation]}, ensure_ascii=rng.random() < 0.5)


@pytest.mark.parametrize("max_messages", [2, 128])
def test_a_block_decoded_at_once_gives_the_line_by_line_verdicts(max_messages: int) -> None:
    rng = random.Random(3)
    lines = [chat_line(rng) for _ in range(300)]
    checker = BatchChecker(CleaningSpec(max_messages=max_messages, min_user_chars=3, min_assistant_words=2))
    block = block_of(lines, first_number=7)

    fast = checker.check_block(block)

    assert checker._decode_fast(block, *batch.lines_of(block.data)) is not None
    same_results(fast, checker._finish_slow(block, block.data.split(b"\n")[:-1]))
    assert fast.numbers.tolist() == list(range(7, 307))
    assert {drop.reason for drop, _text in fast.drops.values()} >= {"badRoleOrder", "missingTurn"}


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(DOCUMENT, min_size=1, max_size=4), st.integers(0, 2), st.integers(0, 5))
def test_odd_lines_in_a_block_get_the_line_by_line_verdicts(
    documents: list[Any], style: int, seed: int
) -> None:
    rng = random.Random(seed)
    lines = [chat_line(rng) for _ in range(5)] + [as_line(document, style) for document in documents]
    rng.shuffle(lines)
    checker = BatchChecker(CleaningSpec())
    block = block_of(lines)

    same_results(checker.check_block(block), checker._finish_slow(block, block.data.split(b"\n")[:-1]))


@pytest.mark.parametrize("near", [True, False])
def test_the_compiled_verdicts_are_the_one_by_one_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, near: bool
) -> None:
    rng = random.Random(8)
    bases = [random_chat(rng) for _ in range(300)]
    rows = []
    for i in range(3000):
        conversation = list(rng.choice(bases) if i % 3 == 0 else random_chat(rng))
        if i % 5 == 0:
            conversation[-1] = Message("assistant", conversation[-1].content + " one more")
        rows.append(json.dumps({"messages": [m.as_dict() for m in conversation]}))
    train, validation = tmp_path / "train.jsonl", tmp_path / "validation.jsonl"
    train.write_text("\n".join(rows[:2500]) + "\n", encoding="utf-8")
    validation.write_text("\n".join(rows[2500:]) + "\n", encoding="utf-8")
    cleaning = {"minAssistantWords": 0, "dropNearDuplicates": near}
    spec = DataSpec.model_validate({"trainUri": "file:///train.jsonl", "cleaning": cleaning})
    monkeypatch.setattr(batch, "BLOCK_BYTES", 16 * 1024)
    calls: list[str] = []
    compiled = kernels.block_verdicts

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append("kernel")
        return compiled(*args, **kwargs)

    monkeypatch.setattr(kernels, "block_verdicts", spy)

    def run(out: str) -> tuple[str, str, str]:
        prepared = prepare_data(train, validation, spec, seed=3, max_seq_length=64, out_dir=tmp_path / out)
        return (
            prepared.train_path.read_text(encoding="utf-8"),
            prepared.validation_path.read_text(encoding="utf-8"),
            prepared.report.to_json(),
        )

    at_once = run("at-once")
    assert calls
    calls.clear()
    monkeypatch.setattr(prepare._Taker, "compiled", False)
    one_by_one = run("one-by-one")

    assert not calls
    assert at_once == one_by_one
    dropped = json.loads(at_once[2])["inputs"]
    assert set(dropped[0]["dropped"]) >= ({"duplicate", "nearDuplicate"} if near else {"duplicate"})
    assert set(dropped[1]["dropped"]) >= {"overlapWithTrain"}
    details = [s["detail"] for s in dropped[1]["dropped"]["overlapWithTrain"]["samples"]]
    assert any("Jaccard" in detail for detail in details) == near


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


def test_worker_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    monkeypatch.setattr(batch, "usable_cpus", lambda: 2)
    assert worker_count(1024) == 0  # one block: nothing to overlap
    assert worker_count(batch.BLOCK_BYTES + 1) == 2
    monkeypatch.setattr(batch, "usable_cpus", lambda: 1)
    assert worker_count(batch.BLOCK_BYTES * 100) == 0
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert worker_count(1024) == 3
    monkeypatch.setenv(WORKERS_ENV, "0")
    assert worker_count(batch.BLOCK_BYTES * 100) == 0


@pytest.mark.parametrize(
    ("cpu_max", "expected"), [("max 100000\n", 8), ("150000 100000\n", 1), ("400000 100000", 4)]
)
def test_usable_cpus_follow_the_cgroup_quota(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cpu_max: str, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    (tmp_path / "cpu.max").write_text(cpu_max, encoding="ascii")
    monkeypatch.setattr(batch, "_CPU_MAX", str(tmp_path / "cpu.max"))
    assert batch.usable_cpus() == expected
    monkeypatch.setattr(batch, "_CPU_MAX", str(tmp_path / "missing"))
    assert batch.usable_cpus() == 8


def test_threads_give_the_same_files_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
