"""The packages' layers, read from the source: every import statement of every module, the lazy ones inside
functions and `TYPE_CHECKING` blocks included, and `importlib.import_module("...")` with a literal name.

    ftjob_cli                        the `ftjob` command, `ftjob local`, `make demo`   (src/ftjob_cli/)
    ftjob_operator   ftjob_trainer   the two images, neither knowing the other    (operator/, trainer_image/)
    ftjob                            the API, the contract, the schema                 (src/ftjob/)

A package imports only from itself and the layers below it. Both images install the shared package, so an
import that ran back up from it (as `ftjob.local_run` once imported the operator's renderer) would make the
API depend on the operator; and the operator image does not hold the trainer's package at all."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
HOMES: Final = {
    "ftjob": ROOT / "src" / "ftjob",
    "ftjob_cli": ROOT / "src" / "ftjob_cli",
    "ftjob_operator": ROOT / "operator" / "ftjob_operator",
    "ftjob_trainer": ROOT / "trainer_image" / "ftjob_trainer",
}
# Which of the project's packages each one may import.
ALLOWED: Final = {
    "ftjob": {"ftjob"},
    "ftjob_operator": {"ftjob", "ftjob_operator"},
    "ftjob_trainer": {"ftjob", "ftjob_trainer"},
    "ftjob_cli": {"ftjob", "ftjob_operator", "ftjob_trainer", "ftjob_cli"},
}
IMPORT_FUNCTIONS: Final = {"import_module", "__import__"}


def module_name(package: str, path: Path) -> str:
    parts = [package, *path.relative_to(HOMES[package]).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_in(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, the module `module`, wherever it stands."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:  # relative: to the module's package, or to the package itself in an __init__
                parts = module.split(".")
                base = parts[: len(parts) - node.level + is_package]
                name = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, name))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in IMPORT_FUNCTIONS and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def imports_of(package: str, path: Path) -> list[tuple[int, str]]:
    return imports_in(path.read_text(), module_name(package, path), is_package=path.name == "__init__.py")


def violations(package: str) -> list[str]:
    out: list[str] = []
    for path in sorted(HOMES[package].rglob("*.py")):
        for line, name in sorted(imports_of(package, path)):
            top = name.split(".")[0]
            if top in HOMES and top not in ALLOWED[package]:
                out.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    return out


@pytest.mark.parametrize("package", sorted(HOMES))
def test_imports_only_run_down(package: str) -> None:
    assert any(HOMES[package].rglob("*.py")), f"{HOMES[package]}: no modules"
    assert violations(package) == []


def test_the_reader_finds_every_kind_of_import() -> None:
    source = (
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from ..api import meta\n"
        "if TYPE_CHECKING:\n"
        "    from ftjob_trainer.data import DataReport\n"
        "def run() -> None:\n"
        "    from ftjob_operator.render import render_job\n"
        "    import ftjob_cli.main\n"
        "    importlib.import_module('ftjob_cli.live')\n"
    )
    names = [name for _, name in imports_in(source, "ftjob.schema.probe")]
    assert sorted(names) == sorted(
        [
            "importlib",
            "typing",
            "ftjob.schema",
            "ftjob.api",
            "ftjob_trainer.data",
            "ftjob_operator.render",
            "ftjob_cli.main",
            "ftjob_cli.live",
        ]
    )
    assert [name for _, name in imports_in("from . import x\n", "ftjob.api", is_package=True)] == [
        "ftjob.api"
    ]


def test_the_local_runner_renders_with_the_operator() -> None:
    """The upward import that used to sit in the shared package: `ftjob local` runs the pod the operator
    would render, with the operator's own `render_job`, imported when a run is planned (inside a function).
    It lives in the upper layer now, where it is allowed; and nothing of the shared package imports it."""
    names = {name for _, name in imports_of("ftjob_cli", HOMES["ftjob_cli"] / "local_run.py")}
    assert {"ftjob_operator.render", "ftjob_operator.settings"} <= names


def test_console_scripts_start_in_their_layer() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ftjob"] == scripts["kubectl-ftjob"] == "ftjob_cli.main:main"
    assert scripts["ftjob-operator"].startswith("ftjob_operator.")
    assert scripts["ftjob-train"].startswith("ftjob_trainer.")
