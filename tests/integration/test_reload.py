"""Model control under load: version swaps, broken versions, unload, half-written versions,
memory over load/unload cycles, explicit-mode RPCs, poll-mode removal and config changes, and
readiness and health as models come and go.

Every version of a test model is an add/sub model whose OUTPUT0 is INPUT0 + INPUT1 + 100 * its
version, so each answer says which version computed it: the response's model_version must agree
with the offset found in all 16 elements of OUTPUT0 (a mixed or mislabelled answer is caught).

Nothing here sleeps to synchronise. Tests wait on the server's log lines (ServerProcess.wait_for_log
is woken by the thread that reads the server's output), on RPC results, and on conditions that the
load threads notify. Poll-mode servers log "repository scan N done" at DEBUG, so a test can wait
for "one more scan" or "two more scans". Every wait has a timeout.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support import model_factory as mf
from tests.support.server_process import ServerProcess

StartServer = Callable[..., ServerProcess]

COLUMNS = mf.ADD_SUB_ELEMENT_COUNT
POLL_SECS = 0.2
LOAD_THREADS = 4
MIN_RESPONSES = 25  # answers each serving version must give before the next change
WAIT_S = 30.0  # the longest any single event may take to arrive
LOAD_LIMIT_S = 60.0  # a load thread stops by itself after this, whatever happens
LATEST_ONE = "version_policy: { latest { num_versions: 1 } }"


def loaded_line(model: str, version: int) -> str:
    """The loader's line for a successful load ("unloaded model ..." does not match)."""
    return rf"server\.models\.loader: loaded model '{model}' version {version}\b"


def unloaded_line(model: str, version: int) -> str:
    return rf"unloaded model '{model}' version {version}\b"


def offset_of(version: int) -> float:
    return 100.0 * version


def poll_args(poll_secs: float = POLL_SECS) -> tuple[str, ...]:
    return (
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        str(poll_secs),
        "--log-level",
        "DEBUG",
    )


def explicit_args(*load: str) -> tuple[str, ...]:
    args: tuple[str, ...] = ("--model-control-mode", "explicit")
    for name in load:
        args += ("--load-model", name)
    return args


# --------------------------------------------------------------------------------------------
# Requests and answers
# --------------------------------------------------------------------------------------------

INPUT0 = np.arange(COLUMNS, dtype=np.float32).reshape(1, COLUMNS)
INPUT1 = np.full((1, COLUMNS), 0.5, dtype=np.float32)


def make_inputs() -> list[triton.InferInput]:
    inputs = []
    for name, data in (("INPUT0", INPUT0), ("INPUT1", INPUT1)):
        tensor = triton.InferInput(name, list(data.shape), "FP32")
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def answer_problem(model: str, result: triton.InferResult) -> str | None:
    """Why `result` is not a clean answer from exactly one version of `model`, or None."""
    response = result.get_response()
    if response.model_name != model:
        return f"asked {model}, answered by {response.model_name}"
    if not response.model_version.isdigit():
        return f"{model}: model_version {response.model_version!r} is not a number"
    expected = offset_of(int(response.model_version))
    offsets = result.as_numpy("OUTPUT0").astype(np.float64) - (INPUT0 + INPUT1)
    if offsets.shape != (1, COLUMNS) or not np.all(offsets == expected):
        return (
            f"{model}: version {response.model_version} should add {expected}, "
            f"OUTPUT0 added {np.unique(offsets).tolist()}"
        )
    return None


def served_version(client: triton.InferenceServerClient, model: str) -> int:
    result = client.infer(model, make_inputs(), client_timeout=10)
    problem = answer_problem(model, result)
    assert problem is None, problem
    return int(result.get_response().model_version)


def infer_error(client: triton.InferenceServerClient, model: str) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, make_inputs(), client_timeout=10)
    return caught.value


# --------------------------------------------------------------------------------------------
# Repository index, readiness, health
# --------------------------------------------------------------------------------------------


def repository_index(client: triton.InferenceServerClient) -> dict[str, dict[str, tuple[str, str]]]:
    """{model: {version: (state, reason)}} from RepositoryIndex."""
    table: dict[str, dict[str, tuple[str, str]]] = {}
    for entry in client.get_model_repository_index(client_timeout=10).models:
        table.setdefault(entry.name, {})[entry.version] = (entry.state, entry.reason)
    return table


