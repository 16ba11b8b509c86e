"""The figures of a run report, drawn from the recorded tables (requests and steps) with matplotlib (Agg).

Each function takes the tables and returns a :class:`matplotlib.figure.Figure`. Time series are binned so
a figure stays readable (and small) for a run of a million steps: KV usage and queue length show the
*maximum* in each bin (a burst's peak must not be averaged away), batch size the mean.

**Bursts** on the arrival-rate plot are bins whose arrival count a Poisson process at the run's mean rate
would exceed with probability below 0.1 % (the 99.9th percentile of Poisson(mean count per bin)): a burst is
what randomness alone at that mean rate would almost never produce.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import stats  # noqa: E402

BURST_QUANTILE = 0.999
MAX_BINS = 1000


def _figure(rows: int, cols: int = 1, height: float = 2.6) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(rows, cols, figsize=(9, height * rows), squeeze=False, constrained_layout=True)
    return fig, axes


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def nice_width(width_s: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at least ``width_s`` (bin widths people can read)."""
    exponent = np.floor(np.log10(width_s))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * 10 ** exponent >= width_s * (1 - 1e-12):
            return float(step * 10 ** exponent)
    return float(10 ** (exponent + 1))


def time_bin_s(duration_s: float, base_s: float = 1.0) -> float:
    """A bin width of at least ``base_s`` giving at most :data:`MAX_BINS` bins over ``duration_s``."""
    return nice_width(max(base_s, duration_s / MAX_BINS)) if duration_s > 0 else base_s


def latency_cdfs(requests: pd.DataFrame) -> Figure:
    """Empirical CDFs of TTFT, TPOT, E2EL and queueing delay over completed requests (log-scaled time)."""
    fig, axes = _figure(2, 2, height=2.8)
    done = requests[requests["status"] == "finished"]
    for ax, (column, label) in zip(axes.flat, (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2el_s", "E2E latency"),
                                               ("queue_s", "queueing delay"))):
        values = np.sort(done[column].dropna().to_numpy())
        values = values[values > 0]
        if values.size == 0:
            _empty(ax, f"no {label} samples")
            continue
        ax.step(values, np.arange(1, values.size + 1) / values.size, where="post")
        ax.set_xscale("log")
        for q, style in ((0.5, ":"), (0.99, "--")):
            ax.axvline(np.quantile(values, q), color="grey", linestyle=style, linewidth=1)
        ax.set_xlabel(f"{label} (s)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{label} CDF (dotted: median, dashed: p99)", fontsize=9)
        ax.grid(True, alpha=0.3)
    return fig


def latency_over_time(requests: pd.DataFrame, bin_s: float) -> Figure:
    """TTFT and TPOT of each request against its arrival time, with the p99 of each time bin."""
    fig, axes = _figure(2)
    done = requests[requests["status"] == "finished"]
    for ax, (column, label) in zip(axes[:, 0], (("ttft_s", "TTFT (s)"), ("tpot_s", "TPOT (s)"))):
        data = done[["arrival_s", column]].dropna()
        if data.empty:
            _empty(ax, f"no {label}")
            continue
        ax.scatter(data["arrival_s"], data[column], s=3, alpha=0.35, label="one request", rasterized=True)
        bins = np.floor(data["arrival_s"] / bin_s) * bin_s
        p99 = data.groupby(bins)[column].quantile(0.99)
        ax.plot(p99.index + bin_s / 2, p99.to_numpy(), color="C3", linewidth=1.2, label=f"p99 per {bin_s:.3g} s")
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("arrival time (s)")
    axes[0, 0].set_title("Latency over time", fontsize=10)
    return fig


def _binned(steps: pd.DataFrame, column: str, bin_s: float, how: str) -> pd.Series:
    bins = np.floor(steps["start_s"] / bin_s) * bin_s
    return steps.groupby(bins)[column].agg(how)


def kv_and_queue(steps: pd.DataFrame, bin_s: float) -> Figure:
    """KV-cache usage and waiting-queue length over time, one line per replica (max per bin)."""
    fig, axes = _figure(2)
    if steps.empty:
        for ax in axes[:, 0]:
            _empty(ax, "no per-step records (metrics.step_detail is off)")
        return fig
    steps = steps.assign(kv_usage_pct=100.0 * steps["used_blocks"] / (steps["used_blocks"] + steps["free_blocks"]))
    for replica, group in steps.groupby("replica"):
        usage = _binned(group, "kv_usage_pct", bin_s, "max")
        waiting = _binned(group, "num_waiting", bin_s, "max")
        axes[0, 0].plot(usage.index, usage.to_numpy(), drawstyle="steps-post", linewidth=1, label=f"replica {replica}")
        axes[1, 0].plot(waiting.index, waiting.to_numpy(), drawstyle="steps-post", linewidth=1, label=f"replica {replica}")
    axes[0, 0].set_ylabel("KV cache used (%)")
    axes[0, 0].set_ylim(0, 105)
    axes[1, 0].set_ylabel("waiting requests")
    axes[1, 0].set_xlabel("time (s)")
    axes[0, 0].set_title(f"KV-cache usage and queue length (max per {bin_s:.3g} s)", fontsize=10)
    for ax in axes[:, 0]:
        ax.grid(True, alpha=0.3)
        if steps["replica"].nunique() <= 8:
            ax.legend(loc="upper right", fontsize=8)
    return fig


