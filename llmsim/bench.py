"""``llmsim bench speed``: how fast the simulator itself runs.

It simulates N requests of the bundled bursty workload on R replicas at about 70 % of their capacity and
reports wall-clock seconds, simulated requests per wall second, simulated seconds per wall second and the
peak resident memory, for the fast engine and, on a subset, the per-step reference engine. Each measurement
runs in a fresh child process, so its peak memory is its own and nothing is shared between the two modes.
The capacity of one replica is measured first by a saturation probe (all requests at once) under the same
settings (``--policy``, ``--set``). The matrix mode times the fast engine over every scheduling policy × every
router × prefix caching off/on and writes a Markdown table.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from llmsim.metrics.display import plural

from llmsim.errors import UserError

#: Offered load relative to the fleet's measured capacity.
TARGET_LOAD = 0.7


def _overrides(num_requests: int, replicas: int, rate: float, mode: str, seed: int,
               settings: Sequence[str] = ()) -> list[str]:
    return [
        f"seed={seed}",
        f"workload.num_requests={num_requests}",
        f"workload.rate={rate!r}",
        f"cluster.replicas={replicas}",
        f"engine.mode={mode}",
        "metrics.step_detail=false",
        *settings,
    ]


def settings_for(router: Optional[str] = None, policy: Optional[str] = None,
                 settings: Sequence[str] = ()) -> list[str]:
    """``--router``/``--policy``/``--set`` as config overrides (``--set`` last, so it wins)."""
    out = []
    if router is not None:
        out.append(f"cluster.router={router}")
    if policy is not None:
        out.append(f"scheduler.policy={policy}")
    return out + list(settings)


def replica_capacity_rps(seed: int = 0, probe_requests: int = 600, settings: Sequence[str] = ()) -> float:
    """Completed requests per second of one replica of the default config (with ``settings``) when saturated."""
    from llmsim.config import load_config
    from llmsim.simulation import simulate

    cfg = load_config(None, _overrides(probe_requests, 1, 1000.0, "fast", seed, settings))
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
    # engine.workers > 1: the largest worker process's peak, reported apart (a fork shares pages, so the two do
    # not simply add up).
    worker_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    queue.put({"wall_s": wall, "peak_rss_mb": peak_kb / 1024.0, "worker_peak_rss_mb": worker_kb / 1024.0, "num_requests": summary["num_requests"],
               "completed": summary["completed"], "duration_s": summary["duration_s"],
               "num_steps": summary["num_steps"], "engine_mode": summary["engine_mode"]})


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
                report=print, settings: Sequence[str] = ()) -> dict[str, Any]:
    """Time the fast engine (and the reference engine on a subset) on one configuration: the default config
    with ``settings`` (config overrides, e.g. from :func:`settings_for`) applied."""
    settings = list(settings)
    capacity = replica_capacity_rps(seed, settings=settings)
    rate = TARGET_LOAD * replicas * capacity
    report(f"one replica saturates at {capacity:.2f} req/s; offering {rate:.2f} req/s to {plural(replicas, 'replica')} "
           f"({TARGET_LOAD:.0%} load)")
    fast = measure_in_child(_overrides(num_requests, replicas, rate, "fast", seed, settings))
    result: dict[str, Any] = {
        "requests": num_requests, "replicas": replicas, "rate_rps": rate, "replica_capacity_rps": capacity,
        "settings": settings, "mode": "fast", "engine_mode": fast["engine_mode"],
        **{k: fast[k] for k in ("wall_s", "requests_per_s", "sim_seconds_per_s", "peak_rss_mb", "worker_peak_rss_mb",
                                "us_per_request", "duration_s", "num_steps")},
    }
    report(_line("fast", num_requests, fast))
    report(f"    engine: {fast['engine_mode']}")
    if reference_requests:
        n_ref = min(reference_requests, num_requests)
        ref = measure_in_child(_overrides(n_ref, replicas, rate, "reference", seed, settings))
        fast_subset = fast if n_ref == num_requests else measure_in_child(
            _overrides(n_ref, replicas, rate, "fast", seed, settings))
        result["reference"] = {"requests": n_ref, **{k: ref[k] for k in ("wall_s", "requests_per_s", "sim_seconds_per_s",
                                                                         "peak_rss_mb", "us_per_request")}}
        result["fast_on_reference_subset"] = {"requests": n_ref, "wall_s": fast_subset["wall_s"],
                                              "requests_per_s": fast_subset["requests_per_s"]}
        result["speedup_vs_reference"] = ref["wall_s"] / fast_subset["wall_s"]
        report(_line("reference", n_ref, ref))
        report(f"fast on the same {n_ref:,} requests: {fast_subset['wall_s']:.2f} s "
               f"→ {result['speedup_vs_reference']:.1f}x faster than the reference engine")
    return result


def bench_matrix(num_requests: int, replicas: int, seed: int = 0, report=print, settings: Sequence[str] = (),
                 policies: Optional[Sequence[str]] = None, routers: Optional[Sequence[str]] = None,
                 prefix_caching: Sequence[bool] = (False, True)) -> list[dict[str, Any]]:
    """The fast engine over policy × router × prefix caching, each at ~70 % of that policy's own capacity.

    One row per cell: wall seconds, requests per wall second and which engine ran (``engine_mode``). A cell
    whose settings are invalid for the policy gets its error instead of figures."""
    from llmsim.cluster.routers import ROUTERS
    from llmsim.engine.schedulers import SCHEDULERS
    from llmsim.errors import UserError

    rows = []
    for policy in policies or list(SCHEDULERS):
        for caching in prefix_caching:
            base = [f"scheduler.policy={policy}", f"scheduler.enable_prefix_caching={str(caching).lower()}",
                    *settings]
            try:
                rate = TARGET_LOAD * replicas * replica_capacity_rps(seed, settings=base)
            except UserError as exc:
                rows += [{"policy": policy, "router": router, "prefix_caching": caching, "error": str(exc)}
                         for router in routers or list(ROUTERS)]
                continue
            for router in routers or list(ROUTERS):
                r = measure_in_child(_overrides(num_requests, replicas, rate, "fast", seed,
                                                [f"cluster.router={router}", *base]))
                row = {"policy": policy, "router": router, "prefix_caching": caching, "requests": num_requests,
                       "wall_s": r["wall_s"], "requests_per_s": r["requests_per_s"], "engine_mode": r["engine_mode"]}
                rows.append(row)
                report(f"{policy:>28} {router:>20} caching={'on' if caching else 'off':>3}: "
                       f"{r['requests_per_s']:>9,.0f} req/s  ({r['engine_mode']})")
    return rows


def matrix_markdown(rows: list[dict[str, Any]], replicas: int) -> str:
    """The matrix as a Markdown table: requests per wall second; ``*`` marks the aggregate engine."""
    lines = [f"Requests simulated per wall second ({rows[0].get('requests', 0):,} requests on {replicas} replicas; "
             "`*` = aggregate engine, `e` = event-skipping loop, `r` = per-step reference).", "",
             "| policy | prefix caching | router | req/s | engine |", "|---|---|---|---:|---|"]
    for row in rows:
        caching = "on" if row["prefix_caching"] else "off"
        if "error" in row:
            lines.append(f"| {row['policy']} | {caching} | {row['router']} | – | {row['error']} |")
            continue
        mode = row["engine_mode"]
        mark = "*" if mode == "fast" else ("e" if mode.startswith("fast") else "r")
        lines.append(f"| {row['policy']} | {caching} | {row['router']} | {row['requests_per_s']:,.0f} | {mark} |")
    return "\n".join(lines) + "\n"


def _line(mode: str, n: int, r: dict[str, Any]) -> str:
    workers = f" (workers {r['worker_peak_rss_mb']:,.0f} MB)" if r.get("worker_peak_rss_mb") else ""
    return (f"{mode:>9}: {n:,} requests in {r['wall_s']:.2f} s wall = {r['requests_per_s']:,.0f} req/s, "
            f"{r['sim_seconds_per_s']:,.0f} simulated s per s, peak RSS {r['peak_rss_mb']:,.0f} MB{workers}")


def write_json(result: dict[str, Any], path: Path) -> None:
    from llmsim.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
