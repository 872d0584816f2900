"""Data and prediction drift: compare what a model sees now with a reference profile.

A profile holds, per feature, quantile bin edges and the reference frequencies in them (plus
mean and std). Features come from each input and output tensor: a tensor with at most
MAX_ELEMENT_FEATURES elements per row gives one feature per element; a larger one (an image)
gives two per row, its mean and its standard deviation. The monitor samples a fraction of
requests on the request path (a random draw and a bounded queue put), and a worker thread folds
the samples into a fixed-size sliding window per feature: memory and CPU stay bounded whatever
the traffic. Scores are computed when metrics are scraped: the population stability index (PSI)
per feature and a Kolmogorov-Smirnov statistic over the same bins; an alert is raised when any
feature's PSI crosses the threshold (0.2 by default: 0.1-0.25 is commonly read as moderate
drift, above 0.25 as major).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAX_ELEMENT_FEATURES = 64
BINS = 10
_EPSILON = 1e-4  # smooths empty bins so PSI stays finite


def feature_columns(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One float column per feature, one row per batch row, named "tensor[i]" or "tensor.mean"."""
    columns: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        if array.dtype == object or array.ndim == 0:
            continue  # BYTES and scalars carry no numeric distribution to compare
        rows = array.reshape(array.shape[0], -1).astype(np.float64, copy=False)
        if rows.shape[1] <= MAX_ELEMENT_FEATURES:
            for index in range(rows.shape[1]):
                columns[f"{name}[{index}]"] = rows[:, index]
        else:
            columns[f"{name}.mean"] = rows.mean(axis=1)
            columns[f"{name}.std"] = rows.std(axis=1)
    return columns


@dataclass(frozen=True)
class FeatureProfile:
    edges: tuple[float, ...]  # BINS + 1 edges; the outer ones are -inf and +inf
    frequencies: tuple[float, ...]
    mean: float
    std: float


@dataclass(frozen=True)
class DriftProfile:
    features: dict[str, FeatureProfile]

    @classmethod
    def build(cls, columns: Mapping[str, np.ndarray]) -> DriftProfile:
        features = {}
        for name, values in columns.items():
            inner = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
            edges = np.concatenate(([-np.inf], inner, [np.inf]))
            counts = np.histogram(values, bins=edges)[0]
            features[name] = FeatureProfile(
                edges=tuple(float(e) for e in edges),
                frequencies=tuple(float(f) for f in counts / max(1, counts.sum())),
                mean=float(values.mean()),
                std=float(values.std()),
            )
        return cls(features)

    def to_json(self) -> str:
        return json.dumps(
            {
                name: {
                    "edges": [_json_float(e) for e in f.edges],
                    "frequencies": list(f.frequencies),
                    "mean": f.mean,
                    "std": f.std,
                }
                for name, f in self.features.items()
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> DriftProfile:
        data = json.loads(text)
        return cls(
            {
                name: FeatureProfile(
                    edges=tuple(float(e) for e in f["edges"]),
                    frequencies=tuple(f["frequencies"]),
                    mean=f["mean"],
                    std=f["std"],
                )
                for name, f in data.items()
            }
        )


def _json_float(value: float) -> float | str:
    return value if np.isfinite(value) else ("inf" if value > 0 else "-inf")


def population_stability_index(reference: np.ndarray, current: np.ndarray) -> float:
    ref = np.clip(reference, _EPSILON, None)
    cur = np.clip(current, _EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> float:
    """The largest gap between the two cumulative distributions at the bin edges."""
    return float(np.max(np.abs(np.cumsum(reference) - np.cumsum(current))))


@dataclass(frozen=True)
class DriftSettings:
    sample_ratio: float
    window_rows: int = 2000
    psi_threshold: float = 0.2
    reference_rows: int = 0  # without a profile file: build one from the first rows sampled
    profile_path: Path | None = None
    queue_size: int = 64


@dataclass(frozen=True)
class FeatureScore:
    feature: str
    psi: float
    ks: float


class DriftMonitor:
    """Samples requests of one model version and scores them against its profile."""

    def __init__(self, settings: DriftSettings, profile: DriftProfile | None) -> None:
        self.settings = settings
        self._profile = profile
        self._reference: dict[str, list[np.ndarray]] = {}
        self._reference_rows = 0
        self._windows: dict[str, np.ndarray] = {}
        self._positions: dict[str, int] = {}
        self._filled: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pending: queue.Queue[dict[str, np.ndarray] | None] = queue.Queue(settings.queue_size)
        self._random = random.Random()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="drift", daemon=True)
        self._worker.start()

    def offer(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        """Called per request: keep a sample with the configured probability, never block."""
        if self._closed or self._random.random() >= self.settings.sample_ratio:
            return
        # When the worker is behind, dropping samples keeps memory and latency bounded.
        with contextlib.suppress(queue.Full):
            self._pending.put_nowait({**inputs, **outputs})

    def scores(self) -> list[FeatureScore]:
        """PSI and KS per feature over the current window (after taking in pending samples)."""
        if self._closed:
            return []
        self._pending.join()
        with self._lock:
            profile = self._profile
            if profile is None:
                return []
            results = []
            for name, feature in profile.features.items():
                filled = self._filled.get(name, 0)
                if not filled:
                    continue
                values = self._windows[name][:filled]
                counts = np.histogram(values, bins=np.asarray(feature.edges))[0]
                current = counts / counts.sum()
                reference = np.asarray(feature.frequencies)
                results.append(
                    FeatureScore(
                        name,
                        population_stability_index(reference, current),
                        ks_statistic(reference, current),
                    )
                )
            return results

    def alert(self, scores: list[FeatureScore]) -> bool:
        return any(score.psi > self.settings.psi_threshold for score in scores)

    @property
    def window_rows(self) -> int:
        with self._lock:
            return max(self._filled.values(), default=0)

    def close(self) -> None:
        self._closed = True
        self._pending.put(None)
        self._worker.join(timeout=5)

    def _work(self) -> None:
        while True:
            sample = self._pending.get()
            try:
                if sample is None:
                    return
                self._take(feature_columns(sample))
            except Exception:
                log.exception("drift: a sample could not be folded in")
            finally:
                self._pending.task_done()

    def _take(self, columns: dict[str, np.ndarray]) -> None:
        with self._lock:
            if self._profile is None:
                self._collect_reference(columns)
                return
            size = self.settings.window_rows
            for name, values in columns.items():
                if name not in self._profile.features:
                    continue
                window = self._windows.setdefault(name, np.zeros(size))
                recent = values[-size:]
                position = self._positions.get(name, 0)
                window[(position + np.arange(len(recent))) % size] = recent
                self._positions[name] = (position + len(recent)) % size
                self._filled[name] = min(size, self._filled.get(name, 0) + len(recent))

    def _collect_reference(self, columns: dict[str, np.ndarray]) -> None:
        if self.settings.reference_rows <= 0:
            return  # no profile and none to build: nothing to compare against
        for name, values in columns.items():
            self._reference.setdefault(name, []).append(values)
        self._reference_rows += len(next(iter(columns.values()), ()))
        if self._reference_rows >= self.settings.reference_rows > 0:
            self._profile = DriftProfile.build(
                {name: np.concatenate(parts) for name, parts in self._reference.items()}
            )
            self._reference.clear()
            log.info("drift: reference profile built from the first %d rows", self._reference_rows)


def load_profile(path: Path) -> DriftProfile:
    return DriftProfile.from_json(path.read_text(encoding="utf-8"))
