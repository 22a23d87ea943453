"""The compiled paths of the data gate against their definitions: the block verdicts (`kernels.
block_verdicts`) against `DedupIndex`'s one-by-one Python methods, the raw-line scanner (`kernels.
scan_block`) against msgspec's decoding and `_segments`, and the batched split selection against
`validation_flags`."""

from __future__ import annotations

import json
import random
import typing
from typing import Any

import numpy as np
import pytest

from ftjob.api.data import CleaningSpec
from ftjob_trainer.data import batch, kernels, split
from ftjob_trainer.data.batch import BatchChecker
from ftjob_trainer.data.checks import Message, decode_chat_lines
from ftjob_trainer.data.dedup import MAX_BUCKET, NUM_HASHES, DedupIndex, Fingerprint, Signer
from ftjob_trainer.data.reader import Block

# --- Verdicts -------------------------------------------------------------------------------------------


def synthetic(rng: np.random.Generator, count: int) -> tuple[Any, Any]:
    """Exact keys and signatures with every kind of match: exact repeats, near copies (a few values
    changed), and far more than `MAX_BUCKET` dissimilar examples sharing their first band."""
    exact = rng.integers(0, 2**63, size=count, dtype=np.uint64)
    signatures = rng.integers(0, 2**32 - 1, size=(count, NUM_HASHES), dtype=np.uint32)
    signatures[: count // 2, :9] = 7  # one crowded bucket (band 0 at threshold 0.9: 9 rows)
    for row in range(count // 2, count):
        kind = row % 5
        source = int(rng.integers(0, row))
        if kind == 0:
            exact[row] = exact[source]
        elif kind in (1, 2):
            signatures[row] = signatures[source]
            changed = rng.choice(NUM_HASHES, size=int(rng.integers(0, 10)), replace=False)
            signatures[row, changed] += 1
    return exact, signatures


def compiled_verdicts(
    index: DedupIndex, reference: DedupIndex | None, exact: Any, signatures: Any, content: Any, lines: Any
) -> tuple[Any, ...]:
    bands = index.signer.band_keys(signatures)
    index.reserve(len(exact))
    counts = index.counts()
    result = kernels.block_verdicts(
        exact,
        signatures,
        bands,
        content,
        lines,
        index.arrays(),
        counts,
        reference.arrays() if reference is not None else None,
        band_bits=index.band_bits,
        threshold=index.threshold,
        check_exact=True,
        near=True,
    )
    index.set_counts(counts)
    return tuple(part.tolist() for part in result)


def python_verdicts(
    index: DedupIndex, reference: DedupIndex | None, exact: Any, signatures: Any, content: Any, lines: Any
) -> tuple[Any, ...]:
    codes, matched, equal = [], [], []
    for position in range(len(exact)):
        print_ = Fingerprint(None, near=True, exact=int(exact[position]), signature=signatures[position])
        found: tuple[int, Any] = (kernels.KEPT, None)
        if match := index.find_exact(print_):
            found = (kernels.DUPLICATE, match)
        elif match := index.find_near(print_):
            found = (kernels.NEAR_DUPLICATE, match)
        elif content[position]:
            found = (kernels.CONTENT, None)
        elif reference is not None and (match := reference.find_exact(print_)):
            found = (kernels.OVERLAP_EXACT, match)
        elif reference is not None and (match := reference.find_near(print_)):
            found = (kernels.OVERLAP_NEAR, match)
        codes.append(found[0])
        matched.append(found[1].line if found[1] else -1)
        equal.append(round(found[1].similarity * NUM_HASHES) if found[1] else NUM_HASHES)
        if found[0] == kernels.KEPT:
            index.add(print_, int(lines[position]))
    return codes, matched, equal


def test_block_verdicts_are_the_one_by_one_verdicts() -> None:
    rng = np.random.default_rng(4)
    exact, signatures = synthetic(rng, 600)
    content = rng.random(600) < 0.05
    lines = np.arange(1, 601, dtype=np.int64) * 2
    compiled_index, python_index = DedupIndex(0.9), DedupIndex(0.9)
    compiled, reference = [], []
    # In blocks, as the cleaner takes them, so that the index grows between calls.
    for start in range(0, 600, 150):
        part = slice(start, start + 150)
        args = (exact[part], signatures[part], content[part], lines[part])
        compiled.append(compiled_verdicts(compiled_index, None, *args))
        reference.append(python_verdicts(python_index, None, *args))

    assert compiled == reference
    codes = [code for block in compiled for code in block[0]]
    assert {kernels.KEPT, kernels.DUPLICATE, kernels.NEAR_DUPLICATE, kernels.CONTENT} <= set(codes)
    # The crowded bucket overflowed: both indexes remember its first `MAX_BUCKET` members.
    crowded = int(compiled_index.signer.band_keys(signatures[:1])[0, 0] | compiled_index.band_bits[0])
    for index in (compiled_index, python_index):
        first = index._buckets.get(crowded)
        assert first is not None
        assert sorted([first, *index._chain_of(index._more.get(crowded))]) == list(range(MAX_BUCKET))
    assert compiled_index._chained == python_index._chained
    assert len(compiled_index) == len(python_index) == codes.count(kernels.KEPT)

    # A second file against the first one's index: overlaps, in both ways.
    other_exact, other_signatures = exact[::3].copy(), signatures[::3].copy()
    other_signatures[::2, 20:23] += 1
    other_exact[::2] += np.uint64(1)
    args = (other_exact, other_signatures, np.zeros(len(other_exact), dtype=np.bool_), lines[::3].copy())
    overlap = compiled_verdicts(DedupIndex(0.9), compiled_index, *args)
    assert overlap == python_verdicts(DedupIndex(0.9), python_index, *args)
    assert {kernels.OVERLAP_EXACT, kernels.OVERLAP_NEAR} <= set(overlap[0])


def test_block_verdicts_would_see_a_different_index() -> None:
    # The control: with one example fewer in the index, the verdicts differ.
    rng = np.random.default_rng(5)
    exact, signatures = synthetic(rng, 400)
    content = np.zeros(400, dtype=np.bool_)
    lines = np.arange(1, 401, dtype=np.int64)
    full, missing = DedupIndex(0.9), DedupIndex(0.9)
    compiled_verdicts(full, None, exact[:300], signatures[:300], content[:300], lines[:300])
    compiled_verdicts(missing, None, exact[1:300], signatures[1:300], content[1:300], lines[1:300])
    rest = (exact[300:], signatures[300:], content[300:], lines[300:])

    assert compiled_verdicts(full, None, *rest) != compiled_verdicts(missing, None, *rest)


# --- Scanner ----------------------------------------------------------------------------------------------


LINES = [
    '{"messages": [{"role": "user", "content": "Plain words here"}, {"role": "assistant", "content": "Yes."}]}',
    '{"messages":[{"content":"Key order\\tand\\nescapes \\"quoted\\" \\\\ \\/ \\u0041\\u0000","role":"user"},'
    '{"role":"assistant","content":"A\\r\\nB \\b\\f"}]}',
    '{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "caf\\u00e9 ok"}, '
    '{"role": "assistant", "content": "d\u00e9j\u00e0 vu \\ud83d\\ude42 STRASSE stra\u00dfe"}]}',
    '{ "messages" : [ { "role" : "user" , "content" : " spaced  out " } , '
    '{ "role" : "assistant" , "content" : "fine" } ] }\r',
    '{"messages": [{"role": "user", "content": "{[,:]}"}, {"role": "assistant", "content": ""}]}',
]


def scanned_block(lines: list[str]) -> Any:
    data = "".join(line + "\n" for line in lines).encode()
    array_, starts, ends = batch.lines_of(data)
    sizes = np.array([len(line.messages) for line in decode_chat_lines(data)], dtype=np.int64)
    return data, batch._scan(data, array_, starts, ends, sizes)


def test_the_scanner_finds_the_messages_msgspec_decodes() -> None:
    data, scanned = scanned_block(LINES)
    decoded = [line.messages for line in decode_chat_lines(data)]
    messages = [message for conversation in decoded for message in conversation]

    assert scanned is not None
    assert scanned.counts.tolist() == [len(conversation) for conversation in decoded]
    assert scanned.role.tolist() == [kernels.ROLE_CODES[message.role] for message in messages]
    for index, message in enumerate(messages):
        assert bool(scanned.ascii[index]) == message.content.isascii()
        if message.content.isascii():
            text = scanned.buffer[scanned.start[index] : scanned.end[index]]
            assert text == message.content.encode()


@pytest.mark.parametrize(
    "line",
    [
        '{"messages": [{"role": "user", "content": "a", "content": "b"}, {"role": "assistant", "content": "c"}]}',
        '{"messages": [{"r\\u006fle": "user", "content": "a"}, {"role": "assistant", "content": "c"}]}',
        '{"messages": [{"role": "\\u0075ser", "content": "a"}, {"role": "assistant", "content": "c"}]}',
        '{"messages": [], "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}]}',
    ],
)
def test_the_scanner_steps_aside_for_lines_it_cannot_read_simply(line: str) -> None:
    _, scanned = scanned_block([LINES[0], line])
    _, plain = scanned_block([LINES[0], LINES[0]])

    assert scanned is None
    assert plain is not None


@pytest.mark.parametrize("near", [True, False])
def test_scanned_segments_hash_as_the_python_segments(near: bool) -> None:
    rng = random.Random(6)
    words = ["alpha", "BETA", "d\u00e9j\u00e0", "x_y", "a\tb", 'say "hi"', "back\\slash", "\u212a", "z" * 70]
    lines = list(LINES)
    for _ in range(200):
        conversation = [
            {"role": role, "content": " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))}
            for role in ("user", "assistant")
        ]
        lines.append(json.dumps({"messages": conversation}, ensure_ascii=rng.random() < 0.5))
    data, scanned = scanned_block(lines)
    conversations = [line.messages for line in decode_chat_lines(data)]
    signer = Signer(0.9)

    assert scanned is not None and not scanned.ascii.all() and scanned.ascii.any()
    fast = signer.hash_batch(conversations, near=near, scanned=scanned)
    slow = signer.hash_batch(conversations, near=near)
    assert fast.exact.tolist() == slow.exact.tolist()
    assert fast.segments.ascii == slow.segments.ascii
    if near:
        assert fast.signatures is not None and slow.signatures is not None
        assert fast.signatures.tolist() == slow.signatures.tolist()
    raw = (fast.segments.flags & kernels.RAW) != 0
    slow_raw = (slow.segments.flags & kernels.RAW) != 0
    assert fast.seg_words[raw].tolist() == slow.seg_words[slow_raw].tolist()
    assert fast.seg_stripped[raw].tolist() == slow.seg_stripped[slow_raw].tolist()


def test_blocks_checked_with_the_scanner_give_the_line_by_line_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from .test_data_batch import same_results

    lines = [*LINES, '{"messages": [{"role": "user", "content": "only a question"}]}', *LINES]
    data = "".join(line + "\n" for line in lines).encode()
    block = Block("unused", 0, len(data), 1, data)
    checker = BatchChecker(CleaningSpec(min_user_chars=3))
    found: list[bool] = []
    scan = batch._scan

    def spy(*args: Any) -> Any:
        found.append(True)
        return scan(*args)

    monkeypatch.setattr(batch, "_scan", spy)

    fast = checker.check_block(block)

    assert found and fast.drops and fast.content
    same_results(fast, checker._finish_slow(block, data.split(b"\n")[:-1]))


def test_a_message_in_the_checks_is_still_a_message() -> None:
    # The scanner's roles are the roles msgspec accepts, nothing else.
    assert set(kernels.ROLE_CODES) == set(typing.get_args(typing.get_type_hints(Message)["role"]))


# --- Split ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usable", "fraction", "seed"), [(0, 0.1, 1), (1, 0.1, 1), (2, 0.5, 3), (1000, 0.1, 7), (5001, 0.37, 0)]
)
def test_the_batched_selection_is_validation_flags(
    usable: int, fraction: float, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(split, "_DRAWS_PER_CALL", 64)
    selection = split.Selection(usable, fraction, seed)
    flags: list[bool] = []
    for size in (1, 7, 100, 1000, usable):
        flags += selection.next(max(min(size, usable - len(flags)), 0)).tolist()

    assert flags == list(split.validation_flags(usable, fraction, seed))
    assert sum(flags) == split.validation_size(usable, fraction)
    if usable >= 1000:
        assert flags != list(split.validation_flags(usable, fraction, seed + 1))


def test_the_scanner_writes_the_lines_as_msgspec_encodes_them() -> None:
    # Every control character escaped, quotes and backslashes, and a non-ASCII content spelt with
    # escapes, which the scanner leaves to msgspec (LINES[2]).
    controls = "".join(chr(code) for code in range(32)) + '"\\/\x7f'
    extra = json.dumps(
        {"messages": [{"role": "user", "content": controls}, {"role": "assistant", "content": "ok"}]}
    )
    lines = [*LINES, extra]
    data, scanned = scanned_block(lines)
    conversations = [line.messages for line in decode_chat_lines(data)]

    assert scanned is not None and scanned.written is not None
    assert scanned.written.written.tolist() == [True, True, False, True, True, True]
    everything = np.arange(len(lines), dtype=np.int64)
    records, ends = scanned.written.records_of(everything, conversations)
    expected, expected_ends = batch.encode_block(conversations)
    assert records == expected and ends.tolist() == expected_ends.tolist()
    # Some lines only (as after structural drops), all written by the scanner, and mixed.
    for chosen in ([0, 1, 3, 5], [1, 2, 4]):
        picked = np.array(chosen, dtype=np.int64)
        records, ends = scanned.written.records_of(picked, [conversations[i] for i in chosen])
        expected, expected_ends = batch.encode_block([conversations[i] for i in chosen])
        assert records == expected and ends.tolist() == expected_ends.tolist()
