"""Which HTTP stack carries v2 REST fastest from Python: the per-request cost of candidate
servers, each answering the tabular model's inference with a fixed JSON answer (no model, no
batching), loaded by perf_analyzer -i http side by side. Also: the JSON codec (orjson against
the standard library) on the bodies the REST front end parses and writes.

    .venv/bin/python -m benchmarks.http_servers [--concurrency 1 8 32] [--rounds 2]
        [--window-ms 1000]

Candidates: uvicorn with httptools and with h11 (a raw ASGI app, answered on the event loop,
and, as tensorgate answers inference, on a worker thread), FastAPI on uvicorn (run with the
KServe peer's interpreter, which has it; skipped when absent), waitress and cheroot (WSGI on
threads; `.venv/bin/pip install waitress cheroot` first, skipped when absent), and the
standard library's ThreadingHTTPServer. Every handler does the same work: read the body, parse
the JSON header (orjson), answer a fixed JSON body with the request's id.
Writes benchmarks/results/http-servers-<timestamp>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import os
import platform
import sys
import tempfile
import timeit
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MODEL = "tabular_classifier"
REPO_ROOT = Path(__file__).resolve().parents[1]
KSERVE_PYTHON = REPO_ROOT / ".tools" / "peers" / "kserve" / "bin" / "python"

METADATA = {
    "name": MODEL,
    "versions": ["1"],
    "platform": "onnxruntime_onnx",
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}],
    "outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ],
}
CONFIG = {
    "name": MODEL,
    "platform": "onnxruntime_onnx",
    "max_batch_size": 32,
    "input": [{"name": "features", "data_type": "TYPE_FP32", "dims": [16]}],
    "output": [
        {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [3]},
        {"name": "label", "data_type": "TYPE_INT64", "dims": [1]},
    ],
}
ANSWER = {
    "model_name": MODEL,
    "model_version": "1",
    "outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": [0.3, 0.3, 0.4]},
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [2]},
    ],
}


def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """The same work for every stack: parse the JSON header, answer a fixed body."""
    import orjson

    base = f"/v2/models/{MODEL}"
    if method == "POST" and path == base + "/infer":
        length = headers.get("inference-header-content-length")
        request = orjson.loads(body[: int(length)] if length else body)
        return 200, orjson.dumps({**ANSWER, "id": request.get("id", "")})
    if path == base:
        return 200, orjson.dumps(METADATA)
    if path == base + "/config":
        return 200, orjson.dumps(CONFIG)
    if path in ("/v2/health/ready", "/v2/health/live", base + "/ready"):
        return 200, b""
    if path == "/v2":
        return 200, orjson.dumps({"name": "bare", "version": "0", "extensions": []})
    return 404, b'{"error": "not found"}'


# --- the candidates ------------------------------------------------------------------------


def asgi_app(on_thread: bool) -> Callable[..., Any]:
    pool = ThreadPoolExecutor(1) if on_thread else None

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (message := await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        args = (scope["method"], scope["path"], headers, b"".join(parts))
        if pool is None:
            status, body = answer(*args)
        else:
            status, body = await asyncio.wrap_future(pool.submit(answer, *args))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def fastapi_app() -> Any:
    # FastAPI reads the handlers' annotations, which (with `from __future__ import annotations`)
    # are strings resolved in this module's globals: the import must be global.
    global fastapi
    import fastapi

    app = fastapi.FastAPI()
    base = f"/v2/models/{MODEL}"

    @app.post(base + "/infer")
    async def infer(request: fastapi.Request) -> fastapi.Response:
        status, body = answer("POST", base + "/infer", dict(request.headers), await request.body())
        return fastapi.Response(body, status, media_type="application/json")

    @app.get("/{path:path}")
    async def other(path: str) -> fastapi.Response:
        status, body = answer("GET", "/" + path, {}, b"")
        return fastapi.Response(body, status, media_type="application/json")

    return app


def wsgi_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    status, payload = answer(environ["REQUEST_METHOD"], environ["PATH_INFO"], headers, body)
    start_response(
        f"{status} {'OK' if status == 200 else 'Not Found'}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


def serve(stack: str, host: str) -> None:
    import socket

    # As tensorgate listens (server/http_api/server.py listening_socket, whose docstring says
    # why): proto TCP, so that asyncio turns Nagle's algorithm off, and TCP_NODELAY inherited.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    print(f"listening for HTTP on {host}:{port}", flush=True)
    if stack.startswith("uvicorn") or stack == "fastapi":
        import uvicorn

        app = fastapi_app() if stack == "fastapi" else asgi_app("thread" in stack)
        parser = "h11" if "h11" in stack else "httptools"
        config = uvicorn.Config(
            app, http=parser, loop="asyncio", log_level="warning", access_log=False
        )
        uvicorn.Server(config).run(sockets=[sock])
    elif stack == "waitress":
        import waitress

        waitress.serve(wsgi_app, sockets=[sock], threads=4, _quiet=True)
    elif stack == "cheroot":
        from cheroot import wsgi

        sock.close()
        server = wsgi.Server((host, port), wsgi_app, numthreads=4)
        server.start()
    elif stack == "http.server":
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload = answer(self.command, self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        sock.close()
        ThreadingHTTPServer((host, port), Handler).serve_forever()
    else:
        raise SystemExit(f"unknown stack {stack}")


STACKS = {
    "uvicorn+httptools, on the loop": "uvicorn-httptools",
    "uvicorn+httptools, on a thread": "uvicorn-httptools-thread",
    "uvicorn+h11, on the loop": "uvicorn-h11",
    "FastAPI on uvicorn+httptools": "fastapi",
    "waitress, 4 threads": "waitress",
    "cheroot, 4 threads": "cheroot",
    "http.server, a thread per connection": "http.server",
}

OPTIONAL = {"waitress", "cheroot"}  # not tensorgate dependencies: installed by hand to compare


# --- the JSON codec --------------------------------------------------------------------------


def codec_figures() -> list[dict[str, Any]]:
    """Microseconds per parse and per dump of an inference body, orjson against json."""
    import numpy as np
    import orjson

    rows = []
    for label, count in (("tabular, 16 FP32", 16), ("image, 3x224x224 FP32", 3 * 224 * 224)):
        values = np.random.default_rng(0).standard_normal(count).astype(np.float32).tolist()
        document = {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, count], "data": values}]
        }
        text = json.dumps(document).encode()
        number = max(3, 20_000 // count)
        row: dict[str, Any] = {"body": label, "bytes": len(text)}
        for name, loads, dumps in (
            ("json", json.loads, lambda d: json.dumps(d).encode()),
            ("orjson", orjson.loads, orjson.dumps),
        ):
            for what, call, argument in (("parse", loads, text), ("dump", dumps, document)):
                best = min(timeit.repeat(lambda c=call, a=argument: c(a), number=number))
                row[f"{name} {what} us"] = best / number * 1e6
        rows.append(row)
    return rows


# --- the run ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("--stack", required=True)
    serve_parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window-ms", type=int, default=1000)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.stack, args.host)
        return
    run(args.concurrency, args.rounds, args.window_ms)


def run(concurrencies: list[int], rounds: int, window_ms: int) -> None:
    from benchmarks.compare import RESULTS, Process
    from benchmarks.workloads import WORKLOADS
    from tests.support.perf_analyzer import PerfAnalyzerError, run_perf_analyzer

    stamp = datetime.datetime.now(datetime.timezone.utc)
    codec = codec_figures()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        data = WORKLOADS[MODEL].write_input_data(Path(scratch) / "input.json")
        servers = {}
        for name, stack in STACKS.items():
            python = sys.executable
            if stack == "fastapi":
                if not KSERVE_PYTHON.exists():
                    print(f"skipping {name}: no {KSERVE_PYTHON} (benchmarks/peers/setup.sh)")
                    continue
                python = str(KSERVE_PYTHON)
            elif stack in OPTIONAL and importlib.util.find_spec(stack) is None:
                print(f"skipping {name}: not installed (.venv/bin/pip install {stack})")
                continue
            command = [python, "-m", "benchmarks.http_servers", "serve", "--stack", stack]
            servers[name] = Process(command, (), startup_timeout_s=60, listening="HTTP")
        try:
            for round_index in range(rounds):
                for concurrency in concurrencies:
                    for name, server in servers.items():
                        row: dict[str, Any] = {
                            "server": name,
                            "concurrency": concurrency,
                            "round": round_index,
                        }
                        try:
                            result = run_perf_analyzer(
                                MODEL,
                                server.url,
                                concurrency=concurrency,
                                measurement_ms=window_ms,
                                timeout_s=120,
                                input_data=str(data),
                                protocol="http",
                            )
                        except PerfAnalyzerError as error:
                            row["error"] = str(error).splitlines()[0]
                        else:
                            row["throughput"] = result.throughput_infer_per_sec
                            row["p50_us"] = result.p50_latency_us
                            row["p99_us"] = result.p99_latency_us
                        print(row, flush=True)
                        results.append(row)
        finally:
            for server in servers.values():
                server.stop()
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for row in results:
        key = (row["server"], row["concurrency"])
        if "throughput" in row and row["throughput"] > best.get(key, {}).get("throughput", -1):
            best[key] = row
    stem = RESULTS / f"http-servers-{stamp:%Y%m%d-%H%M%S}"
    meta = {
        "date": stamp.isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "rounds": rounds,
        "window_ms": window_ms,
    }
    stem.with_suffix(".json").write_text(
        json.dumps({**meta, "results": results, "codec": codec}, indent=1)
    )
    lines = [
        f"# HTTP stacks, fixed answer, {MODEL} ({meta['date']})",
        "",
        f"{meta['machine']}; best of {rounds} rounds; perf_analyzer -i http --async.",
        "",
        "| stack | " + " | ".join(f"c={c} infer/s (p99 ms)" for c in concurrencies) + " |",
        "|---|" + "---|" * len(concurrencies),
    ]
    for name in STACKS:
        cells = []
        for concurrency in concurrencies:
            row = best.get((name, concurrency))
            cells.append(
                f"{row['throughput']:,.0f} ({row['p99_us'] / 1000:.2f})" if row else "failed"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "JSON codec, microseconds per call (best of 5):",
        "",
        "| body | bytes | json parse | orjson parse | json dump | orjson dump |",
        "|---|---|---|---|---|---|",
    ]
    for row in codec:
        lines.append(
            f"| {row['body']} | {row['bytes']:,} | {row['json parse us']:,.1f} | "
            f"{row['orjson parse us']:,.1f} | {row['json dump us']:,.1f} | "
            f"{row['orjson dump us']:,.1f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
