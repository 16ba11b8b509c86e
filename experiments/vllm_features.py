"""vLLM beyond its defaults: prefix caching (+ CPU offloading), priority classes, speculative decoding.

Three small studies on the default deployment (Llama-2-7B on one A100-80GB), each a figure in
``results/`` and a CSV beside it; docs/vllm-features.md shows and explains them.

- ``prefix``: multi-turn chats (each turn's prompt is the previous turn's prompt + answer + a new message)
  at shrinking KV memory: prefix-cache hit rate and mean TTFT, without and with an 8 GiB CPU offload tier.
- ``priority``: a burst of batch traffic (priority 1) over steady interactive traffic (priority 0): TTFT of
  each class under FCFS and under vLLM's priority policy.
- ``speculative``: EAGLE with 3 drafts at acceptance rates 0.3-0.9 and three loads: TPOT relative to no
  speculation, and the measured mean acceptance length.

    python experiments/vllm_features.py [prefix|priority|speculative ...] [--quick]

``--quick`` runs a tenth of the requests and writes into a temporary folder (a smoke test; the figures in
the docs come from the full run).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from llmsim.config import SimConfig  # noqa: E402
from llmsim.simulation import simulate  # noqa: E402
from llmsim.workload import Workload  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCALE = 1.0


def chats(num_conversations: int, turns: int = 5, seed: int = 0) -> Workload:
    """Open-loop multi-turn conversations: turn k+1 arrives 5-30 s after turn k and extends its history."""
    rng = np.random.default_rng(seed)
    rows = []
    for conversation in range(num_conversations):
        t = rng.uniform(0, 120)
        prompt = int(rng.integers(300, 2000))
        for _ in range(turns):
            output = int(rng.integers(50, 300))
            rows.append((t, prompt, output, conversation))
            t += rng.uniform(5, 30)
            prompt += output + int(rng.integers(50, 400))
    df = pd.DataFrame(rows, columns=["arrival_s", "prompt_tokens", "output_tokens", "session_id"])
    return Workload(df.sort_values("arrival_s", kind="stable").reset_index(drop=True))


def prefix_study() -> pd.DataFrame:
    workload = chats(int(120 * SCALE))
    rows = []
    for blocks in (1500, 2500, 4000, 6000, 9000):
        for offload in (0.0, 8.0):
            config = SimConfig.model_validate({"scheduler": {"enable_prefix_caching": True, "num_gpu_blocks": blocks,
                                                             "kv_offload_gib": offload}})
            result = simulate(config, workload=workload)
            s = result.summary
            rows.append({"num_gpu_blocks": blocks, "kv_offload_gib": offload,
                         "gpu_hit_rate": s["prefix_cache_hit_rate"],
                         "offload_hit_rate": s.get("kv_offload", {}).get("hit_rate", 0.0),
                         "mean_ttft_s": float(result.requests["ttft_s"].mean()),
                         "preemptions": int(result.requests["num_preemptions"].sum())})
    table = pd.DataFrame(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for offload, style in ((0.0, "o-"), (8.0, "s--")):
        part = table[table["kv_offload_gib"] == offload]
        label = "GPU only" if not offload else "GPU + 8 GiB CPU offload"
        left.plot(part["num_gpu_blocks"] * 16 / 1000, part["gpu_hit_rate"] + part["offload_hit_rate"], style,
                  label=label)
        right.plot(part["num_gpu_blocks"] * 16 / 1000, part["mean_ttft_s"], style, label=label)
    left.set(xlabel="KV cache (thousand tokens)", ylabel="prompt tokens not prefilled", title="prefix hit rate")
    right.set(xlabel="KV cache (thousand tokens)", ylabel="mean TTFT (s)", yscale="log", title="TTFT")
    left.legend(fontsize=8)
    fig.suptitle("Multi-turn chats, Llama-2-7B on A100-80GB", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / "vllm_prefix_cache.png", dpi=90)
    return table


def burst(seed: int = 0) -> Workload:
    """Interactive traffic (priority 0, 4 req/s for 90 s) with a batch burst (priority 1, 600 requests in 10 s)."""
    rng = np.random.default_rng(seed)
    n_steady, n_burst = int(360 * SCALE), int(600 * SCALE)
    steady = np.sort(rng.uniform(0, 90, n_steady))
    burst_at = np.sort(rng.uniform(30, 40, n_burst))
    df = pd.DataFrame({
        "arrival_s": np.concatenate([steady, burst_at]),
        "prompt_tokens": np.concatenate([rng.integers(100, 600, n_steady), rng.integers(500, 3000, n_burst)]),
        "output_tokens": np.concatenate([rng.integers(50, 300, n_steady), rng.integers(100, 600, n_burst)]),
        "priority": np.concatenate([np.zeros(n_steady, dtype=np.int64), np.ones(n_burst, dtype=np.int64)]),
    })
    return Workload(df.sort_values("arrival_s", kind="stable").reset_index(drop=True))


def priority_study() -> pd.DataFrame:
    workload = burst()
    priorities = workload.df["priority"].to_numpy()
    rows = []
    for queue in ("fcfs", "priority"):
        result = simulate(SimConfig.model_validate({"scheduler": {"queue": queue, "num_gpu_blocks": 8000}}),
                          workload=workload)
        requests = result.requests
        ttft = requests["ttft_s"].to_numpy()
        order = np.argsort(requests["arrival_s"].to_numpy(), kind="stable")  # requests are in arrival order
        for cls, name in ((0, "interactive"), (1, "batch")):
            values = ttft[order][priorities == cls]
            rows.append({"queue": queue, "class": name, "median_ttft_s": float(np.nanmedian(values)),
                         "p99_ttft_s": float(np.nanpercentile(values, 99)),
                         "preemptions": int(requests["num_preemptions"].sum())})
    table = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric, title in zip(axes, ("median_ttft_s", "p99_ttft_s"), ("median TTFT", "p99 TTFT")):
        for offset, queue in ((-0.2, "fcfs"), (0.2, "priority")):
            part = table[table["queue"] == queue]
            ax.bar(np.arange(2) + offset, part[metric], width=0.4, label=f"queue: {queue}")
        ax.set_xticks(range(2), ["interactive (0)", "batch burst (1)"])
        ax.set(ylabel="seconds", title=title, yscale="log")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper right", fontsize=8)  # clear of the bars
    fig.suptitle("Priority classes under a burst, Llama-2-7B on A100-80GB", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / "vllm_priority.png", dpi=90)
    return table


def speculative_study() -> pd.DataFrame:
    rows = []
    for rate in (2.0, 8.0, 16.0):
        base = {"scheduler": {"async_scheduling": False},
                "workload": {"preset": "poisson", "rate": rate, "num_requests": int(400 * SCALE)}}
        plain = simulate(SimConfig.model_validate(base)).requests["tpot_s"].mean()
        for alpha in (0.3, 0.5, 0.7, 0.9):
            config = SimConfig.model_validate({**base, "speculative": {"method": "eagle", "num_speculative_tokens": 3,
                                                                       "acceptance_rate": alpha}})
            result = simulate(config)
            rows.append({"rate": rate, "acceptance_rate": alpha, "tpot_s": float(result.requests["tpot_s"].mean()),
                         "tpot_no_spec_s": float(plain),
                         "mean_acceptance_length": result.summary["speculative"]["mean_acceptance_length"]})
    table = pd.DataFrame(rows)
    table["speedup"] = table["tpot_no_spec_s"] / table["tpot_s"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for rate in table["rate"].unique():
        part = table[table["rate"] == rate]
        left.plot(part["acceptance_rate"], part["speedup"], "o-", label=f"{rate:g} req/s")
        right.plot(part["acceptance_rate"], part["mean_acceptance_length"], "o-", label=f"{rate:g} req/s")
    left.axhline(1.0, color="grey", lw=0.8)
    left.set(xlabel="per-draft acceptance rate", ylabel="TPOT without / with", title="TPOT gain (EAGLE, k=3)")
    right.set(xlabel="per-draft acceptance rate", ylabel="tokens per verification", title="mean acceptance length")
    left.legend(fontsize=8)
    fig.suptitle("Speculative decoding, Llama-2-7B on A100-80GB, sync loop", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / "vllm_speculative.png", dpi=90)
    return table


STUDIES = {"prefix": prefix_study, "priority": priority_study, "speculative": speculative_study}


def main(argv: list[str]) -> None:
    global SCALE, RESULTS_DIR
    if "--quick" in argv:
        SCALE = 0.1
        RESULTS_DIR = Path(tempfile.mkdtemp(prefix="llmsim-vllm-features-"))
    names = [a for a in argv if not a.startswith("--")] or list(STUDIES)
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        raise SystemExit(f"unknown study {unknown[0]!r}; valid: {', '.join(STUDIES)}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for name in names:
        table = STUDIES[name]()
        table.to_csv(RESULTS_DIR / f"vllm_{name}.csv", index=False, float_format="%.4g")
        print(f"== {name}")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main(sys.argv[1:])
