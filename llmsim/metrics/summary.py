"""The run summary, by the conventions of ``vllm bench serve`` (see ../shared/DESIGN.md §5).

TTFT = first token − arrival; E2EL = last token − arrival; TPOT = (E2EL − TTFT)/(output tokens − 1) per
request with more than one output token; ITL = every gap between consecutive tokens, pooled. Percentiles use
numpy's default (linear) interpolation as vLLM does. Throughputs are over the makespan (first arrival → last
finish). Goodput counts requests per second that meet every SLO given; rejected and failed requests count
against SLO attainment.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import pandas as pd

from llmsim.metrics.config import SLOConfig


def percentile_key(p: float) -> str:
    if p == 50:
        return "median"
    return "p" + (f"{p:g}")


_CHUNK = 1 << 20  # values per pass of the bucketed percentiles (bounds their temporaries)


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, percentiles: list[float]) -> list[float]:
    """``np.percentile(np.repeat(values, weights), q)`` without materialising the repeat."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    if len(values) <= 4 * _CHUNK or np.isnan(values).any() or np.signbit(values).any():
        return _sorted_percentiles(values, weights, percentiles)
    at_rank = _ranked_by_buckets(values, weights)
    n = int(weights.sum())
    out = []
    for q in percentiles:
        h = (n - 1) * q / 100.0
        lo, hi = math.floor(h), math.ceil(h)
        v_lo, v_hi = at_rank(lo), at_rank(hi)
        out.append(float(v_lo + (h - lo) * (v_hi - v_lo)))
    return out


def _sorted_percentiles(values: np.ndarray, weights: np.ndarray, percentiles: list[float]) -> list[float]:
    # Keep to the sort order and one cumulative array (in place), and read the sorted values only where the
    # percentiles fall.
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order], dtype=np.int64)  # 32-bit weights (the recorder's) sum past 2**31
    n = int(cum[-1])
    out = []
    for q in percentiles:
        h = (n - 1) * q / 100.0
        lo, hi = math.floor(h), math.ceil(h)
        v_lo = values[order[np.searchsorted(cum, lo, side="right")]]
        v_hi = values[order[np.searchsorted(cum, hi, side="right")]]
        out.append(float(v_lo + (h - lo) * (v_hi - v_lo)))
    return out


# A non-negative float64's bits, read as an integer, order as the floats do; dropping the low 44 bits leaves its
# exponent and top 8 mantissa bits: a bucket is 1/256 of an octave wide, found with a shift instead of a search.
_BUCKET_SHIFT = 44


def _ranked_by_buckets(values: np.ndarray, weights: np.ndarray):
    """rank → the value at that weighted rank in value order (the least v whose values ≤ v weigh more than
    the rank), the same value as the full sort gives. A long run holds tens of millions of gaps: instead of
    sorting them all (an index and a cumulative array as large as they are), weigh them in buckets of their
    leading bits (values must be non-negative, no NaN), chunk by chunk, then sort only the buckets the asked ranks
    fall in."""
    n_values = len(values)
    low = int(np.float64(values.min()).view(np.int64)) >> _BUCKET_SHIFT
    high = int(np.float64(values.max()).view(np.int64)) >> _BUCKET_SHIFT
    per_bucket = np.zeros(high - low + 1, dtype=np.int64)
    for start in range(0, n_values, _CHUNK):
        buckets = (values[start:start + _CHUNK].view(np.int64) >> _BUCKET_SHIFT) - low
        per_bucket += np.bincount(buckets, weights=weights[start:start + _CHUNK],  # exact below 2**53
                                  minlength=len(per_bucket)).astype(np.int64)
    cum_bucket = np.cumsum(per_bucket)
    sorted_buckets: dict = {}

    def at_rank(rank: int):
        k = int(np.searchsorted(cum_bucket, rank, side="right"))
        if k not in sorted_buckets:
            parts_v, parts_w = [], []
            for start in range(0, n_values, _CHUNK):
                v = values[start:start + _CHUNK]
                inside = (v.view(np.int64) >> _BUCKET_SHIFT) == k + low
                parts_v.append(v[inside])
                parts_w.append(weights[start:start + _CHUNK][inside])
            v, w = np.concatenate(parts_v), np.concatenate(parts_w)
            order = np.argsort(v, kind="stable")
            sorted_buckets[k] = (v[order], np.cumsum(w[order]) + (cum_bucket[k - 1] if k > 0 else 0))
        v, cum = sorted_buckets[k]
        return v[np.searchsorted(cum, rank, side="right")]

    return at_rank


def distribution(values: np.ndarray, percentiles: list[float], weights: Optional[np.ndarray] = None) -> dict[str, Any]:
    """mean, std and the chosen percentiles (median for p50) of ``values``; None entries when empty."""
    keys = ["mean", "std"] + [percentile_key(p) for p in percentiles]
    if "median" not in keys:
        keys.append("median")
    if values.size == 0:
        return {k: None for k in keys}
    wanted = sorted(set(percentiles) | {50.0})
    if weights is None:
        pct = np.percentile(values, wanted).tolist()
        mean, std = float(values.mean()), float(values.std())
    else:
        pct = weighted_percentiles(values, weights, wanted)
        mean, std = _weighted_mean_std(values, weights)
    by_p = dict(zip(wanted, pct))
    result = {"mean": mean, "std": std}
    for p in percentiles:
        result[percentile_key(p)] = float(by_p[p])
    result["median"] = float(by_p[50.0])
    return result


