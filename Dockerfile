# syntax=docker/dockerfile:1
#
# tensorgate's image. The CPU image is the default:
#
#   docker build -t tensorgate:0.1.0 .
#
# The GPU image starts from a CUDA runtime base (cuDNN included) and takes onnxruntime-gpu:
#
#   docker build -t tensorgate:0.1.0-gpu \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg ONNXRUNTIME=onnxruntime-gpu .
#
# With MLflow's client, to serve from an MLflow Model Registry (docs/mlflow.md):
#
#   docker build -t tensorgate:0.1.0-mlflow --build-arg EXTRAS=mlflow .
#
# Run it with a model repository (Triton's layout) mounted at /models; without one it serves
# the bundled example models:
#
#   docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD/models:/models:ro" \
#     tensorgate:0.1.0
#
# Every setting is a TENSORGATE_* variable (README.md, "Configuration"): `docker run -e ...`.
# tests/deploy/test_dockerfile.py lints this file with hadolint and runs its steps.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- base: the runtime image, with a Python (CUDA images come without one) -------------------
FROM ${BASE_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Package versions differ between the Debian and Ubuntu bases this file serves: not pinned.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi

# --- builder: a virtual environment with tensorgate and its dependencies ---------------------
FROM base AS builder
# hadolint ignore=DL3008
RUN if ! python3 -c "import ensurepip, venv" 2>/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi
ARG ONNXRUNTIME=onnxruntime
# Optional parts, as pyproject extras: e.g. --build-arg EXTRAS=mlflow for --mlflow-tracking-uri.
ARG EXTRAS=
ENV VIRTUAL_ENV=/opt/tensorgate \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server/ server/
COPY batching/ batching/
COPY runtimes/ runtimes/
COPY deploy/docker/ deploy/docker/
RUN ONNXRUNTIME="${ONNXRUNTIME}" EXTRAS="${EXTRAS}" bash deploy/docker/install-server.sh

# --- the image: the runtime base, the environment, a non-root user ---------------------------
FROM base
RUN groupadd --system --gid 10001 tensorgate \
    && useradd --system --uid 10001 --gid tensorgate --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin tensorgate
COPY --from=builder /opt/tensorgate /opt/tensorgate
# The bundled example models, served until a repository is mounted over /models.
COPY server/example_models/ /models/
ENV PATH=/opt/tensorgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TENSORGATE_MODEL_REPOSITORY=/models \
    TENSORGATE_GRPC_HOST=0.0.0.0 \
    TENSORGATE_GRPC_PORT=8001 \
    TENSORGATE_HTTP_PORT=8000
VOLUME ["/models"]
# 8000: HTTP/REST (KServe v2 / Triton); 8001: gRPC (KServe v2 / Triton, grpc.health.v1,
# reflection); 8002: Prometheus /metrics.
EXPOSE 8000 8001 8002
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/opt/tensorgate/healthcheck.py"]
# SIGTERM: health turns NOT_SERVING, new calls are refused, in-flight calls finish within
# TENSORGATE_GRACE_PERIOD_SECS (30); give `docker stop --time` more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tensorgate"]
CMD ["serve"]