def health_of(channel: grpc.Channel, service: str) -> str:
    """SERVING / NOT_SERVING, or NOT_FOUND when the health service does not know `service`."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    except grpc.RpcError as error:
        if error.code() is grpc.StatusCode.NOT_FOUND:
            return "NOT_FOUND"
        raise
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


@pytest.fixture
def connect() -> Iterator[
    Callable[[ServerProcess], tuple[triton.InferenceServerClient, grpc.Channel]]
]:
    """A tritonclient client and a plain channel (for grpc.health.v1) to a server."""
    opened: list[tuple[triton.InferenceServerClient, grpc.Channel]] = []

    def open_to(server: ServerProcess) -> tuple[triton.InferenceServerClient, grpc.Channel]:
        pair = (triton.InferenceServerClient(server.url), grpc.insecure_channel(server.url))
        opened.append(pair)
        return pair

    yield open_to
    for client, channel in opened:
        client.close()
        channel.close()


# --------------------------------------------------------------------------------------------
# Continuous load
# --------------------------------------------------------------------------------------------


class LoadGenerator:
    """Threads that each loop ModelInfer through their own tritonclient client until stopped,
    checking every answer; optionally one more thread that loops ModelReady and the model's
    grpc health check, which must stay ready and SERVING throughout.

    Counts are kept per (model, version); waiters are woken by a condition the threads notify.
    """

    def __init__(
        self,
        url: str,
        models: Sequence[str],
        threads: int = LOAD_THREADS,
        *,
        watch_readiness: bool = True,
    ) -> None:
        self._url = url
        self._models = tuple(models)
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self.counts: Counter[tuple[str, int]] = Counter()
        self.failures: list[str] = []  # failed requests (any status)
        self.wrong: list[str] = []  # answers that were not cleanly from one version
        self.readiness_lapses: list[str] = []
        self.readiness_checks = 0
        self._threads = [
            threading.Thread(target=self._infer_loop, args=(i,), name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]
        if watch_readiness:
            self._threads.append(
                threading.Thread(target=self._readiness_loop, name="readiness", daemon=True)
            )

    def __enter__(self) -> LoadGenerator:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(WAIT_S)
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        assert not alive, f"load threads did not stop: {alive}"

    def _running(self, deadline: float) -> bool:
        return not self._stop.is_set() and time.monotonic() < deadline

    def _infer_loop(self, index: int) -> None:
        deadline = time.monotonic() + LOAD_LIMIT_S
        inputs = make_inputs()
        with triton.InferenceServerClient(self._url) as client:
            turn = index
            while self._running(deadline):
                model = self._models[turn % len(self._models)]
                turn += 1
                try:
                    result = client.infer(model, inputs, client_timeout=10)
                except InferenceServerException as error:
                    with self._changed:
                        self.failures.append(f"{model}: {error}")
                        self._changed.notify_all()
                    continue
                problem = answer_problem(model, result)
                with self._changed:
                    if problem is None:
                        self.counts[model, int(result.get_response().model_version)] += 1
                    else:
                        self.wrong.append(problem)
                    self._changed.notify_all()

    def _readiness_loop(self) -> None:
        deadline = time.monotonic() + LOAD_LIMIT_S
        with (
            triton.InferenceServerClient(self._url) as client,
            grpc.insecure_channel(self._url) as channel,
        ):
            while self._running(deadline):
                for model in self._models:
                    ready = client.is_model_ready(model, client_timeout=10)
                    health = health_of(channel, model)
                    with self._changed:
                        self.readiness_checks += 1
                        if not ready or health != "SERVING":
                            self.readiness_lapses.append(f"{model}: ready={ready} {health}")

    def count(self, model: str, version: int) -> int:
        with self._changed:
            return self.counts[model, version]

    def wait_for_answers(self, model: str, version: int, n: int = MIN_RESPONSES) -> None:
        """Block until `n` more clean answers from `model` `version` have come back."""
        with self._changed:
            target = self.counts[model, version] + n
            arrived = self._changed.wait_for(
                lambda: self.counts[model, version] >= target or self.failures or self.wrong,
                WAIT_S,
            )
            assert not self.failures, self.failures[:5]
            assert not self.wrong, self.wrong[:5]
            assert arrived, (
                f"{model} version {version}: {n} more answers did not come in {WAIT_S}s "
                f"(counts {dict(self.counts)})"
            )

    def assert_clean(self) -> None:
        assert not self.failures, f"{len(self.failures)} failed requests: {self.failures[:5]}"
        assert not self.wrong, f"{len(self.wrong)} wrong answers: {self.wrong[:5]}"
        assert not self.readiness_lapses, self.readiness_lapses[:5]


# --------------------------------------------------------------------------------------------
# Version swaps under load
# --------------------------------------------------------------------------------------------

SWAP_CONFIG = LATEST_ONE + "\ndynamic_batching { max_queue_delay_microseconds: 1000 }"


@pytest.mark.parametrize("mode", ["poll", "explicit"])
def test_version_swaps_under_load_answer_from_exactly_one_version(
    mode: str, tmp_path: Path, start_server: StartServer, connect
) -> None:
    """Versions 2, 3, 4 replace each other while four clients send requests without pause:
    no request fails, every answer comes whole from one version, each version serves for a
    while, the old one stops answering once retired, and the model never stops being ready."""
    mf.write_add_sub_model(tmp_path, "swap", offset=offset_of(1), config_extra=SWAP_CONFIG)
    args = poll_args() if mode == "poll" else explicit_args("swap")
    server = start_server(tmp_path, *args)
    client, _ = connect(server)
    assert served_version(client, "swap") == 1

    with LoadGenerator(server.url, ["swap"]) as load:
        load.wait_for_answers("swap", 1)
        for version in (2, 3, 4):
            mark = server.log_mark()
            mf.write_add_sub_model(
                tmp_path, "swap", version=version, offset=offset_of(version), with_config=False
            )
            if mode == "explicit":
                client.load_model("swap", client_timeout=WAIT_S)
            # The swap is complete once the previous version has drained and been unloaded.
            server.wait_for_log(unloaded_line("swap", version - 1), start=mark, timeout_s=WAIT_S)
            assert server.log_matches(loaded_line("swap", version), mark)
            index = repository_index(client)["swap"]
            assert index[str(version)] == ("READY", ""), index
            assert index[str(version - 1)] == ("UNAVAILABLE", "unloaded"), index
            retired_count = load.count("swap", version - 1)
            load.wait_for_answers("swap", version)
            # Answers already on their way when the old version was retired may still arrive,
            # at most one per load thread; after that only the new version answers.
            late = load.count("swap", version - 1) - retired_count
            assert late <= LOAD_THREADS, f"version {version - 1} answered {late} times after"
    load.assert_clean()
    assert {v for (_, v) in load.counts} == {1, 2, 3, 4}
    assert all(load.counts["swap", v] >= MIN_RESPONSES for v in (1, 2, 3, 4)), load.counts
    assert load.readiness_checks > 0
    assert served_version(client, "swap") == 4


# --------------------------------------------------------------------------------------------
# Broken new versions under load
# --------------------------------------------------------------------------------------------

UNPARSABLE_CONFIG = 'name: "bad_syntax"\nmax_batch_size: [ this is not text format\n'
CORRUPT_REASON = "onnxruntime could not load model.onnx"
SYNTAX_REASON = "config.pbtxt is not a valid model config"
MISMATCH_REASON = "config lists input 'WRONG', which the graph does not have"


def _write_mismatched_config(repo: Path) -> None:
    wrong = mf.TensorSpec("WRONG", "FP32", (-1, COLUMNS))
    right = mf.TensorSpec("OUTPUT0", "FP32", (-1, COLUMNS))
    text = mf.render_config("bad_inputs", max_batch_size=8, inputs=[wrong], outputs=[right])
    mf.write_config(repo, "bad_inputs", text + LATEST_ONE + "\n")


BREAKAGES: dict[str, tuple[Callable[[Path], object], str]] = {
    # model name: (how to break it, what the reason must say)
    "bad_onnx": (lambda repo: mf.write_corrupt_model(repo, "bad_onnx", version=2), CORRUPT_REASON),
    "bad_syntax": (
        lambda repo: mf.write_config(repo, "bad_syntax", UNPARSABLE_CONFIG),
        SYNTAX_REASON,
    ),
    "bad_inputs": (_write_mismatched_config, MISMATCH_REASON),
}


@pytest.mark.parametrize("mode", ["poll", "explicit"])
def test_broken_new_version_leaves_the_old_one_serving(
    mode: str, tmp_path: Path, start_server: StartServer, connect
) -> None:
    """A corrupt ONNX file as a new version, an unparsable config.pbtxt and a config that does
    not match the graph, each under load: no request fails, version 1 goes on answering,
    RepositoryIndex gives the reason (and in explicit mode RepositoryModelLoad fails with it)."""
    for name in BREAKAGES:
        mf.write_add_sub_model(tmp_path, name, offset=offset_of(1), config_extra=LATEST_ONE)
    args = poll_args() if mode == "poll" else explicit_args(",".join(BREAKAGES))
    server = start_server(tmp_path, *args)
    client, _ = connect(server)

    with LoadGenerator(server.url, list(BREAKAGES)) as load:
        for name in BREAKAGES:
            load.wait_for_answers(name, 1)
        mark = server.log_mark()
        for name, (break_it, reason) in BREAKAGES.items():
            break_it(tmp_path)
            if mode == "explicit":
                with pytest.raises(InferenceServerException) as caught:
                    client.load_model(name, client_timeout=WAIT_S)
                assert reason in caught.value.message(), caught.value
        for name in BREAKAGES:
            server.wait_for_log(
                rf"ERROR .*model '{name}'.* failed to load", start=mark, timeout_s=WAIT_S
            )
        index = repository_index(client)
        for name in BREAKAGES:
            load.wait_for_answers(name, 1)  # still answering after the failure
        # The corrupt version is listed as unavailable with the reason; version 1 still serves.
        assert index["bad_onnx"]["1"] == ("READY", ""), index["bad_onnx"]
        state, why = index["bad_onnx"]["2"]
        assert state == "UNAVAILABLE" and CORRUPT_REASON in why, index["bad_onnx"]
        # A broken config keeps version 1 serving and says why on it.
        for name in ("bad_syntax", "bad_inputs"):
            state, why = index[name]["1"]
            assert state == "READY", index[name]
            assert "reload failed, still serving the previous load" in why, why
            assert BREAKAGES[name][1] in why, why
    load.assert_clean()
    for name in BREAKAGES:
        assert set(v for (m, v) in load.counts if m == name) == {1}
        assert served_version(client, name) == 1


# --------------------------------------------------------------------------------------------
# Unload under load
# --------------------------------------------------------------------------------------------

QUEUE_SIZE = 6
QUEUE_DELAY_US = 10_000_000  # requests wait up to 10 s for company: they sit in the queue


def test_unload_finishes_queued_requests_then_refuses_new_ones(
    tmp_path: Path, start_server: StartServer, connect
) -> None:
    """Requests waiting in the batcher's queue when RepositoryModelUnload arrives are all run
    and answered; requests after it get UNAVAILABLE saying the model was unloaded.

    The queue holds QUEUE_SIZE requests and one more is sent: its RESOURCE_EXHAUSTED proves the
    queue was full, i.e. the other QUEUE_SIZE were all queued when the unload was sent."""
    mf.write_add_sub_model(
        tmp_path,
        "queued",
        max_batch_size=64,
        offset=offset_of(1),
        config_extra=(
            f"dynamic_batching {{ max_queue_delay_microseconds: {QUEUE_DELAY_US} "
            f"default_queue_policy {{ max_queue_size: {QUEUE_SIZE} }} }}"
        ),
    )
    server = start_server(tmp_path, *explicit_args("queued"))
    client, channel = connect(server)
    assert health_of(channel, "queued") == "SERVING"

    answers: list[tuple[int, triton.InferResult | None, InferenceServerException | None]] = []
    answered = threading.Condition()

    def on_answer(index: int, result: triton.InferResult | None, error: object) -> None:
        with answered:
            answers.append((index, result, error))
            answered.notify_all()

    def rejected() -> list[int]:
        return [
            i
            for i, _, error in answers
            if error is not None and error.status() == "StatusCode.RESOURCE_EXHAUSTED"
        ]

    with triton.InferenceServerClient(server.url) as sender:
        for index in range(QUEUE_SIZE + 1):
            sender.async_infer(
                "queued", make_inputs(), functools.partial(on_answer, index), client_timeout=WAIT_S
            )
        with answered:
            assert answered.wait_for(lambda: rejected(), WAIT_S), answers
            assert len(answers) == 1, f"requests finished before the unload: {answers}"
        started = time.monotonic()
        client.unload_model("queued", client_timeout=WAIT_S)
        with answered:
            assert answered.wait_for(lambda: len(answers) == QUEUE_SIZE + 1, WAIT_S), answers
        drained_s = time.monotonic() - started

    for index, result, error in answers:
        if index in rejected():
            continue
        assert error is None, f"queued request {index} failed: {error}"
        assert result is not None
        assert answer_problem("queued", result) is None
        assert result.get_response().model_version == "1"
    # Run because of the unload, not because their 10 s queue delay ran out.
    assert drained_s < QUEUE_DELAY_US / 1e6 / 2, drained_s
    # The line is logged once the drain ends, and read from the server's output by a thread.
    server.wait_for_log(unloaded_line("queued", 1), timeout_s=WAIT_S)

    error = infer_error(client, "queued")
    assert error.status() == "StatusCode.UNAVAILABLE", error
    assert "'queued'" in error.message() and "unloaded" in error.message(), error
    assert not client.is_model_ready("queued")
    assert health_of(channel, "queued") == "NOT_SERVING"
    assert repository_index(client)["queued"] == {"1": ("UNAVAILABLE", "unloaded")}


# --------------------------------------------------------------------------------------------
# Half-written version directories (poll mode)
# --------------------------------------------------------------------------------------------

HALF_POLL_SECS = 0.5  # the time the test has to write the next chunk after a scan ends
CHUNKS = 4
SCAN_DONE = r"repository scan \d+ done"


def test_half_written_version_is_not_loaded_until_complete(
    tmp_path: Path, start_server: StartServer, connect
) -> None:
    """A version directory whose model file grows between every two scans is left alone (no
    load attempt, not in RepositoryIndex); once the file is complete it is loaded within a few
    scans and serves."""
    repo = tmp_path / "repo"
    mf.write_add_sub_model(repo, "half", offset=offset_of(1), config_extra=LATEST_ONE)
    scratch = tmp_path / "scratch"
    complete = mf.write_add_sub_model(
        scratch, "half", version=2, offset=offset_of(2), with_config=False
    ).model_path.read_bytes()
    size = -(-len(complete) // CHUNKS)
    chunks = [complete[i : i + size] for i in range(0, len(complete), size)]
    assert len(chunks) == CHUNKS

    server = start_server(repo, *poll_args(HALF_POLL_SECS))
    client, _ = connect(server)
    assert served_version(client, "half") == 1
    target = repo / "half" / "2" / "model.onnx"
    copy_started = server.log_mark()
    for chunk in chunks:
        # Right after a scan ends, write the next piece: the following scan, HALF_POLL_SECS
        # later, sees a different directory than the one before it, so it never looks stable.
        server.wait_for_log(SCAN_DONE, start=server.log_mark(), timeout_s=WAIT_S)
        target.parent.mkdir(exist_ok=True)
        with target.open("ab") as file:
            file.write(chunk)
        assert "2" not in repository_index(client)["half"]
        assert served_version(client, "half") == 1
    copy_done = server.log_mark()
    assert target.read_bytes() == complete
    assert len(server.log_matches(SCAN_DONE, copy_started)) >= CHUNKS
    attempts = server.log_matches(r"model 'half'.*version 2|poll: model 'half'", copy_started)
    assert not attempts, [m.string for m in attempts]

    (loaded,) = server.wait_for_log(loaded_line("half", 2), start=copy_done, timeout_s=WAIT_S)
    after_copy = server.log_lines[copy_done:]
    scans_to_load = sum(
        1 for line in after_copy[: after_copy.index(loaded.string)] if re.search(SCAN_DONE, line)
    )
    # The scan after the last write sees the file change; the next finds it stable and loads
    # it (one more may have been under way during the write).
    assert scans_to_load <= 2, scans_to_load
    server.wait_for_log(unloaded_line("half", 1), start=copy_done, timeout_s=WAIT_S)
    assert repository_index(client)["half"]["2"] == ("READY", "")
    assert served_version(client, "half") == 2
    assert not server.log_matches(r"failed to load|not loaded", copy_started)


# --------------------------------------------------------------------------------------------
# Memory over load/unload cycles
# --------------------------------------------------------------------------------------------

WARM_UP_CYCLES = 5
CYCLES = 50
INSTANCES = 4
RSS_BOUND_MIB = 10.0


def process_status(pid: int) -> tuple[float, int, int]:
    """(VmRSS in MiB, threads, open file descriptors) of process `pid`."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss_mib = int(fields["VmRSS"].split()[0]) / 1024
    return rss_mib, int(fields["Threads"]), len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_memory_stays_flat_over_load_unload_cycles(
    tmp_path: Path, start_server: StartServer, connect
) -> None:
    """50 RepositoryModelLoad / ModelInfer / RepositoryModelUnload cycles leave the server's
    resident memory within RSS_BOUND_MIB of where it was after a few warm-up cycles, and its
    thread and file descriptor counts where they were.

    Why the bound: each load of this model holds INSTANCES onnxruntime sessions, a scheduler
    and a worker pool; kept loaded, one load adds about 0.75 MiB of RSS (measured: 15 loads of
    distinct copies, 90.4 -> 101.5 MiB). Leaking them every cycle would add about 37 MiB over
    50 cycles; the bound catches a leak of a quarter of that, while allocator caches and
    fragmentation (measured well under 1 MiB here) stay far below it."""
    mf.write_add_sub_model(
        tmp_path,
        "cycle",
        offset=offset_of(1),
        config_extra=(
            "dynamic_batching { max_queue_delay_microseconds: 100 }\n"
            f"instance_group [ {{ count: {INSTANCES} kind: KIND_CPU }} ]"
        ),
    )
    server = start_server(tmp_path, *explicit_args())
    client, channel = connect(server)
    pid = server.process.pid

    def cycle() -> None:
        client.load_model("cycle", client_timeout=WAIT_S)
        assert served_version(client, "cycle") == 1
        client.unload_model("cycle", client_timeout=WAIT_S)

    for _ in range(WARM_UP_CYCLES):
        cycle()
    rss_before, threads_before, fds_before = process_status(pid)
    for _ in range(CYCLES):
        cycle()
    rss_after, threads_after, fds_after = process_status(pid)
    print(
        f"\nserver after {WARM_UP_CYCLES} warm-up cycles: VmRSS {rss_before:.1f} MiB, "
        f"{threads_before} threads, {fds_before} fds; after {CYCLES} more: VmRSS "
        f"{rss_after:.1f} MiB ({rss_after - rss_before:+.1f}), {threads_after} threads, "
        f"{fds_after} fds"
    )
    assert rss_after - rss_before <= RSS_BOUND_MIB, (rss_before, rss_after)
    assert threads_after == threads_before
    assert fds_after == fds_before
    # Every cycle really unloaded (the reader thread may still be a line behind: wait for it).
    server.wait_for_log(unloaded_line("cycle", 1), count=WARM_UP_CYCLES + CYCLES, timeout_s=10)
    assert len(server.log_matches(unloaded_line("cycle", 1))) == WARM_UP_CYCLES + CYCLES
    assert health_of(channel, "cycle") == "NOT_SERVING"


