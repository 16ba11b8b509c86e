"""Characterise a workload as the BurstGPT study does: rate, periodicity, burstiness, fits, lengths, failures.

Conventions (so every figure can be recomputed by hand):

- ``duration_s`` = last arrival − first arrival; ``mean_rps`` = num_requests / duration_s.
- Inter-arrival gaps are the differences of consecutive arrival times (ties give 0-s gaps, reported as
  ``zero_gap_fraction``); ``interarrival_cv`` = population std / mean of all gaps.
- Index of dispersion at window w: variance / mean of the request counts in consecutive windows of w seconds
  covering [first arrival, last arrival] (empty windows included, a trailing partial window dropped).
  1 for Poisson arrivals, > 1 for bursty ones. ``peak_rps_1min`` = largest count in a 1-minute window / 60.
- Percentiles use numpy's default (linear interpolation). Failed requests count as arrivals; the length
  statistics use only the requests that did not fail (failed rows have 0 tokens).
- Arrival fits: gamma, Weibull and exponential (location 0) fitted by maximum likelihood to the positive
  gaps (a seeded subsample of at most 50,000), with the Kolmogorov–Smirnov statistic; the best family has
  the smallest KS. Per-window fits repeat this in up to 48 windows of ``fit_window_s``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

from llmsim.errors import UserError
from llmsim.workload.workload import Workload

QUANTILES = {"p50": 50, "p90": 90, "p99": 99}
FIT_SAMPLE = 50_000
MAX_FIT_WINDOWS = 48


def dispersion_index(arrival_s: np.ndarray, window_s: float) -> float:
    """Variance/mean of per-window counts over whole windows in [first, last] arrival."""
    if len(arrival_s) < 2:
        return float("nan")
    t = arrival_s - arrival_s[0]
    n_windows = int(t[-1] // window_s)
    if n_windows < 2:
        return float("nan")
    counts = np.bincount((t[t < n_windows * window_s] // window_s).astype(np.int64), minlength=n_windows)
    mean = counts.mean()
    return float(counts.var() / mean) if mean > 0 else float("nan")


def summary_stats(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"mean": None, **{k: None for k in QUANTILES}, "max": None}
    out = {"mean": float(np.mean(values))}
    out.update({k: float(np.percentile(values, q)) for k, q in QUANTILES.items()})
    out["max"] = float(np.max(values))
    return out


def _subsample(values: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    if len(values) <= n:
        return values
    return np.random.default_rng(seed).choice(values, size=n, replace=False)


def fit_interarrivals(gaps: np.ndarray, seed: int = 0) -> Optional[dict]:
    """MLE fits of gamma / Weibull / exponential to positive gaps; best family by KS statistic."""
    positive = _subsample(gaps[gaps > 0], FIT_SAMPLE, seed)
    if len(positive) < 10 or float(positive.std()) <= 1e-9 * float(positive.mean()):
        return None  # too few gaps, or evenly spaced arrivals: no distribution to fit (the CV says 0)
    candidates = {}
    with np.errstate(all="ignore"):
        for family, dist in (("gamma", stats.gamma), ("weibull", stats.weibull_min)):
            try:
                shape, _, scale = dist.fit(positive, floc=0)
            except (ValueError, RuntimeError, FloatingPointError):
                continue  # the MLE did not converge on these gaps: that family is simply not a candidate
            if np.isfinite(shape) and np.isfinite(scale):
                candidates[family] = (shape, scale, stats.kstest(positive, dist.name, args=(shape, 0, scale)).statistic)
    mean = float(positive.mean())
    candidates["exponential"] = (1.0, mean, stats.kstest(positive, "expon", args=(0, mean)).statistic)
    best = min(candidates, key=lambda k: candidates[k][2])
    return {"family": best, "shape": float(candidates[best][0]), "scale": float(candidates[best][1]),
            "ks": float(candidates[best][2]), "num_gaps": int(len(positive)),
            "candidates": {k: {"shape": float(v[0]), "scale": float(v[1]), "ks": float(v[2])}
                           for k, v in candidates.items()}}


def window_fits(arrival_s: np.ndarray, window_s: float) -> list[dict]:
    """Arrival fits per window (the study's per-period Gamma/Weibull fits), at most 48 windows, evenly spread."""
    t = arrival_s - arrival_s[0]
    index = (t // window_s).astype(np.int64)
    windows = np.unique(index)
    if len(windows) > MAX_FIT_WINDOWS:
        windows = windows[np.linspace(0, len(windows) - 1, MAX_FIT_WINDOWS).astype(int)]
    out = []
    for w in windows:
        fit = fit_interarrivals(np.diff(t[index == w]), seed=int(w))
        if fit is not None:
            fit = {k: v for k, v in fit.items() if k != "candidates"} | {
                "ks_by_family": {k: v["ks"] for k, v in fit["candidates"].items()}}
            out.append({"window_start_s": float(w * window_s), **fit})
    return out


def fit_lengths(values: np.ndarray, seed: int = 0) -> Optional[dict]:
    """Lognormal and Zipf (discrete power law on 1, 2, …) fits with KS statistics; best by KS."""
    positive = _subsample(values[values > 0], FIT_SAMPLE, seed).astype(np.float64)
    if len(positive) < 10:
        return None
    sigma, _, scale = stats.lognorm.fit(positive, floc=0)
    ks_lognormal = stats.kstest(positive, "lognorm", args=(sigma, 0, scale)).statistic
    zipf_a = _fit_zipf_exponent(positive)
    ks_zipf = _discrete_ks(positive, lambda x: _zipf_cdf(x, zipf_a))
    fits = {"lognormal": {"sigma": float(sigma), "median": float(scale), "ks": float(ks_lognormal)},
            "zipf": {"exponent": float(zipf_a), "ks": float(ks_zipf)}}
    return {"best": min(fits, key=lambda k: fits[k]["ks"]), **fits}


def _fit_zipf_exponent(x: np.ndarray) -> float:
    """MLE of the Zipf exponent a > 1 (pmf k^-a / zeta(a)), by bounded scalar minimisation."""
    from scipy.optimize import minimize_scalar
    from scipy.special import zeta

    mean_log = float(np.mean(np.log(x)))
    result = minimize_scalar(lambda a: a * mean_log + np.log(zeta(a)), bounds=(1.0001, 6.0), method="bounded")
    return float(result.x)


def _zipf_cdf(k: np.ndarray, a: float) -> np.ndarray:
    """P(X ≤ k) = 1 − ζ(a, k+1)/ζ(a) with the Hurwitz zeta (vectorised; scipy's zipf.cdf sums the pmf)."""
    from scipy.special import zeta

    k = np.floor(np.asarray(k, dtype=np.float64))
    return np.where(k < 1, 0.0, 1.0 - zeta(a, np.maximum(k, 1) + 1) / zeta(a))


def _discrete_ks(x: np.ndarray, cdf) -> float:
    values, counts = np.unique(x, return_counts=True)
    empirical = np.cumsum(counts) / len(x)
    model = cdf(values)
    below = np.concatenate([[0.0], empirical[:-1]])
    return float(max(np.max(np.abs(empirical - model)), np.max(np.abs(below - cdf(values - 1)))))


def request_response(prompt: np.ndarray, output: np.ndarray, num_bins: int = 20) -> list[dict]:
    """Binned median response (and 5–95 % band) against request length, bins at request quantiles."""
    if len(prompt) < num_bins:
        return []
    edges = np.unique(np.percentile(prompt, np.linspace(0, 100, num_bins + 1)))
    index = np.clip(np.searchsorted(edges, prompt, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        sel = output[index == b]
        if len(sel):
            p5, p50, p95 = np.percentile(sel, [5, 50, 95])
            rows.append({"request_lo": float(edges[b]), "request_hi": float(edges[b + 1]), "count": int(len(sel)),
                         "response_p5": float(p5), "response_median": float(p50), "response_p95": float(p95)})
    return rows


def rate_series(arrival_s: np.ndarray, window_s: float) -> np.ndarray:
    """Requests per second in consecutive windows from the first arrival (last window may be partial)."""
    t = arrival_s - arrival_s[0]
    counts = np.bincount((t // window_s).astype(np.int64))
    return counts / window_s


def periodicity(workload: Workload) -> dict:
    """Mean rate by hour of day and by day of week, when the trace's clock is known."""
    if workload.clock_origin_s is None or not len(workload):
        return {}
    clock = workload.clock_origin_s + workload.df["arrival_s"].to_numpy()
    days_observed = max((clock[-1] - clock[0]) / 86400.0, 1 / 24)
    hours = (clock // 3600).astype(np.int64) % 24
    hour_profile = np.bincount(hours, minlength=24) / (days_observed * 3600.0)
    day = (clock // 86400).astype(np.int64)
    if workload.start_datetime is not None:
        first_weekday = (workload.start_datetime - pd.Timedelta(seconds=workload.clock_origin_s)).weekday()
        label, day = "weekday (0 = Monday)", (day + first_weekday) % 7
    else:
        label, day = "day index mod 7 (weekday unknown)", day % 7
    weeks_observed = max(days_observed / 7.0, 1 / 7)
    day_profile = np.bincount(day, minlength=7) / (weeks_observed * 86400.0)
    return {"hour_of_day_rps": hour_profile.tolist(), "day_of_week_rps": day_profile.tolist(), "day_label": label,
            "note": "average rate in each hour/day slot over the observed span (partial coverage lowers a slot)"}


def failures(workload: Workload) -> dict:
    df = workload.df
    if "failed" not in df.columns:
        return {"failure_rate": 0.0, "note": "the source has no failure flag"}
    failed = df["failed"].to_numpy()
    t = df["arrival_s"].to_numpy()
    hour = (t // 3600).astype(np.int64)
    per_hour = np.bincount(hour, weights=failed, minlength=hour.max() + 1) / np.maximum(np.bincount(hour), 1)
    minute = (t // 60).astype(np.int64)
    load = np.bincount(minute)[minute] / 60.0  # rate of the minute each request arrived in
    edges = np.unique(np.percentile(load, np.linspace(0, 100, 11)))
    idx = np.clip(np.searchsorted(edges, load, side="right") - 1, 0, max(len(edges) - 2, 0))
    vs_load = [{"rps_lo": float(edges[b]), "rps_hi": float(edges[min(b + 1, len(edges) - 1)]),
                "failure_rate": float(failed[idx == b].mean()), "count": int((idx == b).sum())}
               for b in np.unique(idx)]
    return {"failure_rate": float(failed.mean()), "per_hour": per_hour.tolist(), "vs_load": vs_load}


def sessions(workload: Workload) -> Optional[dict]:
    df = workload.df
    if "session_id" not in df.columns:
        return None
    ordered = df[["session_id", "arrival_s"]].sort_values(["session_id", "arrival_s"], kind="stable")
    turns = ordered.groupby("session_id").size().to_numpy()
    same = ordered["session_id"].to_numpy()[1:] == ordered["session_id"].to_numpy()[:-1]
    think = np.diff(ordered["arrival_s"].to_numpy())[same]
    return {"num_sessions": int(len(turns)), "turns_per_session": summary_stats(turns),
            "think_time_s": summary_stats(think)}


def _core(arrival_s: np.ndarray, prompt: np.ndarray, output: np.ndarray) -> dict:
    n = len(arrival_s)
    duration = float(arrival_s[-1] - arrival_s[0]) if n else 0.0
    gaps = np.diff(arrival_s)
    per_minute = rate_series(arrival_s, 60.0) if n else np.zeros(1)
    mean_rps = n / duration if duration > 0 else float("nan")
    peak = float(per_minute.max())
    return {
        "num_requests": int(n), "duration_s": duration, "mean_rps": mean_rps, "peak_rps_1min": peak,
        "peak_to_mean": peak / mean_rps if duration > 0 else float("nan"),
        "interarrival_cv": float(gaps.std() / gaps.mean()) if len(gaps) and gaps.mean() > 0 else float("nan"),
        "zero_gap_fraction": float((gaps == 0).mean()) if len(gaps) else 0.0,
        "dispersion_index_1s": dispersion_index(arrival_s, 1.0),
        "dispersion_index_10s": dispersion_index(arrival_s, 10.0),
        "dispersion_index_60s": dispersion_index(arrival_s, 60.0),
        "prompt_tokens": summary_stats(prompt), "output_tokens": summary_stats(output),
    }


def _lengths_ok(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    ok = ~df["failed"].to_numpy() if "failed" in df.columns else np.ones(len(df), dtype=bool)
    return df["prompt_tokens"].to_numpy()[ok], df["output_tokens"].to_numpy()[ok]


def splits(workload: Workload) -> dict:
    """The core figures per model and per service (log type), where the trace has them."""
    out = {}
    for column in ("model", "service"):
        if column not in workload.df.columns:
            continue
        groups = {}
        for value, group in workload.df.groupby(column, observed=True, sort=True):
            prompt, output = _lengths_ok(group)
            core = _core(group["arrival_s"].to_numpy(), prompt, output)
            if "failed" in group.columns:
                core["failure_rate"] = float(group["failed"].mean())
            groups[str(value)] = core
        out[column] = groups
    return out


def analyze_workload(workload: Workload, fit_window_s: Optional[float] = None) -> dict:
    """All figures of the characterisation as one JSON-ready dict (see the module docstring)."""
    df = workload.df
    arrival = df["arrival_s"].to_numpy()
    prompt, output = _lengths_ok(df)
    result = {"source": workload.source, **_core(arrival, prompt, output)}
    fail = failures(workload)
    result["failure_rate"] = fail["failure_rate"]
    fit = fit_interarrivals(np.diff(arrival))
    result["arrival_fit"] = fit
    if fit_window_s is not None and not (np.isfinite(fit_window_s) and fit_window_s > 0):
        raise UserError(f"--fit-window: expected a positive number of seconds, got {fit_window_s}")
    window = fit_window_s if fit_window_s is not None else _default_fit_window_s(result["duration_s"])
    if result["duration_s"] / window > 1e9:  # window indices must stay far inside int64
        raise UserError(f"--fit-window {window:g} s cuts the trace's {result['duration_s']:g} s into more than 1e9 "
                        f"windows; use at least {result['duration_s'] / 1e9:.3g} s")
    result["window_fits"] = {"window_s": window, "windows": window_fits(arrival, window)} if len(arrival) > 1 else {}
    result["length_fits"] = {"prompt_tokens": fit_lengths(prompt), "output_tokens": fit_lengths(output)}
    result["request_response"] = request_response(prompt, output)
    result["rate_per_hour_rps"] = rate_series(arrival, 3600.0).tolist() if len(arrival) else []
    result["periodicity"] = periodicity(workload)
    result["failures"] = fail
    result["splits"] = splits(workload)
    result["sessions"] = sessions(workload)
    return result


def _default_fit_window_s(duration_s: float) -> float:
    """Hourly windows (the study's choice) for long traces, else ~10 windows over the trace."""
    return 3600.0 if duration_s >= 6 * 3600 else max(60.0, float(np.ceil(duration_s / 10 / 60) * 60))



