"""CPU benchmark of the data gate: the project's checks against the guides' `clean_dataset`, on 200,000
generated chat lines (about 106 MB), each variant in its own subprocess so that its peak RSS is its own.

    .venv/bin/python bench/data_gate.py --out bench/results/data-gate

Rows (all in one run, repeated `--repeats` times, interleaved, the median kept):

- `guides`: the two guides' recipe, restated: read the whole file into a list with `json.loads`, then
  drop examples without a user or an assistant turn, examples whose first user message was seen before,
  and examples whose first answer has fewer than 10 words.
- `project-defaults`: `prepare_data` with every default check on (near-duplicates included), writing the
  cleaned, split files as the trainer does; as the trainer runs it, blocks checked in two threads when
  two CPUs are usable (`batch.worker_count`).
- `project-no-near-dups`: the same with `cleaning.dropNearDuplicates: false`.
- `project-defaults-1-thread`: defaults with everything in one thread (`FTJOB_DATA_WORKERS=1`), to show
  what the second core adds.
- with `--before DIR` (a copy of an earlier tree, e.g. `git archive HEAD src trainer_image | tar -x -C
  DIR`): `before-defaults` and `before-no-near-dups`, the same two runs with that tree's code, in the same
  interleaved run.

Writes `data-gate.md` (the table) and `data-gate.json` (every measurement) to `--out`. The lines are
generated from a fixed seed: the same file on every machine. Absolute numbers depend on the CPU and on
what else runs on it; the ratios to `guides`, measured in the same run, are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LINES = 200_000
SEED = 15
VARIANTS = ("guides", "project-defaults", "project-no-near-dups", "project-defaults-1-thread")
BEFORE_VARIANTS = ("before-defaults", "before-no-near-dups")
TITLES = {
    "guides": "the guides' `clean_dataset` (load all, `json.loads`, role/dup/short checks)",
    "project-defaults": "the project's checks, defaults (near-duplicates on)",
    "project-no-near-dups": "the project's checks, near-duplicates off",
    "project-defaults-1-thread": "the project's checks, defaults, one thread",
    "before-defaults": "before (`--before` tree): the project's checks, defaults",
    "before-no-near-dups": "before (`--before` tree): the project's checks, near-duplicates off",
}

# --- The data -----------------------------------------------------------------------------------------

_SYSTEMS = (
    "You are a helpful assistant for the ACME support desk. Answer briefly, politely and accurately.",
    "You are a careful technical writer. Explain the steps in order and name every setting you mention.",
)


def _vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(12_000)}
    return sorted(words)


def generate(path: Path, lines: int = LINES, seed: int = SEED) -> None:
    """Chat lines as fine-tuning sets look: mostly distinct single- and multi-turn conversations, with a
    few percent of exact copies (case and spacing changed), one-word edits, short answers, missing turns
    and non-ASCII text. Every line is valid JSON, so that the guides' recipe can read the file."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(vocabulary))]
    cumulative: list[float] = []
    total = 0.0
    for weight in weights:
        total += weight
        cumulative.append(total)

    def sentence(words: int) -> str:
        chosen = rng.choices(vocabulary, cum_weights=cumulative, k=words)
        chosen[0] = chosen[0].capitalize()
        return " ".join(chosen) + rng.choice(".?!")

    def paragraph(words: int) -> str:
        parts, left = [], words
        while left > 0:
            size = min(left, rng.randint(6, 16))
            parts.append(sentence(size))
            left -= size
        return " ".join(parts)

    recent: list[list[dict[str, str]]] = []
    with path.open("w", encoding="utf-8") as sink:
        for _ in range(lines):
            roll = rng.random()
            if recent and roll < 0.03:
                # An exact duplicate, as far as the checks go: same text, other case and spacing.
                messages = [
                    {"role": m["role"], "content": "  " + m["content"].upper().replace(" ", "  ")}
                    for m in rng.choice(recent)
                ]
            elif recent and roll < 0.06:
                # A near duplicate: one word of the answer replaced.
                messages = [dict(m) for m in rng.choice(recent)]
                words = messages[-1]["content"].split()
                words[rng.randrange(len(words))] = rng.choice(vocabulary)
                messages[-1]["content"] = " ".join(words)
            else:
                messages = []
                if rng.random() < 0.5:
                    messages.append({"role": "system", "content": rng.choice(_SYSTEMS)})
                for _turn in range(1 if rng.random() < 0.85 else 2):
                    messages.append({"role": "user", "content": paragraph(rng.randint(5, 20))})
                    messages.append({"role": "assistant", "content": paragraph(rng.randint(25, 50))})
                if rng.random() < 0.02:
                    messages[-1]["content"] += " Voilà, c'est réglé: ça marche déjà — 完成."
                if rng.random() < 0.01:
                    messages[-1]["content"] = "Yes."
                if rng.random() < 0.005:
                    messages = [m for m in messages if m["role"] != "assistant"]
                recent.append(messages)
                if len(recent) > 2000:
                    recent.pop(rng.randrange(len(recent)))
            sink.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