# --------------------------------------------------------------------------------------------
# Explicit mode
# --------------------------------------------------------------------------------------------


def test_explicit_start_up_selection_config_override_and_unknown_models(
    tmp_path: Path, start_server: StartServer, connect
) -> None:
    """--load-model loads only the models it names; a load's JSON config override takes effect
    (and does not stick); loading or unloading an unknown model, or a malformed override,
    fails with a clear error and changes nothing."""
    mf.write_add_sub_model(tmp_path, "alpha", offset=offset_of(1))
    mf.write_add_sub_model(tmp_path, "idle", offset=offset_of(1))
    mf.write_add_sub_model(tmp_path, "pinned", offset=offset_of(1), config_extra=LATEST_ONE)
    mf.write_add_sub_model(tmp_path, "pinned", version=2, offset=offset_of(2), with_config=False)
    server = start_server(
        tmp_path, "--model-control-mode", "explicit", "--load-model", "alpha,pinned"
    )
    client, channel = connect(server)

    index = repository_index(client)
    assert index["alpha"] == {"1": ("READY", "")}
    assert index["pinned"] == {"2": ("READY", "")}
    assert index["idle"] == {"": ("UNAVAILABLE", "not loaded")}
    assert client.is_model_ready("alpha") and client.is_model_ready("pinned")
    assert not client.is_model_ready("idle")
    assert health_of(channel, "idle") != "SERVING"
    error = infer_error(client, "idle")
    assert error.status() in ("StatusCode.NOT_FOUND", "StatusCode.UNAVAILABLE"), error
    assert "'idle'" in error.message(), error
    assert served_version(client, "pinned") == 2

    # A config override selecting version 1 while 2 exists.
    override = '{"version_policy": {"specific": {"versions": [1]}}}'
    client.load_model("pinned", config=override, client_timeout=WAIT_S)
    assert served_version(client, "pinned") == 1
    assert client.is_model_ready("pinned", "1") and not client.is_model_ready("pinned", "2")
    index = repository_index(client)["pinned"]
    assert index == {"1": ("READY", ""), "2": ("UNAVAILABLE", "unloaded")}, index
    policy = client.get_model_config("pinned", client_timeout=10).config.version_policy
    assert list(policy.specific.versions) == [1]
    # Loading again without the override goes back to config.pbtxt (latest: version 2).
    client.load_model("pinned", client_timeout=WAIT_S)
    assert served_version(client, "pinned") == 2
    assert repository_index(client)["pinned"]["2"] == ("READY", "")

    # Unknown models.
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("nope", client_timeout=WAIT_S)
    assert caught.value.status() == "StatusCode.NOT_FOUND", caught.value
    assert "'nope'" in caught.value.message() and "repository" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.unload_model("nope", client_timeout=WAIT_S)
    assert caught.value.status() == "StatusCode.NOT_FOUND", caught.value
    assert "Request for unknown model: 'nope' is not found" in caught.value.message(), caught.value
    assert "nope" not in repository_index(client)
    assert not client.is_model_ready("nope")

    # A malformed override is refused and the model keeps serving what it served.
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("alpha", config="{not json", client_timeout=WAIT_S)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT", caught.value
    assert "not a valid model config" in caught.value.message(), caught.value
    assert served_version(client, "alpha") == 1

    # The model that was not named at start-up loads on request.
    client.load_model("idle", client_timeout=WAIT_S)
    assert served_version(client, "idle") == 1
    assert health_of(channel, "idle") == "SERVING"


