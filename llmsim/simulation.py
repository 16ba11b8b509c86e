"""Assemble a run from its config and execute it: workload → cluster → replicas → recorder → results."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import simpy

from llmsim.cluster.build import build_cluster, cluster_results
from llmsim.cluster.cluster import Cluster
from llmsim.config import SimConfig
from llmsim.engine.client import Client
from llmsim.engine.aggregate import AggregateReplica, ReplicaTail, aggregate_engine_blockers
from llmsim.engine.fastpath import scheduler_blockers
from llmsim.engine.replica import Replica
from llmsim.engine.request import Request, RequestStatus
from llmsim.engine.schedulers import make_kv_cache, make_scheduler
from llmsim.errors import ConfigError
from llmsim.hardware.memory import check_tensor_parallel, kv_cache_capacity, layers_per_stage
from llmsim.hardware.profiles import load_gpu, load_model
from llmsim.hardware.timing import build_timing_model, swap_time
from llmsim.metrics.recorder import _ACTIVE_LISTENERS, Recorder
from llmsim.metrics.summary import summarize
from llmsim.workload import Workload, build_workload


@dataclass
class Deployment:
    """What one replica is: its KV capacity, context limit and step-time function (derived from config)."""

    num_gpu_blocks: int
    max_model_len: int
    step_time: Callable
    details: dict[str, Any] = field(default_factory=dict)
    swap_s_per_block: float = 0.0  # PCIe time to move one KV block between GPU and CPU (swap preemption)
    num_cpu_blocks: int = 0  # KV blocks the CPU swap space holds (scheduler.swap_space_gib; swap mode only)
    timing: Any = None  # the TimingModel itself (its vectorised decode steps drive the fast path)


@dataclass
class Result:
    """The outcome of :func:`simulate`: per-request and per-step tables and the summary.

    With ``metrics.stream_steps`` the step table was written to ``steps_file`` during the run; ``steps`` reads
    it back (sorted by replica and step, like the in-memory table) only when asked for."""

    config: SimConfig
    requests: pd.DataFrame
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # cluster tables: replicas, transfers, …
    steps_file: Optional[Path] = None
    _steps: Optional[pd.DataFrame] = field(default=None, repr=False)

    @property
    def steps(self) -> pd.DataFrame:
        if self._steps is None:
            frame = pd.read_parquet(self.steps_file)
            self._steps = frame.sort_values(["replica", "step"], kind="stable").reset_index(drop=True)
        return self._steps

    def write(self, out_dir: str | Path) -> Path:
        """Write summary.json, requests.parquet, steps.parquet and each of ``tables`` as NAME.parquet.

        Files appear only when all are complete."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
        try:
            self.requests.to_parquet(tmp / "requests.parquet", index=False)
            if self._steps is None and self.steps_file is not None:
                shutil.copyfile(self.steps_file, tmp / "steps.parquet")  # streamed: rows in the order steps ran
            else:
                self.steps.to_parquet(tmp / "steps.parquet", index=False)
            for stem, table in self.tables.items():
                table.to_parquet(tmp / f"{stem}.parquet", index=False)
            (tmp / "summary.json").write_text(json.dumps(self.summary, indent=2, sort_keys=False, allow_nan=False) + "\n")
            for name in ("requests.parquet", "steps.parquet", *(f"{stem}.parquet" for stem in self.tables), "summary.json"):
                os.replace(tmp / name, out_dir / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out_dir


def build_deployment(config: SimConfig) -> Deployment:
    hw, sched = config.hardware, config.scheduler
    gpu = load_gpu(hw.gpu)
    model = load_model(hw.model)
    max_model_len = sched.max_model_len or model.max_position_embeddings
    details: dict[str, Any] = {"gpu": gpu.name, "model": model.name, "tp": hw.tp, "pp": hw.pp}
    check_tensor_parallel(model, hw.tp)
    layers_per_stage(model.num_layers, hw.pp)  # raises for more stages than layers
    if sched.num_gpu_blocks is not None:
        num_blocks = sched.num_gpu_blocks
    else:
        capacity = kv_cache_capacity(model, gpu, hw, sched.block_size, sched.gpu_memory_utilization)
        num_blocks = capacity.num_gpu_blocks
        details["kv_bytes_per_token"] = capacity.kv_bytes_per_token
        if num_blocks < 2:  # block 0 is reserved: vLLM refuses to start without one usable KV block
            raise ConfigError(f"{model.name} on {gpu.name} at tp={hw.tp}, pp={hw.pp} leaves {max(num_blocks - 1, 0)} "
                              f"usable KV blocks after the weights at scheduler.gpu_memory_utilization="
                              f"{sched.gpu_memory_utilization}; raise it, or hardware.tp / hardware.pp")
    if not sched.enable_chunked_prefill and max_model_len > sched.max_num_batched_tokens:
        raise ConfigError(
            f"config field scheduler.max_num_batched_tokens: {sched.max_num_batched_tokens} is smaller than "
            f"max_model_len {max_model_len}; with chunked prefill off vLLM requires it to be at least max_model_len"
        )
    timing = build_timing_model(hw, gpu, model, cpu_overhead=config.engine.cpu_overhead)
    details["num_gpu_blocks"] = num_blocks
    details["max_model_len"] = max_model_len
    # One block on one GPU (its PP stage's layers, its TP share of KV heads) crosses that GPU's own PCIe link.
    stage_layers = max(layers_per_stage(model.num_layers, hw.pp))
    block_bytes = sched.block_size * model.kv_bytes_per_token(hw.kv_cache_dtype, tp=hw.tp, num_layers=stage_layers)
    num_cpu_blocks = int(sched.swap_space_gib * 2**30 // block_bytes) if sched.preemption == "swap" else 0
    return Deployment(num_blocks, max_model_len, timing.step_time, details,
                      swap_s_per_block=swap_time(gpu, block_bytes), num_cpu_blocks=num_cpu_blocks, timing=timing)


def unservable_reason(failed: bool, prompt_tokens: int, output_tokens: int) -> str:
    """Why a workload row is recorded as failed at its arrival without reaching a replica ("" if it is not).

    A row the trace marks as failed stays failed; an empty prompt is refused as vLLM's API server refuses
    it (HTTP 400: the prompt must hold at least one token), never "finished" with a TTFT of 0; a request
    for 0 output tokens has nothing to generate."""
    if failed:
        return "failed_in_trace"
    if prompt_tokens <= 0:
        return "empty_prompt"
    if output_tokens <= 0:
        return "zero_output_tokens"
    return ""


def _arrivals(env: simpy.Environment, workload: Workload, cluster: Cluster):
    df = workload.df
    arrival = df["arrival_s"].to_numpy(dtype=np.float64)
    prompt = df["prompt_tokens"].to_numpy(dtype=np.int64)
    output = df["output_tokens"].to_numpy(dtype=np.int64)
    failed = df["failed"].to_numpy(dtype=bool) if "failed" in df.columns else np.zeros(len(df), dtype=bool)
    priority = df["priority"].to_numpy() if "priority" in df.columns else None
    session = df["session_id"].to_numpy() if "session_id" in df.columns else None
    prefixes = df["prefix_hashes"].to_numpy() if "prefix_hashes" in df.columns else None
    width = len(str(max(len(df) - 1, 0)))
    for i in range(len(df)):
        delay = arrival[i] - env.now
        if delay > 0:
            yield env.timeout(delay)
        request = Request(f"{i:0{width}d}", arrival[i], int(prompt[i]), int(output[i]), index=i,
                          priority=int(priority[i]) if priority is not None else 0,
                          session_id=int(session[i]) if session is not None else None,
                          prefix_hashes=tuple(prefixes[i]) if prefixes is not None and prefixes[i] is not None else None)
        if failed[i] or output[i] <= 0 or prompt[i] <= 0:
            request.status = RequestStatus.FAILED
            request.reason = unservable_reason(failed[i], prompt[i], output[i])
            cluster.request_ended(request)
            continue
        if cluster.client is not None:
            cluster.client.submit(request)
        cluster.submit(request)
    cluster.finish_arrivals()


def simulate(
    config: SimConfig,
    progress: Optional[Callable[[int, int], None]] = None,
    workload: Optional[Workload] = None,
) -> Result:
    """Run one simulation. ``progress(done, total)`` is called now and then with requests ended so far.

    ``workload`` replaces the config's workload section (for scripts that build their own).
    """
    from llmsim.limits import check_run

    if workload is None:
        check_run(config)  # from the config alone: refuse a synthetic workload too large to even build
        workload = build_workload(config.workload, config.seed)
    deployment = build_deployment(config)
    check_run(config, workload)
    if config.engine.mode == "fast" and not aggregate_blockers(config):
        return _simulate_aggregate(config, workload, deployment, progress)
    env = simpy.Environment()
    recorder = make_recorder(config)
    cluster = assemble_cluster(config, env, recorder, len(workload.df))
    env.process(_arrivals(env, workload, cluster))
    total = len(workload.df)
    if progress is None:
        env.run(until=cluster.done)
    else:
        _run_with_progress(env, cluster, recorder, total, progress)
    cluster.fail_unfinished("stalled")
    return _collect(config, recorder, deployment, cluster)


def make_recorder(config: SimConfig) -> Recorder:
    """The run's recorder; with ``metrics.stream_steps`` its step records go to a file in a private temporary
    folder (removed when the :class:`Result` that points at it is garbage-collected)."""
    metrics = config.metrics
    stream_to = None
    if metrics.stream_steps and metrics.step_detail:
        stream_to = str(Path(tempfile.mkdtemp(prefix="llmsim-steps-")) / "steps.parquet")
    return Recorder(keep_steps=metrics.step_detail, step_sample_every=metrics.step_sample_every,
                    stream_steps_to=stream_to, stream_chunk_rows=metrics.stream_chunk_rows)


def engine_mode(config: SimConfig) -> str:
    """Which engine ran, for the summary: ``fast`` (the aggregate engine), ``fast (event-skipping loop: why)``
    or ``reference`` / ``reference (fast path off: why)``."""
    if config.engine.mode == "reference":
        return "reference"
    blockers = fast_path_blockers(config)
    if blockers:
        return "reference (fast path off: " + ", ".join(blockers) + ")"
    aggregate_off = aggregate_blockers(config)
    if aggregate_off:
        return "fast (event-skipping loop: " + ", ".join(aggregate_off) + ")"
    return "fast"


def aggregate_blockers(config: SimConfig) -> list[str]:
    """Why the aggregate engine (:mod:`llmsim.engine.aggregate`) cannot run this config (empty: it runs).

    On top of what the event-skipping loop needs, it routes the whole workload up front (so no client
    retries) and calls no per-step listeners (the timeline export wants every step's plan)."""
    reasons = fast_path_blockers(config)
    pps = {group.pp or config.hardware.pp for group in config.cluster.replica_groups()}
    reasons += aggregate_engine_blockers(config.scheduler, max(pps, default=1))
    if config.client.max_retries > 0:
        reasons.append("client retries")
    if _ACTIVE_LISTENERS.get():
        reasons.append("per-step listeners")
    return reasons


def _simulate_aggregate(config: SimConfig, workload: Workload, deployment: Deployment, progress) -> Result:
    """Route the workload up front, run each replica alone in the aggregate engine, and assemble the same
    tables and summary as the simpy run (through the same recorder and cluster reports)."""
    df = workload.df
    n = len(df)
    arrival = df["arrival_s"].to_numpy(dtype=np.float64)
    prompt = df["prompt_tokens"].to_numpy(dtype=np.int64)
    output = df["output_tokens"].to_numpy(dtype=np.int64)
    failed = df["failed"].to_numpy(dtype=bool) if "failed" in df.columns else np.zeros(n, dtype=bool)
    recorder = make_recorder(config)
    env = simpy.Environment()  # the cluster shell's clock: never run, the replicas keep their own time
    cluster = build_cluster(config, env, recorder, n, lambda gpu, model, tp, pp: build_deployment(
        config.model_copy(update={"hardware": config.hardware.model_copy(
            update={"gpu": gpu, "model": model, "tp": tp, "pp": pp})})), lambda *_: None)
    replicas = cluster.accepting_replicas("colocated")
    views = [r.view for r in replicas]
    router = cluster.routers["colocated"]
    served = ~failed & (output > 0) & (prompt > 0)  # the others end at their arrival, as the simpy run records them
    routed = np.flatnonzero(served)
    # Round-robin and random routers read no replica state: their choices depend only on the arrival order.
    choice = np.fromiter((router.choose(None, views) for _ in range(len(routed))), dtype=np.int64, count=len(routed))
    columns = _empty_request_columns(n, arrival, prompt, output, failed)
    tails = []
    last_end = float(arrival[~served].max()) if not served.all() else 0.0
    done = n - len(routed)
    metrics = config.metrics
    for position, replica in enumerate(replicas):
        rows = routed[choice == position]
        dep = replica.spec.deployment
        rid = replica.replica_id
        engine = AggregateReplica(
            rid, config.scheduler, dep.num_gpu_blocks, dep.max_model_len, dep.timing,
            arrival[rows], prompt[rows], output[rows], keep_steps=metrics.step_detail,
            step_sample_every=metrics.step_sample_every, sample_interval_s=metrics.timeseries_interval_s,
            on_progress=None if progress is None else (lambda k, base=done: progress(base + k, n)),
            step_sink=(lambda steps, rid=rid: recorder.extend_steps(rid, steps))
            if recorder.stream_path is not None else None, step_sink_rows=metrics.stream_chunk_rows)
        outcome = engine.run()
        _scatter_outcome(columns, rows, outcome, rid)
        recorder.add_replica_run(rid, outcome)
        replica.num_routed = len(rows)
        replica.num_finished, replica.num_steps = outcome.num_finished, outcome.num_steps
        replica.busy_s, replica.kv_usage_s = outcome.busy_s, outcome.kv_usage_s
        last_end = max(last_end, outcome.last_end_s)
        tails.append(ReplicaTail(engine))
        del engine, outcome  # one replica's per-request state in memory at a time
        done += len(rows)
        if progress is not None:
            progress(done, n)
    # The heartbeat samples every replica until the run ends (the last request's end, or the last arrival).
    cluster.last_end_s = last_end
    cluster.arrival_times = [float(arrival[routed[-1]])] if len(routed) else []
    _fill_timeseries(cluster, replicas, tails, max([last_end, *cluster.arrival_times]))
    _derive_latencies(columns)
    recorder.add_requests(columns)
    del columns
    cluster.num_ended = n
    return _collect(config, recorder, deployment, cluster)


def _empty_request_columns(n, arrival, prompt, output, failed) -> dict:
    width = len(str(max(n - 1, 0)))
    nan = np.full(n, np.nan)
    reason = np.array([unservable_reason(f, p, o) for f, p, o in zip(failed, prompt, output)], dtype=object)
    return {
        "request_id": [f"{i:0{width}d}" for i in range(n)], "replica": np.full(n, -1, dtype=np.int64),
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


def _as_float(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _scatter_outcome(columns: dict, rows: np.ndarray, outcome, replica_id: int) -> None:
    columns["replica"][rows] = replica_id
    columns["served_by"][rows] = str(replica_id)
    for name, values in (("first_scheduled_s", outcome.first_scheduled_s), ("first_token_s", outcome.first_token_s),
                         ("finish_s", outcome.finish_s), ("last_token_s", outcome.last_token_s)):
        columns[name][rows] = _as_float(values)
    for name, values in (("num_output_tokens", outcome.num_output_tokens), ("num_preemptions", outcome.num_preemptions),
                         ("scheduled_tokens", outcome.scheduled_tokens), ("recomputed_tokens", outcome.recomputed_tokens)):
        columns[name][rows] = np.asarray(values, dtype=np.int64)
    columns["status"][rows] = np.asarray(outcome.status, dtype=object)
    columns["reason"][rows] = np.asarray(outcome.reason, dtype=object)


def _fill_timeseries(cluster: Cluster, replicas, engines, end_s: float) -> None:
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


def fast_path_blockers(config: SimConfig) -> list[str]:
    """Why the event-skipping engine would not be exact for this config (empty: it may be used).

    A skipped decode run is committed when it ends, so anything that reads or changes a replica's state in
    the middle of one (state-aware routing, autoscaling, faults, P/D hand-offs, client timeouts) needs the
    per-step loop.
    """
    cluster = config.cluster
    reasons = scheduler_blockers(config.scheduler)
    if cluster.router not in ("round-robin", "random"):
        reasons.append(f"router {cluster.router} reads replica state")
    if cluster.autoscaler.policy != "none":
        reasons.append("autoscaling")
    if cluster.faults.mtbf_s is not None or cluster.faults.script:
        reasons.append("fault injection")
    if isinstance(cluster.replicas, list) and any(group.role != "colocated" for group in cluster.replicas):
        reasons.append("prefill/decode disaggregation")
    if config.client.timeout_s is not None:
        reasons.append("timeouts")
    return reasons


def assemble_cluster(config: SimConfig, env: simpy.Environment, recorder: Recorder, num_requests: int) -> Cluster:
    """The cluster of ``config.cluster``, its replicas built as the engine sections of the config say."""
    sched_cfg = config.scheduler
    fast_path = config.engine.mode == "fast" and not fast_path_blockers(config)

    def deployment_for(gpu: str, model: str, tp: int, pp: int) -> Deployment:
        hardware = config.hardware.model_copy(update={"gpu": gpu, "model": model, "tp": tp, "pp": pp})
        return build_deployment(config.model_copy(update={"hardware": hardware}))

    def engine_factory(replica_id: int, spec, replica_recorder) -> Replica:
        deployment = spec.deployment
        kv = make_kv_cache(sched_cfg, deployment.num_gpu_blocks, deployment.num_cpu_blocks)
        scheduler = make_scheduler(sched_cfg, kv, deployment.max_model_len)
        return Replica(replica_id, env, scheduler, deployment.step_time, replica_recorder,
                       async_scheduling=sched_cfg.async_scheduling, max_model_len=deployment.max_model_len,
                       swap_s_per_block=deployment.swap_s_per_block,
                       timing=deployment.timing if fast_path else None)

    cluster = build_cluster(config, env, recorder, num_requests, deployment_for, engine_factory)
    client = config.client
    if client.timeout_s is not None or client.max_retries > 0:
        cluster.client = Client(client, env, cluster)
    return cluster


def _run_with_progress(env: simpy.Environment, cluster: Cluster, recorder: Recorder, total: int, progress) -> None:
    while not cluster.done.triggered and env.peek() != math.inf:
        # Advance in slices of simulated time; report requests ended so far after each slice.
        slice_end = env.timeout(max(env.peek() - env.now, 0.0) + 5.0)
        env.run(until=simpy.AnyOf(env, [slice_end, cluster.done]))
        progress(recorder.num_ended, total)
    progress(recorder.num_ended, total)


def _collect(config: SimConfig, recorder: Recorder, deployment: Deployment, cluster: Cluster) -> Result:
    requests, tables, cluster_summary = cluster_results(cluster, recorder.requests_frame())
    steps_file = recorder.finish_stream()
    steps = None if steps_file is not None else recorder.steps_frame()
    itl_values, itl_weights = recorder.itl_samples()
    info = recorder.step_stats()
    info["deployment"] = deployment.details
    info["engine_mode"] = engine_mode(config)
    summary = summarize(requests, itl_values, itl_weights, info, config.slo, config.metrics.percentiles)
    summary["seed"] = config.seed
    summary["cluster"] = cluster_summary
    result = Result(config=config, requests=requests, summary=summary, tables=tables,
                    steps_file=None if steps_file is None else Path(steps_file), _steps=steps)
    if steps_file is not None:
        weakref.finalize(result, shutil.rmtree, str(Path(steps_file).parent), True)
    return result
