"""The HTTP front end's listening socket: connections without Nagle's delay, one owner per port."""

from __future__ import annotations

import socket

import pytest

from server.http_api.server import listening_socket


def accept_one(listener: socket.socket) -> socket.socket:
    client = socket.create_connection(listener.getsockname()[:2], timeout=5)
    listener.setblocking(True)
    accepted, _ = listener.accept()
    client.close()
    return accepted


def test_accepted_connections_send_without_waiting_for_acks() -> None:
    with (
        listening_socket("127.0.0.1", 0, share_port=False) as listener,
        accept_one(listener) as accepted,
    ):
        # Both: asyncio sets TCP_NODELAY itself only on sockets whose proto says TCP.
        assert accepted.proto == socket.IPPROTO_TCP
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_second_server_cannot_take_a_used_port() -> None:
    with listening_socket("127.0.0.1", 0, share_port=False) as first:
        port = first.getsockname()[1]
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", port, share_port=False)


def test_worker_processes_share_a_port() -> None:
    with listening_socket("127.0.0.1", 0, share_port=True) as first:
        port = first.getsockname()[1]
        with listening_socket("127.0.0.1", port, share_port=True) as second:
            assert second.getsockname()[1] == port
