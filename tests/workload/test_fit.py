"""Fitted workload models: `generate --fit` then `analyze` reproduces the source; scaling keeps burstiness."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from llmsim.errors import UserError
from llmsim.workload import load_trace, synthetic_workload
from llmsim.workload.analyze import analyze_workload
from llmsim.workload.cli import build_generated, generate_command
from llmsim.workload.fit import FittedWorkload
from llmsim.workload.workload import Workload
from tests.conftest import shared_path

app = typer.Typer()
app.command()(generate_command)

TRACES = [("azure_llm_2023", "AzureLLMInferenceTrace_code.csv"), ("mooncake_fast25", "conversation_trace.jsonl")]


def assert_reproduces(source: dict, generated: dict, cv_tol: float = 0.10) -> None:
    assert generated["mean_rps"] == pytest.approx(source["mean_rps"], rel=0.05)
    assert generated["interarrival_cv"] == pytest.approx(source["interarrival_cv"], rel=cv_tol)
    for column in ("prompt_tokens", "output_tokens"):
        for q in ("p50", "p99"):
            assert generated[column][q] == pytest.approx(source[column][q], rel=0.10), (column, q)


@pytest.mark.parametrize("folder, name", TRACES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_round_trip_generate_fit_then_analyze(tmp_path, folder, name, seed, suffix):
    path = shared_path("traces", folder, name)
    out = tmp_path / f"gen.{suffix}"
    result = CliRunner().invoke(app, ["--fit", str(path), "-o", str(out), "--seed", str(seed)])
    assert result.exit_code == 0, result.output
    source = analyze_workload(load_trace(path))
    assert_reproduces(source, analyze_workload(load_trace(out)))


def test_same_seed_same_output(tmp_path):
    path = shared_path("traces", *TRACES[0])
    a = build_generated(fit=path, seed=4).df
    pd.testing.assert_frame_equal(a, build_generated(fit=path, seed=4).df)
    assert not a.equals(build_generated(fit=path, seed=5).df)


def time_varying_source(burstiness: float, rate: float, n: int, seed: int) -> Workload:
    """A gamma process with a slow sinusoidal rate: a stand-in for unseen traces with bursts and a daily shape."""
    t = synthetic_workload("gamma", num_requests=n, rate=rate, burstiness=burstiness, seed=seed).df
    arrival = t["arrival_s"].to_numpy()
    span = arrival[-1]
    warped = arrival + 0.25 * span / (2 * np.pi) * np.sin(2 * np.pi * 3 * arrival / span)
    df = t.assign(arrival_s=np.sort(warped - warped[0]))
    return Workload(df.reset_index(drop=True), "warped").validate()


@pytest.mark.parametrize("burstiness, rate", [(0.1, 2.0), (0.5, 0.3), (2.0, 20.0)])
def test_round_trip_on_other_arrival_shapes(burstiness, rate):
    # Regenerate 2/3 of the source's span (two of its three rate cycles). At the source's own size the
    # generator draws every source row exactly once (a permutation), so the length quantiles would match
    # whatever the model did and the test could not fail; here they come from a draw of the model.
    source = time_varying_source(burstiness, rate, 20_000, seed=11)
    model = FittedWorkload.fit(source)
    generated = model.generate(2 / 3 * model.source_duration_s, seed=2)
    generated = generated.with_df(generated.df.assign(arrival_s=generated.df["arrival_s"] - generated.df["arrival_s"].iloc[0]))
    assert len(generated) != len(source)
    assert_reproduces(analyze_workload(source), analyze_workload(generated))


def test_round_trip_check_fails_for_a_wrong_model():
    """Negative control: the same comparison rejects a model whose lengths or rate are off by 30 %."""
    source = time_varying_source(0.5, 2.0, 20_000, seed=11)
    model = FittedWorkload.fit(source)
    good = model.generate(2 / 3 * model.source_duration_s, seed=2)
    longer = good.with_df(good.df.assign(prompt_tokens=(good.df["prompt_tokens"] * 1.3).astype("int64")))
    with pytest.raises(AssertionError):
        assert_reproduces(analyze_workload(source), analyze_workload(longer))
    faster = model.generate(2 / 3 * model.source_duration_s, rate=1.3 * model.mean_rps, seed=2)
    with pytest.raises(AssertionError):
        assert_reproduces(analyze_workload(source), analyze_workload(faster))


@pytest.mark.parametrize("scale", [0.5, 2.0, 4.0])
def test_rate_scaling_keeps_burstiness(scale):
    source = time_varying_source(0.25, 2.0, 20_000, seed=3)
    model = FittedWorkload.fit(source)
    scaled = analyze_workload(model.generate(rate_scale=scale, seed=1))
    base = analyze_workload(source)
    assert scaled["mean_rps"] == pytest.approx(scale * base["mean_rps"], rel=0.05)
    assert scaled["interarrival_cv"] == pytest.approx(base["interarrival_cv"], rel=0.10)
    by_rate = analyze_workload(model.generate(rate=2 * base["mean_rps"], seed=1))
    assert by_rate["mean_rps"] == pytest.approx(2 * base["mean_rps"], rel=0.05)


def test_naive_time_compression_is_named_and_squeezes_time():
    path = shared_path("traces", *TRACES[0])
    source = load_trace(path)
    compressed = build_generated(fit=path, time_scale=0.25, seed=0)
    assert "naive time compression" in compressed.source
    assert compressed.duration_s == pytest.approx(0.25 * source.duration_s, rel=0.02)
    assert len(compressed) == pytest.approx(len(source), rel=0.02)


def test_duration_longer_than_source_cycles_the_profile():
    path = shared_path("traces", *TRACES[1])
    source = load_trace(path)
    doubled = build_generated(fit=path, duration=2 * source.duration_s, seed=0)
    assert len(doubled) == pytest.approx(2 * len(source), rel=0.03)


def test_sessions_are_generated_with_think_times():
    rng = np.random.default_rng(0)
    starts = np.sort(rng.uniform(0, 20_000, 3000))
    rows = []
    for s, start in enumerate(starts):
        t = start
        for _ in range(rng.integers(1, 6)):
            rows.append((t, s, int(rng.integers(10, 500)), int(rng.integers(1, 300))))
            t += rng.exponential(60.0)
    df = pd.DataFrame(rows, columns=["arrival_s", "session_id", "prompt_tokens", "output_tokens"])
    df = df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    df["arrival_s"] -= df["arrival_s"].iloc[0]
    source = Workload(df, "sessions").validate()
    generated = FittedWorkload.fit(source).generate(seed=0)
    src, gen = analyze_workload(source)["sessions"], analyze_workload(generated)["sessions"]
    assert gen["turns_per_session"]["mean"] == pytest.approx(src["turns_per_session"]["mean"], rel=0.1)
    assert gen["think_time_s"]["p50"] == pytest.approx(src["think_time_s"]["p50"], rel=0.1)
    assert len(generated) == pytest.approx(len(source), rel=0.1)


def test_generate_argument_errors(tmp_path):
    with pytest.raises(UserError, match="exactly one of --fit"):
        build_generated()
    with pytest.raises(UserError, match="at most one of"):
        build_generated(preset="poisson", duration=10, rate=1, rate_scale=2)
    with pytest.raises(UserError, match="needs --duration"):
        build_generated(preset="poisson")
    result = CliRunner().invoke(app, ["--preset", "gamma", "--duration", "100", "-o", str(tmp_path / "x.txt")])
    assert isinstance(result.exception, UserError) and "must end in .csv or .parquet" in str(result.exception)


def test_generate_preset_rate_and_compression(tmp_path):
    w = build_generated(preset="gamma", duration=5000, rate=3.0, burstiness=0.5, seed=1)
    assert len(w) / 5000 == pytest.approx(3.0, rel=0.05)
    w2 = build_generated(preset="burstgpt", duration=1000, time_scale=0.5, seed=1)
    assert w2.df["arrival_s"].max() < 1000 and "naive time compression" in w2.source


def test_fitted_model_as_a_config_workload():
    from llmsim.workload import build_workload
    from llmsim.workload.config import WorkloadConfig

    path = shared_path("traces", *TRACES[0])
    w = build_workload(WorkloadConfig(preset=f"fit:{path}", rate=5.0), seed=0)
    assert len(w) / w.duration_s == pytest.approx(5.0, rel=0.05)
    assert len(build_workload(WorkloadConfig(preset=f"fit:{path}", num_requests=300), seed=0)) == 300
