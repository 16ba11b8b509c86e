"""`llmsim analyze`: JSON figures against values computed independently here, and one PNG per view."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import typer
from scipy import stats
from typer.testing import CliRunner

from llmsim.workload.cli import analyze_command
from tests.conftest import REPO_ROOT, shared_path

app = typer.Typer()
app.command()(analyze_command)


def run_analyze(trace, tmp_path):
    out, report = tmp_path / "a.json", tmp_path / "report"
    result = CliRunner().invoke(app, [str(trace), "--json", str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), report


def independent_figures(arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray) -> dict:
    t = arrival - arrival[0]
    gaps = np.diff(t)
    per_minute = pd.Series(1, index=pd.to_timedelta(t, unit="s")).resample("60s").sum()
    whole = int(t[-1])  # whole 1-s windows
    counts, _ = np.histogram(t, bins=np.arange(whole + 1))
    return {
        "num_requests": len(t), "duration_s": t[-1], "mean_rps": len(t) / t[-1],
        "peak_rps_1min": per_minute.max() / 60, "interarrival_cv": np.std(gaps) / np.mean(gaps),
        "dispersion_index_1s": counts.var() / counts.mean(),
        "prompt": [prompt.mean(), *np.percentile(prompt, [50, 90, 99])],
        "output": [output.mean(), *np.percentile(output, [50, 90, 99])],
    }


def check(result: dict, expected: dict) -> None:
    for key in ("num_requests", "duration_s", "mean_rps", "peak_rps_1min", "interarrival_cv", "dispersion_index_1s"):
        assert result[key] == pytest.approx(expected[key], rel=1e-6), key
    for column, name in (("prompt_tokens", "prompt"), ("output_tokens", "output")):
        got = [result[column][k] for k in ("mean", "p50", "p90", "p99")]
        assert got == pytest.approx(expected[name], rel=1e-9), column


def test_azure_code_figures(tmp_path):
    path = shared_path("traces", "azure_llm_2023", "AzureLLMInferenceTrace_code.csv")
    result, report = run_analyze(path, tmp_path)
    raw = pd.read_csv(path)
    times = pd.to_datetime(raw["TIMESTAMP"])
    arrival = (times - times.iloc[0]).dt.total_seconds().to_numpy()
    check(result, independent_figures(arrival, raw["ContextTokens"].to_numpy(), raw["GeneratedTokens"].to_numpy()))
    assert result["failure_rate"] == 0.0
    fit = result["arrival_fit"]
    assert fit["family"] in ("gamma", "weibull", "exponential")
    gaps = np.diff(arrival)
    dist = {"gamma": "gamma", "weibull": "weibull_min", "exponential": "expon"}[fit["family"]]
    args = (0, fit["scale"]) if dist == "expon" else (fit["shape"], 0, fit["scale"])
    assert fit["ks"] == pytest.approx(stats.kstest(gaps[gaps > 0], dist, args=args).statistic, rel=1e-6)
    assert fit["ks"] <= min(c["ks"] for c in fit["candidates"].values())
    assert {"rate_per_minute.png", "interarrival_fit.png", "lengths.png", "request_response.png",
            "dispersion.png", "hour_of_day.png"} <= {p.name for p in report.iterdir()}
    assert result["periodicity"]["hour_of_day_rps"][18] > 0 and result["periodicity"]["hour_of_day_rps"][3] == 0


def test_mooncake_figures_with_ties(tmp_path):
    path = shared_path("traces", "mooncake_fast25", "conversation_trace.jsonl")
    result, _ = run_analyze(path, tmp_path)
    records = pd.read_json(path, lines=True)
    check(result, independent_figures(records["timestamp"].to_numpy() / 1000.0, records["input_length"].to_numpy(),
                                      records["output_length"].to_numpy()))
    gaps = np.diff(records["timestamp"].to_numpy())
    assert result["zero_gap_fraction"] == pytest.approx((gaps == 0).mean())


def test_burstgpt_sample_failures_and_splits(tmp_path):
    path = shared_path("traces", "burstgpt", "BurstGPT_1_first42rows_transcribed.csv")
    result, report = run_analyze(path, tmp_path)
    raw = pd.read_csv(path)
    assert result["num_requests"] == len(raw)
    assert result["failure_rate"] == pytest.approx((raw["Response tokens"] == 0).mean())
    ok = raw[raw["Response tokens"] > 0]
    assert result["prompt_tokens"]["p50"] == pytest.approx(np.percentile(ok["Request tokens"], 50))
    split = result["splits"]["model"]
    assert split["GPT-4"]["num_requests"] == int((raw["Model"] == "GPT-4").sum())
    assert split["GPT-4"]["failure_rate"] == pytest.approx(
        ((raw["Model"] == "GPT-4") & (raw["Response tokens"] == 0)).sum() / (raw["Model"] == "GPT-4").sum())
    assert (report / "failures.png").exists() and (report / "split_model.png").exists()


def test_sessions_stats(tmp_path):
    path = tmp_path / "b3.csv"
    rows = ["Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type"]
    for i, (t, s) in enumerate([(0, 1), (5, 2), (30, 1), (40, 2), (100, 1), (120, 3)]):
        rows.append(f"{t},{s},0,ChatGPT,{10 + i},{5 + i},{15 + 2 * i},Conversation log")
    path.write_text("\n".join(rows) + "\n")
    result, report = run_analyze(path, tmp_path)
    sessions = result["sessions"]
    assert sessions["num_sessions"] == 3
    assert sessions["turns_per_session"]["mean"] == pytest.approx(2.0)
    assert sessions["think_time_s"]["mean"] == pytest.approx(np.mean([30, 70, 35]))
    assert (report / "sessions.png").exists()


def test_analyze_bad_file_is_one_line_exit_2(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0,1,1\n1,x,1\n")
    done = subprocess.run([sys.executable, "-c", "import sys; from llmsim.cli import main; sys.exit(main(sys.argv[1:]))",
                           "analyze", str(path)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "bad.csv row 2, column 'prompt_tokens'" in done.stderr
