"""Streaming: the reader holds one line at a time, and `prepare_data`'s memory follows the number of
kept examples, not the size of the file."""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from ftjob.api.data import CleaningSpec, DataSpec
from ftjob_trainer.data import DropReason, batch, kernels, prepare_data
from ftjob_trainer.data.batch import BatchChecker
from ftjob_trainer.data.checks import Drop, parse_conversation
from ftjob_trainer.data.dedup import Signer
from ftjob_trainer.data.reader import JsonlReader, Line, TooLong

T = TypeVar("T")

CHAT = {"messages": [{"role": "user", "content": "Ping?"}, {"role": "assistant", "content": "Pong."}]}


def peak_memory(action: Callable[[], T]) -> tuple[T, int]:
    """The result of `action` and the most memory Python had allocated at once while it ran."""
    tracemalloc.start()
    try:
        return action(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reader_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text((json.dumps(CHAT) + "\n") * 200_000, encoding="utf-8")
    reader = JsonlReader(path)

    lines = iter(reader)
    first = next(lines)

    assert inspect.isgenerator(lines)
    assert first == Line(1, json.dumps(CHAT))
    assert reader.size_bytes == len(json.dumps(CHAT)) + 1


def test_reading_200k_lines_takes_constant_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text((json.dumps(CHAT) + "\n") * 200_000, encoding="utf-8")
    reader = JsonlReader(path)

    count, peak = peak_memory(lambda: sum(1 for _ in reader))

    assert count == reader.lines == 200_000
    assert path.stat().st_size > 10_000_000
    assert peak < 100_000
    assert reader.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("workers", "bound"), [("1", 1_000_000), ("2", 1_500_000)])
def test_prepare_memory_follows_kept_examples_not_file_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str, bound: int
) -> None:
    # 10,000 lines of about 1 KiB drawn from 200 distinct examples: 10 MB to read, 200 to remember. The
    # working memory is a fixed multiple of the block size (about 20x in one thread; with two, the
    # blocks in flight in both): small blocks show it is not the file's size.
    monkeypatch.setattr(batch, "BLOCK_BYTES", 32 * 1024)
    monkeypatch.setenv(batch.WORKERS_ENV, workers)
    # numba's first call loads its compiler's registries (about 16 MB, once per process), and each
    # compiled function its code: not per line.
    Signer(0.9).hash_batch([], near=True)
    kernels.warm_up()
    rng = random.Random(0)
    vocabulary = [f"word{i}" for i in range(1000)]
    distinct = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": " ".join(rng.choices(vocabulary, k=20))},
                    {"role": "assistant", "content": " ".join(rng.choices(vocabulary, k=120))},
                ]
            }
        )
        for _ in range(200)
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(distinct[i % 200] + "\n" for i in range(10_000)), encoding="utf-8")
    spec = DataSpec.model_validate({"trainUri": "file:///data/train.jsonl"})

    prepared, peak = peak_memory(
        lambda: prepare_data(path, None, spec, seed=0, max_seq_length=512, out_dir=tmp_path / "out")
    )

    assert prepared.train_examples + prepared.validation_examples == 200
    assert prepared.report.inputs[0].dropped[DropReason.DUPLICATE].count == 9_800
    assert path.stat().st_size > 10_000_000
    assert peak < bound


def test_digest_and_counts_cover_blank_crlf_and_bom_lines(tmp_path: Path) -> None:
    content = b'\xef\xbb\xbf{"a": 1}\r\n\r\n   \n{"b": 2}\n{"c": 3}'
    path = tmp_path / "windows.jsonl"
    path.write_bytes(content)
    reader = JsonlReader(path)

    lines = list(reader)

    assert lines == [Line(1, '{"a": 1}'), Line(4, '{"b": 2}'), Line(5, '{"c": 3}')]
    assert (reader.lines, reader.blank_lines, reader.size_bytes) == (3, 2, len(content))
    assert reader.sha256 == hashlib.sha256(content).hexdigest()