def batch_size(steps: pd.DataFrame, bin_s: float) -> Figure:
    """Requests per step (mean per bin) and scheduled tokens per step, per replica."""
    fig, axes = _figure(2)
    if steps.empty:
        for ax in axes[:, 0]:
            _empty(ax, "no per-step records")
        return fig
    steps = steps.assign(tokens=steps["prefill_tokens"] + steps["decode_tokens"])
    for replica, group in steps.groupby("replica"):
        axes[0, 0].plot(*_xy(_binned(group, "batch_size", bin_s, "mean")), linewidth=1, label=f"replica {replica}")
        axes[1, 0].plot(*_xy(_binned(group, "tokens", bin_s, "mean")), linewidth=1, label=f"replica {replica}")
    axes[0, 0].set_ylabel("requests per step")
    axes[1, 0].set_ylabel("tokens per step")
    axes[1, 0].set_xlabel("time (s)")
    axes[0, 0].set_title(f"Batch size (mean per {bin_s:.3g} s)", fontsize=10)
    for ax in axes[:, 0]:
        ax.grid(True, alpha=0.3)
    return fig


def _xy(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    return series.index.to_numpy(), series.to_numpy()


def preemptions_and_failures(requests: pd.DataFrame, steps: pd.DataFrame, bin_s: float) -> Figure:
    """Preemptions per bin (from the steps) and requests not completed per bin, by reason (at arrival)."""
    fig, axes = _figure(2)
    if not steps.empty and steps["num_preempted"].sum() > 0:
        pre = _binned(steps, "num_preempted", bin_s, "sum")
        axes[0, 0].bar(pre.index, pre.to_numpy(), width=bin_s, align="edge", color="C1")
    else:
        _empty(axes[0, 0], "no preemptions")
    axes[0, 0].set_ylabel(f"preemptions / {bin_s:.3g} s")
    lost = requests[requests["status"] != "finished"]
    if lost.empty:
        _empty(axes[1, 0], "every request completed")
    else:
        bins = np.floor(lost["arrival_s"] / bin_s) * bin_s
        counts = lost.groupby([bins, lost["status"] + ": " + lost["reason"]]).size().unstack(fill_value=0)
        bottom = np.zeros(len(counts))
        for column in counts.columns:
            axes[1, 0].bar(counts.index, counts[column].to_numpy(), width=bin_s, align="edge", bottom=bottom, label=column)
            bottom += counts[column].to_numpy()
        axes[1, 0].legend(loc="upper right", fontsize=8)
    axes[1, 0].set_ylabel(f"not completed / {bin_s:.3g} s")
    axes[1, 0].set_xlabel("time (s)")
    axes[0, 0].set_title("Preemptions and failures over time", fontsize=10)
    for ax in axes[:, 0]:
        ax.grid(True, alpha=0.3)
    return fig


def burst_bins(counts: np.ndarray) -> tuple[np.ndarray, float]:
    """Which bins are bursts (see the module docstring), and the count threshold used."""
    mean = float(counts.mean()) if counts.size else 0.0
    threshold = float(stats.poisson.ppf(BURST_QUANTILE, mean)) if mean > 0 else np.inf
    return counts > threshold, threshold


def arrival_rate(requests: pd.DataFrame, bin_s: float) -> Figure:
    """Arrivals per second in each bin, with burst bins shaded."""
    fig, axes = _figure(1, height=3.0)
    ax = axes[0, 0]
    arrivals = requests["arrival_s"].to_numpy()
    if arrivals.size == 0:
        _empty(ax, "no requests")
        return fig
    edges = np.arange(0.0, arrivals.max() + bin_s, bin_s)
    if edges.size < 2:
        edges = np.array([0.0, bin_s])
    counts, edges = np.histogram(arrivals, bins=edges)
    bursts, threshold = burst_bins(counts)
    ax.bar(edges[:-1], counts / bin_s, width=bin_s, align="edge", color="C0", label="arrival rate")
    for left in edges[:-1][bursts]:
        ax.axvspan(left, left + bin_s, color="C3", alpha=0.25, linewidth=0)
    mean_rate = arrivals.size / max(arrivals.max(), bin_s)
    ax.axhline(mean_rate, color="black", linestyle="--", linewidth=1, label=f"mean {mean_rate:.2f} req/s")
    ax.axhline(threshold / bin_s, color="C3", linestyle=":", linewidth=1,
               label=f"burst threshold (Poisson p{BURST_QUANTILE * 100:g})")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"requests/s ({bin_s:.3g} s bins)")
    ax.set_title(f"Arrival rate; {int(bursts.sum())} burst bins shaded", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, alpha=0.3)
    return fig


def run_figures(requests: pd.DataFrame, steps: pd.DataFrame, interval_s: float = 1.0) -> dict[str, Figure]:
    """Every figure of a run report, by file stem, in the order the report shows them."""
    end = float(np.nanmax(requests[["arrival_s", "finish_s"]].to_numpy())) if len(requests) else 0.0
    bin_s = time_bin_s(end, interval_s)
    mean_rate = len(requests) / end if end > 0 else 0.0
    # At least ~10 arrivals per bin on average, so a burst stands out from Poisson noise.
    rate_bin_s = nice_width(max(bin_s, 10.0 / mean_rate)) if mean_rate > 0 else bin_s
    return {
        "latency_cdf": latency_cdfs(requests),
        "latency_over_time": latency_over_time(requests, max(bin_s, rate_bin_s)),
        "kv_cache_and_queue": kv_and_queue(steps, bin_s),
        "batch_size": batch_size(steps, bin_s),
        "preemptions_failures": preemptions_and_failures(requests, steps, rate_bin_s),
        "arrival_rate": arrival_rate(requests, rate_bin_s),
    }