ROUNDS = 6


def test_concurrent_load_and_unload_of_one_model_are_serialised(
    tmp_path: Path, start_server: StartServer, connect
) -> None:
    """RepositoryModelLoad and RepositoryModelUnload of the same model fired at the same moment
    (a new version to swap to each round, so the load has work to do) both succeed, one after
    the other: the end state is either the new version serving or the model unloaded, and
    RepositoryIndex, ModelReady, health and ModelInfer all agree on which."""
    mf.write_add_sub_model(tmp_path, "racy", offset=offset_of(1), config_extra=LATEST_ONE)
    server = start_server(tmp_path, *explicit_args("racy"))
    client, channel = connect(server)
    outcomes = Counter()
    with (
        triton.InferenceServerClient(server.url) as loader,
        triton.InferenceServerClient(server.url) as unloader,
    ):
        for version in range(2, 2 + ROUNDS):
            mf.write_add_sub_model(
                tmp_path, "racy", version=version, offset=offset_of(version), with_config=False
            )
            barrier = threading.Barrier(2, timeout=WAIT_S)
            errors: list[str] = []

            def fire(
                call: Callable[[], object],
                barrier: threading.Barrier = barrier,
                errors: list[str] = errors,
            ) -> None:
                barrier.wait()
                try:
                    call()
                except InferenceServerException as error:
                    errors.append(str(error))

            calls = [
                threading.Thread(
                    target=fire, args=(lambda: loader.load_model("racy", client_timeout=WAIT_S),)
                ),
                threading.Thread(
                    target=fire,
                    args=(lambda: unloader.unload_model("racy", client_timeout=WAIT_S),),
                ),
            ]
            for thread in calls:
                thread.start()
            for thread in calls:
                thread.join(WAIT_S)
            assert not any(thread.is_alive() for thread in calls)
            assert errors == [], errors

            index = repository_index(client)["racy"]
            ready = client.is_model_ready("racy")
            health = health_of(channel, "racy")
            states = {state for state, _ in index.values()}
            assert states <= {"READY", "UNAVAILABLE"}, index  # nothing left half-done
            if ready:
                outcomes["loaded"] += 1
                assert health == "SERVING", (index, health)
                assert [v for v, (state, _) in index.items() if state == "READY"] == [
                    str(version)
                ], index
                assert served_version(client, "racy") == version
            else:
                outcomes["unloaded"] += 1
                assert health == "NOT_SERVING", (index, health)
                assert states == {"UNAVAILABLE"}, index
                assert all(reason == "unloaded" for _, reason in index.values()), index
                assert infer_error(client, "racy").status() == "StatusCode.UNAVAILABLE"
    print(f"\nconcurrent load/unload end states: {dict(outcomes)}")


