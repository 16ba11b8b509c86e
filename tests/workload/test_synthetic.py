"""Synthetic presets: determinism, vLLM burstiness (gap CV = 1/sqrt(b)), rate, length bounds, config entry point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from llmsim.errors import ConfigError
from llmsim.workload import build_workload, synthetic_workload
from llmsim.workload.config import WorkloadConfig
from llmsim.workload.synthetic import MAX_MODEL_LEN, PRESETS


def gaps(df: pd.DataFrame) -> np.ndarray:
    return np.diff(np.concatenate([[0.0], df["arrival_s"].to_numpy()]))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_same_seed_same_frame_other_seed_differs(preset):
    a = synthetic_workload(preset, num_requests=500, seed=7).df
    b = synthetic_workload(preset, num_requests=500, seed=7).df
    pd.testing.assert_frame_equal(a, b)
    assert not synthetic_workload(preset, num_requests=500, seed=8).df.equals(a)


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 1.0, 4.0])
def test_gamma_gap_cv_is_one_over_sqrt_burstiness(burstiness):
    w = synthetic_workload("gamma", num_requests=200_000, rate=10.0, burstiness=burstiness, seed=1)
    g = gaps(w.df)
    assert g.std() / g.mean() == pytest.approx(1 / np.sqrt(burstiness), rel=0.03)


def test_count_mode_rescales_last_arrival_to_n_over_rate():
    w = synthetic_workload("burstgpt", num_requests=1000, rate=5.0, seed=3)
    assert w.df["arrival_s"].iloc[-1] == pytest.approx(1000 / 5.0)
    assert w.df["arrival_s"].iloc[0] > 0


def test_duration_mode_fills_the_duration_at_the_rate():
    w = synthetic_workload("poisson", duration_s=2000.0, rate=20.0, seed=4)
    assert w.df["arrival_s"].max() < 2000.0
    assert len(w) == pytest.approx(40_000, rel=0.03)


def test_poisson_rejects_other_burstiness_and_unknown_preset_lists_names():
    with pytest.raises(ConfigError, match="burstiness 1"):
        synthetic_workload("poisson", burstiness=0.5)
    with pytest.raises(ConfigError, match="valid presets: burstgpt, gamma, poisson"):
        synthetic_workload("nosuch")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3000))
def test_lengths_fit_llama2_context(seed, n):
    df = synthetic_workload("burstgpt", num_requests=n, seed=seed).df
    assert (df["prompt_tokens"] >= 1).all() and (df["output_tokens"] >= 1).all()
    assert ((df["prompt_tokens"] + df["output_tokens"]) <= MAX_MODEL_LEN).all()
    assert (np.diff(df["arrival_s"]) >= 0).all()


def test_burstgpt_response_median_grows_with_request_to_about_450_at_2000():
    df = synthetic_workload("burstgpt", num_requests=300_000, seed=5).df
    near = lambda lo, hi: df[(df["prompt_tokens"] >= lo) & (df["prompt_tokens"] < hi)]["output_tokens"].median()
    at_2000 = near(1900, 2100)
    assert 400 <= at_2000 <= 500
    assert near(200, 400) < near(900, 1100) < at_2000


def test_build_workload_uses_preset_or_trace(tmp_path):
    w = build_workload(WorkloadConfig(), seed=0)
    assert len(w) == 2000 and w.meta["preset"] == "burstgpt"
    w = build_workload(WorkloadConfig(preset="gamma", rate=2.0, burstiness=0.5, duration_s=100.0), seed=0)
    assert w.df["arrival_s"].max() < 100 and w.meta["burstiness"] == 0.5
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0,1,1\n2,2,2\n4,3,3\n")
    w = build_workload(WorkloadConfig(trace=str(path), time_scale=0.5), seed=0)
    assert list(w.df["arrival_s"]) == [0.0, 1.0, 2.0] and "naive time compression" in w.source
    assert len(build_workload(WorkloadConfig(trace=str(path), num_requests=2), seed=0)) == 2


def test_burstgpt_preset_has_minutes_long_burst_episodes_at_the_same_mean_rate():
    from llmsim.workload.synthetic import BurstEpisodeArrivals

    rng = np.random.default_rng(11)
    process = BurstEpisodeArrivals(rate_rps=2.0, burstiness=0.5)
    times = process.for_duration(rng, 200_000.0)
    assert len(times) / 200_000.0 == pytest.approx(2.0, rel=0.05)
    per_minute = np.bincount((times // 60).astype(int)) / 60.0
    # Burst episodes run at burst_factor × the calm rate: ~2.5× the mean here; a plain gamma process with
    # the same shape would almost never hold twice its mean for a whole minute.
    assert np.quantile(per_minute, 0.95) > 1.8 * 2.0
    plain = np.random.default_rng(11).gamma(0.5, 1.0 / (2.0 * 0.5), size=len(times)).cumsum()
    plain_minute = np.bincount((plain // 60).astype(int)) / 60.0
    assert np.quantile(plain_minute, 0.95) < 1.5 * 2.0


def test_diurnal_curve_keeps_the_count_and_follows_the_daily_rate():
    w = synthetic_workload("poisson", num_requests=200_000, rate=10.0, seed=2, diurnal_amplitude=0.6,
                           day_s=10_000.0, peak_s=5_000.0)
    times = w.df["arrival_s"].to_numpy()
    assert len(times) == 200_000 and np.all(np.diff(times) >= 0)
    # Rate per 1/10 of the day against mean × (1 + a·cos(2π(t − peak)/day)), over the whole days covered.
    days = int(times[-1] // 10_000)
    kept = times[times < days * 10_000]
    bins = np.bincount(((kept % 10_000) // 1_000).astype(int), minlength=10) / (days * 1_000.0)
    centres = np.arange(10) * 1_000 + 500
    expected = 10.0 * (1 + 0.6 * np.cos(2 * np.pi * (centres - 5_000) / 10_000))
    assert np.allclose(bins, expected, rtol=0.08)
    assert bins.argmax() == 4 or bins.argmax() == 5  # the peak sits at peak_s


def test_diurnal_option_is_only_for_synthetic_presets(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,5\n1,10,5\n")
    with pytest.raises(ConfigError, match="workload.diurnal_amplitude"):
        build_workload(WorkloadConfig(preset=f"fit:{trace}", diurnal_amplitude=0.5), seed=0)
