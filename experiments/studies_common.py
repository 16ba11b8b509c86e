"""Helpers shared by the study scripts: where results go and how a sweep table is summarised per group."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import pandas as pd

EXPERIMENTS_DIR = Path(__file__).resolve().parent
RESULTS_DIR = EXPERIMENTS_DIR / "results"
WORK_DIR = RESULTS_DIR / "work"  # sweep caches and generated traces (rebuildable; not shown in the docs)
SHARED_DIR = EXPERIMENTS_DIR.parent.parent / "shared"

#: Headline metrics of the studies: column in results.parquet -> short name in the CSVs.
METRICS = {
    "ttft_s.p99": "p99_ttft_s", "ttft_s.median": "median_ttft_s", "tpot_s.p99": "p99_tpot_s",
    "goodput": "goodput_rps", "slo_attainment": "slo_attainment", "preemptions": "preemptions",
    "peak_kv_usage": "peak_kv_usage", "request_throughput": "throughput_rps",
}


def failures(table: pd.DataFrame) -> pd.Series:
    """Requests that got no complete answer: rejected by the engine or failed."""
    return table["rejected"] + table["failed"]


def summarise(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean over seeds of each headline metric per group, with the seed-to-seed min and max of p99 TTFT."""
    ok = table[table["status"] == "ok"].assign(failures=failures)
    columns = {**METRICS, "failures": "failures"}
    grouped = ok.groupby(by, sort=False)
    out = grouped[list(columns)].mean().rename(columns=columns)
    out["p99_ttft_s_min"] = grouped["ttft_s.p99"].min()
    out["p99_ttft_s_max"] = grouped["ttft_s.p99"].max()
    out["seeds"] = grouped.size()
    return out.reset_index()


def jobs_from_command_line(doc: str, default: Optional[int] = None) -> Optional[int]:
    """A study script's command line: ``--jobs N`` (or the former positional ``N``) parallel runs."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--jobs", "-j", type=int, default=default,
                        help=f"parallel runs (default: {default or 'CPUs available'})")
    parser.add_argument("processes", nargs="?", type=int, help=argparse.SUPPRESS)  # the former positional form
    args = parser.parse_args()
    return args.jobs or args.processes


def study_sweep(name: str, jobs: Optional[int]) -> tuple[dict, pd.DataFrame]:
    """Run ``experiments/NAME.yaml`` through the sweep runner (cached under the work folder); say which runs
    failed. Returns the spec and the sweep's results table."""
    import sys

    import yaml

    from llmsim.sweep import run_sweep

    spec = yaml.safe_load((EXPERIMENTS_DIR / f"{name}.yaml").read_text())
    table = run_sweep(spec, WORK_DIR / name, jobs=jobs, progress=True).table
    failed = table[table["status"] != "ok"]
    if len(failed):
        print(f"{len(failed)} runs failed, e.g.: {failed['error'].iloc[0]}", file=sys.stderr)
    return spec, table


def check_cluster_sweep(table: pd.DataFrame) -> None:
    """Stop with one line if any run failed or lost/duplicated a request (the cluster's accounting check)."""
    failed = table[table["status"] != "ok"]
    if len(failed):
        raise SystemExit(f"{len(failed)} of {len(table)} runs failed (they are retried on the next start); "
                         f"first: {failed['error'].iloc[0]}")
    broken = table[~table["cluster.accounting.ok"].astype(bool)]
    if len(broken):
        raise SystemExit(f"runs {list(broken['run'])}: requests lost or recorded twice (cluster.accounting.ok false)")
