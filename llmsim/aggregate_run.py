"""The fast mode's run: every replica of a cluster in the aggregate engine (:mod:`llmsim.engine.aggregate`).

The cluster here is a shell built as for the simpy run (replicas, router, reports) that simpy never runs:
each replica's engine keeps its own clock. A router that reads no replica state routes the whole workload up
front and each replica then runs alone, one at a time (one replica's per-request state in memory at once);
any other router runs the replicas in lockstep (:mod:`llmsim.cluster.lockstep`), routing each request when
it arrives. What the engines produce goes into the same recorder and cluster counters as the simpy run's, so
the same reports make the same tables.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing as mp
import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pandas as pd

from llmsim.cluster.lockstep import lockstep_views, run_lockstep
from llmsim.engine.admission import unservable_reason
from llmsim.engine.aggregate import AggregateReplica, ReplicaTail
from llmsim.engine.request import Request


@dataclass
class _Inputs:
    """What every replica's engine is built from (read by forked workers as it stood at the fork)."""

    config: object
    replicas: list
    clock: np.ndarray  # the simulated clock at each arrival (see :func:`arrival_clock`)
    prompt: np.ndarray
    output: np.ndarray
    recorder: object = None  # the step sink's target when steps are streamed (never in a worker)

    def engine(self, position: int, rows: np.ndarray, on_progress=None) -> AggregateReplica:
        replica = self.replicas[position]
        dep = replica.spec.deployment
        metrics = self.config.metrics
        rid = replica.replica_id
        recorder = self.recorder
        sink = None
        if recorder is not None and recorder.stream_path is not None:
            sink = lambda steps: recorder.extend_steps(rid, steps)  # noqa: E731
        return AggregateReplica(
            rid, self.config.scheduler, dep.num_gpu_blocks, dep.max_model_len, dep.timing,
            self.clock[rows], self.prompt[rows], self.output[rows], keep_steps=metrics.step_detail,
            step_sample_every=metrics.step_sample_every, sample_interval_s=metrics.timeseries_interval_s,
            on_progress=on_progress, step_sink=sink, step_sink_rows=metrics.stream_chunk_rows)


def run_aggregate(config, df: pd.DataFrame, recorder, cluster, progress=None) -> None:
    """Run the workload ``df`` on ``cluster``'s colocated replicas; fills ``recorder`` and the cluster's
    counters, time series and end time."""
    n = len(df)
    arrival = df["arrival_s"].to_numpy(dtype=np.float64)
    prompt = df["prompt_tokens"].to_numpy(dtype=np.int64)
    output = df["output_tokens"].to_numpy(dtype=np.int64)
    failed = df["failed"].to_numpy(dtype=bool) if "failed" in df.columns else np.zeros(n, dtype=bool)
    clock = arrival_clock(arrival)
    replicas = cluster.accepting_replicas("colocated")
    router = cluster.routers["colocated"]
    served = ~failed & (output > 0) & (prompt > 0)  # the others end at their arrival, as the simpy run records them
    routed = np.flatnonzero(served)
    inputs = _Inputs(config, replicas, clock, prompt, output, recorder)
    done = n - len(routed)
    if getattr(router, "reads_replica_state", True):
        runs = _in_lockstep(inputs, router, routed, request_factory(df),
                            None if progress is None else (lambda k: progress(done + k, n)))
    else:
        # Round-robin and random routers read no replica state: their choices depend only on the arrival order.
        views = [r.view for r in replicas]
        choose_many = getattr(router, "choose_many", None)  # optional: a router's choices for many at once
        choice = (choose_many(len(routed), views) if choose_many is not None else
                  np.fromiter((router.choose(None, views) for _ in range(len(routed))), dtype=np.int64,
                              count=len(routed)))
        groups = [routed[choice == position] for position in range(len(replicas))]
        workers = min(worker_count(config.engine.workers, len(routed)), len(replicas))
        if workers > 1 and recorder.stream_path is None:
            runs = _alone_in_workers(inputs, groups, workers)
        else:
            runs = _alone(inputs, groups, None if progress is None else (lambda k: progress(done + k, n)))
    tails, last_end = [], 0.0
    # The table's columns are built once the first run is in: with workers, while they go on computing.
    columns: dict = {}
    for replica, rows, outcome, tail in runs:  # in replica order
        columns = columns or _empty_request_columns(n, arrival, prompt, output, failed)
        rid = replica.replica_id
        _scatter_outcome(columns, rows, outcome, rid)
        recorder.add_replica_run(rid, outcome)
        replica.num_routed = len(rows)
        replica.num_finished, replica.num_steps = outcome.num_finished, outcome.num_steps
        replica.busy_s, replica.kv_usage_s = outcome.busy_s, outcome.kv_usage_s
        last_end = max(last_end, outcome.last_end_s)
        tails.append(tail)
        done += len(rows)
        if progress is not None:
            progress(done, n)
    columns = columns or _empty_request_columns(n, arrival, prompt, output, failed)
    if not served.all():
        last_end = max(last_end, float(clock[~served].max()))
    # The heartbeat samples every replica until the run ends (the last request's end, or the last arrival).
    cluster.last_end_s = last_end
    cluster.arrival_times = [float(clock[routed[-1]])] if len(routed) else []
    _fill_timeseries(cluster, replicas, tails, max([last_end, *cluster.arrival_times]))
    _derive_latencies(columns)
    recorder.add_requests(columns)
    cluster.num_ended = n