# --- The variants -------------------------------------------------------------------------------------


def guides_clean(path: Path) -> int:
    """The guides' `clean_dataset`, in our words: everything in memory, first user turn as the dedup key,
    at least 10 words in the first answer. Returns the number of examples kept."""
    with path.open(encoding="utf-8") as stream:
        records = [json.loads(text) for text in stream]
    kept: list[dict[str, Any]] = []
    prompts: set[str] = set()
    for record in records:
        turns = record.get("messages", [])
        roles = [turn["role"] for turn in turns]
        if "user" not in roles or "assistant" not in roles:
            continue
        prompt = next(turn["content"] for turn in turns if turn["role"] == "user")
        if prompt in prompts:
            continue
        prompts.add(prompt)
        answer = next(turn["content"] for turn in turns if turn["role"] == "assistant")
        if len(answer.split()) < 10:
            continue
        kept.append(record)
    return len(kept)


def project_clean(path: Path, *, near_duplicates: bool) -> tuple[int, dict[str, int]]:
    from ftjob.api.data import CleaningSpec, DataSpec
    from ftjob_trainer.data import prepare_data

    spec = DataSpec(train_uri=f"file://{path}", cleaning=CleaningSpec(drop_near_duplicates=near_duplicates))
    with tempfile.TemporaryDirectory() as out:
        prepared = prepare_data(path, None, spec, seed=0, max_seq_length=2048, out_dir=Path(out))
    return prepared.train_examples + prepared.validation_examples, {
        str(reason): count for reason, count in prepared.report.dropped_by_reason().items()
    }


def run_variant(variant: str, path: Path) -> dict[str, Any]:
    """In the child: run one variant once, and say how long it took and how much memory it held."""
    project = variant.startswith(("project", "before"))
    if project:
        # Imports are not part of the gate's time (the trainer has them loaded already).
        import ftjob_trainer.data  # noqa: F401
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = self_usage.ru_utime + self_usage.ru_stime
    started = time.perf_counter()
    drops: dict[str, int] = {}
    workers = 0
    if project:
        from ftjob_trainer.data.batch import worker_count

        workers = worker_count(path.stat().st_size)
    if variant == "guides":
        kept = guides_clean(path)
    else:
        kept, drops = project_clean(path, near_duplicates=not variant.endswith("no-near-dups"))
    seconds = time.perf_counter() - started
    cpu_seconds = sum(
        usage.ru_utime + usage.ru_stime - base
        for usage, base in (
            (resource.getrusage(resource.RUSAGE_SELF), cpu_before),
            (resource.getrusage(resource.RUSAGE_CHILDREN), 0.0),
        )
    )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    largest_worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "variant": variant,
        "workers": workers,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "kept": kept,
        "dropped": drops,
        # Linux reports KiB. The largest worker process's peak is added (each worker holds about as much).
        "peak_rss_bytes": (own + largest_worker) * 1024,
        "peak_rss_main_bytes": own * 1024,
    }


def measure(variant: str, path: Path, lines: int, before: Path | None = None) -> dict[str, Any]:
    """Run one variant in a fresh interpreter and read its measurements."""
    env = dict(os.environ)
    env.pop("FTJOB_DATA_WORKERS", None)
    if variant == "project-defaults-1-thread":
        env["FTJOB_DATA_WORKERS"] = "1"
    if variant.startswith("before"):
        if before is None:
            raise ValueError(f"{variant} needs --before")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(before / "trainer_image"), str(before / "src"), env.get("PYTHONPATH", "")]
        )
    result = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--file", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    record: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    record["lines_per_second"] = lines / record["seconds"]
    # CPU time (this process and its workers, worker start-up included): less at the mercy of what
    # else runs on the machine than the wall clock.
    record["lines_per_cpu_second"] = lines / record["cpu_seconds"]
    return record


def _median(records: list[dict[str, Any]]) -> dict[str, Any]:
    middle = statistics.median(record["seconds"] for record in records)
    return min(records, key=lambda record: abs(record["seconds"] - middle))


