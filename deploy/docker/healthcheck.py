"""The image's HEALTHCHECK: ask the local server's grpc.health.v1 whether it is SERVING.

Exit status 0 when it is, 1 otherwise (NOT_SERVING while it loads or drains, or no answer).
Kubernetes does not use this: its probes speak grpc.health.v1 natively (deploy/kubernetes).

    python healthcheck.py [ADDRESS] [--service NAME]

ADDRESS defaults to 127.0.0.1:$TENSORGATE_GRPC_PORT (8001); the service to "" (the server).
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_address = f"127.0.0.1:{os.environ.get('TENSORGATE_GRPC_PORT', '8001')}"
    parser.add_argument("address", nargs="?", default=default_address)
    parser.add_argument("--service", default="")
    parser.add_argument("--timeout-secs", type=float, default=2.0)
    args = parser.parse_args(argv)
    with grpc.insecure_channel(args.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout_secs
            )
        except grpc.RpcError as error:
            print(f"unhealthy: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
