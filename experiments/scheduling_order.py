"""FCFS vs shortest-first vs longest-first waiting-queue order, at equal mean rate and rising burstiness.

Runs ``scheduling_order.yaml`` through the sweep runner; writes ``results/scheduling_order.csv`` and ``.png``.

    python experiments/scheduling_order.py [--jobs N]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from studies_common import RESULTS_DIR, jobs_from_command_line, study_sweep, summarise  # noqa: E402


NAME = "scheduling_order"


def main(jobs: Optional[int] = None) -> None:
    _, table = study_sweep(NAME, jobs)
    out = summarise(table, ["workload.burstiness", "scheduler.queue"]).rename(
        columns={"workload.burstiness": "burstiness", "scheduler.queue": "queue"})
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out.to_csv(RESULTS_DIR / "scheduling_order.csv", index=False, float_format="%.4g")
    plot(out)
    print(out.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def plot(table) -> None:
    orders = list(dict.fromkeys(table["queue"]))
    bursts = list(dict.fromkeys(table["burstiness"]))
    panels = (("median_ttft_s", "median TTFT (s)", True), ("p99_ttft_s", "p99 TTFT (s)", True),
              ("goodput_rps", "goodput (req/s)", False), ("preemptions", "preemptions", False))
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), constrained_layout=True)
    width = 0.8 / len(orders)
    x = np.arange(len(bursts))
    for ax, (column, label, log) in zip(axes, panels):
        for i, order in enumerate(orders):
            rows = table[table["queue"] == order].set_index("burstiness").reindex(bursts)
            ax.bar(x + i * width, rows[column].to_numpy(), width, label=order)
        ax.set_xticks(x + width * (len(orders) - 1) / 2, [f"{b:g}" for b in bursts])
        ax.set_xlabel("burstiness (gamma shape)")
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, title="scheduler.queue", title_fontsize=8)
    fig.suptitle("Waiting-queue order at 3 req/s (mean of 3 seeds) — Llama-2-7B, 1× A100-80GB", fontsize=11)
    fig.savefig(RESULTS_DIR / "scheduling_order.png", dpi=110)


if __name__ == "__main__":
    main(jobs_from_command_line(__doc__))
