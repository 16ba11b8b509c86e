"""Teaching walk-through: one burst, step by step, from llmsim's timeline.

Simulates a short bursty workload on one small replica (a KV cache of 1,200 blocks, so the burst fills it),
finds the densest burst of arrivals, and prints what the engine does around it, step by step: which requests
each step runs (P = prefilling, D = decoding), how full the KV cache is, how long the queue is, and when a
request is preempted. It also writes the burst's timeline for https://ui.perfetto.dev and a figure.

    python experiments/teaching_one_burst.py
    # then open experiments/results/teaching_one_burst_timeline.json in Perfetto

Outputs: results/teaching_one_burst.csv (the steps around the burst), results/teaching_one_burst.png,
results/teaching_one_burst_timeline.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from studies_common import RESULTS_DIR  # noqa: E402

from llmsim.config import load_config  # noqa: E402
from llmsim.metrics.listeners import recorder_listeners  # noqa: E402
from llmsim.metrics.timeline import TimelineRecorder  # noqa: E402
from llmsim.simulation import simulate  # noqa: E402

CONFIG = ["workload.preset=gamma", "workload.rate=2.0", "workload.burstiness=0.1", "workload.num_requests=200",
          "scheduler.num_gpu_blocks=1200", "seed=3"]
WINDOW_S = 5.0


def densest_window(arrivals: np.ndarray, width_s: float) -> float:
    """Start of the ``width_s`` window holding the most arrivals."""
    counts = np.searchsorted(arrivals, arrivals + width_s) - np.arange(arrivals.size)
    return float(arrivals[int(np.argmax(counts))])


def main() -> None:
    config = load_config(None, CONFIG)
    full = TimelineRecorder()
    with recorder_listeners(full):
        result = simulate(config)
    arrivals = np.sort(result.requests["arrival_s"].to_numpy())
    burst_s = densest_window(arrivals, WINDOW_S)
    in_burst = int(((arrivals >= burst_s) & (arrivals < burst_s + WINDOW_S)).sum())
    print(f"{len(arrivals)} requests at {config.workload.rate:g} req/s mean (burstiness {config.workload.burstiness:g}); "
          f"the densest burst: {in_burst} arrivals in {WINDOW_S:g} s from t={burst_s:.1f} s "
          f"({in_burst / WINDOW_S:.1f} req/s, {in_burst / WINDOW_S / config.workload.rate:.0f}× the mean)\n")
    steps = result.steps.assign(kv_used_pct=lambda d: 100 * d.used_blocks / (d.used_blocks + d.free_blocks))
    start, end = burst_s - 2.0, burst_s + 40.0
    around = steps[(steps.start_s >= start) & (steps.start_s <= end)]
    narrate(around, result.requests, burst_s)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    around.to_csv(RESULTS_DIR / "teaching_one_burst.csv", index=False, float_format="%.4g")
    window = TimelineRecorder(start, end)
    with recorder_listeners(window):
        simulate(config)
    window.write(RESULTS_DIR / "teaching_one_burst_timeline.json")
    plot(steps, arrivals, burst_s, start, end)
    print(f"\nwrote {RESULTS_DIR / 'teaching_one_burst_timeline.json'} (open it in https://ui.perfetto.dev)")


def narrate(steps: pd.DataFrame, requests: pd.DataFrame, burst_s: float) -> None:
    """Print the steps where something changes: admissions, preemptions, a new KV-usage level."""
    last_kv = -100.0
    print(f"{'time (s)':>9} {'batch':>9} {'KV used':>8} {'waiting':>8}  event")
    for row in steps.itertuples():
        events = []
        if row.num_preempted:
            events.append(f"{row.num_preempted} preempted (KV cache full: their blocks are freed, they will recompute)")
        if row.prefill_tokens and row.start_s >= burst_s:
            events.append(f"prefill of {row.prefill_tokens} tokens")
        if abs(row.kv_used_pct - last_kv) >= 10 or events:
            batch = f"{row.batch_size} req"
            print(f"{row.start_s:9.2f} {batch:>9} {row.kv_used_pct:7.0f}% {row.num_waiting:8d}  {'; '.join(events)}")
            last_kv = row.kv_used_pct
    late = requests[(requests.arrival_s >= burst_s) & (requests.arrival_s < burst_s + WINDOW_S)]
    print(f"\nrequests of the burst: median TTFT {late.ttft_s.median():.2f} s, worst {late.ttft_s.max():.2f} s, "
          f"{int((late.num_preemptions > 0).sum())} of {len(late)} preempted at least once")


def plot(steps, arrivals, burst_s, start, end) -> None:
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True, constrained_layout=True)
    edges = np.arange(start, end + 1.0, 1.0)
    axes[0].hist(arrivals, bins=edges, color="C0")
    axes[0].axvspan(burst_s, burst_s + WINDOW_S, color="C3", alpha=0.2, label="densest burst")
    axes[0].set_ylabel("arrivals / s")
    axes[0].legend(fontsize=8)
    window = steps[(steps.start_s >= start) & (steps.start_s <= end)]
    axes[1].plot(window.start_s, window.kv_used_pct, drawstyle="steps-post")
    pre = window[window.num_preempted > 0]
    axes[1].scatter(pre.start_s, pre.kv_used_pct, color="C3", zorder=5, label="preemption")
    axes[1].set_ylabel("KV cache used (%)")
    axes[1].legend(fontsize=8)
    axes[2].plot(window.start_s, window.num_waiting, drawstyle="steps-post", label="waiting")
    axes[2].plot(window.start_s, window.batch_size, drawstyle="steps-post", label="running (batch size)")
    axes[2].set_ylabel("requests")
    axes[2].set_xlabel("time (s)")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.suptitle("One burst, step by step: arrivals fill the KV cache, the queue grows, requests are preempted",
                 fontsize=10)
    fig.savefig(RESULTS_DIR / "teaching_one_burst.png", dpi=110)


if __name__ == "__main__":
    main()
