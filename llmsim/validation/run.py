"""Simulate every benchmark point and score each prediction against its measurement.

Metrics are computed as the benchmark's own client computes them, from the simulated requests table:

* ``vllm bench serve``: duration from the first send to the last response; request, output-token and
  total-token throughput over that duration; TTFT from the send (the API server's time included); TPOT =
  (E2E − TTFT) / (output tokens − 1) per request with more than one token; mean ITL over every streamed
  chunk after the first (with ``/v1/chat/completions`` the first chunk is the role, so n tokens give n gaps,
  the first one next to nothing).
* ``benchmark_throughput``: requests and tokens over the time the whole set took.
* ``benchmark_latency``: the wall time of the batch (``latency_s``).

The error of a prediction is the signed relative error (predicted − measured) / measured; summaries use its
absolute value (median and p90 over the points that measured the metric).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from llmsim.errors import UserError
from llmsim.hardware.profiles import load_gpu
from llmsim.metrics.intervals import interval
from llmsim.validation.points import METRIC_CLASS, METRICS, BenchmarkPoint
from llmsim.validation.setup import PointSetup, SkipPoint, build_setup


@dataclass
class PointOutcome:
    """One point's predictions (or why it was skipped)."""

    id: str
    setup: str = ""  # a short description of the simulated deployment
    measured: dict[str, float] = field(default_factory=dict)
    predicted: dict[str, float] = field(default_factory=dict)
    skipped: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    intervals: dict[str, list[float]] = field(default_factory=dict)  # 90 % interval of each prediction
    wall_s: float = 0.0

    def errors(self) -> dict[str, float]:
        return {m: (self.predicted[m] - v) / v for m, v in self.measured.items() if m in self.predicted and v > 0}

    def covered(self) -> dict[str, bool]:
        """Whether each measured value lies inside its prediction's interval."""
        return {m: lo <= self.measured[m] <= hi for m, (lo, hi) in self.intervals.items() if m in self.measured}


def describe(setup: PointSetup) -> str:
    hw, sched = setup.config.hardware, setup.config.scheduler
    dtypes = "" if hw.weight_dtype == "auto" else f" {hw.weight_dtype}"
    dtypes += "" if hw.kv_cache_dtype == "auto" else f" kv:{hw.kv_cache_dtype}"
    loop = "async" if sched.async_scheduling else "sync"
    return (f"{setup.point.benchmark} {hw.model}{dtypes} on {hw.gpu} tp{hw.tp}"
            + (f" pp{hw.pp}" if hw.pp > 1 else "") + f", {len(setup.workload)} req, {loop}")


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def bench_metrics(setup: PointSetup, requests, summary: dict) -> dict[str, float]:
    """The point's metrics, computed as its benchmark client computes them (module docstring)."""
    done = requests[requests["status"] == "finished"]
    if done.empty:
        raise SkipPoint("no request finished in the simulation")
    end_s = float(np.nanmax((done["arrival_s"] + done["e2el_s"]).to_numpy()))  # the client's last receipt
    start_s = float(requests["arrival_s"].min())
    duration = max(end_s - start_s, 1e-12)
    prompt = float(done["prompt_tokens"].sum())
    output = float(done["num_output_tokens"].sum())
    out = {
        "request_throughput": len(done) / duration,
        "output_token_throughput": output / duration,
        "total_token_throughput": (prompt + output) / duration,
        "latency_s": duration,
    }
    # Tables that leave it unspecified are the "client fed requests at an infinite rate" tables (AMD's ROCm
    # results restate TensorRT-LLM's performance overview, its sentence and its input/output grid), and
    # TensorRT-LLM's says what it reports: total *output* throughput (docs/validation.md).
    out["throughput_tok_s_unspecified"] = out["output_token_throughput"]
    if setup.online or setup.point.benchmark == "serve":
        ttft = done["ttft_s"].to_numpy() * 1e3
        tpot = done["tpot_s"].dropna().to_numpy() * 1e3
        e2el = done["e2el_s"].to_numpy() * 1e3
        itl = summary.get("itl_s") or {}
        out.update({
            "mean_ttft_ms": float(ttft.mean()), "median_ttft_ms": _percentile(ttft, 50), "p99_ttft_ms": _percentile(ttft, 99),
            "mean_e2el_ms": float(e2el.mean()), "median_e2el_ms": _percentile(e2el, 50),
        })
        if len(tpot):
            out.update({"mean_tpot_ms": float(tpot.mean()), "median_tpot_ms": _percentile(tpot, 50),
                        "p99_tpot_ms": _percentile(tpot, 99)})
        gaps = (done["e2el_s"] - done["ttft_s"]).sum()
        # vllm bench serve times every streamed chunk after the first. The chat endpoint's first chunk is the
        # role (sent with the first token, which follows it at once), so each token's chunk is one more gap.
        count = (done["num_output_tokens"] - (0 if setup.point.chat_endpoint else 1)).clip(lower=0).sum()
        if count > 0:
            out["mean_itl_ms"] = float(gaps / count * 1e3)
        for key, name in (("median", "median_itl_ms"), ("p99", "p99_itl_ms")):
            if itl.get(key) is not None and not math.isnan(itl[key]):
                out[name] = float(itl[key] * 1e3)
    return {k: v for k, v in out.items() if not math.isnan(v)}