# --------------------------------------------------------------------------------------------
# Poll mode: removal and config changes
# --------------------------------------------------------------------------------------------


def test_poll_removal_unloads_and_config_change_reloads(
    tmp_path: Path, start_server: StartServer, connect
) -> None:
    """Removing a model directory unloads the model (not ready, NOT_SERVING, UNAVAILABLE) and
    putting it back loads it again; rewriting config.pbtxt (queue delay, output subset) reloads
    the model and ModelConfig, ModelMetadata and ModelInfer follow the new config."""
    mf.write_add_sub_model(tmp_path, "gone", offset=offset_of(1))
    cfg = mf.write_add_sub_model(tmp_path, "cfg", offset=offset_of(1))
    server = start_server(tmp_path, *poll_args())
    client, channel = connect(server)
    assert health_of(channel, "gone") == "SERVING"
    config = client.get_model_config("cfg", client_timeout=10).config
    assert [o.name for o in config.output] == ["OUTPUT0", "OUTPUT1"]
    assert not config.HasField("dynamic_batching")

    mark = server.log_mark()
    shutil.rmtree(tmp_path / "gone")
    mf.write_config(
        tmp_path,
        "cfg",
        mf.render_config(
            "cfg",
            max_batch_size=cfg.max_batch_size,
            inputs=cfg.inputs,
            outputs=cfg.outputs[:1],
            extra="dynamic_batching { max_queue_delay_microseconds: 1234 }",
        ),
    )
    server.wait_for_log(unloaded_line("gone", 1), start=mark, timeout_s=WAIT_S)
    server.wait_for_log(
        r"model 'cfg' version 1 reloaded; draining the previous load", start=mark, timeout_s=WAIT_S
    )

    assert not client.is_model_ready("gone")
    assert health_of(channel, "gone") == "NOT_SERVING"
    error = infer_error(client, "gone")
    assert error.status() == "StatusCode.UNAVAILABLE", error
    assert "'gone'" in error.message() and "unloaded" in error.message(), error
    assert repository_index(client).get("gone", {}) in ({}, {"1": ("UNAVAILABLE", "unloaded")})

    config = client.get_model_config("cfg", client_timeout=10).config
    assert config.dynamic_batching.max_queue_delay_microseconds == 1234
    assert [o.name for o in config.output] == ["OUTPUT0"]
    assert [o.name for o in client.get_model_metadata("cfg").outputs] == ["OUTPUT0"]
    result = client.infer("cfg", make_inputs(), client_timeout=10)
    assert [o.name for o in result.get_response().outputs] == ["OUTPUT0"]
    assert answer_problem("cfg", result) is None
    assert client.is_model_ready("cfg") and health_of(channel, "cfg") == "SERVING"

    mark = server.log_mark()
    mf.write_add_sub_model(tmp_path, "gone", offset=offset_of(1))
    server.wait_for_log(loaded_line("gone", 1), start=mark, timeout_s=WAIT_S)
    assert client.is_model_ready("gone")
    assert health_of(channel, "gone") == "SERVING"
    assert served_version(client, "gone") == 1


