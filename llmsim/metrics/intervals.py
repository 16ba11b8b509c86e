"""Error bars: a 90 % interval around every predicted latency and throughput, from real-world residuals.

A GPU profile fitted end to end (``llmsim calibrate fit-e2e``) stores, per metric class, the 5th and 95th
percentiles of log(predicted / measured) over published points it did *not* see (leave-one-model-out). If a
new prediction errs like those did, the real value lies in ``[p·e^(−q95), p·e^(−q05)]`` nine times in ten.

The interval is widened where evidence is thin: the half-width grows by √(1 + 4/n) for a class backed by n
points (a small-sample allowance) and is never under ±5 %; a class with fewer than :data:`MIN_POINTS` points,
or a profile never held against measurements, gets :data:`UNCALIBRATED_LOG_HALF_WIDTH` (×/÷ 1.65) around the
prediction.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from llmsim.hardware.specs import PredictionResiduals

MIN_POINTS = 5
UNCALIBRATED_LOG_HALF_WIDTH = 0.5
MIN_LOG_HALF_WIDTH = 0.05

#: Summary entry → metric class of the residuals.
LATENCY_CLASSES = {"ttft_s": "ttft", "tpot_s": "tpot", "itl_s": "tpot", "e2el_s": "e2el"}
THROUGHPUT_KEYS = ("request_throughput", "output_throughput", "total_token_throughput", "goodput")
STATISTICS = ("mean", "median", "p90", "p95", "p99")


def log_bounds(residuals: PredictionResiduals, metric_class: str) -> tuple[float, float]:
    """(low, high) multipliers' logs: the measured value lies in [p·e^low, p·e^high] (module docstring)."""
    entry = residuals.get(metric_class)
    if entry is None or entry[0] < MIN_POINTS:
        return -UNCALIBRATED_LOG_HALF_WIDTH, UNCALIBRATED_LOG_HALF_WIDTH
    n, q05, q95 = entry
    centre = -(q05 + q95) / 2.0
    half = max((q95 - q05) / 2.0 * math.sqrt(1.0 + 4.0 / n), MIN_LOG_HALF_WIDTH)
    return centre - half, centre + half


def interval(value: Optional[float], residuals: PredictionResiduals, metric_class: str) -> Optional[list[float]]:
    if value is None or not math.isfinite(value):
        return None
    low, high = log_bounds(residuals, metric_class)
    return [value * math.exp(low), value * math.exp(high)]


def add_intervals(summary: dict[str, Any], residuals: PredictionResiduals) -> None:
    """Add ``<stat>_interval`` to each latency distribution and ``<metric>_interval`` beside each throughput."""
    for key, metric_class in LATENCY_CLASSES.items():
        stats = summary.get(key)
        if not isinstance(stats, dict):
            continue
        for stat in STATISTICS:
            if stat in stats:
                stats[f"{stat}_interval"] = interval(stats[stat], residuals, metric_class)
    for key in THROUGHPUT_KEYS:
        if key in summary:
            summary[f"{key}_interval"] = interval(summary[key], residuals, "throughput")
    summary["prediction_intervals"] = {
        "level": 0.9,
        "source": residuals.fitted_on or "uncalibrated profile: ×/÷ 1.65 (no end-to-end validation)",
    }


def plus_minus(value: Optional[float], bounds: Optional[list[float]]) -> str:
    """``±9 %`` for a symmetric-enough interval, ``−5/+12 %`` otherwise (empty when there is none)."""
    if value is None or not bounds or not value:
        return ""
    down, up = 100 * (1 - bounds[0] / value), 100 * (bounds[1] / value - 1)
    if abs(down - up) <= 0.25 * max(down, up, 1e-9):
        return f" ±{(down + up) / 2:.0f}%"
    return f" −{down:.0f}/+{up:.0f}%"