def _in_lockstep(inputs: _Inputs, router, routed: np.ndarray, request_of, progress):
    """Every replica at once, routing each request when it arrives; yields each replica's run in order."""
    engines = [inputs.engine(position, routed[:0]) for position in range(len(inputs.replicas))]
    views = lockstep_views(engines, inputs.replicas)
    assigned = run_lockstep(engines, router, views, inputs.clock, inputs.prompt, inputs.output, routed, request_of,
                            progress)
    for replica, rows, engine in zip(inputs.replicas, assigned, engines):
        yield replica, np.asarray(rows, dtype=np.int64), engine.outcome(), ReplicaTail(engine)


def _alone(inputs: _Inputs, groups: list, progress):
    """One replica after the other, each over its own arrivals (one replica's state in memory at a time)."""
    for position, rows in enumerate(groups):
        engine = inputs.engine(position, rows, progress)
        yield inputs.replicas[position], rows, engine.run(), ReplicaTail(engine)


#: ``engine.workers`` unset: below this many routed requests one process (forking costs more than it saves).
AUTO_WORKERS_MIN_REQUESTS = 50_000


def worker_count(workers: Optional[int], num_requests: int) -> int:
    """``engine.workers``, or when unset one per usable core for a large run. A daemonic process (a
    multiprocessing pool's worker) may not fork children, and a platform without fork has no cheap way to
    share the inputs, so both keep to one."""
    if workers is not None:
        return workers
    if (num_requests < AUTO_WORKERS_MIN_REQUESTS or mp.current_process().daemon
            or "fork" not in mp.get_all_start_methods()):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores)


_FORKED: Optional[tuple] = None  # (inputs, groups) for the workers, set just before they are forked


def _alone_in_workers(inputs: _Inputs, groups: list, workers: int):
    """:func:`_alone` spread over ``workers`` forked processes (``engine.workers``); each replica's run is the
    same wherever it runs, so the results are too. Outcomes come back as arrays (cheap to pickle)."""
    global _FORKED
    _FORKED = (dataclasses.replace(inputs, recorder=None), groups)
    # Frozen objects are left out of the workers' garbage collections, which would otherwise touch (and so
    # copy, page by page) every container the parent holds.
    gc.freeze()
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            # Largest groups first so the last one to start is short; results are consumed in replica order.
            order = sorted(range(len(groups)), key=lambda k: -len(groups[k]))
            pending = {position: pool.apply_async(_worker_run, (position,)) for position in order}
            for position, rows in enumerate(groups):
                outcome, tail = pending.pop(position).get()
                yield inputs.replicas[position], rows, outcome, tail
    finally:
        _FORKED = None
        gc.unfreeze()


