"""Exact and near-duplicate detection: realistic pairs, the estimate's accuracy, the LSH index missing
nothing the threshold asks for, and determinism across processes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ftjob.api.data import CleaningSpec, DataSpec
from ftjob_trainer.data import DataRejected, kernels, prepare_data
from ftjob_trainer.data.checks import Message
from ftjob_trainer.data.dedup import (
    MAX_BANDS,
    NUM_HASHES,
    DedupIndex,
    Fingerprint,
    exact_key,
    lsh_bands,
    minhash,
    minhash_of,
    shingle_hashes,
    similarity,
)

QUESTION = "How do I rotate the API keys for my production workspace without downtime?"
ANSWER = (
    "Create a second key in the Security tab of the workspace settings before you revoke the first one. "
    "Deploy the new key to every service that calls the API, watch the request log until traffic on the "
    "old key has stopped for at least an hour, and only then revoke the old key. Keys cannot be renewed "
    "in place, so running two valid keys side by side is what keeps the rotation free of downtime."
)
OTHER_ANSWER = (
    "API keys for production workspaces are managed by owners only. Ask an owner to open the billing "
    "page, confirm the plan allows additional keys, and request a temporary key from support if the "
    "limit is reached. Support answers within one business day and will expire the temporary key after "
    "thirty days, after which the regular limit applies again to the whole workspace."
)


def chat(user: str, assistant: str, system: str | None = None) -> tuple[Message, ...]:
    head = (Message("system", system),) if system else ()
    return (*head, Message("user", user), Message("assistant", assistant))


def true_jaccard(a: tuple[Message, ...], b: tuple[Message, ...]) -> float:
    left, right = shingle_hashes(a), shingle_hashes(b)
    return len(left & right) / len(left | right)


def index_of(*examples: tuple[Message, ...], threshold: float = 0.9) -> DedupIndex:
    index = DedupIndex(threshold)
    for number, example in enumerate(examples, start=1):
        index.add(Fingerprint(example, near=True), number)
    return index


def test_exact_key_ignores_case_and_whitespace_only() -> None:
    original = chat("What is LoRA?", "Low-rank adapters.")
    reformatted = chat("  what IS\tlora? ", "low-rank\n\nadapters.")
    reworded = chat("What is LoRA?", "Low rank adapters.")

    assert exact_key(original) == exact_key(reformatted)
    assert exact_key(original) != exact_key(reworded)
    assert exact_key(original) != exact_key(chat("Low-rank adapters.", "What is LoRA?"))


def test_one_word_edit_is_a_near_duplicate_at_0_9() -> None:
    original = chat(QUESTION, ANSWER)
    # Three edits: "Security", "an hour" (two words) and "Deploy"; the true similarity is about 0.79.
    three_edits = chat(
        QUESTION,
        ANSWER.replace("Security", "Access", 1).replace("an hour", "a day", 1).replace("Deploy", "Push", 1),
    )
    one_word = chat(QUESTION, ANSWER.replace("Security", "Access", 1))

    found = index_of(original).find_near(Fingerprint(one_word, near=True))

    assert true_jaccard(original, one_word) >= 0.9
    assert found is not None
    assert found.line == 1
    assert found.similarity >= 0.9
    # Three edits in an answer this long are too many for 0.9 but fine for 0.7. (The estimate of one
    # pair is one draw, about 0.05 either side of the truth: thresholds nearer 0.79 may go either way.)
    assert true_jaccard(original, three_edits) < 0.8
    assert index_of(original).find_near(Fingerprint(three_edits, near=True)) is None
    assert index_of(original, threshold=0.7).find_near(Fingerprint(three_edits, near=True)) is not None


def test_different_answer_to_the_same_question_is_not_a_near_duplicate() -> None:
    original, different = chat(QUESTION, ANSWER), chat(QUESTION, OTHER_ANSWER)

    assert index_of(original, threshold=0.5).find_near(Fingerprint(different, near=True)) is None
    assert similarity(minhash(original), minhash(different)) < 0.3


def test_short_questions_differing_in_their_key_word_are_not_near_duplicates() -> None:
    france = chat("What is the capital of France?", "The capital of France is Paris.")
    spain = chat("What is the capital of Spain?", "The capital of Spain is Madrid.")

    assert index_of(france, threshold=0.5).find_near(Fingerprint(spain, near=True)) is None


def test_shared_system_prompt_does_not_make_examples_alike() -> None:
    system = " ".join(["You are a careful assistant for the ACME support desk."] * 20)
    first = chat("How do I export my invoices?", "Use the Export button on the Billing page.", system)
    second = chat("Can I change my username?", "No, usernames are permanent once chosen.", system)
    same_pair_other_persona = chat(
        "How do I export my invoices?", "Use the Export button on the Billing page.", "Be terse."
    )

    index = index_of(first, threshold=0.5)

    assert index.find_near(Fingerprint(second, near=True)) is None
    assert index.find_exact(Fingerprint(same_pair_other_persona, near=True)) is None
    match = index.find_near(Fingerprint(same_pair_other_persona, near=True))
    assert match is not None
    assert match.similarity == 1.0


@pytest.mark.parametrize(("size", "overlap"), [(8, 4), (40, 20), (200, 150), (2000, 1000)])
def test_estimate_tracks_true_jaccard(size: int, overlap: int) -> None:
    # Sets of distinct hashes with a known overlap; small ones exercise the densification of empty bins.
    rng = random.Random(size)
    pool = [rng.getrandbits(64) for _ in range(2 * size - overlap)]
    left, right = pool[:size], pool[size - overlap :]
    expected = overlap / (2 * size - overlap)

    estimate = similarity(minhash_of(left), minhash_of(right))

    # Four standard deviations of a 64-value MinHash estimate.
    assert abs(estimate - expected) <= 4 * (expected * (1 - expected) / NUM_HASHES) ** 0.5


def test_minhash_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="empty set"):
        minhash_of([])


@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.95])
def test_index_finds_every_pair_the_estimate_puts_above_the_threshold(threshold: float) -> None:
    rng = random.Random(7)
    vocabulary = [f"term{i}" for i in range(500)]
    bases = [
        chat(" ".join(rng.choices(vocabulary, k=10)), " ".join(rng.choices(vocabulary, k=60)))
        for _ in range(40)
    ]
    index = index_of(*bases, threshold=threshold)
    signatures = [minhash(base) for base in bases]
    hits = misses = 0
    for base in bases:
        for edits in range(6):
            words = base[1].content.split()
            for _ in range(edits):
                words[rng.randrange(len(words))] = rng.choice(vocabulary)
            variant = chat(base[0].content, " ".join(words))
            print_ = Fingerprint(variant, near=True)
            assert print_.signature is not None
            scores = [similarity(print_.signature, other) for other in signatures]
            best = max(scores)
            found = index.find_near(print_)
            if best >= threshold:
                hits += 1
                assert found is not None
                assert (found.line, found.similarity) == (scores.index(best) + 1, best)
            else:
                misses += 1
                assert found is None
    # Both branches above ran often enough to mean something.
    assert min(hits, misses) >= 20


@pytest.mark.parametrize("threshold", [0.5, 0.77, 0.8, 0.9, 0.95, 1.0])
def test_bands_leave_a_clean_band_for_every_pair_at_the_threshold(threshold: float) -> None:
    bands, rows = lsh_bands(threshold)
    worst_mismatches = int((1 - threshold) * NUM_HASHES + 1e-9)

    assert bands * rows <= NUM_HASHES
    assert bands > worst_mismatches or bands == MAX_BANDS


def test_signature_is_the_same_in_another_process() -> None:
    # Python's str hash changes with PYTHONHASHSEED; dedup (and so the split) must not.
    example = chat(QUESTION, ANSWER)
    script = (
        "import json\n"
        "from ftjob_trainer.data.checks import Message\n"
        "from ftjob_trainer.data.dedup import exact_key, minhash\n"
        f"example = (Message('user', {QUESTION!r}), Message('assistant', {ANSWER!r}))\n"
        "print(json.dumps([exact_key(example), list(minhash(example))]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}

    output = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )

    assert json.loads(output.stdout) == [exact_key(example), list(minhash(example))]


def test_a_read_only_prebuilt_kernel_cache_is_copied_and_loaded(tmp_path: Path) -> None:
    # The trainer image compiles the kernel into FTJOB_NUMBA_CACHE at build time; a job's root filesystem
    # is read-only, and numba only uses a cache folder it can write to.
    prebuilt, scratch = tmp_path / "prebuilt", tmp_path / "tmp"
    scratch.mkdir()
    env = {
        key: value for key, value in os.environ.items() if key not in {"NUMBA_CACHE_DIR", "NUMBA_CPU_NAME"}
    } | {"FTJOB_NUMBA_CACHE": str(prebuilt), "NUMBA_CPU_NAME": "generic", "TMPDIR": str(scratch)}
    build = "from ftjob_trainer.data.kernels import warm_up; warm_up()"
    subprocess.run([sys.executable, "-c", build], env=env, check=True, timeout=300)
    built = sorted(path.name for path in prebuilt.rglob("*.nbi"))
    job = (
        "import os\n"
        "os.access = lambda path, mode: False  # as on the job's read-only root filesystem\n"
        "from ftjob_trainer.data import kernels\n"
        "kernels.warm_up()\n"
        "stats = [getattr(kernels, name).stats for name in kernels.ENTRY_POINTS]\n"
        "print(os.environ['NUMBA_CACHE_DIR'], *[f'{len(s.cache_hits)}/{len(s.cache_misses)}' for s in stats])\n"
    )

    output = subprocess.run(
        [sys.executable, "-c", job], env=env, check=True, timeout=300, capture_output=True, text=True
    )

    cache, *counts = output.stdout.split()
    assert Path(cache) == scratch / "ftjob-numba-cache"
    assert built and sorted(path.name for path in Path(cache).rglob("*.nbi")) == built
    # Every function called from Python was loaded from the cache, none compiled.
    assert counts == ["1/0"] * len(kernels.ENTRY_POINTS)


def test_the_warm_up_compiles_every_entry_point_with_the_gates_types(tmp_path: Path) -> None:
    # A job must not compile anything the image did not: after `warm_up`, a real run of the gate (split,
    # validation file, near-duplicates on and off) adds no new signature to any compiled function.
    kernels.warm_up()
    before = {name: len(getattr(kernels, name).signatures) for name in kernels.ENTRY_POINTS}
    rows = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"q {i} caf\u00e9"},
                    {"role": "assistant", "content": f"a\n{i}"},
                ]
            }
        )
        for i in range(40)
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(rows + rows[:3]) + "\n", encoding="utf-8")
    for near in (True, False):
        spec = DataSpec(train_uri="file:///x", cleaning=CleaningSpec(drop_near_duplicates=near))
        prepare_data(path, None, spec, seed=0, max_seq_length=8, out_dir=tmp_path / f"split-{near}")
        with pytest.raises(DataRejected):
            prepare_data(path, path, spec, seed=0, max_seq_length=8, out_dir=tmp_path / f"file-{near}")

    assert before == dict.fromkeys(kernels.ENTRY_POINTS, 1)
    assert {name: len(getattr(kernels, name).signatures) for name in kernels.ENTRY_POINTS} == before
