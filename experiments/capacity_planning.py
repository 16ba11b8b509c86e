"""Replicas needed to meet an SLO as a function of mean rate and burstiness (``llmsim plan`` per point).

Reads ``capacity_planning.yaml``; writes ``results/capacity_planning.csv`` and ``.png``.

    python experiments/capacity_planning.py [--jobs N]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from studies_common import EXPERIMENTS_DIR, RESULTS_DIR, WORK_DIR, jobs_from_command_line  # noqa: E402

from llmsim.config import load_config  # noqa: E402
from llmsim.planner import make_plan, parse_slo  # noqa: E402


def main(jobs: Optional[int] = 2) -> None:
    spec = yaml.safe_load((EXPERIMENTS_DIR / "capacity_planning.yaml").read_text())
    terms = parse_slo(spec["slo"])
    rows = []
    for burstiness in spec["burstiness"]:
        for rate in spec["rates"]:
            overrides = [f"{k}={v}" for k, v in spec["set"].items()]
            base = load_config(None, [*overrides, f"workload.rate={rate}", f"workload.burstiness={burstiness}"])
            plan = make_plan(base, terms, gpus=spec["gpus"], tps=spec["tp"], jobs=jobs,
                             cache_dir=WORK_DIR / "capacity_planning_cache")
            chosen = plan.chosen
            below = [e for e in plan.evaluations if chosen and e.replicas == chosen.replicas - 1]
            rows.append({
                "rate_rps": rate, "burstiness": burstiness,
                "replicas": chosen.replicas if chosen else None,
                "cost_per_hour_usd": chosen.cost_per_hour if chosen else None,
                "slo_attainment": chosen.metrics.get("slo_attainment") if chosen else None,
                "p99_ttft_s": chosen.metrics.get("ttft_s.p99") if chosen else None,
                "p99_tpot_s": chosen.metrics.get("tpot_s.p99") if chosen else None,
                "attainment_one_fewer": below[0].metrics.get("slo_attainment") if below else None,
                "simulations": len(plan.evaluations),
            })
            print(f"rate {rate:g} req/s, burstiness {burstiness:g}: {rows[-1]['replicas']} replicas "
                  f"({len(plan.evaluations)} simulations)", file=sys.stderr)
    table = pd.DataFrame(rows)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS_DIR / "capacity_planning.csv", index=False, float_format="%.4g")
    plot(table, spec["slo"])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def plot(table: pd.DataFrame, slo: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    styles = ("o-", "s--", "^:")
    for (burstiness, group), style, shift in zip(table.groupby("burstiness", sort=False), styles, (-0.06, 0, 0.06)):
        # Replica counts are integers and often equal: shift each line a little so all stay visible.
        axes[0].plot(group["rate_rps"], group["replicas"] + shift, style, label=f"burstiness {burstiness:g}")
        axes[1].plot(group["rate_rps"], group["p99_ttft_s"], style, label=f"burstiness {burstiness:g}")
    axes[0].set_ylabel("replicas needed (lines offset ±0.06)")
    axes[1].set_ylabel("p99 TTFT of the chosen fleet (s)")
    for ax in axes:
        ax.set_xlabel("mean arrival rate (req/s)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Replicas needed for {slo} (99 % joint attainment) — Llama-2-7B on A100-80GB, round-robin",
                 fontsize=11)
    fig.savefig(RESULTS_DIR / "capacity_planning.png", dpi=110)


if __name__ == "__main__":
    main(jobs_from_command_line(__doc__, default=2))