def _worker_run(position: int):
    inputs, groups = _FORKED
    engine = inputs.engine(position, groups[position])
    outcome = engine.run()
    return _compact(outcome), ReplicaTail(engine)


def _compact(outcome):
    """The outcome with its per-request lists as arrays (a list of a million Python floats pickles slowly)."""
    for name in ("first_scheduled_s", "first_token_s", "last_token_s", "finish_s"):
        setattr(outcome, name, _as_float(getattr(outcome, name)))
    for name in ("num_output_tokens", "num_preemptions", "scheduled_tokens", "recomputed_tokens", "cached_tokens"):
        setattr(outcome, name, np.asarray(getattr(outcome, name), dtype=np.int64))
    return outcome


def arrival_clock(arrival: np.ndarray) -> np.ndarray:
    """The simulated clock at each arrival as the simpy run reaches it: ``now + (arrival − now)``, which can
    differ from ``arrival`` in the last bit. Engines start work at these instants, so their times match.

    A dependency chain, solved by fixed-point iteration on whole arrays: guess that the clock stood exactly at
    each previous arrival, recompute, and stop when the guess reproduces itself (then every element satisfies
    the recurrence, which has one solution). Inexact steps are rare, so this takes a few passes."""
    n = len(arrival)
    arrival = np.asarray(arrival, dtype=np.float64)
    previous = np.concatenate([[0.0], arrival[:-1]])
    for _ in range(64):
        delay = arrival - previous
        clock = np.where(delay > 0, previous + delay, previous)
        shifted = np.concatenate([[0.0], clock[:-1]])
        if np.array_equal(shifted, previous):
            return clock
        previous = shifted
    clock = np.empty(n)  # a long chain of inexact steps: walk it
    now = 0.0
    for i, a in enumerate(arrival.tolist()):
        delay = a - now
        if delay > 0:
            now = now + delay
        clock[i] = now
    return clock


def request_factory(df: pd.DataFrame) -> Callable[[int], Request]:
    """Row → the :class:`Request` a router is shown (its id, sizes, priority, session and prefix hashes)."""
    width = len(str(max(len(df) - 1, 0)))
    arrival = df["arrival_s"].to_numpy(dtype=np.float64)
    prompt = df["prompt_tokens"].to_numpy(dtype=np.int64)
    output = df["output_tokens"].to_numpy(dtype=np.int64)
    priority = df["priority"].to_numpy() if "priority" in df.columns else None
    session = df["session_id"].to_numpy() if "session_id" in df.columns else None
    prefixes = df["prefix_hashes"].to_numpy() if "prefix_hashes" in df.columns else None

    def request_of(i: int) -> Request:
        return Request(str(i).zfill(width), arrival[i], int(prompt[i]), int(output[i]), index=i,
                       priority=int(priority[i]) if priority is not None else 0,
                       session_id=int(session[i]) if session is not None else None,
                       prefix_hashes=tuple(prefixes[i]) if prefixes is not None and prefixes[i] is not None else None)

    return request_of


