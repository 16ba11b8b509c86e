"""``llmsim bench speed``: how fast the simulator itself runs.

It simulates N requests of the bundled bursty workload on R replicas at about 70 % of their capacity and
reports wall-clock seconds, simulated requests per wall second, simulated seconds per wall second and the
peak resident memory, for the fast (event-skipping) engine and, on a subset, the per-step reference engine.
Each measurement runs in a fresh child process, so its peak memory is its own and nothing is shared between
the two modes. The capacity of one replica is measured first by a saturation probe (all requests at once).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path
from typing import Any, Optional

from llmsim.errors import UserError

#: Offered load relative to the fleet's measured capacity.
TARGET_LOAD = 0.7


def _overrides(num_requests: int, replicas: int, rate: float, mode: str, seed: int) -> list[str]:
    return [
        f"seed={seed}",
        f"workload.num_requests={num_requests}",
        f"workload.rate={rate!r}",
        f"cluster.replicas={replicas}",
        f"engine.mode={mode}",
        "metrics.step_detail=false",
    ]


def replica_capacity_rps(seed: int = 0, probe_requests: int = 600) -> float:
    """Completed requests per second of one replica of the default config when saturated."""
    from llmsim.config import load_config
    from llmsim.simulation import simulate

    cfg = load_config(None, _overrides(probe_requests, 1, 1000.0, "fast", seed))
    summary = simulate(cfg).summary
    return summary["completed"] / summary["duration_s"]


def _measure(overrides: list[str], queue: "mp.Queue") -> None:
    from llmsim.config import load_config
    from llmsim.simulation import simulate

    cfg = load_config(None, overrides)
    start = time.perf_counter()
    try:
        summary = simulate(cfg).summary
    except Exception as exc:  # noqa: BLE001 - the parent waits on the queue: it must hear of any failure
        queue.put({"error": f"{type(exc).__name__}: {exc}", "user_error": isinstance(exc, UserError)})
        return
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"wall_s": wall, "peak_rss_mb": peak_kb / 1024.0, "num_requests": summary["num_requests"],
               "completed": summary["completed"], "duration_s": summary["duration_s"],
               "num_steps": summary["num_steps"]})


def measure_in_child(overrides: list[str]) -> dict[str, Any]:
    """Run one simulation in a fresh process (single-threaded numpy) and return its figures."""
    from llmsim.config import load_config
    from llmsim.limits import check_run

    try:  # refuse here what the child could never finish
        check_run(load_config(None, overrides))
    except UserError as exc:
        raise UserError(f"--requests / --replicas: {exc}") from None
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    env_backup = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({k: "1" for k in env_backup})
    try:
        proc = ctx.Process(target=_measure, args=(overrides, queue))
        proc.start()
        result = queue.get()
        proc.join()
    finally:
        for key, value in env_backup.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if "error" in result:
        raise (UserError if result["user_error"] else RuntimeError)(result["error"].split(": ", 1)[1])
    wall = result["wall_s"]
    result["requests_per_s"] = result["num_requests"] / wall
    result["sim_seconds_per_s"] = result["duration_s"] / wall
    result["us_per_request"] = wall / result["num_requests"] * 1e6
    return result


def bench_speed(num_requests: int, replicas: int, reference_requests: Optional[int] = 10_000, seed: int = 0,
                report=print) -> dict[str, Any]:
    capacity = replica_capacity_rps(seed)
    rate = TARGET_LOAD * replicas * capacity
    report(f"one replica saturates at {capacity:.2f} req/s; offering {rate:.2f} req/s to {replicas} replicas "
           f"({TARGET_LOAD:.0%} load)")
    fast = measure_in_child(_overrides(num_requests, replicas, rate, "fast", seed))
    result: dict[str, Any] = {
        "requests": num_requests, "replicas": replicas, "rate_rps": rate, "replica_capacity_rps": capacity,
        "mode": "fast", **{k: fast[k] for k in ("wall_s", "requests_per_s", "sim_seconds_per_s", "peak_rss_mb",
                                                   "us_per_request", "duration_s", "num_steps")},
    }
    report(_line("fast", num_requests, fast))
    if reference_requests:
        n_ref = min(reference_requests, num_requests)
        ref = measure_in_child(_overrides(n_ref, replicas, rate, "reference", seed))
        fast_subset = fast if n_ref == num_requests else measure_in_child(_overrides(n_ref, replicas, rate, "fast", seed))
        result["reference"] = {"requests": n_ref, **{k: ref[k] for k in ("wall_s", "requests_per_s", "sim_seconds_per_s",
                                                                         "peak_rss_mb", "us_per_request")}}
        result["fast_on_reference_subset"] = {"requests": n_ref, "wall_s": fast_subset["wall_s"],
                                              "requests_per_s": fast_subset["requests_per_s"]}
        result["speedup_vs_reference"] = ref["wall_s"] / fast_subset["wall_s"]
        report(_line("reference", n_ref, ref))
        report(f"fast on the same {n_ref:,} requests: {fast_subset['wall_s']:.2f} s "
               f"→ {result['speedup_vs_reference']:.1f}x faster than the reference engine")
    return result


def _line(mode: str, n: int, r: dict[str, Any]) -> str:
    return (f"{mode:>9}: {n:,} requests in {r['wall_s']:.2f} s wall = {r['requests_per_s']:,.0f} req/s, "
            f"{r['sim_seconds_per_s']:,.0f} simulated s per s, peak RSS {r['peak_rss_mb']:,.0f} MB")


def write_json(result: dict[str, Any], path: Path) -> None:
    from llmsim.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
