"""Drift scores on synthetic data: a shifted distribution raises PSI and the alert."""

from __future__ import annotations

import numpy as np
import pytest

from server.observability.drift import (
    DriftMonitor,
    DriftProfile,
    DriftSettings,
    feature_columns,
    ks_statistic,
    population_stability_index,
)

RNG = np.random.default_rng(0)


def rows(mean: float, count: int = 400) -> dict[str, np.ndarray]:
    return {"x": RNG.normal(mean, 1.0, size=(count, 3)).astype(np.float32)}


def test_small_tensors_give_a_feature_per_element_and_large_ones_mean_and_std() -> None:
    columns = feature_columns(
        {
            "small": np.arange(6, dtype=np.float32).reshape(2, 3),
            "image": np.ones((2, 3, 8, 8), np.float32),
            "text": np.array([[b"a"], [b"b"]], dtype=object),
        }
    )
    assert sorted(columns) == ["image.mean", "image.std", "small[0]", "small[1]", "small[2]"]
    assert columns["small[2]"].tolist() == [2, 5]
    assert columns["image.mean"].tolist() == [1, 1]


def test_profile_round_trips_through_json() -> None:
    profile = DriftProfile.build(feature_columns(rows(0.0)))
    again = DriftProfile.from_json(profile.to_json())
    assert again == profile
    assert again.features["x[0]"].edges[0] == -np.inf


def test_psi_and_ks_are_zero_for_equal_distributions_and_grow_with_a_shift() -> None:
    reference = np.full(10, 0.1)
    assert population_stability_index(reference, reference) == pytest.approx(0)
    assert ks_statistic(reference, reference) == pytest.approx(0)
    shifted = np.array([0.0] * 5 + [0.2] * 5)
    assert population_stability_index(reference, shifted) > 1
    assert ks_statistic(reference, shifted) == pytest.approx(0.5)


def monitor(profile: DriftProfile | None = None, **settings: object) -> DriftMonitor:
    return DriftMonitor(DriftSettings(sample_ratio=1.0, window_rows=300, **settings), profile)


def test_an_unshifted_stream_stays_low_and_a_shifted_one_raises_the_alert() -> None:
    profile = DriftProfile.build(feature_columns(rows(0.0, 2000)))
    watcher = monitor(profile)
    try:
        watcher.offer(rows(0.0), {})
        scores = watcher.scores()
        assert len(scores) == 3
        assert max(score.psi for score in scores) < 0.1
        assert not watcher.alert(scores)

        watcher.offer(rows(1.5), {})  # fills the 300-row window with shifted data
        scores = watcher.scores()
        assert min(score.psi for score in scores) > 0.25
        assert min(score.ks for score in scores) > 0.3
        assert watcher.alert(scores)
        assert watcher.window_rows == 300
    finally:
        watcher.close()


def test_without_a_profile_the_first_rows_become_the_reference() -> None:
    watcher = monitor(reference_rows=400)
    try:
        watcher.offer(rows(0.0), {})  # these 400 rows are the reference
        assert watcher.scores() == []
        watcher.offer(rows(0.0), {})
        assert not watcher.alert(watcher.scores())
        watcher.offer(rows(2.0), {})
        assert watcher.alert(watcher.scores())
    finally:
        watcher.close()


def test_sampling_ratio_zero_takes_nothing_and_a_closed_monitor_ignores_offers() -> None:
    watcher = DriftMonitor(DriftSettings(sample_ratio=0.0), DriftProfile.build({}))
    watcher.offer(rows(0.0), {})
    assert watcher.window_rows == 0
    watcher.close()
    watcher.offer(rows(0.0), {})
    assert watcher.scores() == []
