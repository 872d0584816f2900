"""The HTTP/REST front end: uvicorn (with httptools) carrying a small ASGI application of our own
over the routes of http_api/routes.py, on the same data plane as gRPC.

uvicorn runs its event loop on a thread of its own. Quick routes (health, metadata) are answered
on that loop; the others (inference, repository control) run on the front ends' shared handler
threads (server/grpc_api/threads.py), so HTTP and gRPC requests batch together and share one
budget of running threads. Why uvicorn and no framework: benchmarks/http_servers.py measures the
per-request cost of the candidates (benchmarks/README.md has the figures).

Bodies: the request body is read up to `max_body_bytes` (beyond: 413 at once, from the
Content-Length when the client gives one); `Content-Encoding: gzip|deflate` is undone within the
same limit; an answer is compressed when `Accept-Encoding` asks for gzip or deflate. Large
answers go out as several body messages (the JSON header, then each binary output's bytes, which
are views of the output arrays), small ones in one.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import ssl
import threading
import zlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import uvicorn

from runtimes.errors import InvalidInputError, TensorgateError
from server.dataplane.inference import RequestLimits
from server.dataplane.plane import DataPlane
from server.grpc_api.threads import SlotPool
from server.heap import BIG_MESSAGE_BYTES, release_free_memory
from server.http_api.routes import (
    OPEN,
    HttpRequest,
    HttpResponse,
    Route,
    Routes,
    error_response,
    status_of,
)
from server.security.audit import AuditLog
from server.security.tokens import ADMIN, TokenStore
from server.settings import ServerSettings

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
JOIN_BELOW_BYTES = 64 << 10  # an answer smaller than this goes out as one body message
# A bigger answer goes out in views of at most this many bytes, each written once the socket has
# taken the one before: handed whole, the bytes the socket cannot take at once are copied into
# asyncio's write buffer (Python 3.11), a second copy of a big tensor that also leaves pages in
# the event loop thread's malloc arena (benchmarks/README.md, 2026-12-04).
WRITE_PIECE_BYTES = 1 << 20
START_TIMEOUT_S = 30.0


class TooLarge(Exception):
    pass


class RestApp:
    """The ASGI application."""

    def __init__(
        self,
        routes: Routes,
        pool: SlotPool,
        *,
        max_body_bytes: int,
        tokens: TokenStore | None,
        audit: AuditLog,
        record_call: Callable[[str, str], None] | None = None,
    ) -> None:
        self._routes = routes
        self._pool = pool
        self._max_body_bytes = max_body_bytes
        self._tokens = tokens
        self._audit = audit
        self._record_call = record_call
        self.started = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else ""
        matched = self._routes.match(method, path)
        if isinstance(matched, HttpResponse):
            await self._send(send, matched, headers, method)
            return
        route, params = matched
        refusal = self._refusal(route, headers, peer)
        if refusal is not None:
            await self._send(send, refusal, headers, method, route)
            return
        try:
            body = await self._read_body(receive, headers)
        except TooLarge:
            response = error_response(
                413,
                f"the request body is larger than the limit of {self._max_body_bytes} bytes "
                "(--max-message-bytes)",
            )
            await self._send(send, response, headers, method, route)
            return
        except InvalidInputError as error:
            await self._send(send, error_response(400, str(error)), headers, method, route)
            return
        request = HttpRequest(method, path, headers, body, peer, params)
        if route.inline:
            response = self._answer(route, request)
        else:
            future = self._pool.submit(self._answer, route, request)
            response = await asyncio.wrap_future(future)
        del request, body  # a big body is not kept while a big answer is sent
        await self._send(send, response, headers, method, route)

    def _answer(self, route: Route, request: HttpRequest) -> HttpResponse:
        try:
            if route.scope == ADMIN:
                return self._audited(route, request)
            return route.handler(request)
        except Exception as error:
            return self._failure(route, error)

    def _audited(self, route: Route, request: HttpRequest) -> HttpResponse:
        identity = self._identity_name(request.headers)
        with self._audit.action(
            request.peer,
            identity,
            route.name,
            model=request.params.get("model", ""),
            **({"region": request.params["region"]} if "region" in request.params else {}),
        ):
            return route.handler(request)

    def _failure(self, route: Route, error: BaseException) -> HttpResponse:
        if not isinstance(error, TensorgateError):  # a bug: the log has it, the client not
            log.error("unexpected error in %s", route.name, exc_info=error)
        status, message = status_of(error)
        return error_response(status, message)

    def _refusal(self, route: Route, headers: dict[str, str], peer: str) -> HttpResponse | None:
        """401/403 for a protected route without the right bearer token (audit-logged)."""
        if self._tokens is None or route.scope == OPEN:
            return None
        value = headers.get("authorization", "")
        identity = self._tokens.identify_header(value) if value else None
        if identity is None:
            self._audit.record(peer, "anonymous", route.name, outcome="UNAUTHENTICATED")
            return error_response(
                401, f"{route.name} needs a valid bearer token in the 'Authorization' header"
            )
        if not identity.allows(route.scope):
            self._audit.record(peer, identity.name, route.name, outcome="PERMISSION_DENIED")
            return error_response(
                403,
                f"token '{identity.name}' lacks the '{route.scope}' scope that {route.name} needs",
            )
        return None

    def _identity_name(self, headers: Mapping[str, str]) -> str:
        if self._tokens is None:
            return "anonymous"
        identity = self._tokens.identify_header(headers.get("authorization", ""))
        return identity.name if identity else "anonymous"

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        limit = self._max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLarge
        parts: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise TooLarge
            parts.append(chunk)
            more = message.get("more_body", False)
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        if size >= BIG_MESSAGE_BYTES:
            del parts
            release_free_memory()  # the pages of the chunks the body was gathered from
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("", "identity"):
            return body
        return _decompress(body, encoding, limit)

    async def _send(
        self,
        send: Send,
        response: HttpResponse,
        headers: dict[str, str],
        method: str,
        route: Route | None = None,
    ) -> None:
        chunks = response.chunks
        extra = list(response.headers)
        accepted = headers.get("accept-encoding", "")
        encoding = _preferred_encoding(accepted) if chunks else None
        if encoding is not None:
            chunks = [_compress(b"".join(chunks), encoding)]
            extra.append(("content-encoding", encoding))
        # Counted before the answer leaves, so a client that has its answer
        # also finds it counted on /metrics.
        if self._record_call is not None and route is not None:
            self._record_call(route.name, str(response.status))
        length = sum(len(chunk) for chunk in chunks)
        if length < JOIN_BELOW_BYTES and len(chunks) > 1:
            chunks = [b"".join(chunks)]
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type.encode()),
                    (b"content-length", str(length).encode()),
                    *((k.encode(), v.encode()) for k, v in extra),
                ],
            }
        )
        if method == "HEAD" or not chunks:
            await send({"type": "http.response.body", "body": b""})
        else:
            pieces = (
                chunks
                if length <= WRITE_PIECE_BYTES
                else [piece for chunk in chunks for piece in _pieces(chunk)]
            )
            for index, piece in enumerate(pieces):
                more = index < len(pieces) - 1
                await send({"type": "http.response.body", "body": piece, "more_body": more})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.started.set()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _pieces(chunk: bytes | memoryview) -> list[bytes | memoryview]:
    if len(chunk) <= WRITE_PIECE_BYTES:
        return [chunk]
    view = memoryview(chunk)
    return [
        view[start : start + WRITE_PIECE_BYTES] for start in range(0, len(view), WRITE_PIECE_BYTES)
    ]


def _preferred_encoding(accepted: str) -> str | None:
    codings = [part.split(";")[0].strip().lower() for part in accepted.split(",")]
    for coding in ("gzip", "deflate"):
        if coding in codings:
            return coding
    return None


def _compress(body: bytes, encoding: str) -> bytes:
    return gzip.compress(body, compresslevel=1) if encoding == "gzip" else zlib.compress(body, 1)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo gzip or deflate without letting a small body expand past the limit."""
    if encoding not in ("gzip", "deflate"):
        raise InvalidInputError(
            f"Content-Encoding '{encoding}' is not supported; use gzip, deflate or none"
        )
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise InvalidInputError(f"the body is not valid {encoding} data: {error}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise TooLarge
    return data


class HttpFrontEnd:
    """Bound at construction (a port in use fails before any model loads); serves after start."""

    def __init__(
        self,
        settings: ServerSettings,
        plane: DataPlane,
        pool: SlotPool,
        *,
        limits: RequestLimits,
        tokens: TokenStore | None,
        audit: AuditLog,
        record_call: Callable[[str, str], None] | None,
        trace_headers: bool,
    ) -> None:
        self.settings = settings
        routes = Routes(plane, hooks=pool, limits=limits, trace_headers=trace_headers)
        self.app = RestApp(
            routes,
            pool,
            max_body_bytes=settings.max_message_bytes,
            tokens=tokens,
            audit=audit,
            record_call=record_call,
        )
        self._socket = self._bind()
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            http="httptools",
            loop="asyncio",
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=settings.http_keepalive_s,
            timeout_graceful_shutdown=1,
            limit_concurrency=settings.max_concurrent_calls,
        )
        self._configure_tls(config)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def _bind(self) -> socket.socket:
        settings = self.settings
        host, port = settings.http_host or settings.grpc_host, settings.http_port
        try:
            return listening_socket(host, port, share_port=settings.worker_index is not None)
        except OSError as error:
            raise OSError(
                f"cannot listen for HTTP on {host}:{port}: {error.strerror} (another server?); "
                "choose another --http-port, or --http-port -1 to turn HTTP off"
            ) from error

    def _configure_tls(self, config: uvicorn.Config) -> None:
        """The gRPC port's certificate and key, and client certificates when it requires them
        (read at start: a rotated certificate takes a restart here, unlike on gRPC)."""
        settings = self.settings
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            return
        config.ssl_certfile = str(settings.tls_cert_file)
        config.ssl_keyfile = str(settings.tls_key_file)
        if settings.tls_client_ca_file is not None:
            config.ssl_ca_certs = str(settings.tls_client_ca_file)
            config.ssl_cert_reqs = ssl.CERT_REQUIRED

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="http", daemon=True
        )
        self._thread.start()
        if not self.app.started.wait(START_TIMEOUT_S):
            raise RuntimeError("the HTTP server did not start")

    def stop(self, grace_s: float) -> None:
        """Stop taking connections; requests already read are answered (within grace_s)."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(max(0.1, grace_s))
        self._socket.close()


def listening_socket(host: str, port: int, *, share_port: bool) -> socket.socket:
    """A bound, listening, non-blocking TCP socket whose connections send without delay.

    The protocol is given as IPPROTO_TCP, not left 0: asyncio turns Nagle's algorithm off only
    for sockets whose `proto` says TCP, and accepted sockets inherit the listener's. With it
    left 0, uvicorn wrote each answer's headers and body in two segments and the second waited
    for the client's delayed ACK: 40 ms for every small POST (perf_analyzer -i http at
    concurrency 1: 23 infer/s). TCP_NODELAY on the listener as well, since Linux hands it on to
    accepted sockets. `share_port` (SO_REUSEPORT) is for --workers' children only.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if share_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
