"""Colocated vs prefill/decode-disaggregated serving at equal GPU count, under bursty load.

Eight A100-80GB GPUs serve Llama-2-7B (TP 1) either as eight colocated vLLM replicas or split into a
prefill pool and a decode pool (2+6, 3+5, 4+4) on one NVLink node; one more variant puts 3+5 on two
4-GPU nodes so every KV cache crosses the 50 GB/s network. Arrivals are the ``gamma`` preset (BurstGPT-like lengths,
burstiness 0.2) at several mean rates. Disaggregation removes prefill/decode interference (TPOT) but
concentrates prompts on fewer GPUs (TTFT under bursts) and adds KV transfers; the first token reaches the
client after the transfer (``first_token: after_transfer``), so TTFT includes it.

The 20 runs (5 clusters × 4 rates) go through the sweep runner (:func:`llmsim.sweep.run_sweep`):
:data:`SPEC` is the sweep spec (what every run shares under ``set``, one override map per run under
``runs``); the spec as run is saved as ``results/work/disaggregation/spec.yaml`` (``llmsim sweep`` reruns
it) and finished runs are cached there, so running the script again simulates only what is missing.

    python experiments/disaggregation.py [--jobs N]   # ~30 s on 2 cores (a rerun with every run cached: ~2 s)
writes experiments/results/disaggregation.csv and disaggregation.png.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from studies_common import RESULTS_DIR, WORK_DIR, check_cluster_sweep, jobs_from_command_line  # noqa: E402

from llmsim.sweep import run_sweep  # noqa: E402

SWEEP_DIR = WORK_DIR / "disaggregation"
RATES = (12.0, 20.0, 28.0, 36.0)
NUM_REQUESTS = 3000
GPUS = 8
ONE_NODE = [{"name": "node", "count": 1, "gpus_per_node": 8}]
TWO_NODES = [{"name": "node", "count": 2, "gpus_per_node": 4}]


def pd_split(num_prefill: int, num_decode: int, nodes=ONE_NODE, **placement) -> dict:
    """Config overrides for a prefill pool and a decode pool (``placement``: extra keys per role, e.g. nodes)."""
    return {"cluster.nodes": nodes, "cluster.router": "shortest-queue-time",
            "cluster.disaggregation.decode_router": "least-kv", "cluster.disaggregation.first_token": "after_transfer",
            "cluster.replicas": [{"count": num_prefill, "role": "prefill", **placement.get("prefill", {})},
                                 {"count": num_decode, "role": "decode", **placement.get("decode", {})}]}


CLUSTERS = {
    "colocated 8": {"cluster.nodes": ONE_NODE, "cluster.replicas": 8, "cluster.router": "least-outstanding"},
    "P/D 2+6": pd_split(2, 6),
    "P/D 3+5": pd_split(3, 5),
    "P/D 4+4": pd_split(4, 4),
    "P/D 3+5, 2 nodes": pd_split(3, 5, TWO_NODES, prefill={"nodes": ["node0"]}, decode={"nodes": ["node1", "node0"]}),
}
#: (cluster, rate) of each run, in the order of the spec's ``runs:``.
LABELS = [(name, rate) for name in CLUSTERS for rate in RATES]
SPEC = {
    "name": "disaggregation",
    "set": {"seed": 0, "workload.preset": "gamma", "workload.num_requests": NUM_REQUESTS, "workload.burstiness": 0.2,
            "hardware.gpu": "A100-80GB", "hardware.model": "Llama-2-7B", "scheduler.max_num_batched_tokens": 2048,
            "slo.ttft_s": 2.0, "slo.tpot_s": 0.1, "metrics.step_detail": False},
    "runs": [{**CLUSTERS[name], "workload.rate": rate} for name, rate in LABELS],
}
COLUMNS = {"ttft_s.median": "ttft_p50_s", "ttft_s.p99": "ttft_p99_s", "tpot_s.median": "tpot_p50_s",
           "tpot_s.p99": "tpot_p99_s", "slo_attainment": "slo_attainment", "goodput": "goodput_rps",
           "completed": "completed"}


def results_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """One row per run in the figure's terms; KV-transfer means are 0 where nothing was transferred."""
    def transfer_ms(column: str) -> pd.Series:
        seconds = sweep[column] if column in sweep.columns else pd.Series(0.0, index=sweep.index)
        return 1e3 * seconds.fillna(0.0)

    table = pd.DataFrame({"config": [LABELS[i][0] for i in sweep["run"]],
                          "rate_rps": [LABELS[i][1] for i in sweep["run"]], "gpus": GPUS})
    for column, name in COLUMNS.items():
        table[name] = sweep[column].to_numpy()
    table["kv_transfer_mean_ms"] = transfer_ms("cluster.transfers.transfer_s_mean").to_numpy()
    table["kv_block_wait_mean_ms"] = transfer_ms("cluster.transfers.wait_s_mean").to_numpy()
    table["preemptions"] = sweep["preemptions"].to_numpy()
    table["wall_s"] = sweep["wall_run_s"].to_numpy()
    return table


def plot(table: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = (("ttft_p99_s", "p99 TTFT (s, log)", True), ("tpot_p99_s", "p99 TPOT (s, log)", True),
              ("slo_attainment", "SLO attainment (TTFT ≤ 2 s, TPOT ≤ 100 ms)", False))
    for ax, (column, label, log) in zip(axes, panels):
        for name, group in table.groupby("config", sort=False):
            style = "o-" if name.startswith("colocated") else ("s--" if "nodes" in name else "^-")
            ax.plot(group["rate_rps"], group[column], style, label=name)
        ax.set_xlabel("mean arrival rate (req/s), burstiness 0.2")
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{GPUS} × A100-80GB, Llama-2-7B: colocated vs prefill/decode disaggregation (equal GPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(jobs: Optional[int] = None) -> pd.DataFrame:
    sweep = run_sweep(SPEC, SWEEP_DIR, jobs=jobs, progress=True).table
    check_cluster_sweep(sweep)
    table = results_table(sweep)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS_DIR / "disaggregation.csv", index=False)
    plot(table, RESULTS_DIR / "disaggregation.png")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return table


if __name__ == "__main__":
    main(jobs_from_command_line(__doc__))
