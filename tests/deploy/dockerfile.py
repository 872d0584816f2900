"""Read a Dockerfile and run its steps without a Docker engine, the way a build would.

`parse` turns the file into stages of instructions. `LocalBuild` runs them on this machine:
every stage shares one folder that stands for the image's root (absolute paths in WORKDIR, ENV
values and COPY are placed under it), ARG and ENV become the environment of each RUN, COPY takes
files from the build context as filtered by .dockerignore, and RUN runs in the stage's SHELL
(a caller may keep a RUN from running here, e.g. one that adds a user to the system).
What it cannot stand in for is the base image itself: this machine (Debian 12, Python 3.11) plays
the part of the default CPU base, python:3.11-slim-bookworm.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str  # the rest of the (joined) line
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for the shell form."""
        text = self.arguments.strip()
        if text.startswith("["):
            value = json.loads(text)
            assert isinstance(value, list) and all(isinstance(v, str) for v in value)
            return value
        return None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    global_args: list[Instruction]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def global_arg_defaults(self) -> dict[str, str]:
        return dict(_arg(i) for i in self.global_args)


def parse(text: str) -> Dockerfile:
    """Logical lines (continuations joined, comments dropped) split into stages."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments (parser directives included) and blank lines
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].rstrip())
            continue
        pending.append(stripped)
        joined = " ".join(part for part in pending if part)
        pending = []
        keyword, _, arguments = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    assert not pending, "the Dockerfile ends inside a continued line"

    global_args: list[Instruction] = []
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {instruction.line}: only ARG before FROM"
            global_args.append(instruction)
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


def _arg(instruction: Instruction) -> tuple[str, str]:
    name, _, default = instruction.arguments.partition("=")
    return name.strip(), default.strip()


def expand(text: str, variables: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: variables.get(m.group(1) or m.group(2), ""), text)


class DockerIgnore:
    """The build context as .dockerignore filters it: the last pattern that matches a path or
    one of its parent folders decides, `!` puts a path back, `**` spans folders."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = line.lstrip("!").strip().strip("/")
            self.rules.append((include, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return f"^{out}$"

    def excluded(self, relative: str) -> bool:
        parts = relative.strip("/").split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for include, regex in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                verdict = not include
        return verdict


class LocalBuild:
    """Run a Dockerfile's stages here. `root` stands for / in every stage."""

    def __init__(
        self,
        dockerfile: Dockerfile,
        context: Path,
        root: Path,
        build_args: dict[str, str] | None = None,
        base_environment: dict[str, str] | None = None,
        run_timeout_s: float = 300.0,
        skip_run: Callable[[Instruction], bool] = lambda instruction: False,
    ) -> None:
        self.dockerfile = dockerfile
        self.context = context
        self.root = root
        self.build_args = build_args or {}
        self.base_environment = dict(os.environ if base_environment is None else base_environment)
        self.run_timeout_s = run_timeout_s
        self.skip_run = skip_run
        ignore = context / ".dockerignore"
        self.ignore = DockerIgnore(ignore.read_text() if ignore.exists() else "")
        self.environments: dict[str, dict[str, str]] = {}
        self.workdirs: dict[str, Path] = {}
        self.log: list[str] = []

    def path(self, image_path: str) -> Path:
        """Where an absolute path of the image lies here."""
        assert image_path.startswith("/"), image_path
        return self.root / image_path.lstrip("/")

    def _map_value(self, value: str) -> str:
        """Place the absolute paths written in an ENV value under root (PATH-like lists too);
        variables are expanded afterwards, so $PATH keeps this machine's folders."""
        return ":".join(
            str(self.path(part)) if part.startswith("/") else part for part in value.split(":")
        )

    def build(self, stage_name: str | None = None) -> dict[str, str]:
        """Run the stage (the final one by default) and the stages it starts from; return its
        environment."""
        stage = self.dockerfile.final if stage_name is None else self.dockerfile.stage(stage_name)
        return self._run_stage(stage)

    def _run_stage(self, stage: Stage) -> dict[str, str]:
        key = stage.name or "<final>"
        if key in self.environments:
            return self.environments[key]
        global_args = {**self.dockerfile.global_arg_defaults(), **self.build_args}
        base = expand(stage.base, global_args)
        names = {s.name for s in self.dockerfile.stages if s.name}
        if base in names:
            environment = dict(self._run_stage(self.dockerfile.stage(base)))
            workdir = self.workdirs[base]
        else:
            environment = dict(self.base_environment)
            environment.pop("PYTHONPATH", None)  # an image has none; pytest's must not leak
            workdir = self.root
        arguments: dict[str, str] = {}
        shell = ["/bin/sh", "-c"]
        for instruction in stage.instructions:
            variables = {**environment, **arguments}
            if instruction.keyword == "ARG":
                name, default = _arg(instruction)
                arguments[name] = self.build_args.get(name, default or global_args.get(name, ""))
            elif instruction.keyword == "ENV":
                for item in shlex.split(instruction.arguments):
                    name, _, value = item.partition("=")
                    environment[name] = expand(self._map_value(value), variables)
                    variables[name] = environment[name]
            elif instruction.keyword == "WORKDIR":
                workdir = self.path(expand(instruction.arguments, variables))
                workdir.mkdir(parents=True, exist_ok=True)
            elif instruction.keyword == "SHELL":
                shell = instruction.exec_form() or shell
            elif instruction.keyword == "COPY":
                self._copy(instruction, workdir)
            elif instruction.keyword == "RUN" and not self.skip_run(instruction):
                self._run(instruction, shell, workdir, {**environment, **arguments})
        self.environments[key] = environment
        self.workdirs[key] = workdir
        return environment

    def _copy(self, instruction: Instruction, workdir: Path) -> None:
        words = instruction.arguments.split()
        from_stage = None
        while words[0].startswith("--"):
            option = words.pop(0)
            if option.startswith("--from="):
                from_stage = option.split("=", 1)[1]
        *sources, destination = words
        target = self.path(destination) if destination.startswith("/") else workdir / destination
        for source in sources:
            if from_stage is not None:
                # BuildKit builds the stage copied from; every stage shares root here, so its
                # files are then in place already.
                self._run_stage(self.dockerfile.stage(from_stage))
                assert self.path(source).exists(), f"line {instruction.line}: {source} missing"
                continue
            origin = self.context / source
            relative = origin.relative_to(self.context).as_posix()
            assert not self.ignore.excluded(relative), (
                f"line {instruction.line}: .dockerignore leaves {source} out of the context"
            )
            if origin.is_dir():
                self._copy_tree(origin, target)  # a folder's contents, as Docker does
            else:
                into = target / origin.name if destination.endswith("/") else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into)

    def _copy_tree(self, origin: Path, target: Path) -> None:
        for path in sorted(origin.rglob("*")):
            relative = path.relative_to(self.context).as_posix()
            if path.is_dir() or self.ignore.excluded(relative):
                continue
            into = target / path.relative_to(origin)
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, into)

    def _run(
        self, instruction: Instruction, shell: list[str], workdir: Path, env: dict[str, str]
    ) -> None:
        command = instruction.exec_form() or [*shell, instruction.arguments]
        result = subprocess.run(
            command,
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=self.run_timeout_s,
        )
        self.log.append(f"RUN (line {instruction.line}) exit {result.returncode}\n{result.stdout}")
        assert result.returncode == 0, (
            f"RUN at line {instruction.line} failed ({result.returncode}):\n{result.stdout}"
        )

    def image_command(self, argv: list[str], environment: dict[str, str]) -> list[str]:
        """An exec-form command of the image as it runs here: the program looked up on the
        image's PATH, absolute path arguments placed under root."""
        program = argv[0]
        if "/" not in program:
            found = shutil.which(program, path=environment.get("PATH"))
            assert found, f"{program} is not on the image's PATH"
            program = found
        else:
            program = str(self.path(program))
        return [program] + [str(self.path(a)) if a.startswith("/") else a for a in argv[1:]]
