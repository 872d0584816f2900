#!/usr/bin/env bash
# Build the image's virtual environment: tensorgate and its dependencies, with the onnxruntime
# build the image asks for. The Dockerfile's builder stage runs this in the source folder
# (/src); tests/deploy/test_dockerfile.py runs the same Dockerfile steps in a temporary folder.
#
# Environment:
#   VIRTUAL_ENV  where the environment goes (the final stage copies it from the same path)
#   ONNXRUNTIME  onnxruntime (CPU image) or onnxruntime-gpu (GPU image)
#   EXTRAS       pyproject extras to add, comma-separated (e.g. mlflow); default none
#   PYTHON       the interpreter to build it with (default python3)
set -euo pipefail
: "${VIRTUAL_ENV:?set VIRTUAL_ENV}" "${ONNXRUNTIME:?set ONNXRUNTIME}"
case "${ONNXRUNTIME}" in
  onnxruntime | onnxruntime-gpu) ;;
  *)
    echo "install-server.sh: ONNXRUNTIME must be onnxruntime or onnxruntime-gpu" >&2
    exit 2
    ;;
esac

"${PYTHON:-python3}" -m venv "${VIRTUAL_ENV}"
python="${VIRTUAL_ENV}/bin/python"
pip=("${python}" -m pip --no-input --disable-pip-version-check)

# Its dependencies, the OTLP exporter, the extras asked for, and onnxruntime as this image wants
# it (deploy/docker/requirements.py says how).
requirements="$(mktemp)"
"${python}" deploy/docker/requirements.py "${ONNXRUNTIME}" "${EXTRAS:-}" >"${requirements}"
echo "install-server.sh: installing the dependencies:"
sed 's/^/  /' "${requirements}"
"${pip[@]}" install --requirement "${requirements}" --constraint deploy/docker/constraints.txt
rm -f "${requirements}"

# Then tensorgate itself, its dependencies being in place (pip would otherwise add
# onnxruntime-gpu back).
"${pip[@]}" install --no-deps .

# The environment must start the server: import what `tensorgate serve` imports.
"${VIRTUAL_ENV}/bin/tensorgate" --version
"${python}" -c "import onnxruntime, server.app; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"
"${python}" -c "from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter"

# The health check the image runs (Dockerfile HEALTHCHECK) lives beside the environment.
cp deploy/docker/healthcheck.py "${VIRTUAL_ENV}/healthcheck.py"

# No build tools in the final image: pip (and setuptools, where the venv has it) go.
"${pip[@]}" uninstall --yes --quiet pip setuptools
