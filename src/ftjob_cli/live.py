"""`ftjob local`'s view of the trainer's output: human lines, and a progress bar per stage.

The trainer writes what a pod writes (human log lines, `FTJOB_PROGRESS` records for the operator,
`FTJOB_TASK` records for bars). `TrainerOutput` turns each line into what to show (pure); a sink shows it:
`RichSink` draws bars in a terminal, `PlainSink` prints plain lines where there is no terminal (CI logs,
a pipe), so nothing is lost to carriage returns. `--verbose` passes every line through unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol, TextIO

from ftjob.contract import ProgressRecord
from ftjob.task_progress import TaskRecord, parse_progress_line, parse_task_line

from .logtext import HumanLines

if TYPE_CHECKING:
    from rich.progress import Task, TaskID

NOISE: Final = (
    # transformers' optional `kernels` package fetches compiled GPU kernels from the Hub at run time; a
    # trainer has no use for it (no CUDA here, and a pod pins its dependencies and may have no network),
    # and the reference implementation it falls back to is correct. It says so on every CPU run.
    re.compile(r"falling back to its reference PyTorch implementation because `kernels` is not installed"),
    re.compile(r"\bkernels\b.*(not installed|is not available)", re.IGNORECASE),
    # Python's warnings module prints the warning, then the source line it points at: both go.
    re.compile(r"^\s+warnings\.warn\("),
)
"""Library output that does not concern the user of `ftjob local` (`--verbose` shows it)."""


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Bar:
    key: str
    """Stage, or stage/task: one bar each."""
    description: str
    done: int
    total: int
    """0: unknown (a spinner)."""
    detail: str = ""


@dataclass(frozen=True)
class EndBars:
    """A new stage began: the bars of the previous ones are finished."""


Shown = Text | Bar | EndBars


@dataclass
class TrainerOutput:
    """Line in, things to show out (pure, apart from its memory of the stage)."""

    verbose: bool = False
    stage: str | None = None
    _lines: HumanLines = field(default_factory=HumanLines)

    def feed(self, line: str) -> list[Shown]:
        line = line.rstrip("\n")
        if self.verbose:
            return [Text(line)]
        progress = parse_progress_line(line)
        if progress is not None:
            return self._progress(progress)
        task = parse_task_line(line)
        if task is not None:
            return [_task_bar(task)]
        if any(p.search(line) for p in NOISE):
            return []
        return [Text(kept) for kept in self._lines.feed(line)]

    def flush(self) -> list[Shown]:
        return [Text(kept) for kept in self._lines.flush()]

    def _progress(self, record: ProgressRecord) -> list[Shown]:
        out: list[Shown] = []
        if record.stage != self.stage:
            out += [*self.flush(), EndBars()]
            self.stage = record.stage
            if record.stage not in ("training", "done"):
                out.append(Bar(record.stage, record.stage, 0, 0))  # a spinner: these stages have no total
        if record.stage == "training" and record.total_steps:
            out.append(Bar("training", "training", record.step, record.total_steps, _training_detail(record)))
        return out


def _task_bar(task: TaskRecord) -> Bar:
    return Bar(f"{task.stage}/{task.task}", f"{task.stage}: {task.task}", task.done, task.total, task.unit)


def _training_detail(record: ProgressRecord) -> str:
    parts = []
    if record.loss is not None:
        parts.append(f"loss {record.loss:.4f}")
    if record.tokens_per_second is not None:
        parts.append(f"{record.tokens_per_second:.0f} tok/s")
    return " | ".join(parts)


class Sink(Protocol):
    def show(self, item: Shown) -> None: ...

    def close(self) -> None: ...


@dataclass
class PlainSink:
    """No terminal: human lines as they are; a bar becomes a line when it starts, at each quarter, and when
    it completes (training already prints a line per logging step, so its bar adds nothing here)."""

    out: TextIO
    _quarters: dict[str, int] = field(default_factory=dict)

    def show(self, item: Shown) -> None:
        if isinstance(item, Text):
            self.out.write(item.text + "\n")
        elif isinstance(item, Bar) and item.key != "training" and item.total:
            quarter = 4 * item.done // item.total
            if self._quarters.get(item.key) != quarter:
                self._quarters[item.key] = quarter
                unit = f" {item.detail}" if item.detail else ""
                self.out.write(f"[{item.description}] {item.done}/{item.total}{unit}\n")
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


class RichSink:
    """A terminal: lines scroll above a block of bars, one per stage and task; finished bars stay."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(file=out, highlight=False, soft_wrap=True)
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description:<34}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[count]:>7}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[detail]}"),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.progress.start()

    def show(self, item: Shown) -> None:
        if isinstance(item, Text):
            self.progress.console.print(item.text, markup=False)
        elif isinstance(item, EndBars):
            self._finish_all()
        elif isinstance(item, Bar):
            count, detail = _count(item), item.detail if item.total else ""
            task_id = self.tasks.get(item.key)
            if task_id is None:
                task_id = self.progress.add_task(
                    item.description, total=item.total or None, count=count, detail=detail, eta=""
                )
                self.tasks[item.key] = task_id
            self.progress.update(
                task_id, completed=item.done, total=item.total or None, count=count, detail=detail
            )
            self.progress.update(task_id, eta=_eta(self._task(task_id)))

    def _task(self, task_id: TaskID) -> Task:
        return next(t for t in self.progress.tasks if t.id == task_id)

    def _finish_all(self) -> None:
        for task_id in self.tasks.values():
            task = self._task(task_id)
            if task.total is None:  # a stage without a total: done is done
                self.progress.update(task_id, total=1, completed=1)
            self.progress.update(task_id, eta="")
            self.progress.stop_task(task_id)
        self.tasks.clear()

    def close(self) -> None:
        self._finish_all()
        self.progress.stop()


def _count(bar: Bar) -> str:
    return f"{bar.done}/{bar.total}" if bar.total else ""


def _eta(task: Task) -> str:
    remaining = task.time_remaining
    if task.total is None or remaining is None or task.finished:
        return ""
    minutes, seconds = divmod(int(remaining), 60)
    return f"eta {minutes}:{seconds:02d}"


def make_sink(out: TextIO, *, verbose: bool) -> Sink:
    if out.isatty() and not verbose:
        return RichSink(out)
    return PlainSink(out)
