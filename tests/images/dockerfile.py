"""A small Dockerfile reader: instructions with their arguments, stage by stage, ARG defaults resolved."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str
    """Upper-case: FROM, RUN, USER..."""
    args: str
    """Everything after the keyword, continuation lines joined, comments dropped."""

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT/CMD/VOLUME, or None for the shell form."""
        if not self.args.startswith("["):
            return None
        value = json.loads(self.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value


@dataclass
class Stage:
    base: str
    """The FROM image with the ARG defaults substituted."""
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for match in re.finditer(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', instruction.args):
                out[match[1]] = match[2].strip('"')
        return out


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def text_of(self, keyword: str) -> str:
        return "\n".join(i.args for stage in self.stages for i in stage.all(keyword))


def instructions(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if logical and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            logical += line[:-1].strip() + " "
            continue
        logical += line
        keyword, _, args = logical.strip().partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
        logical = ""
    assert not logical, "the Dockerfile ends inside a continued line"
    return out


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m[1], m[0]), value)


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions(path.read_text()):
        if instruction.keyword == "FROM":
            image, _, rest = instruction.args.partition(" ")
            name = rest.split()[-1] if rest.upper().startswith("AS ") else None
            stages.append(Stage(_substitute(image, global_args), name))
        elif not stages:
            assert instruction.keyword == "ARG", f"only ARG may precede FROM, got {instruction.keyword}"
            name, _, default = instruction.args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(instruction)
    assert stages, f"{path}: no FROM"
    return Dockerfile(global_args, stages)
