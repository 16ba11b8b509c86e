"""Colocated vs prefill/decode-disaggregated serving at equal GPU count, under bursty load.

Eight A100-80GB GPUs serve Llama-2-7B (TP 1) either as eight colocated vLLM replicas or split into a
prefill pool and a decode pool (2+6, 3+5, 4+4) on one NVLink node; one more variant puts 3+5 on two
4-GPU nodes so every KV cache crosses the 50 GB/s network. Arrivals are the ``gamma`` preset (BurstGPT-like lengths,
burstiness 0.2) at several mean rates. Disaggregation removes prefill/decode interference (TPOT) but
concentrates prompts on fewer GPUs (TTFT under bursts) and adds KV transfers; the first token reaches the
client after the transfer (``first_token: after_transfer``), so TTFT includes it.

    python experiments/disaggregation.py          # ~1-2 minutes on 2 cores
writes experiments/results/disaggregation.csv and disaggregation.png.
"""

from __future__ import annotations

import sys
import time
from multiprocessing import Pool
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from llmsim.config import build_config  # noqa: E402
from llmsim.simulation import simulate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RATES = (12.0, 20.0, 28.0, 36.0)
NUM_REQUESTS = 3000
ONE_NODE = [{"name": "node", "count": 1, "gpus_per_node": 8}]
TWO_NODES = [{"name": "node", "count": 2, "gpus_per_node": 4}]


def pd_split(num_prefill: int, num_decode: int, nodes=ONE_NODE, **placement) -> dict:
    return {"nodes": nodes, "router": "shortest-queue-time",
            "disaggregation": {"decode_router": "least-kv", "first_token": "after_transfer"},
            "replicas": [{"count": num_prefill, "role": "prefill", **placement.get("prefill", {})},
                         {"count": num_decode, "role": "decode", **placement.get("decode", {})}]}


CLUSTERS = {
    "colocated 8": {"nodes": ONE_NODE, "replicas": 8, "router": "least-outstanding"},
    "P/D 2+6": pd_split(2, 6),
    "P/D 3+5": pd_split(3, 5),
    "P/D 4+4": pd_split(4, 4),
    "P/D 3+5, 2 nodes": pd_split(3, 5, TWO_NODES, prefill={"nodes": ["node0"]}, decode={"nodes": ["node1", "node0"]}),
}


def simulate_one(item: tuple[str, float]) -> dict:
    name, rate = item
    config = build_config({
        "seed": 0, "workload": {"preset": "gamma", "num_requests": NUM_REQUESTS, "rate": rate, "burstiness": 0.2},
        "hardware": {"gpu": "A100-80GB", "model": "Llama-2-7B"}, "cluster": CLUSTERS[name],
        "scheduler": {"max_num_batched_tokens": 2048}, "slo": {"ttft_s": 2.0, "tpot_s": 0.1},
        "metrics": {"step_detail": False}})
    start = time.perf_counter()
    result = simulate(config)
    s, c = result.summary, result.summary["cluster"]
    assert c["accounting"]["ok"], name
    transfers = c.get("transfers", {})
    return {"config": name, "rate_rps": rate, "gpus": 8, "ttft_p50_s": s["ttft_s"]["median"],
            "ttft_p99_s": s["ttft_s"]["p99"], "tpot_p50_s": s["tpot_s"]["median"], "tpot_p99_s": s["tpot_s"]["p99"],
            "slo_attainment": s["slo_attainment"], "goodput_rps": s["goodput"], "completed": s["completed"],
            "kv_transfer_mean_ms": 1e3 * transfers.get("transfer_s_mean", 0.0),
            "kv_block_wait_mean_ms": 1e3 * transfers.get("wait_s_mean", 0.0),
            "preemptions": s["preemptions"], "wall_s": time.perf_counter() - start}


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
    fig.suptitle("8 × A100-80GB, Llama-2-7B: colocated vs prefill/decode disaggregation (equal GPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(processes: int = 2) -> pd.DataFrame:
    RESULTS.mkdir(parents=True, exist_ok=True)
    items = [(name, rate) for name in CLUSTERS for rate in RATES]
    with Pool(processes) as pool:
        table = pd.DataFrame(pool.map(simulate_one, items))
    table.to_csv(RESULTS / "disaggregation.csv", index=False)
    plot(table, RESULTS / "disaggregation.png")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return table


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