def index_memory(path: Path, examples: int) -> dict[str, Any]:
    """In the child: the bytes the dedup index holds per kept example (exact keys, signatures, LSH
    buckets, at the default threshold), measured with tracemalloc over the file's first `examples`
    lines (their distinct conversations)."""
    import tracemalloc

    from ftjob.api.data import CleaningSpec
    from ftjob_trainer.data.batch import BLOCK_BYTES, BatchChecker
    from ftjob_trainer.data.dedup import DedupIndex, Fingerprint
    from ftjob_trainer.data.reader import Block, JsonlReader

    checker = BatchChecker(CleaningSpec())
    results = []
    lines = 0
    for block in JsonlReader(path).blocks(BLOCK_BYTES):
        assert isinstance(block, Block)
        results.append(checker.check_block(block))
        lines += len(results[-1].numbers)
        if lines >= examples:
            break
    tracemalloc.start()
    index = DedupIndex(CleaningSpec().near_duplicate_threshold)
    before = tracemalloc.get_traced_memory()[0]
    kept = 0
    for result in results:
        assert result.signatures is not None and result.bands is not None
        for position in range(len(result.checked)):
            if position in result.content:
                continue
            print_ = Fingerprint(
                None,
                near=True,
                exact=int(result.exact[position]),
                signature=result.signatures[position],
                bands=result.bands[position].tolist(),
            )
            if index.find_exact(print_) is None and index.find_near(print_) is None:
                index.add(print_, kept + 1)
                kept += 1
    held = tracemalloc.get_traced_memory()[0] - before
    return {"kept": kept, "index_bytes": held, "bytes_per_kept_line": held / kept}


def table(rows: dict[str, dict[str, Any]], file_bytes: int, lines: int) -> str:
    guides = rows["guides"]["lines_per_second"]
    guides_cpu = rows["guides"]["lines_per_cpu_second"]
    out = [
        f"{lines:,} generated chat lines ({file_bytes / 1e6:.0f} MB), median of the repeats; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores.",
        "",
        "| | lines/s | vs guides | lines per CPU-second | vs guides | peak RSS | workers |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for variant, row in rows.items():
        workers = row.get("workers", 0)
        main_rss = row["peak_rss_main_bytes"] / 2**20
        worker_rss = (row["peak_rss_bytes"] - row["peak_rss_main_bytes"]) / 2**20
        out.append(
            f"| {TITLES[variant]} | {row['lines_per_second']:,.0f} | {row['lines_per_second'] / guides:.2f}x "
            f"| {row['lines_per_cpu_second']:,.0f} | {row['lines_per_cpu_second'] / guides_cpu:.2f}x "
            f"| {main_rss:.0f} MiB | "
            + (
                f"{workers} processes, each at most {worker_rss:.0f} MiB |"
                if workers > 1 and worker_rss >= 1
                else f"{workers} threads (in the process) |"
                if workers > 1 and variant.startswith("project")
                else "none |"
            )
        )
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/data-gate"))
    parser.add_argument("--lines", type=int, default=LINES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--file", type=Path, help="use this file instead of generating one")
    parser.add_argument("--before", type=Path, help="a copy of an earlier tree to run as `before-*`")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "index-memory":
        print(json.dumps(index_memory(args.file, min(args.lines, 100_000))))
        return 0
    if args.child:
        print(json.dumps(run_variant(args.child, args.file)))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    if args.before is not None:
        variants += [v for v in BEFORE_VARIANTS if v not in variants]
    with tempfile.TemporaryDirectory() as scratch:
        path = args.file or Path(scratch) / "chat.jsonl"
        if args.file is None:
            generate(path, args.lines)
        file_bytes = path.stat().st_size
        lines = sum(1 for _ in path.open("rb"))
        runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
        for repeat in range(args.repeats):
            for variant in variants:
                record = measure(variant, path, lines, args.before)
                runs[variant].append(record)
                print(
                    f"repeat {repeat + 1}: {variant}: {record['lines_per_second']:,.0f} lines/s, "
                    f"{record['peak_rss_bytes'] / 2**20:.0f} MiB, kept {record['kept']}",
                    flush=True,
                )
        memory = subprocess.run(
            [sys.executable, __file__, "--child", "index-memory", "--file", str(path), "--lines", str(lines)],
            capture_output=True,
            text=True,
            check=True,
        )
        index = json.loads(memory.stdout.strip().splitlines()[-1])
    rows = {variant: _median(records) for variant, records in runs.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = table(rows, file_bytes, lines) + (
        f"\nThe near-duplicate index holds {index['bytes_per_kept_line']:.0f} bytes per kept line "
        f"(tracemalloc, {index['kept']:,} kept lines, default threshold 0.9).\n"
    )
    (args.out / "data-gate.md").write_text(markdown, encoding="utf-8")
    summary = {
        "lines": lines,
        "file_bytes": file_bytes,
        "seed": SEED,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "median": rows,
        "index_memory": index,
        "runs": runs,
    }
    (args.out / "data-gate.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
