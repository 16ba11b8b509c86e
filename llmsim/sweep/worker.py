"""What one worker does for one run: simulate its config and reduce the result to a flat record.

The record holds only numbers derived from simulated time, so it is identical wherever it is computed;
the one wall-clock figure, ``wall_run_s``, is named ``wall_*`` so comparisons can leave it out.
"""

from __future__ import annotations

import time
import traceback
from typing import Any, Optional

import numpy as np
import pandas as pd

from llmsim.metrics.config import SLOConfig


def flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"ttft_s": {"p99": x}}`` → ``{"ttft_s.p99": x}``; keeps scalars (numbers, strings, booleans, None)."""
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif value is None or isinstance(value, (bool, int, float, str, np.integer, np.floating)):
            flat[name] = value.item() if hasattr(value, "item") else value
    return flat


def slo_attainment_by_metric(requests: pd.DataFrame, slo: SLOConfig) -> dict[str, float]:
    """For each SLO given, the fraction of *all* requests that completed within it.

    A rejected or failed request misses every SLO; TPOT of a one-token request counts as 0 (as vLLM's
    goodput does). ``attainment.ttft_s ≥ 0.99`` is the same statement as "p99 TTFT over all requests,
    counting failures as infinitely late, is within the SLO".
    """
    if len(requests) == 0:
        return {}
    done = (requests["status"] == "finished").to_numpy()
    out = {}
    for name in ("ttft_s", "tpot_s", "e2el_s"):
        bound = getattr(slo, name)
        if bound is None:
            continue
        values = requests[name].fillna(0.0) if name == "tpot_s" else requests[name]
        out[f"attainment.{name}"] = float((done & (values <= bound).to_numpy()).mean())
    return out


def run_metrics(result) -> dict[str, Any]:
    """The flat metrics of one :class:`~llmsim.simulation.Result` (summary plus per-SLO attainment)."""
    metrics = flatten(result.summary)
    metrics.update(slo_attainment_by_metric(result.requests, result.config.slo))
    return metrics


def execute_run(task: dict[str, Any]) -> dict[str, Any]:
    """Simulate ``task["config"]`` (a config mapping); never raises for a failing run, records it instead."""
    from llmsim.config import build_config
    from llmsim.simulation import simulate

    started = time.perf_counter()
    record: dict[str, Any] = {"key": task["key"], "status": "ok", "error": None, "metrics": {}}
    try:
        config = build_config(task["config"], f"sweep run {task['key']}")
        result = simulate(config)
        record["metrics"] = run_metrics(result)
        keep_dir: Optional[str] = task.get("keep_dir")
        if keep_dir:
            result.write(keep_dir)
    except Exception as exc:  # noqa: BLE001 - a failed run is data, not a crash of the sweep
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = "".join(traceback.format_exception(exc)[-4:])
    record["wall_run_s"] = time.perf_counter() - started
    return record
