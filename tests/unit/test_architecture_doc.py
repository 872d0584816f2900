"""docs/architecture.md lists the hot path as `file:line` `function`: each must still be true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `path/to/file.py:123` or `:123` (the previous file), then optionally ` `Name` or `Class.name``
REFERENCE = re.compile(r"`((?:[\w-]+/)*[\w-]+\.py)?:(\d+)`(?: `([\w.]+)`)?")


def hot_path_references() -> list[tuple[str, int, str | None]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## The hot path", 1)[1].split("\n## ", 1)[0]
    references, current = [], None
    for match in REFERENCE.finditer(section):
        path, line, name = match.groups()
        current = path or current
        assert current is not None, f"{match.group(0)} names no file before it"
        references.append((current, int(line), name))
    return references


def test_the_hot_path_is_listed_with_every_step() -> None:
    files = {path for path, _, _ in hot_path_references()}
    for expected in (
        "server/grpc_api/servicer.py",
        "server/dataplane/plane.py",
        "batching/scheduler.py",
        "runtimes/onnx.py",
        "server/grpc_api/codec.py",
    ):
        assert expected in files


def test_each_reference_names_the_function_defined_on_its_line() -> None:
    wrong = []
    for path, line, name in hot_path_references():
        source = (ROOT / path).read_text().splitlines()
        text = source[line - 1] if line <= len(source) else ""
        if name is None:
            ok = re.match(r"\s*(async )?(def|class) ", text) is not None
        else:
            short = name.rsplit(".", 1)[-1]
            ok = re.match(rf"\s*(async )?(def|class) {re.escape(short)}\b", text) is not None
        if not ok:
            defined = [
                number
                for number, candidate in enumerate(source, 1)
                if name
                and re.match(rf"\s*(async )?def {re.escape(name.rsplit('.', 1)[-1])}\b", candidate)
            ]
            wrong.append(f"{path}:{line} {name}: line reads {text.strip()!r}; defined at {defined}")
    assert not wrong, "docs/architecture.md's hot path is out of date:\n" + "\n".join(wrong)