def _empty_request_columns(n, arrival, prompt, output, failed) -> dict:
    width = len(str(max(n - 1, 0)))
    nan = np.full(n, np.nan)
    # Only the unservable rows need their reason worked out: a routed row's reason comes from its replica's run.
    reason = np.full(n, "", dtype=object)
    unservable = np.flatnonzero(failed | (prompt <= 0) | (output <= 0))
    reason[unservable] = [unservable_reason(failed[i], prompt[i], output[i]) for i in unservable.tolist()]
    return {
        "request_id": [str(i).zfill(width) for i in range(n)], "replica": np.full(n, -1, dtype=np.int64),
        "arrival_s": arrival, "first_scheduled_s": nan.copy(), "first_token_s": nan.copy(), "finish_s": nan.copy(),
        "last_token_s": nan.copy(), "prompt_tokens": prompt, "output_tokens": output,
        "num_output_tokens": np.zeros(n, dtype=np.int64), "num_preemptions": np.zeros(n, dtype=np.int64),
        "scheduled_tokens": np.zeros(n, dtype=np.int64), "recomputed_tokens": np.zeros(n, dtype=np.int64),
        "cached_tokens": np.zeros(n, dtype=np.int64), "status": np.full(n, "failed", dtype=object),
        "reason": reason, "served_by": np.full(n, "", dtype=object),
    }


def _derive_latencies(columns: dict) -> None:
    """TTFT, E2EL, TPOT and queue time from the recorded instants, as Recorder.request_ended derives them."""
    arrival = columns["arrival_s"]
    first_token = columns["first_token_s"]
    ttft = first_token - arrival
    e2el = np.where(np.isnan(columns["finish_s"]) | np.isnan(first_token), np.nan, columns["last_token_s"] - arrival)
    produced = columns["num_output_tokens"]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(~np.isnan(e2el) & (produced > 1), (e2el - ttft) / (produced - 1), np.nan)
    columns["ttft_s"] = ttft
    columns["e2el_s"] = e2el
    columns["tpot_s"] = tpot
    columns["queue_s"] = columns["first_scheduled_s"] - arrival


def _as_float(values) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _scatter_outcome(columns: dict, rows: np.ndarray, outcome, replica_id: int) -> None:
    columns["replica"][rows] = replica_id
    columns["served_by"][rows] = str(replica_id)
    for name, values in (("first_scheduled_s", outcome.first_scheduled_s), ("first_token_s", outcome.first_token_s),
                         ("finish_s", outcome.finish_s), ("last_token_s", outcome.last_token_s)):
        columns[name][rows] = _as_float(values)
    for name, values in (("num_output_tokens", outcome.num_output_tokens), ("num_preemptions", outcome.num_preemptions),
                         ("scheduled_tokens", outcome.scheduled_tokens), ("recomputed_tokens", outcome.recomputed_tokens),
                         ("cached_tokens", outcome.cached_tokens)):
        columns[name][rows] = np.asarray(values, dtype=np.int64)
    columns["status"][rows] = np.asarray(outcome.status, dtype=object)
    columns["reason"][rows] = np.asarray(outcome.reason, dtype=object)


def _fill_timeseries(cluster, replicas, engines, end_s: float) -> None:
    """Every replica's heartbeat samples, in the heartbeat's order (by time, then replica)."""
    per_replica = [engine.sample_until(end_s) for engine in engines]
    ts = cluster.timeseries
    if not per_replica:
        return
    count = min(len(p["time_s"]) for p in per_replica)
    if not count:
        return

    def interleaved(name: str, dtype) -> np.ndarray:  # [sample, replica] row-major: by time, then replica
        return np.stack([np.asarray(p[name][:count], dtype=dtype) for p in per_replica], axis=1).ravel()

    width = len(replicas)
    ts["time_s"] = interleaved("time_s", np.float64)
    ts["replica"] = np.tile(np.array([r.replica_id for r in replicas], dtype=np.int64), count)
    ts["role"] = np.tile(np.array([r.spec.role for r in replicas], dtype=object), count)
    ts["state"] = np.tile(np.array([r.state.value for r in replicas], dtype=object), count)
    ts["kv_usage"] = interleaved("kv_usage", np.float64)
    for name in ("num_outstanding", "num_waiting", "pending_prefill_tokens"):
        ts[name] = interleaved(name, np.int64)
    assert len(ts["replica"]) == count * width


