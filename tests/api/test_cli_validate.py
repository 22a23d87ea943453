"""`ftjob validate` and `ftjob generate --check`, run as the user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ftjob(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftjob_cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_examples_validate(tmp_path: Path) -> None:
    result = ftjob("validate", *sorted(str(p) for p in (ROOT / "examples").glob("*.yaml")))
    assert result.returncode == 0, result.stderr
    assert "FineTuneJob quickstart: valid" in result.stdout


def test_invalid_manifest_lists_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
apiVersion: ftjob.dev/v1alpha1
kind: FineTuneJob
metadata: {name: bad}
spec:
  baseModel: {uri: "hf://org/model"}
  data: {trainUri: "s3://bucket/train.jsonl"}
  output: {uri: "s3://bucket/out/"}
  peft: {r: 0, alpha: 32}
"""
    )
    result = ftjob("validate", str(bad))
    assert result.returncode == 1
    assert (
        'spec.baseModel.uri: must be hf://org/name@revision with the revision pinned (got "hf://org/model")'
        in result.stderr
    )
    assert "spec.peft.r: must be >= 1 (got 0)" in result.stderr


def test_unreadable_and_non_yaml_files_are_reported(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("spec: [unclosed\n")
    result = ftjob("validate", str(garbage), str(tmp_path / "missing.yaml"))
    assert result.returncode == 1
    assert "not valid YAML" in result.stderr
    assert "missing.yaml: cannot read" in result.stderr


def test_wrong_kind_is_reported(tmp_path: Path) -> None:
    other = tmp_path / "pod.yaml"
    other.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    result = ftjob("validate", str(other))
    assert result.returncode == 1
    assert "apiVersion/kind: must be ftjob.dev/v1alpha1 FineTuneJob (got v1 Pod)" in result.stderr


def test_generate_check_reports_drift(tmp_path: Path) -> None:
    assert ftjob("generate", "--check").returncode == 0
    result = ftjob("generate", "--check", "--root", str(tmp_path))
    assert result.returncode == 1
    assert "crds/finetunejobs.ftjob.dev.yaml: differs from a fresh generation" in result.stderr
