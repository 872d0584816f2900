#!/usr/bin/env python3
"""Regenerate (or check) the Python stubs in server/_proto from proto/*.proto.

Usage, from anywhere (the script works relative to the repository root):

    python3 scripts/gen_proto.py           # rewrite server/_proto/*
    python3 scripts/gen_proto.py --check   # exit 1 if server/_proto is stale

Generated files: {grpc_service,model_config}_pb2.py, {grpc_service,model_config}_pb2.pyi,
grpc_service_pb2_grpc.py, plus the docstring-only server/_proto/__init__.py.

protoc runs with the virtual path mapping ``-Iserver/_proto=proto``: proto/X.proto is seen
as ``server/_proto/X.proto``, so the outputs land in server/_proto/ and import each other as
``from server._proto import ...`` with no hand-patching.

The stubs embed a protobuf runtime version check (runtime >= the generator's). grpcio-tools
is pinned to 1.80.0 (generates for protobuf >= 6.31.1) because tritonclient needs
protobuf < 7; newer grpcio-tools releases generate stubs that need protobuf 7.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = "proto"
PACKAGE_DIR = "server/_proto"
PROTO_FILES = ("model_config.proto", "grpc_service.proto")
GENERATED = (
    "model_config_pb2.py",
    "model_config_pb2.pyi",
    "grpc_service_pb2.py",
    "grpc_service_pb2.pyi",
    "grpc_service_pb2_grpc.py",
)
INIT_FILE = "__init__.py"
INIT_TEXT = '''"""Generated protobuf / gRPC stubs for the inference protocol. Do not edit.

Sources: proto/grpc_service.proto and proto/model_config.proto.
Regenerate with ``python3 scripts/gen_proto.py``; CI runs ``python3 scripts/gen_proto.py --check``.
"""
'''
REQUIRED_TOOLS_VERSION = "1.80.0"


def _tools_version() -> str | None:
    try:
        return metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:
        return None


def generate(out_root: Path) -> dict[str, bytes]:
    """Run protoc with output under out_root; return {file name: contents} of the package."""
    from grpc_tools import protoc  # imported late so --help works without grpcio-tools

    include_wkt = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PACKAGE_DIR}={PROTO_DIR}",
        f"-I{include_wkt}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(f"{PROTO_DIR}/{name}" for name in PROTO_FILES),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"gen_proto: protoc failed (exit {rc}); command: {' '.join(args)}")
    produced = out_root / PACKAGE_DIR
    files = {name: (produced / name).read_bytes() for name in GENERATED}
    files[INIT_FILE] = INIT_TEXT.encode()
    return files


def check(expected: dict[str, bytes], target: Path) -> list[str]:
    """Return a description of every difference between expected and the files in target."""
    problems: list[str] = []
    for name, want in expected.items():
        path = target / name
        rel = f"{PACKAGE_DIR}/{name}"
        if not path.is_file():
            problems.append(f"missing: {rel}")
            continue
        have = path.read_bytes()
        if have == want:
            continue
        diff = list(
            difflib.unified_diff(
                have.decode(errors="replace").splitlines(),
                want.decode(errors="replace").splitlines(),
                f"{rel} (committed)",
                f"{rel} (regenerated)",
                n=1,
                lineterm="",
            )
        )
        shown = [line if len(line) <= 160 else line[:157] + "..." for line in diff[:40]]
        if len(diff) > len(shown):
            shown.append(f"... ({len(diff) - len(shown)} more diff lines)")
        problems.append(f"stale: {rel}\n" + "\n".join(shown))
    known = set(expected)
    for path in sorted(target.glob("*_pb2*.py*")):
        if path.name not in known:
            problems.append(f"unexpected: {PACKAGE_DIR}/{path.name} (not produced by this script)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="generate into a temp dir and fail if server/_proto differs (for CI)",
    )
    parser.add_argument(
        "--any-tools-version",
        action="store_true",
        help=f"allow a grpcio-tools other than {REQUIRED_TOOLS_VERSION} (output will differ)",
    )
    args = parser.parse_args(argv)

    version = _tools_version()
    if version is None:
        print(
            f"gen_proto: grpcio-tools is not installed; "
            f"pip install 'grpcio-tools=={REQUIRED_TOOLS_VERSION}'",
            file=sys.stderr,
        )
        return 2
    if version != REQUIRED_TOOLS_VERSION and not args.any_tools_version:
        print(
            f"gen_proto: grpcio-tools {version} found, but the stubs are generated with "
            f"{REQUIRED_TOOLS_VERSION} (its protobuf version check must stay satisfiable by "
            f"protobuf 6.x, which tritonclient needs). Install grpcio-tools=="
            f"{REQUIRED_TOOLS_VERSION} or pass --any-tools-version.",
            file=sys.stderr,
        )
        return 2

    # protoc resolves the -I mapping and the input paths relative to the current directory.
    os.chdir(REPO_ROOT)
    target = REPO_ROOT / PACKAGE_DIR
    with tempfile.TemporaryDirectory(prefix="gen_proto-") as tmp:
        files = generate(Path(tmp))

    if args.check:
        problems = check(files, target)
        if problems:
            print("\n\n".join(problems), file=sys.stderr)
            print(
                f"\ngen_proto: {len(problems)} generated file(s) in {PACKAGE_DIR} are out of "
                "date with proto/*.proto. Run `python3 scripts/gen_proto.py` and commit the "
                "result.",
                file=sys.stderr,
            )
            return 1
        print(f"gen_proto: {PACKAGE_DIR} is up to date ({len(files)} files checked).")
        return 0

    target.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (target / name).write_bytes(data)
    print(f"gen_proto: wrote {len(files)} files to {PACKAGE_DIR}/ (grpcio-tools {version}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
