"""Sockets that never finish a handshake are shed, and a cap bounds the connections, while real
clients keep being served (they used to stay open until the file descriptors ran out)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

from tests.support import model_factory as mf
from tests.support.server_process import ServerProcess

StartServer = Callable[..., ServerProcess]
HALF_PREFACE = b"PRI * HTTP/2.0\r\n"  # the first half of HTTP/2's client preface


def _open(url: str, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    host, port = url.rsplit(":", 1)
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=10)
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    return sockets


def _closed_within(
    sockets: list[socket.socket], seconds: float, enough: int | None = None
) -> list[socket.socket]:
    """The sockets the server closed (EOF or reset) before `seconds` passed (or as soon as
    `enough` of them are)."""
    deadline = time.monotonic() + seconds
    open_ones, closed = list(sockets), []
    wanted = len(sockets) if enough is None else enough
    while len(closed) < wanted and (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(open_ones, [], [], remaining)
        for sock in readable:
            try:
                data = sock.recv(4096)
            except ConnectionError:
                data = b""
            if not data:
                open_ones.remove(sock)
                closed.append(sock)
    return closed


def _serve_some(url: str, calls: int) -> None:
    with triton.InferenceServerClient(url) as client:
        inputs = [
            triton.InferInput(n, [1, mf.ADD_SUB_ELEMENT_COUNT], "FP32")
            for n in ("INPUT0", "INPUT1")
        ]
        for tensor in inputs:
            tensor.set_data_from_numpy(np.ones((1, mf.ADD_SUB_ELEMENT_COUNT), np.float32))
        for _ in range(calls):
            output = client.infer("add_sub", inputs).as_numpy("OUTPUT0")
            assert output is not None and float(output[0, 0]) == 2.0


def test_sockets_that_never_finish_a_handshake_are_shed_while_clients_are_served(
    tmp_path: Path, start_server: StartServer
) -> None:
    mf.write_add_sub_model(tmp_path, "add_sub")
    server = start_server(tmp_path, "--grpc-handshake-timeout-secs", "1")
    flood = _open(server.url, 40) + _open(server.url, 10, HALF_PREFACE)
    try:
        _serve_some(server.url, 20)  # served while the flood holds its sockets
        assert len(_closed_within(flood, 30)) == len(flood)
        _serve_some(server.url, 5)
    finally:
        for sock in flood:
            sock.close()


def test_connections_beyond_the_cap_are_closed_at_once(
    tmp_path: Path, start_server: StartServer
) -> None:
    mf.write_add_sub_model(tmp_path, "add_sub")
    server = start_server(
        tmp_path, "--grpc-max-connections", "8", "--grpc-handshake-timeout-secs", "120"
    )
    flood = _open(server.url, 20)
    try:
        # With a 120 s handshake timeout only the cap can close sockets within 10 s: at least the
        # 12 beyond it (one more when an earlier client's connection still holds a place).
        assert len(_closed_within(flood, 10, enough=12)) >= 12
    finally:
        for sock in flood:
            sock.close()
    _serve_some(server.url, 5)  # the slots are free again
