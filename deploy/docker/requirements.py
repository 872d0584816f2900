"""Print the image's requirements: tensorgate's dependencies as pyproject.toml declares them, its
OTLP exporter, the extras asked for, and onnxruntime as the image wants it.

    python3 deploy/docker/requirements.py ONNXRUNTIME [EXTRAS]

pyproject.toml asks for onnxruntime-gpu on Linux x86_64/aarch64 (it runs on the CPU too, but is
ten times the size of the CPU build), so the CPU image takes onnxruntime at the same version
bound instead; both install the same `onnxruntime` module. EXTRAS is a comma-separated list of
pyproject extras (e.g. mlflow, for --mlflow-tracking-uri). Run by install-server.sh.
"""

import re
import sys

import tomllib

ALWAYS = ("otlp",)  # the image exports traces over OTLP (--trace-exporter otlp) as shipped


def main() -> None:
    wanted = sys.argv[1]
    asked = [e.strip() for e in (sys.argv[2] if len(sys.argv) > 2 else "").split(",") if e.strip()]
    with open("pyproject.toml", "rb") as file:
        project = tomllib.load(file)["project"]
    extras = project["optional-dependencies"]
    unknown = sorted(set(asked) - set(extras))
    if unknown:
        sys.exit(f"requirements.py: no extra {', '.join(unknown)}; extras: {', '.join(extras)}")
    dependencies = list(project["dependencies"])
    for extra in (*ALWAYS, *asked):
        dependencies += extras[extra]
    bounds = set()
    for requirement in dependencies:
        spec = requirement.partition(";")[0].strip()
        name = re.match(r"[A-Za-z0-9._-]+", spec).group(0)
        if re.sub(r"[-_.]+", "-", name.lower()) in ("onnxruntime", "onnxruntime-gpu"):
            bounds.add(spec[len(name) :].strip())
        else:
            print(requirement)
    if len(bounds) != 1:
        sys.exit(f"requirements.py: expected one onnxruntime version bound, found {sorted(bounds)}")
    print(wanted + bounds.pop())


if __name__ == "__main__":
    main()
