"""`tensorgate batch` against the in-process onnxruntime ceiling, on the bundled models.

The ceiling is the same runtime (same session options), warmed up, running the same chunks over
contiguous arrays already in memory: no file reading, no copies, no conversions, no partial
results, no output file.
`tensorgate batch` is timed end to end inside score(): reading chunks from the file, scoring,
saving each chunk's outputs for --resume (the final output file is written after the timed part,
as it is after the progress bar ends), including its first, cold batch; the last column also
counts loading the model and writing the output file. The best of the repeats is kept on each
side, and the ratios are medians over pairs of runs made one after the other.

    .venv/bin/python -m benchmarks.batch_scoring [--repeats 3] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from server.offline.batch_scoring import BatchJob, _chunk_rows, load_model, score
from server.settings import ServerSettings

REPOSITORY = ServerSettings().model_repository


def _data(model: str, rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if model == "tabular_classifier":
        return {"features": rng.standard_normal((rows, 16), dtype=np.float32)}
    if model == "image_classifier":
        return {"image": rng.standard_normal((rows, 3, 64, 64), dtype=np.float32)}
    return {
        "input_ids": rng.integers(1, 1000, (rows, 32), dtype=np.int64),
        "attention_mask": np.ones((rows, 32), np.int64),
    }


ROWS = {"tabular_classifier": 1_000_000, "image_classifier": 4096, "text_encoder": 50_000}


class Ceiling:
    """A warmed-up session scoring the chunks from arrays already in memory."""

    def __init__(self, model: str, inputs: dict[str, np.ndarray], chunk_rows: int) -> None:
        self.runtime, signature, _ = load_model(REPOSITORY, model, None)
        self.names = [spec.name for spec in signature.outputs]
        self.rows = len(next(iter(inputs.values())))
        self.chunks = [
            {n: np.ascontiguousarray(v[start : start + chunk_rows]) for n, v in inputs.items()}
            for start in range(0, self.rows, chunk_rows)
        ]
        self.runtime.infer(self.chunks[0], self.names)  # the arena grows to a chunk's size

    def rows_per_s(self) -> float:
        started = time.perf_counter()
        for chunk in self.chunks:
            self.runtime.infer(chunk, self.names)
        return self.rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the row counts")
    parser.add_argument("--models", default=",".join(ROWS))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(
        "| model | rows | rows/batch | ceiling rows/s (best) | tensorgate batch rows/s (best) "
        "| ratio (median of pairs) | ratio with model load and output file |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            rows = max(64, int(ROWS[model] * args.scale))
            inputs = _data(model, rows, rng)
            path = Path(tmp) / f"{model}.npz"
            if len(inputs) == 1:
                path = path.with_suffix(".npy")
                np.save(path, next(iter(inputs.values())))
            else:
                np.savez(path, **inputs)
            chunk_rows = _chunk_rows(inputs)
            ceiling = Ceiling(model, inputs, chunk_rows)
            job = BatchJob(model, path, Path(tmp) / "out.npz", REPOSITORY, progress=False)
            pairs = []
            for _ in range(args.repeats):  # alternate, so that load from elsewhere hits both
                best = ceiling.rows_per_s()
                started = time.perf_counter()
                result = score(job)
                whole = rows / (time.perf_counter() - started)
                pairs.append((best, result.rows_per_s, whole))
            ceiling.runtime.close()
            ratio = statistics.median(batch / best for best, batch, _ in pairs)
            whole_ratio = statistics.median(whole / best for best, _, whole in pairs)
            print(
                f"| {model} | {rows} | {chunk_rows} | {max(p[0] for p in pairs):,.0f} | "
                f"{max(p[1] for p in pairs):,.0f} | {ratio:.0%} | {whole_ratio:.0%} |"
            )


if __name__ == "__main__":
    main()