# --------------------------------------------------------------------------------------------
# Readiness and health
# --------------------------------------------------------------------------------------------


def test_model_ready_and_health_follow_model_states(
    tmp_path: Path, start_server: StartServer, connect
) -> None:
    """ModelReady (per model and per version) and grpc.health.v1 per model say exactly what
    serves: a READY version makes the model SERVING; a model whose versions are all unloaded,
    or that failed to load, is NOT_SERVING and not ready; the server itself stays SERVING."""
    both = "version_policy: { all { } }"
    mf.write_add_sub_model(tmp_path, "two", offset=offset_of(1), config_extra=both)
    mf.write_add_sub_model(tmp_path, "two", version=2, offset=offset_of(2), with_config=False)
    mf.write_add_sub_model(tmp_path, "later", offset=offset_of(1))
    mf.write_corrupt_model(tmp_path, "broken")
    server = start_server(tmp_path, *explicit_args("two", "broken"))
    client, channel = connect(server)

    def readiness(name: str, versions: Sequence[str] = ("",)) -> tuple[list[bool], str]:
        ready = [client.is_model_ready(name, version) for version in versions]
        return ready, health_of(channel, name)

    assert readiness("two", ("", "1", "2")) == ([True, True, True], "SERVING")
    assert readiness("broken") == ([False], "NOT_SERVING")
    ready, health = readiness("later")
    assert ready == [False] and health in ("NOT_FOUND", "NOT_SERVING")
    assert health_of(channel, "") == "SERVING"

    # Down to one version: still ready and SERVING; that version only.
    client.load_model(
        "two", config='{"version_policy": {"specific": {"versions": [2]}}}', client_timeout=WAIT_S
    )
    assert readiness("two", ("", "1", "2")) == ([True, False, True], "SERVING")

    client.unload_model("two", client_timeout=WAIT_S)
    assert readiness("two", ("", "1", "2")) == ([False, False, False], "NOT_SERVING")
    assert health_of(channel, "") == "SERVING"

    client.load_model("later", client_timeout=WAIT_S)
    assert readiness("later") == ([True], "SERVING")
    client.load_model("two", client_timeout=WAIT_S)
    assert readiness("two", ("", "1", "2")) == ([True, True, True], "SERVING")

    # A failed load of a model that serves nothing leaves it NOT_SERVING with the reason.
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("broken", client_timeout=WAIT_S)
    assert CORRUPT_REASON in caught.value.message(), caught.value
    assert readiness("broken") == ([False], "NOT_SERVING")
    state, reason = repository_index(client)["broken"]["1"]
    assert state == "UNAVAILABLE" and CORRUPT_REASON in reason

    client.unload_model("later", client_timeout=WAIT_S)
    client.unload_model("two", client_timeout=WAIT_S)
    for name in ("two", "later", "broken"):
        assert readiness(name) == ([False], "NOT_SERVING"), name