def run_point(point: BenchmarkPoint) -> PointOutcome:
    """Simulate one point (a skip is an outcome, not an exception)."""
    from llmsim.simulation import simulate

    started = time.perf_counter()
    outcome = PointOutcome(point.id, measured=dict(point.measured))
    try:
        setup = build_setup(point)
        outcome.setup, outcome.notes = describe(setup), setup.notes
        result = simulate(setup.config, workload=setup.workload)
        predicted = bench_metrics(setup, result.requests, result.summary)
    except SkipPoint as exc:
        outcome.skipped = str(exc)
    except UserError as exc:
        outcome.skipped = str(exc)
    else:
        outcome.predicted = {m: predicted[m] for m in point.measured if m in predicted}
        residuals = load_gpu(setup.config.hardware.gpu).residuals
        outcome.intervals = {m: interval(v, residuals, METRIC_CLASS[m]) for m, v in outcome.predicted.items()}
        missing = [m for m in point.measured if m not in predicted]
        if missing:
            outcome.notes.append("not predicted: " + ", ".join(missing))
        if not outcome.predicted:
            outcome.skipped = "none of the measured metrics applies to this benchmark kind"
    outcome.wall_s = time.perf_counter() - started
    return outcome


def run_points(points: list[BenchmarkPoint], jobs: int = 1,
               progress: Optional[Callable[[int, int], None]] = None) -> list[PointOutcome]:
    """Every point's outcome, in the file's order (``jobs`` worker processes)."""
    from llmsim.sweep.executors import LocalExecutor

    outcomes: list[Optional[PointOutcome]] = [None] * len(points)
    executor = LocalExecutor(jobs)
    try:
        for done, (index, ok, value) in enumerate(executor.map_unordered(run_point, points), start=1):
            if not ok:
                value = PointOutcome(points[index].id, measured=dict(points[index].measured),
                                     skipped=f"simulator error ({type(value).__name__}: {value})")
            outcomes[index] = value
            if progress is not None:
                progress(done, len(points))
    finally:
        executor.close()
    return [o for o in outcomes if o is not None]


def summarize_errors(outcomes: Iterable[PointOutcome]) -> dict[str, dict]:
    """Per metric: points compared, median and p90 absolute relative error (metrics in :data:`METRICS` order)."""
    by_metric: dict[str, list[float]] = {}
    for outcome in outcomes:
        for metric, error in outcome.errors().items():
            by_metric.setdefault(metric, []).append(abs(error))
    covered: dict[str, list[bool]] = {}
    for outcome in outcomes:
        for metric, inside in outcome.covered().items():
            covered.setdefault(metric, []).append(inside)
    summary = {}
    for metric in METRICS:
        values = by_metric.get(metric)
        if values:
            arr = np.asarray(values)
            summary[metric] = {"n": int(arr.size), "median_abs_error": float(np.median(arr)),
                               "p90_abs_error": float(np.percentile(arr, 90))}
            if covered.get(metric):
                summary[metric]["interval_coverage"] = float(np.mean(covered[metric]))
    return summary


def interval_coverage(outcomes: Iterable[PointOutcome]) -> Optional[float]:
    """Share of all measured values (every point, every metric) inside their prediction's 90 % interval."""
    flags = [inside for o in outcomes for inside in o.covered().values()]
    return float(np.mean(flags)) if flags else None


def to_json(outcomes: list[PointOutcome]) -> dict:
    """The ``--json`` document: rows, per-metric summary, skipped rows with reasons."""
    rows = []
    for o in outcomes:
        if o.skipped is not None:
            continue
        errors = o.errors()
        rows.append({"id": o.id, "setup": o.setup, "notes": o.notes, "metrics": {
            m: {"measured": o.measured[m], "predicted": o.predicted[m], "error": errors.get(m),
                "interval": o.intervals.get(m)} for m in o.predicted}})
    return {"rows": rows, "summary": summarize_errors(outcomes), "interval_coverage": interval_coverage(outcomes),
            "skipped": [{"id": o.id, "reason": o.skipped} for o in outcomes if o.skipped is not None]}
