"""The long-run summary helpers (bucketed weighted percentiles, weighted mean and std) give exactly what the
full sort and numpy give."""

import numpy as np
import pytest

from llmsim.metrics import summary


@pytest.mark.parametrize("kind", ["smooth", "rounded", "few values", "half tied", "zeros and decades"])
@pytest.mark.parametrize("weighted", [False, True])
def test_buckets_match_the_full_sort(monkeypatch, kind: str, weighted: bool) -> None:
    monkeypatch.setattr(summary, "_CHUNK", 997)  # small chunks: the bucketed path on a small array
    rng = np.random.default_rng(len(kind) + weighted)
    m = 20_000
    values = {"smooth": lambda: rng.gamma(2.0, 0.01, m), "rounded": lambda: np.round(rng.gamma(2.0, 0.01, m), 3),
              "few values": lambda: rng.choice([0.01, 0.02, 0.015, 0.3], m),
              "half tied": lambda: rng.permutation(np.concatenate([np.full(m // 2, 0.02), rng.random(m // 2)])),
              "zeros and decades": lambda: rng.permutation(np.concatenate([np.zeros(m // 10),
                                                                         10.0 ** rng.uniform(-9, 4, m - m // 10)]))}[kind]()
    weights = rng.integers(1, 300, m) if weighted else np.ones(m, dtype=np.int64)
    percentiles = [0.0, 1.0, 12.5, 25.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0]
    assert summary.weighted_percentiles(values, weights, percentiles) == summary._sorted_percentiles(
        values, weights, percentiles)
    assert summary._sorted_percentiles(values, weights, percentiles) == pytest.approx(
        np.percentile(np.repeat(values, weights), percentiles).tolist(), rel=1e-12)


def test_weighted_mean_and_std_are_numpys() -> None:
    rng = np.random.default_rng(3)
    for size in (1, 7, 129, 5_000, 70_001):
        values = rng.gamma(2.0, 0.01, size)
        weights = rng.integers(1, 400, size)
        mean = float(np.average(values, weights=weights))
        std = float(np.sqrt(np.average((values - mean) ** 2, weights=weights)))
        assert summary._weighted_mean_std(values, weights) == (mean, std)
