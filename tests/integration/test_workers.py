"""`--workers N`: processes share the port; metrics are merged; SIGTERM stops them all."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as triton

from tests.integration.test_metrics import scrape
from tests.support.server_process import ServerProcess

REQUESTS_PER_CLIENT = 10
CLIENTS = 16  # all 16 connections landing on one worker: a 1 in 30,000 chance
# A channel of its own subchannel pool opens its own connection. Without it, a new channel to the
# same address may pick up the connection a just-closed one left in gRPC's global pool, and the
# "16 connections" were sometimes one (2 runs in 14 saw every request on one worker).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def test_workers_share_the_port_and_their_metrics_are_merged() -> None:
    with ServerProcess(None, ["--workers", "2"]) as server:
        features = triton.InferInput("features", [1, 16], "FP32")
        features.set_data_from_numpy(np.zeros((1, 16), np.float32))
        for _ in range(CLIENTS):  # one connection each: the kernel spreads them over workers
            with triton.InferenceServerClient(server.url, channel_args=OWN_CONNECTION) as client:
                for _ in range(REQUESTS_PER_CLIENT):
                    client.infer("tabular_classifier", [features])

        samples = scrape(server.metrics_port)
        served = {
            dict(labels)["worker"]: count
            for (name, labels), count in samples.items()
            if name == "tensorgate_requests_total"
            and dict(labels)["model"] == "tabular_classifier"
            and dict(labels)["outcome"] == "success"
        }
        assert sorted(served) == ["0", "1"]
        assert all(count > 0 for count in served.values()), served
        assert sum(served.values()) == CLIENTS * REQUESTS_PER_CLIENT
        assert server.log_matches(r"\(2 workers\)")
        assert server.stop() == 0
        assert len(server.log_matches(r"\[worker \d\] .*stopped")) == 2
