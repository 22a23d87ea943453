"""What `ftjob local` shows of the trainer's output: human lines, one per logging step, bars per stage;
records and library noise only with --verbose."""

from __future__ import annotations

import io
import sys
import textwrap
from pathlib import Path

from ftjob.contract import ProgressRecord, format_progress_line
from ftjob.task_progress import TaskRecord, format_task_line
from ftjob_cli.live import Bar, EndBars, PlainSink, RichSink, Text, TrainerOutput
from ftjob_cli.local_run import LocalPlan, execute

T = "2026-11-30T08:00:00Z"


def progress(stage: str, step: int = 0, total: int = 0, loss: float | None = None) -> str:
    record = ProgressRecord.model_validate(
        {"stage": stage, "step": step, "totalSteps": total, "loss": loss, "time": T}
    )
    return format_progress_line(record)


def task(done: int, total: int = 24) -> str:
    record = TaskRecord(
        stage="evaluating", task="tuned model's answers", done=done, total=total, unit="answers", time=T
    )
    return format_task_line(record)


TRAINER_OUTPUT = [
    progress("downloading"),
    "INFO stage: downloading",
    "WARNING kernels is not installed; install it with `pip install kernels` for faster kernels",
    progress("training", 0, 41),
    "INFO step 20/41 (48%) | loss 0.0113",  # heartbeat: the previous logging step's loss
    progress("training", 20, 41, 0.0046),
    "INFO step 20/41 (48%) | loss 0.0046",
    progress("training", 41, 41, 0.002),
    "INFO step 41/41 (100%) | loss 0.0020",
    progress("evaluating", 41, 41, 0.002),
    task(0),
    task(16),
    task(24),
    "INFO evaluation took loss 1.0 s",
]


def test_records_become_bars_and_each_step_is_one_line() -> None:
    view = TrainerOutput()
    shown = [item for line in TRAINER_OUTPUT for item in view.feed(line)] + view.flush()
    texts = [item.text for item in shown if isinstance(item, Text)]
    assert texts == [
        "INFO stage: downloading",
        "INFO step 20/41 (48%) | loss 0.0046",
        "INFO step 41/41 (100%) | loss 0.0020",
        "INFO evaluation took loss 1.0 s",
    ]
    bars = [item for item in shown if isinstance(item, Bar)]
    assert bars[0] == Bar("downloading", "downloading", 0, 0)  # a stage without a total: a spinner
    assert Bar("training", "training", 20, 41, "loss 0.0046") in bars
    assert bars[-1] == Bar(
        "evaluating/tuned model's answers", "evaluating: tuned model's answers", 24, 24, "answers"
    )
    assert sum(isinstance(item, EndBars) for item in shown) == 3  # downloading, training, evaluating


def test_verbose_shows_every_line_unchanged() -> None:
    view = TrainerOutput(verbose=True)
    shown = [item for line in TRAINER_OUTPUT for item in view.feed(line)]
    assert [item.text for item in shown if isinstance(item, Text)] == TRAINER_OUTPUT


def test_without_a_terminal_bars_are_plain_lines_at_each_quarter() -> None:
    out = io.StringIO()
    sink = PlainSink(out)
    view = TrainerOutput()
    for line in TRAINER_OUTPUT:
        for item in view.feed(line):
            sink.show(item)
    sink.close()
    text = out.getvalue()
    assert "\r" not in text and "FTJOB_" not in text and "kernels" not in text
    assert "[evaluating: tuned model's answers] 0/24 answers\n" in text
    assert "[evaluating: tuned model's answers] 24/24 answers\n" in text


def test_in_a_terminal_finished_bars_stay_on_screen() -> None:
    out = io.StringIO()
    sink = RichSink(out)
    view = TrainerOutput()
    for line in TRAINER_OUTPUT:
        for item in view.feed(line):
            sink.show(item)
    sink.close()
    text = out.getvalue()
    assert "INFO step 20/41 (48%) | loss 0.0046" in text and "loss 0.0113" not in text
    assert "41/41" in text and "24/24" in text and "FTJOB_" not in text


def test_execute_renders_a_real_process_output(tmp_path: Path) -> None:
    script = tmp_path / "trainer.py"
    lines = "\n".join(f"print({line!r}, flush=True)" for line in TRAINER_OUTPUT)
    script.write_text(
        textwrap.dedent(
            """
            import sys
            print("a warning on stderr", file=sys.stderr, flush=True)
            """
        )
        + lines
        + '\nopen(sys.argv[1], \'w\').write(\'{"outcome": "Succeeded", "reason": "TrainingSucceeded"}\')\n'
    )
    termination = tmp_path / "termination-log"
    plan = LocalPlan(
        job={},
        command=[sys.executable, str(script), str(termination)],
        env={"PATH": "/usr/bin:/bin"},
        run_dir=tmp_path,
        termination_log=termination,
    )
    out = io.StringIO()
    result = execute(plan, out)
    assert result.exit_code == 0 and result.summary is not None and result.summary.outcome == "Succeeded"
    text = out.getvalue()
    assert "a warning on stderr" in text and "FTJOB_PROGRESS" not in text
    assert "INFO step 41/41 (100%) | loss 0.0020" in text

    verbose = io.StringIO()
    execute(plan, verbose, verbose=True)
    assert "FTJOB_PROGRESS" in verbose.getvalue()
