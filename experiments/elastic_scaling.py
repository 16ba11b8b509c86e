"""Elastic scaling under a day-shaped bursty workload: static fleets vs autoscaling policies.

The BurstGPT study finds conversation traffic strongly periodic over the day and bursty within it, and
points to elastic resources as the answer. This study serves one compressed "day" of such traffic with

- static fleets of several sizes (the capacity-planning baseline: pay for the peak all day), and
- one warm replica plus each autoscaling policy (reactive on queue length, reactive on KV usage,
  scheduled from the known daily curve, predictive from a moving rate forecast), each new replica
  serving only after a cold start,

and plots p99 TTFT against GPU-hours (the cost axis).

Workload: arrivals are the ``gamma`` preset's renewal process (BurstGPT-like lengths) (burstiness 0.2, so CV ≈ 2.2) run
in *operational time* and mapped through the inverse of the cumulative diurnal intensity
Λ(t) = mean·(t − A·T/(2π)·sin(2πt/T)), i.e. rate λ(t) = mean·(1 − A·cos(2πt/T)): trough at the start and
end of the day, peak at noon, burstiness kept at every hour. The day is compressed to ``DAY_S`` seconds and
starts with its first request.

The runs go through the sweep runner (:func:`llmsim.sweep.run_sweep`). The day's requests are written once
to a canonical trace file (``results/work/elastic_scaling_diurnal.parquet``) and every run is a plain config
whose ``workload.trace`` points at it: :func:`sweep_spec` builds the spec, and the spec as run is saved as
``results/work/elastic_scaling/spec.yaml`` (``llmsim sweep`` reruns it). Finished runs are cached there, so
running the script again simulates only what is missing.

    python experiments/elastic_scaling.py [--jobs N]   # ~35 s on 2 cores (a rerun with every run cached: ~2 s)
writes experiments/results/elastic_scaling.csv, elastic_scaling.png and elastic_scaling_replicas.csv.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from studies_common import RESULTS_DIR, WORK_DIR, check_cluster_sweep, jobs_from_command_line  # noqa: E402

from llmsim.errors import UserError  # noqa: E402
from llmsim.sweep import expand_runs, run_sweep  # noqa: E402
from llmsim.sweep.cache import ResultCache  # noqa: E402
from llmsim.sweep.spec import spec_from_dict  # noqa: E402
from llmsim.workload import Workload, load_trace, synthetic_workload  # noqa: E402
from llmsim.workload.cli import write_trace  # noqa: E402

SWEEP_DIR = WORK_DIR / "elastic_scaling"
TRACE_PATH = WORK_DIR / "elastic_scaling_diurnal.parquet"
SEED = 0
DAY_S = 1200.0  # one day compressed into 20 simulated minutes (1 s ≈ 72 s of the day)
MEAN_RPS = 9.0
AMPLITUDE = 0.7  # trough 0.3× mean, peak 1.7× mean
BURSTINESS = 0.2
COLD_START_S = 20.0
# Requests/s one Llama-2-7B A100 replica serves within the SLO on these lengths at this burstiness (from the
# static fleets: 5 replicas keep p99 TTFT under 2 s at the 15.3 req/s peak, 4 do not); used by the
# predictive and scheduled policies.
CAPACITY_RPS = 3.0
STATIC_FLEETS = (2, 3, 4, 5, 6)


def rate_rps(t: np.ndarray) -> np.ndarray:
    return MEAN_RPS * (1.0 - AMPLITUDE * np.cos(2 * np.pi * t / DAY_S))


def diurnal_workload() -> Workload:
    """The gamma preset on a daily rate curve (``workload.diurnal_amplitude``; lengths BurstGPT-like)."""
    n = int(MEAN_RPS * DAY_S)
    base = synthetic_workload("gamma", num_requests=n, rate=MEAN_RPS, burstiness=BURSTINESS, seed=SEED,
                              diurnal_amplitude=AMPLITUDE, day_s=DAY_S, peak_s=DAY_S / 2)
    # A trace file's times count from its first request: start the day there, so the file, the in-memory
    # workload and the rate curve share one clock.
    df = base.df.copy()
    df["arrival_s"] = df["arrival_s"] - df["arrival_s"].iloc[0]
    return base.with_df(df, f"diurnal gamma (mean {MEAN_RPS} req/s, amplitude {AMPLITUDE}, day {DAY_S:g} s)")


def write_diurnal_trace(path: Path = TRACE_PATH) -> Path:
    """Write the day's requests as a canonical trace (as ``llmsim generate`` does), once.

    An identical file is left untouched: a run's cache key includes the trace file's size and modification
    time, so rewriting it would make every cached run look new. Parquet keeps the arrival times exact.
    """
    workload = diurnal_workload()
    if path.exists():
        try:
            if load_trace(path).df.equals(workload.df):
                return path
        except UserError:
            pass  # unreadable (e.g. a write interrupted last time): write it again
    write_trace(workload, path)
    return path


def schedule_from_curve(step_s: float = 60.0) -> list[dict]:
    """The scheduled policy's table: replicas for the coming slot's peak rate, provisioned a cold start early."""
    table = []
    for start in np.arange(0.0, DAY_S, step_s):
        window = np.linspace(start, start + step_s + COLD_START_S, 50)
        table.append({"at_s": float(start), "replicas": int(math.ceil(rate_rps(window).max() * 1.1 / CAPACITY_RPS))})
    return table


def autoscaled(policy: str, **extra) -> dict:
    scaler = {"policy": policy, "min_replicas": 1, "max_replicas": 8, "interval_s": 10.0,
              "cold_start_s": COLD_START_S, **extra}
    return {"cluster.replicas": 1, "cluster.router": "least-outstanding",
            **{f"cluster.autoscaler.{key}": value for key, value in scaler.items()}}


def runs() -> list[tuple[str, str, dict]]:
    """(label, kind, the run's config overrides) for every run, in the order of the sweep's ``runs:``."""
    out = [(f"static-{n}", "static", {"cluster.replicas": n, "cluster.router": "least-outstanding"})
           for n in STATIC_FLEETS]
    out.append(("reactive-queue", "autoscaled", autoscaled(
        "reactive", metric="queue_length", scale_up_threshold=4, scale_down_threshold=0.5,
        scale_up_cooldown_s=20, scale_down_cooldown_s=60)))
    out.append(("reactive-kv", "autoscaled", autoscaled(
        "reactive", metric="kv_usage", scale_up_threshold=0.7, scale_down_threshold=0.3,
        scale_up_cooldown_s=20, scale_down_cooldown_s=60)))
    out.append(("scheduled", "autoscaled", autoscaled("scheduled", schedule=schedule_from_curve())))
    out.append(("predictive", "autoscaled", autoscaled(
        "predictive", capacity_rps_per_replica=CAPACITY_RPS, headroom=0.1, window_s=120.0,
        scale_down_cooldown_s=60)))
    return out


def sweep_spec(trace: Path) -> dict:
    """The sweep: what every run shares (``set``) and one override map per fleet or policy (``runs``)."""
    return {
        "name": "elastic_scaling",
        "set": {"seed": SEED, "workload.trace": str(trace), "workload.preset": None,
                # the whole trace: the bundled default config's num_requests would keep only its first rows
                "workload.num_requests": None,
                "hardware.gpu": "A100-80GB", "hardware.model": "Llama-2-7B",
                "scheduler.max_num_batched_tokens": 2048, "scheduler.max_num_seqs": 256,
                "slo.ttft_s": 2.0, "slo.tpot_s": 0.1, "metrics.step_detail": False},
        "runs": [overrides for _, _, overrides in runs()],
    }


def forget_runs_without_tables(spec: dict) -> None:
    """Drop cached results whose per-run tables are gone (the plot needs them), so those runs are redone."""
    cache = ResultCache(SWEEP_DIR / "cache")
    for run in expand_runs(spec_from_dict(spec, "elastic_scaling sweep")):
        if not (SWEEP_DIR / "runs" / run.key / "replica_timeseries.parquet").exists():
            cache.path_for(run.key).unlink(missing_ok=True)


#: Column of the sweep's results table -> column of elastic_scaling.csv.
COLUMNS = {"cluster.gpu_hours": "gpu_hours", "cluster.cost_usd": "cost_usd", "ttft_s.median": "ttft_p50_s",
           "ttft_s.p99": "ttft_p99_s", "tpot_s.p99": "tpot_p99_s", "slo_attainment": "slo_attainment",
           "completed": "completed", "failed": "failed", "cluster.utilization": "utilization", "wall_run_s": "wall_s"}


def replica_counts(label: str, run_key: str) -> pd.DataFrame:
    """Replicas provisioned (starting, active or draining) at each sample of the run's replica time series."""
    ts = pd.read_parquet(SWEEP_DIR / "runs" / run_key / "replica_timeseries.parquet")
    live = ts[ts["state"].isin(["active", "starting", "draining"])].groupby("time_s").size()
    return pd.DataFrame({"config": label, "time_s": live.index, "replicas": live.to_numpy()})


def plot(table: pd.DataFrame, replicas: pd.DataFrame, path: Path) -> None:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    static = table[table["kind"] == "static"].sort_values("gpu_hours")
    ax.plot(static["gpu_hours"], static["ttft_p99_s"], "o-", color="0.4", label="static fleets")
    for _, row in static.iterrows():
        ax.annotate(row["config"].split("-")[1] + " replicas", (row["gpu_hours"], row["ttft_p99_s"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8, color="0.3")
    markers = {"reactive-queue": "s", "reactive-kv": "D", "scheduled": "^", "predictive": "*"}
    for _, row in table[table["kind"] == "autoscaled"].iterrows():
        ax.plot(row["gpu_hours"], row["ttft_p99_s"], markers[row["config"]], markersize=11, label=row["config"])
    ax.set_yscale("log")
    ax.set_xlabel("GPU-hours for the day (A100-80GB)")
    ax.set_ylabel("p99 TTFT (s, log scale)")
    ax.set_title("Cost vs tail latency: static fleets and autoscalers")
    ax.axhline(2.0, ls=":", color="red", lw=1)
    ax.text(ax.get_xlim()[0], 2.0, " TTFT SLO 2 s", color="red", va="bottom", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    t = np.linspace(0, DAY_S, 400)
    ax2.fill_between(t, rate_rps(t) / CAPACITY_RPS, color="0.85", label=f"arrival rate / {CAPACITY_RPS:g} req/s")
    for name, group in replicas.groupby("config"):
        if name in markers:
            ax2.step(group["time_s"], group["replicas"], where="post", label=name)
    ax2.set_xlabel("simulated time (s); one compressed day")
    ax2.set_ylabel("replicas provisioned (incl. starting, draining)")
    ax2.set_title(f"Replicas over the day (cold start {COLD_START_S:g} s)")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(jobs: Optional[int] = None) -> pd.DataFrame:
    spec = sweep_spec(write_diurnal_trace())
    forget_runs_without_tables(spec)
    sweep = run_sweep(spec, SWEEP_DIR, jobs=jobs, progress=True, keep_runs=True).table
    check_cluster_sweep(sweep)
    labels = runs()
    table = sweep[list(COLUMNS)].rename(columns=COLUMNS)
    # Replicas ever started, by role summed: the table's "cluster.replicas" column holds the swept initial
    # fleet (a swept config path shadows the summary metric of the same name).
    started = sweep[[c for c in sweep.columns if c.startswith("cluster.replicas_by_role.")]].sum(axis=1)
    table.insert(2, "replicas_started", started.astype(int).to_numpy())
    table.insert(0, "kind", [labels[i][1] for i in sweep["run"]])
    table.insert(0, "config", [labels[i][0] for i in sweep["run"]])
    replicas = pd.concat([replica_counts(labels[i][0], key) for i, key in zip(sweep["run"], sweep["run_key"])],
                         ignore_index=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS_DIR / "elastic_scaling.csv", index=False)
    replicas.to_csv(RESULTS_DIR / "elastic_scaling_replicas.csv", index=False)
    plot(table, replicas, RESULTS_DIR / "elastic_scaling.png")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return table


if __name__ == "__main__":
    main(jobs_from_command_line(__doc__))
