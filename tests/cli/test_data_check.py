"""`ftjob data check`: the trainer's data gate on local files, its exit codes and its two output formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ftjob_cli.data_check import EXIT_ACCEPTED, EXIT_CANNOT_CHECK, EXIT_REJECTED
from ftjob_cli.main import main


def chat(i: int, answer_words: int = 12) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"How do I configure feature number {i} of the product?"},
            {"role": "assistant", "content": " ".join(f"step{i}-{w}" for w in range(answer_words))},
        ]
    }


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """30 good lines, a broken one, a duplicate (other case and spacing), a missing answer."""
    rows = [json.dumps(chat(i)) for i in range(30)]
    rows.insert(5, '{"messages": [{"role": "user", "content": "cut off')
    rows.insert(
        12,
        json.dumps(chat(3))
        .upper()
        .replace("MESSAGES", "messages")
        .replace("ROLE", "role")
        .replace("CONTENT", "content")
        .replace('"USER"', '"user"')
        .replace('"ASSISTANT"', '"assistant"'),
    )
    rows.append(json.dumps({"messages": [{"role": "user", "content": "Anyone there?"}]}))
    return write(tmp_path / "train.jsonl", rows)


def test_accepted_data_prints_the_report_and_exits_0(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "check", str(mixed)])

    out = capsys.readouterr().out
    assert code == EXIT_ACCEPTED == 0
    assert "# Data report" in out and "Rejected" not in out
    assert "### train: `invalidJson` (1)" in out and "- line 6:" in out
    assert "### train: `duplicate` (1)" in out and "- line 13: same as line 4" in out
    assert "### train: `missingTurn` (1)" in out


def test_json_output_is_the_trainers_report(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "check", str(mixed), "--output-format", "json"])

    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["error"] is None
    assert report["trainExamples"] + report["validationExamples"] == 30
    train = report["inputs"][0]
    assert (train["lines"], train["kept"]) == (33, 30)
    assert {reason: item["count"] for reason, item in train["dropped"].items()} == {
        "invalidJson": 1,
        "missingTurn": 1,
        "duplicate": 1,
    }


def test_rejected_data_exits_1_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write(tmp_path / "train.jsonl", [json.dumps(chat(i)) for i in range(4)] + ["not json"] * 3)

    code = main(["data", "check", str(train), "--output-format", "json"])

    report = json.loads(capsys.readouterr().out)
    assert code == EXIT_REJECTED == 1
    assert report["error"].startswith("only 3 usable training examples remain, fewer than minExamples 10")


def test_validation_file_and_job_settings_are_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = write(tmp_path / "train.jsonl", [json.dumps(chat(i)) for i in range(6)])
    validation = write(tmp_path / "val.jsonl", [json.dumps(chat(0)), json.dumps(chat(100))])
    job = tmp_path / "job.yaml"
    job.write_text(
        "apiVersion: ftjob.dev/v1alpha1\nkind: FineTuneJob\nmetadata: {name: demo}\nspec:\n"
        "  baseModel: {uri: 'hf://org/model@main'}\n"
        "  data: {trainUri: 's3://bucket/train.jsonl', minExamples: 5}\n"
        "  output: {uri: 's3://bucket/out/'}\n",
        encoding="utf-8",
    )

    code = main(
        [
            "data",
            "check",
            str(train),
            "--validation",
            str(validation),
            "--job",
            str(job),
            "--output-format",
            "json",
        ]
    )

    output = capsys.readouterr().out
    assert code == 0, output
    report = json.loads(output)
    assert (report["minExamples"], report["trainExamples"], report["validationExamples"]) == (5, 6, 1)
    assert report["inputs"][1]["dropped"]["overlapWithTrain"]["count"] == 1


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path / "absent.jsonl")]) == EXIT_CANNOT_CHECK == 2
    assert "no such file" in capsys.readouterr().err


def test_the_command_imports_no_torch(mixed: Path) -> None:
    script = (
        "import sys\nfrom ftjob_cli.main import main\n"
        f"code = main(['data', 'check', {str(mixed)!r}])\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print('HEAVY', heavy, code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)

    assert result.stdout.strip().splitlines()[-1] == "HEAVY [] 0"


def test_token_statistics_with_a_tokenizer_equal_the_trainers_count(
    mixed: Path, smollm2_tokenizer_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoTokenizer

    from ftjob_trainer.chat_masks import tokenize_chat

    code = main(
        ["data", "check", str(mixed), "--tokenizer", str(smollm2_tokenizer_path), "--output-format", "json"]
    )

    report = json.loads(capsys.readouterr().out)
    assert code == 0
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_path))
    expected = sorted(len(tokenize_chat(tokenizer, chat(i)["messages"]).input_ids) for i in range(30))
    counted = report["trainTokens"]["count"] + report["validationTokens"]["count"]
    assert counted == 30
    assert report["trainTokens"]["maxSeqLength"] == 2048
    assert min(report["trainTokens"]["min"], report["validationTokens"]["min"]) == expected[0]
    assert max(report["trainTokens"]["max"], report["validationTokens"]["max"]) == expected[-1]
    assert report["trainTokens"]["total"] + report["validationTokens"]["total"] == sum(expected)
