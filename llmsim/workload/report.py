"""PNG figures for ``llmsim analyze --report DIR``: one view per file, drawn from the analysis dict."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from llmsim.workload.analyze import dispersion_index, rate_series  # noqa: E402
from llmsim.workload.workload import Workload  # noqa: E402


def _save(fig, folder: Path, name: str, written: list) -> None:
    path = folder / name
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)


def _rate_views(w: Workload, result: dict, folder: Path, written: list) -> None:
    t = w.df["arrival_s"].to_numpy()
    for window, name, unit in ((60.0, "rate_per_minute.png", "minute"), (3600.0, "rate_per_hour.png", "hour")):
        series = rate_series(t, window)
        fig, ax = plt.subplots(figsize=(9, 3))
        ax.plot(np.arange(len(series)) * window / 3600.0, series, lw=0.8)
        ax.axhline(result["mean_rps"], color="k", ls="--", lw=0.8, label=f"mean {result['mean_rps']:.3g} req/s")
        ax.set(xlabel="hours since first request", ylabel="req/s", title=f"Arrival rate per {unit}")
        ax.legend()
        _save(fig, folder, name, written)
    period = result.get("periodicity") or {}
    for key, name, xlabel in (("hour_of_day_rps", "hour_of_day.png", "hour of day"),
                              ("day_of_week_rps", "day_of_week.png", period.get("day_label", "day"))):
        if key in period:
            fig, ax = plt.subplots(figsize=(6, 3))
            ax.bar(np.arange(len(period[key])), period[key])
            ax.set(xlabel=xlabel, ylabel="mean req/s", title=name[:-4].replace("_", " "))
            _save(fig, folder, name, written)


def _burstiness_views(w: Workload, result: dict, folder: Path, written: list) -> None:
    t = w.df["arrival_s"].to_numpy()
    gaps = np.diff(t)
    positive = gaps[gaps > 0]
    fit = result.get("arrival_fit")
    if fit and len(positive):
        fig, ax = plt.subplots(figsize=(6, 4))
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()) + 1e-9, 60)
        ax.hist(positive, bins=bins, density=True, alpha=0.5, label="gaps > 0")
        x = np.sqrt(bins[1:] * bins[:-1])
        c = fit["candidates"]
        ax.plot(x, stats.gamma.pdf(x, c["gamma"]["shape"], 0, c["gamma"]["scale"]), label=f"gamma KS {c['gamma']['ks']:.3f}")
        ax.plot(x, stats.weibull_min.pdf(x, c["weibull"]["shape"], 0, c["weibull"]["scale"]),
                label=f"Weibull KS {c['weibull']['ks']:.3f}")
        ax.plot(x, stats.expon.pdf(x, 0, c["exponential"]["scale"]), label=f"exponential KS {c['exponential']['ks']:.3f}")
        ax.set(xscale="log", yscale="log", xlabel="inter-arrival gap (s)", ylabel="density",
               title=f"Inter-arrival gaps (CV {result['interarrival_cv']:.2f})")
        ax.legend(fontsize=8)
        _save(fig, folder, "interarrival_fit.png", written)
    windows = [1.0, 10.0, 60.0, 300.0, 3600.0]
    values = [dispersion_index(t, s) for s in windows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(windows, values, "o-")
    ax.axhline(1.0, color="k", ls="--", lw=0.8, label="Poisson")
    ax.set(xscale="log", yscale="log", xlabel="window (s)", ylabel="index of dispersion", title="Burstiness across scales")
    ax.legend()
    _save(fig, folder, "dispersion.png", written)
    rows = (result.get("window_fits") or {}).get("windows") or []
    if rows:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for family in ("gamma", "weibull", "exponential"):
            ax.plot([r["window_start_s"] / 3600 for r in rows], [r["ks_by_family"][family] for r in rows], ".-", label=family)
        ax.set(xlabel="window start (h)", ylabel="KS statistic", title="Per-window inter-arrival fits")
        ax.legend()
        _save(fig, folder, "window_fits.png", written)


def _length_views(w: Workload, result: dict, folder: Path, written: list) -> None:
    df = w.df[~w.df["failed"]] if "failed" in w.df.columns else w.df
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, column in zip(axes, ("prompt_tokens", "output_tokens")):
        values = df[column].to_numpy()
        values = values[values > 0]
        if not len(values):
            continue
        bins = np.logspace(0, np.log10(values.max() + 1), 60)
        ax.hist(values, bins=bins, density=True, alpha=0.6)
        fit = (result.get("length_fits") or {}).get(column)
        if fit:
            x = np.sqrt(bins[1:] * bins[:-1])
            ax.plot(x, stats.lognorm.pdf(x, fit["lognormal"]["sigma"], 0, fit["lognormal"]["median"]),
                    label=f"lognormal KS {fit['lognormal']['ks']:.3f}")
            ax.legend(fontsize=8, title=f"Zipf a={fit['zipf']['exponent']:.2f} KS {fit['zipf']['ks']:.3f}")
        ax.set(xscale="log", xlabel=column, ylabel="density", title=column.replace("_", " "))
    _save(fig, folder, "lengths.png", written)
    rows = result.get("request_response") or []
    if rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        mid = [(r["request_lo"] + r["request_hi"]) / 2 for r in rows]
        ax.fill_between(mid, [r["response_p5"] for r in rows], [r["response_p95"] for r in rows], alpha=0.3,
                        label="5-95 %")
        ax.plot(mid, [r["response_median"] for r in rows], "o-", label="median")
        ax.set(xlabel="request tokens", ylabel="response tokens", title="Request → response")
        ax.legend()
        _save(fig, folder, "request_response.png", written)


def _other_views(w: Workload, result: dict, folder: Path, written: list) -> None:
    fail = result.get("failures") or {}
    if "per_hour" in fail:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        axes[0].plot(fail["per_hour"])
        axes[0].set(xlabel="hour since first request", ylabel="failure rate", title="Failures over time")
        axes[1].plot([(r["rps_lo"] + r["rps_hi"]) / 2 for r in fail["vs_load"]], [r["failure_rate"] for r in fail["vs_load"]], "o-")
        axes[1].set(xlabel="req/s in the arrival's minute", ylabel="failure rate", title="Failures vs load")
        _save(fig, folder, "failures.png", written)
    for column, groups in (result.get("splits") or {}).items():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = list(groups)
        ax.bar(names, [groups[n]["num_requests"] for n in names])
        ax.set(ylabel="requests", title=f"Requests by {column}")
        _save(fig, folder, f"split_{column}.png", written)
    if result.get("sessions") and "session_id" in w.df.columns:
        turns = w.df.groupby("session_id").size().to_numpy()
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist(turns, bins=np.arange(1, turns.max() + 2) - 0.5)
        ax.set(xlabel="turns per session", ylabel="sessions", yscale="log", title="Conversation length")
        _save(fig, folder, "sessions.png", written)


def write_report(workload: Workload, result: dict, folder: Path) -> list[Path]:
    """Write every view that the trace supports into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if len(workload) < 2:
        return written
    for view in (_rate_views, _burstiness_views, _length_views, _other_views):
        view(workload, result, folder, written)
    return written
