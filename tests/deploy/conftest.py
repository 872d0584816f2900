"""tests/deploy: the Dockerfile, the Kubernetes manifests, and a fleet of replicas on loopback.

Runs in its own pytest process (scripts/test.sh): its client uses tensorgate's generated stubs,
which cannot share a process with tritonclient's.
"""

from __future__ import annotations

import sys

import pytest

if "tritonclient.grpc" in sys.modules:
    raise pytest.UsageError(
        "tests/deploy must run in its own pytest process: it uses tensorgate's stubs, which "
        "clash with tritonclient's (scripts/test.sh runs each suite separately)"
    )
