"""Fixtures that start the real server and connect real clients to it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

if "server._proto.grpc_service_pb2" in sys.modules:
    raise pytest.UsageError(
        "tests/integration must run in its own pytest process: tritonclient and tensorgate's "
        "stubs register the same protobuf symbols (scripts/test.sh runs unit and integration "
        "separately)"
    )

import tritonclient.grpc as triton

from tests.support.server_process import ServerProcess


def wait_until_ready(url: str, timeout_s: float = 30.0) -> None:
    with grpc.insecure_channel(url) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)


@pytest.fixture(scope="session")
def bundled_server() -> Iterator[ServerProcess]:
    """One server on the bundled example models, shared by the tests that only read from it."""
    with ServerProcess() as server:
        wait_until_ready(server.url)
        yield server


@pytest.fixture(scope="session")
def server(bundled_server: ServerProcess) -> ServerProcess:
    """The server `client` talks to: the bundled one, unless a module defines its own."""
    return bundled_server


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.url) as client:
        yield client


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start a server on a repository of the test's own; stopped when the test ends."""
    started: list[ServerProcess] = []

    def start(model_repository: Path, *args: str) -> ServerProcess:
        server = ServerProcess(model_repository, args)
        started.append(server)
        wait_until_ready(server.url)
        return server

    yield start
    for server in started:
        server.stop()
