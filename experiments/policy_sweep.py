"""The policy zoo under bursts: every batching policy × preemption mode, same mean rate, rising burstiness.

Runs ``policy_sweep.yaml`` through the sweep runner (81 runs of 800 requests; about a minute of CPU,
about 35 s with ``--jobs 2`` on 2 cores);
writes ``results/policy_sweep.csv`` and ``results/policy_sweep.png``.

    python experiments/policy_sweep.py [--jobs N]
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

GROUPS = {"workload.burstiness": "burstiness", "scheduler.policy": "policy", "scheduler.preemption": "preemption"}
PANELS = (("p99_ttft_s", "p99 TTFT (s)", True), ("p99_tpot_s", "p99 TPOT (s)", False),
          ("goodput_rps", "goodput (req/s)", False), ("preemptions", "preemptions", False),
          ("failures", "failed + rejected", False))


NAME = "policy_sweep"


def main(jobs: Optional[int] = None) -> None:
    spec, table = study_sweep(NAME, jobs)
    out = summarise(table, list(GROUPS)).rename(columns=GROUPS)
    out = out[["policy", "preemption", "burstiness", "p99_ttft_s", "median_ttft_s", "p99_tpot_s", "goodput_rps",
               "slo_attainment", "preemptions", "failures", "peak_kv_usage", "throughput_rps"]]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out.to_csv(RESULTS_DIR / "policy_sweep.csv", index=False, float_format="%.4g")
    plot(out, spec)
    print(out.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def plot(table, spec) -> None:
    policies = list(dict.fromkeys(table["policy"]))
    modes = list(dict.fromkeys(table["preemption"]))
    bursts = list(dict.fromkeys(table["burstiness"]))
    fig, axes = plt.subplots(len(PANELS), len(modes), figsize=(16, 3.0 * len(PANELS)), sharex=True,
                             sharey="row", constrained_layout=True)
    width = 0.8 / len(bursts)
    x = np.arange(len(policies))
    colors = plt.get_cmap("viridis")(np.linspace(0.15, 0.85, len(bursts)))
    for row, (column, label, log) in enumerate(PANELS):
        for col, mode in enumerate(modes):
            ax = axes[row, col]
            for i, burst in enumerate(bursts):
                rows = table[(table["preemption"] == mode) & (table["burstiness"] == burst)]
                values = rows.set_index("policy").reindex(policies)[column].to_numpy(dtype=float)
                ax.bar(x + (i - (len(bursts) - 1) / 2) * width, values, width, color=colors[i],
                       label=f"burstiness {burst:g}")
            if log:
                ax.set_yscale("log")
            ax.grid(True, axis="y", alpha=0.3)
            if row == 0:
                ax.set_title(f"scheduler.preemption: {mode}", fontsize=11)
            if col == 0:
                ax.set_ylabel(label)
            if row == len(PANELS) - 1:
                ax.set_xticks(x, policies, rotation=35, ha="right", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    s = spec["set"]
    fig.suptitle(f"Batching policies × preemption modes at {s['workload.rate']} req/s mean "
                 f"({s['workload.num_requests']} BurstGPT-like requests; SLO TTFT ≤ {s['slo.ttft_s']} s, "
                 f"TPOT ≤ {s['slo.tpot_s']} s; client timeout {s['client.timeout_s']} s) — "
                 "Llama-2-7B, 1× A100-80GB", fontsize=11)
    fig.savefig(RESULTS_DIR / "policy_sweep.png", dpi=100)


if __name__ == "__main__":
    main(jobs_from_command_line(__doc__))
