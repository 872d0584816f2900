"""PNG plots of a benchmarks/compare.py result: throughput against p99 latency, one line per
server (its points are the concurrencies), one figure per model.

    .tools/peers/plot/bin/python -m benchmarks.plots benchmarks/results/compare-<stamp>.json

Needs only matplotlib (installed into its own venv by `benchmarks/peers/setup.sh plot`, never
into tensorgate's). Prints the path of each PNG it writes, next to the JSON file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_FIRST = ["tensorgate", "tensorgate --workers 2", "bare grpc.aio"]
_STYLE = {
    "tensorgate": {"color": "black", "linewidth": 2.5, "zorder": 5},
    "tensorgate --workers 2": {"color": "black", "linewidth": 2, "linestyle": "--", "zorder": 5},
}


def plot_model(result: dict, model: str, path: Path) -> None:
    points = [p for p in result["points"] if p["model"] == model and p["error"] is None]
    servers = sorted(
        dict.fromkeys(p["server"] for p in points),
        key=lambda name: (_FIRST.index(name) if name in _FIRST else len(_FIRST), name),
    )
    fig, ax = plt.subplots(figsize=(12, 6.5))
    top = 0.0
    for server in servers:
        mine = sorted((p for p in points if p["server"] == server), key=lambda p: p["concurrency"])
        xs = [p["p99_us"] / 1000 for p in mine]
        ys = [p["throughput"] for p in mine]
        top = max(top, *ys)
        style = _STYLE.get(server, {"linestyle": "--" if "bare" in server else "-"})
        (line,) = ax.plot(xs, ys, marker="o", label=server, **style)
        for p, x, y in zip(mine, xs, ys, strict=True):
            ax.annotate(
                f"c{p['concurrency']}",
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=line.get_color(),
            )
    ceiling = result["ceilings"].get(model)
    if ceiling:
        best = ceiling["best_rows_per_s"]
        label = f"in-process onnxruntime, batch {ceiling['best_batch']}: {best:,.0f} rows/s"
        if best <= 3 * top:
            ax.axhline(best, color="grey", linestyle=":", label=label)
        else:
            ax.plot([], [], " ", label=label + " (off the scale)")
    ax.set_xscale("log")
    ax.set_xlabel("p99 latency (ms, log scale)")
    ax.set_ylabel("throughput (inferences/s)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{model}: throughput vs p99 latency (points: concurrency)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    footer = result["header"].splitlines()[-1]
    fig.text(0.01, 0.005, footer[:200], fontsize=6, color="grey")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    source = Path(argv[0])
    result = json.loads(source.read_text())
    models = list(dict.fromkeys(p["model"] for p in result["points"]))
    for model in models:
        path = source.with_name(f"{source.stem}-{model}.png")
        plot_model(result, model, path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
