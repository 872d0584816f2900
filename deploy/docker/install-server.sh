#!/usr/bin/env bash
# Build the image's virtual environment: tensorgate and its dependencies, with the onnxruntime
# build the image asks for. The Dockerfile's builder stage runs this in the source folder
# (/src); tests/deploy/test_dockerfile.py runs the same Dockerfile steps in a temporary folder.
#
# Environment:
#   VIRTUAL_ENV  where the environment goes (the final stage copies it from the same path)
#   ONNXRUNTIME  onnxruntime (CPU image) or onnxruntime-gpu (GPU image)
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

# Its dependencies as pyproject.toml declares them, with onnxruntime as this image wants it:
# pyproject.toml asks for onnxruntime-gpu on Linux x86_64/aarch64 (it runs on the CPU too, but
# is ten times the size of the CPU build), so the CPU image takes onnxruntime at the same version
# bound instead. Both install the same `onnxruntime` module.
requirements="$(mktemp)"
"${python}" - "${ONNXRUNTIME}" >"${requirements}" <<'PY'
import re
import sys
import tomllib

wanted = sys.argv[1]
with open("pyproject.toml", "rb") as file:
    project = tomllib.load(file)["project"]
# The image exports traces over OTLP (--trace-exporter otlp) without another install.
dependencies = project["dependencies"] + project["optional-dependencies"]["otlp"]
bounds = set()
for requirement in dependencies:
    spec = requirement.partition(";")[0].strip()
    name = re.match(r"[A-Za-z0-9._-]+", spec).group(0)
    if re.sub(r"[-_.]+", "-", name.lower()) in ("onnxruntime", "onnxruntime-gpu"):
        bounds.add(spec[len(name) :].strip())
    else:
        print(requirement)
if len(bounds) != 1:
    sys.exit(f"install-server.sh: expected one onnxruntime version bound, found {sorted(bounds)}")
print(wanted + bounds.pop())
PY
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