def _weighted_mean_std(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """``np.average(values, weights=weights)`` and ``sqrt(np.average((values − mean)², weights=weights))`` with
    numpy's own operations in its order (bit-identical), in one scratch array instead of two temporaries as
    large as the tens of millions of gaps of a long run."""
    scale = weights.sum(dtype=np.float64)
    if scale == 0.0:
        raise ZeroDivisionError("Weights sum to zero, can't be normalized")
    scratch = np.multiply(values, weights, dtype=np.float64)
    mean = float(scratch.sum() / scale)
    np.subtract(values, mean, out=scratch)
    np.square(scratch, out=scratch)
    np.multiply(scratch, weights, out=scratch, dtype=np.float64)
    return mean, float(math.sqrt(scratch.sum() / scale))


def itl_distribution(itl_values: np.ndarray, itl_weights: np.ndarray, percentiles: list[float]) -> dict[str, Any]:
    """The summary's ``itl_s``: the weighted gaps' distribution."""
    return distribution(itl_values, percentiles, itl_weights if itl_values.size else None)


def meets_slo(requests: pd.DataFrame, slo: SLOConfig) -> np.ndarray:
    """Boolean per request: completed and within every SLO given (TPOT counts as 0 with one output token)."""
    good = (requests["status"] == "finished").to_numpy().copy()
    if slo.ttft_s is not None:
        good &= (requests["ttft_s"] <= slo.ttft_s).to_numpy()
    if slo.tpot_s is not None:
        good &= (requests["tpot_s"].fillna(0.0) <= slo.tpot_s).to_numpy()
    if slo.e2el_s is not None:
        good &= (requests["e2el_s"] <= slo.e2el_s).to_numpy()
    return good


def _hit_rate(requests: pd.DataFrame) -> float:
    """Cached tokens / tokens that needed KV (prompt + recomputed) over requests that were scheduled."""
    # Column by column: a frame of the scheduled rows copied the whole table (a million rows: 250 MB at the peak).
    scheduled = requests["first_scheduled_s"].notna().to_numpy()
    looked_up = int(requests["prompt_tokens"][scheduled].sum() + requests["recomputed_tokens"][scheduled].sum())
    return float(requests["cached_tokens"][scheduled].sum() / looked_up) if looked_up else 0.0


def summarize(
    requests: pd.DataFrame,
    itl_values: np.ndarray,
    itl_weights: np.ndarray,
    steps_info: dict[str, Any],
    slo: SLOConfig,
    percentiles: list[float],
    itl: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The run summary; ``itl``: the gaps' :func:`distribution` when worked out already (the gaps are then
    not needed)."""
    # The finished requests' columns one at a time (the whole column when all finished): a frame of the finished
    # rows copied every column of a million-row table at once, the run's peak memory.
    finished = (requests["status"] == "finished").to_numpy()
    all_done = bool(finished.all())

    def done(name: str) -> pd.Series:
        return requests[name] if all_done else requests[name][finished]

    num = len(requests)
    num_done = int(finished.sum())
    start = float(requests["arrival_s"].min()) if num else 0.0
    end = float(done("finish_s").max()) if num_done else start
    duration = max(end - start, 0.0)
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    out_tokens = int(done("num_output_tokens").sum())
    in_tokens = int(done("prompt_tokens").sum())
    summary: dict[str, Any] = {
        "num_requests": num,
        "completed": num_done,
        "rejected": int((requests["status"] == "rejected").sum()),
        "failed": int((requests["status"] == "failed").sum()),
        "duration_s": duration,
        "request_throughput": per_s(num_done),
        "output_throughput": per_s(out_tokens),
        "total_token_throughput": per_s(in_tokens + out_tokens),
        "ttft_s": distribution(done("ttft_s").to_numpy(), percentiles),
        "tpot_s": distribution(done("tpot_s").dropna().to_numpy(), percentiles),
        "itl_s": itl if itl is not None else itl_distribution(itl_values, itl_weights, percentiles),
        "e2el_s": distribution(done("e2el_s").to_numpy(), percentiles),
        "queue_s": distribution(done("queue_s").to_numpy(), percentiles),
        "preemptions": int(requests["num_preemptions"].sum()),
        "preempted_requests": int((requests["num_preemptions"] > 0).sum()),
        "recomputed_tokens": int(requests["recomputed_tokens"].sum()),
        # Prefix caching: prompt (and recompute) tokens served from cached blocks instead of prefilled.
        "prefix_cached_tokens": int(requests["cached_tokens"].sum()),
        "prefix_cache_hit_rate": _hit_rate(requests),
    }
    if any(v is not None for v in (slo.ttft_s, slo.tpot_s, slo.e2el_s)):
        good = meets_slo(requests, slo)
        summary["slo_attainment"] = float(good.mean()) if num else None
        summary["goodput"] = per_s(int(good.sum()))
    else:
        summary["slo_attainment"] = None
        summary["goodput"] = None
    reasons = requests.loc[requests["status"] != "finished", "reason"].value_counts().sort_index()
    summary["not_completed_by_reason"] = {str(k): int(v) for k, v in reasons.items()}
    summary.update(steps_info)
    return summary