# --------------------------------------------------------------------------------------------
# Server bugs found while writing these tests (they fail until the server is fixed)
# --------------------------------------------------------------------------------------------


def _make_overlong_path(base: Path, length: int = 4200) -> None:
    """Nest directories under `base` until the full path is longer than PATH_MAX (4096), so
    that reading the deepest one fails with ENAMETOOLONG. Built relative to open directory
    descriptors, since the full path cannot be used."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    total = len(str(base))
    try:
        while total <= length:
            os.mkdir("d" * 200, dir_fd=fd)
            child = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, total = child, total + 201
    finally:
        os.close(fd)


def test_poll_keeps_serving_a_model_whose_directory_cannot_be_read_for_a_scan(
    tmp_path: Path, start_server: StartServer, connect
) -> None:
    """A model whose directory cannot be fingerprinted during a scan (a file that vanishes
    between listing and stat, a subdirectory the server may not enter, or here a path longer
    than PATH_MAX) must be left as it is: the watcher means to treat it as unstable for that
    round. It must not be taken for a removed model and unloaded while its files are there."""
    mf.write_add_sub_model(tmp_path, "deep", offset=offset_of(1))
    server = start_server(tmp_path, *poll_args())
    client, channel = connect(server)
    assert served_version(client, "deep") == 1
    _make_overlong_path(tmp_path / "deep" / "1")
    mark = server.log_mark()
    server.wait_for_log(SCAN_DONE, 3, start=mark, timeout_s=WAIT_S)
    unloads = server.log_matches(r"unload\w* model 'deep'", mark)
    assert not unloads, [m.string for m in unloads]
    assert client.is_model_ready("deep")
    assert health_of(channel, "deep") == "SERVING"
    assert served_version(client, "deep") == 1


def test_server_is_ready_again_once_failed_models_are_unloaded(
    tmp_path: Path, start_server: StartServer, connect
) -> None:
    """ServerReady counts a model that was unloaded on purpose as fine. That must hold for a
    model that also has a version that failed to load ("mixed": version 1 served, a corrupt
    version 2 was refused) and for one that never loaded ("broken"): once the operator has
    unloaded them, nothing the server was asked to serve is missing."""
    mf.write_add_sub_model(tmp_path, "mixed", offset=offset_of(1), config_extra=LATEST_ONE)
    mf.write_add_sub_model(tmp_path, "fine", offset=offset_of(1))
    mf.write_corrupt_model(tmp_path, "broken")
    server = start_server(tmp_path, *explicit_args("mixed,fine"))
    client, _ = connect(server)
    assert client.is_server_ready()

    mf.write_corrupt_model(tmp_path, "mixed", version=2)
    with pytest.raises(InferenceServerException):
        client.load_model("mixed", client_timeout=WAIT_S)
    assert served_version(client, "mixed") == 1
    with pytest.raises(InferenceServerException):
        client.load_model("broken", client_timeout=WAIT_S)

    client.unload_model("mixed", client_timeout=WAIT_S)
    client.unload_model("broken", client_timeout=WAIT_S)
    index = repository_index(client)
    assert not client.is_model_ready("mixed") and not client.is_model_ready("broken")
    assert client.is_model_ready("fine")
    assert client.is_server_ready(), f"not ready with only unloaded models besides 'fine': {index}"


def test_failed_load_of_a_model_not_in_the_repository_adds_no_health_status(
    tmp_path: Path, start_server: StartServer, connect
) -> None:
    """grpc.health.v1 answers NOT_FOUND for a name that is no model; a RepositoryModelLoad of
    that name, which fails with NOT_FOUND, must not make the health service start reporting
    it (as NOT_SERVING) from then on."""
    mf.write_add_sub_model(tmp_path, "real", offset=offset_of(1))
    server = start_server(tmp_path, *explicit_args("real"))
    client, channel = connect(server)
    assert health_of(channel, "ghost") == "NOT_FOUND"
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("ghost", client_timeout=WAIT_S)
    assert caught.value.status() == "StatusCode.NOT_FOUND", caught.value
    assert health_of(channel, "ghost") == "NOT_FOUND"