def test_undecodable_and_overlong_lines_are_reported_not_loaded(tmp_path: Path) -> None:
    content = b'{"ok": 1}\n{"bad": "\xff"}\n' + b"x" * 5000 + b"\n" + b'{"after": 2}\n'
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(content)
    reader = JsonlReader(path, max_line_bytes=1000)

    lines = list(reader)

    assert [(line.number, line.problem) for line in lines] == [
        (1, None),
        (2, "not valid UTF-8 (byte 10)"),
        (3, "line is longer than 1000 bytes"),
        (4, None),
    ]
    assert lines[2].text == "x" * 1000
    assert reader.sha256 == hashlib.sha256(content).hexdigest()


def test_reader_reads_once_and_knows_its_digest_only_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(CHAT) + "\n", encoding="utf-8")
    reader = JsonlReader(path)

    with pytest.raises(RuntimeError, match="only after the whole file"):
        _ = reader.sha256
    list(reader)
    with pytest.raises(RuntimeError, match="reads its file once"):
        list(reader)


def line_by_line(path: Path, cleaning: CleaningSpec) -> list[tuple[int, object, str]]:
    """The definition: the reader's lines, then `parse_conversation` on each."""
    verdicts: list[tuple[int, object, str]] = []
    for line in JsonlReader(path, max_line_bytes=cleaning.max_line_bytes):
        if line.too_long:
            verdict: object = Drop(
                DropReason.LINE_TOO_LONG, f"longer than maxLineBytes {cleaning.max_line_bytes}"
            )
        elif line.problem is not None:
            verdict = Drop(DropReason.INVALID_JSON, line.problem)
        else:
            parsed = parse_conversation(line.text, max_messages=cleaning.max_messages)
            verdict = parsed if isinstance(parsed, Drop) else batch.encode(parsed)
        verdicts.append((line.number, verdict, line.text if isinstance(verdict, Drop) else ""))
    return verdicts


def by_blocks(
    path: Path, cleaning: CleaningSpec, size: int
) -> tuple[list[tuple[int, object, str]], JsonlReader]:
    reader = JsonlReader(path, max_line_bytes=cleaning.max_line_bytes)
    checker = BatchChecker(cleaning)
    verdicts: list[tuple[int, object, str]] = []
    for item in reader.blocks(size):
        if isinstance(item, TooLong):
            result = batch.too_long(item.offset, item.number, item.text, cleaning.max_line_bytes)
        else:
            result = checker.check_block(item)
        reader.count(len(result.numbers), result.blank)
        checked = dict(zip(result.checked.tolist(), range(len(result.checked)), strict=True))
        for index, number in enumerate(result.numbers.tolist()):
            if index in result.drops:
                drop, text = result.drops[index]
                verdicts.append((number, drop, text))
                continue
            position = checked[index]
            start = int(result.record_ends[position - 1]) if position else 0
            verdicts.append((number, result.records[start : int(result.record_ends[position])], ""))
    return verdicts, reader


@pytest.mark.parametrize("size", [1 << 20, 4096, 1500, 700, 64])
def test_blocks_of_any_size_give_the_line_by_line_verdicts(tmp_path: Path, size: int) -> None:
    good = json.dumps(CHAT)
    content = (
        b"\xef\xbb\xbf" + good.encode() + b"\r\n\r\n   \n" + good.upper().encode() + b"\n"
        + b'{"bad": "\xff"}\n' + b"x" * 3000 + b"\n" + good.encode() + b"\n" + b"y" * 1100 + b"\r\n"
        + b'{"messages": [{"role": "user", "content": "a"}]}\n' + b"z" * 5000 + good.encode()
        + b"\n" + good.encode() + b" " + good.encode() + b"\n" + good.encode()
    )  # fmt: skip
    path = tmp_path / "edges.jsonl"
    path.write_bytes(content)
    cleaning = CleaningSpec(max_line_bytes=1024)

    verdicts, reader = by_blocks(path, cleaning, size)
    reference = JsonlReader(path, max_line_bytes=1024)
    definition = line_by_line(path, cleaning)
    list(reference)

    assert verdicts == definition
    assert {type(verdict) for _number, verdict, _text in verdicts} == {Drop, bytes}
    assert (reader.lines, reader.blank_lines, reader.size_bytes) == (10, 2, len(content))
    assert (reference.lines, reference.blank_lines) == (10, 2)
    assert reader.sha256 == hashlib.sha256(content).hexdigest()
