"""Assemble a run from its config and execute it: workload → cluster → replicas → recorder → results."""

from __future__ import annotations

import dataclasses
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
from llmsim.engine.client import Client, ConcurrencyLimit
from llmsim.aggregate_run import request_factory, run_aggregate
from llmsim.engine.admission import unservable_reason
from llmsim.engine.aggregate import aggregate_engine_blockers
from llmsim.engine.fastpath import scheduler_blockers
from llmsim.engine.replica import Replica
from llmsim.engine.request import Request, RequestStatus
from llmsim.engine.server import Ingress, ServerQueue, client_view, solve_ingress
from llmsim.engine.schedulers import make_kv_cache, make_scheduler
from llmsim.engine.hybrid_kv import is_sliding, kv_cache_groups
from llmsim.engine.speculative import Speculator
from llmsim.errors import ConfigError, UserError
from llmsim.hardware.execution import Execution, vllm_capture_sizes
from llmsim.hardware.memory import check_tensor_parallel, kv_bytes_per_gpu, kv_cache_capacity, layers_per_stage
from llmsim.hardware.specs import PredictionResiduals
from llmsim.hardware.profiles import load_gpu, load_model
from llmsim.hardware.timing import build_timing_model, swap_time
from llmsim.metrics.intervals import add_intervals
from llmsim.metrics.recorder import _ACTIVE_LISTENERS, Recorder
from llmsim.metrics.summary import itl_distribution, summarize
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
    num_offload_blocks: int = 0  # KV blocks the CPU offload tier holds (scheduler.kv_offload_gib)
    kv_groups: Optional[list] = None  # hybrid models: each KV cache group's sliding window (None: full attention)
    timing: Any = None  # the TimingModel itself (its vectorised decode steps drive the fast path)
    residuals: PredictionResiduals = field(default_factory=PredictionResiduals)  # the profile's real-world errors


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


def _looks_like_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml", ".json")) or "/" in name


def build_deployment(config: SimConfig) -> Deployment:
    hw, sched = config.hardware, config.scheduler
    gpu = load_gpu(hw.gpu)
    model = load_model(hw.model)
    max_model_len = sched.max_model_len or model.max_position_embeddings
    details: dict[str, Any] = {"gpu": gpu.name, "model": model.name, "tp": hw.tp, "pp": hw.pp}
    check_tensor_parallel(model, hw.tp)
    layers_per_stage(model.num_layers, hw.pp)  # raises for more stages than layers
    if hw.gpu.lower() != gpu.name.lower() and not _looks_like_file(hw.gpu):
        details["gpu_alias"] = hw.gpu  # `A100` means the 80 GB SXM card: say so in the summary
    layer_types = getattr(model, "layer_types", None)
    hybrid = is_sliding(layer_types)
    if sched.num_gpu_blocks is not None:
        num_blocks = sched.num_gpu_blocks
    else:
        # vLLM's hybrid allocator shares one pool between full and sliding layers (no per-request window
        # reserve): size the full-attention layers' blocks over all the memory, then convert to pages below.
        capacity = kv_cache_capacity(model, gpu, hw, sched.block_size, sched.gpu_memory_utilization,
                                     max_num_seqs=0 if hybrid else sched.max_num_seqs)
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
    timing = build_timing_model(hw, gpu, model, execution=execution_of(config))
    details["num_gpu_blocks"] = num_blocks
    details["max_model_len"] = max_model_len
    # One block on one GPU (its PP stage's layers, its TP share of KV heads) crosses that GPU's own PCIe link.
    block_bytes = sched.block_size * kv_bytes_per_gpu(model, hw, sched.block_size)[0]
    num_cpu_blocks = int(sched.swap_space_gib * 2**30 // block_bytes) if sched.preemption == "swap" else 0
    num_offload_blocks = int(sched.kv_offload_gib * 2**30 // block_bytes)
    kv_groups = None
    if hybrid:
        kv_groups, group_size = kv_cache_groups(layer_types, getattr(model, "sliding_window", None))
        if sched.num_gpu_blocks is None:
            # The memory model's blocks hold a token of every full-attention layer (of the fullest stage); vLLM's
            # hybrid pool counts pages of one group's ``group_size`` layers: full_layers / group_size as many.
            full_layers = -(-(model.num_layers - model.num_sliding_layers) // hw.pp)
            num_blocks = num_blocks * full_layers // group_size
            details["num_gpu_blocks"] = num_blocks
        details["kv_groups"] = kv_groups
    return Deployment(num_blocks, max_model_len, timing.step_time, details,
                      swap_s_per_block=swap_time(gpu, block_bytes), num_cpu_blocks=num_cpu_blocks, timing=timing,
                      num_offload_blocks=num_offload_blocks, kv_groups=kv_groups, residuals=gpu.residuals)


def execution_of(config: SimConfig) -> Execution:
    """How the replicas execute steps (CUDA graphs, engine-loop CPU time), from the engine and scheduler sections."""
    engine, sched = config.engine, config.scheduler
    sizes = engine.cudagraph_capture_sizes
    if sizes is None:
        sizes = vllm_capture_sizes(sched.max_num_seqs, engine.max_cudagraph_capture_size)
    return Execution(cpu_overhead=engine.cpu_overhead, async_scheduling=sched.async_scheduling,
                     cuda_graphs=engine.cuda_graphs, capture_sizes=tuple(sizes))


def _arrivals(env: simpy.Environment, workload: Workload, cluster: Cluster, config: SimConfig,
              closed_loop: Optional["ClosedLoop"] = None):
    """Send every request of the workload at its arrival (or, in a closed loop, when a slot frees)."""
    df = workload.df
    arrival = df["arrival_s"].to_numpy(dtype=np.float64)
    prompt = df["prompt_tokens"].to_numpy(dtype=np.int64)
    output = df["output_tokens"].to_numpy(dtype=np.int64)
    failed = df["failed"].to_numpy(dtype=bool) if "failed" in df.columns else np.zeros(len(df), dtype=bool)
    request_of = request_factory(df)
    if closed_loop is not None:
        cluster.listeners.append(closed_loop.limit)
    for i in range(len(df)):
        delay = arrival[i] - env.now
        if delay > 0:
            yield env.timeout(delay)
        request = request_of(i)
        reason = unservable_reason(bool(failed[i]), int(prompt[i]), int(output[i]))
        if reason:
            request.status = RequestStatus.FAILED
            request.reason = reason
            cluster.request_ended(request)
            continue
        if closed_loop is not None:
            yield from closed_loop.limit.acquire()
            request.arrival_s = closed_loop.send(i, env.now, int(prompt[i]), int(output[i]))
            if request.arrival_s > env.now:  # the API server hands it over later; the loop goes on sending
                env.process(_submit_later(env, cluster, request, request.arrival_s - env.now))
                continue
        _submit(cluster, request)
    if closed_loop is not None:
        yield from closed_loop.all_handed_over(env)
    cluster.finish_arrivals()


def _submit(cluster: Cluster, request: Request) -> None:
    if cluster.client is not None:
        cluster.client.submit(request)
    cluster.submit(request)


def _submit_later(env: simpy.Environment, cluster: Cluster, request: Request, delay_s: float):
    yield env.timeout(delay_s)
    _submit(cluster, request)


@dataclass
class ClosedLoop:
    """Closed-loop clients (``client.max_concurrency``): their sends depend on completions, so the API server's
    queue is run request by request as they are sent, and the sends are kept for the client's view."""

    limit: ConcurrencyLimit
    server: Optional[ServerQueue]
    sent_s: np.ndarray
    handoff_s: np.ndarray
    work_s: np.ndarray

    @classmethod
    def of(cls, config: SimConfig, env: simpy.Environment, num_requests: int) -> "ClosedLoop":
        server = None
        if config.server.enabled:
            server = ServerQueue(server_config(config), server_processes(config))
        delay = server.cfg.stream_s_per_token if server is not None else 0.0  # the last chunk's trip
        return cls(ConcurrencyLimit(env, config.client.max_concurrency, delay), server,
                   np.zeros(num_requests), np.zeros(num_requests), np.zeros(num_requests))

    def send(self, row: int, now_s: float, prompt_tokens: int, output_tokens: int) -> float:
        """Record a send; return when the engines see the request."""
        handoff = now_s if self.server is None else self.server.admit(now_s, prompt_tokens, output_tokens)
        self.sent_s[row], self.handoff_s[row] = now_s, handoff
        if self.server is not None:
            self.work_s[row] = self.server.work_in[-1]
        return handoff

    def all_handed_over(self, env: simpy.Environment):
        last = float(self.handoff_s.max()) if len(self.handoff_s) else 0.0
        if last > env.now:
            yield env.timeout(last - env.now)

    def client(self) -> tuple[Optional[Ingress], Optional[np.ndarray]]:
        """(ingress, client send times) for the client's view of the requests table."""
        if self.server is None:
            return None, None
        cfg = self.server.cfg
        ingress = Ingress(self.handoff_s, self.handoff_s - self.sent_s, cfg.stream_s_per_token,
                          self.server.processes, self.work_s)
        return ingress, self.sent_s


def simulate(
    config: "SimConfig | str | Path | None" = None,
    progress: Optional[Callable[[int, int], None]] = None,
    workload: Optional[Workload] = None,
) -> Result:
    """Run one simulation. ``progress(done, total)`` is called now and then with requests ended so far.

    ``config`` is a :class:`SimConfig` (from :func:`llmsim.load_config`), a path to a YAML config, or None for
    the bundled default. ``workload`` replaces the config's workload section (for scripts that build their own).
    """
    from llmsim.limits import check_run

    config = _as_config(config)
    if workload is None:
        check_run(config)  # from the config alone: refuse a synthetic workload too large to even build
        workload = build_workload(config.workload, config.seed)
    deployment = build_deployment(config)
    check_run(config, workload)
    closed = config.client.max_concurrency is not None
    client_arrivals, ingress = None, None if closed else server_ingress(config, workload)
    if ingress is not None:  # the engines see each request when the API server hands it over
        client_arrivals = workload.df["arrival_s"].to_numpy(dtype=np.float64)
        workload = dataclasses.replace(workload, df=workload.df.assign(arrival_s=ingress.handoff_s))
    client = (ingress, client_arrivals)
    if config.engine.mode == "fast" and not aggregate_blockers(config):
        return _simulate_aggregate(config, workload, deployment, progress, client)
    env = simpy.Environment()
    recorder = make_recorder(config)
    cluster = assemble_cluster(config, env, recorder, len(workload.df))
    closed_loop = ClosedLoop.of(config, env, len(workload.df)) if closed else None
    env.process(_arrivals(env, workload, cluster, config, closed_loop))
    total = len(workload.df)
    if progress is None:
        env.run(until=cluster.done)
    else:
        _run_with_progress(env, cluster, recorder, total, progress)
    cluster.fail_unfinished("stalled")
    if closed_loop is not None:
        client = closed_loop.client()
    return _collect(config, recorder, deployment, cluster, client)


def server_ingress(config: SimConfig, workload: Workload) -> Optional[Ingress]:
    """The API server's queue over the whole workload (``llmsim.engine.server``), or None without a server."""
    if not config.server.enabled:
        return None
    server = server_config(config)
    df = workload.df
    output = df["output_tokens"].to_numpy(dtype=np.int64)
    served = (output > 0) & (df["prompt_tokens"].to_numpy() > 0)  # the others never reach the server's engine side
    if "failed" in df.columns:
        served &= ~df["failed"].to_numpy(dtype=bool)
    return solve_ingress(server, df["arrival_s"].to_numpy(dtype=np.float64), df["prompt_tokens"].to_numpy(),
                         output, served, server_processes(config))


def server_config(config: SimConfig):
    """The ``server:`` section with its unset costs taken from the GPU profile (the machine the server runs on)."""
    return config.server.with_costs(load_gpu(config.hardware.gpu).api_server)


def server_processes(config: SimConfig) -> int:
    """API server processes: as configured, else one per replica that takes arrivals (one ``vllm serve`` each).

    An autoscaled pool that takes arrivals counts at its ``max_replicas``: each replica it starts brings its own
    server, and the ingress queue is solved once, before the run, so it cannot follow the pool's size. (Counting
    the starting replicas instead left a pool scaled out for a peak streaming through one front end.)"""
    if config.server.processes:
        return config.server.processes
    autoscaler = config.cluster.autoscaler
    counts = {role: 0 for role in ("colocated", "prefill")}
    for group in config.cluster.replica_groups():
        if group.role in counts:
            counts[group.role] += group.count
    if autoscaler.policy != "none" and autoscaler.role in counts:
        counts[autoscaler.role] = max(counts[autoscaler.role], autoscaler.max_replicas)
    return max(1, sum(counts.values()))


def _as_config(config: "SimConfig | str | Path | None") -> SimConfig:
    if isinstance(config, SimConfig):
        return config
    if config is None or isinstance(config, (str, Path)):
        from llmsim.config import load_config

        return load_config(config)
    raise UserError(f"simulate() expects a SimConfig (llmsim.load_config(...)) or a path to a YAML config, "
                    f"got {type(config).__name__}")


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
    aggregate_off = aggregate_blockers(config)
    if not aggregate_off:
        return "fast"
    blockers = fast_path_blockers(config)
    if blockers:
        # Why neither fast engine runs: what keeps the aggregate engine off, then what keeps decode runs off.
        reasons = aggregate_off + [reason for reason in blockers if reason not in aggregate_off]
        return "reference (fast path off: " + ", ".join(reasons) + ")"
    return "fast (event-skipping loop: " + ", ".join(aggregate_off) + ")"


def aggregate_blockers(config: SimConfig) -> list[str]:
    """Why the aggregate engine (:mod:`llmsim.engine.aggregate`) cannot run this config (empty: it runs).

    Any router is served (a state-reading one in lockstep, see :mod:`llmsim.cluster.lockstep`), but replicas
    must interact only through routing, retries are not modelled, and no per-step listener may be attached
    (the timeline export wants every step's plan)."""
    reasons = (_aggregate_policy_blockers(config.scheduler) + scheduler_blockers(config.scheduler)
               + _feature_blockers(config) + _interaction_blockers(config))
    pps = {group.pp or config.hardware.pp for group in config.cluster.replica_groups()}
    reasons += aggregate_engine_blockers(config.scheduler, max(pps, default=1))
    if config.client.max_retries > 0:
        reasons.append("client retries")
    if _ACTIVE_LISTENERS.get():
        reasons.append("per-step listeners")
    return reasons


def _aggregate_policy_blockers(cfg) -> list[str]:
    """The aggregate engine restates vLLM V1's FCFS, recompute rules on arrays (and nothing else)."""
    reasons = []
    if cfg.policy != "vllm-v1":
        reasons.append(f"policy {cfg.policy}")
    if cfg.queue != "fcfs":
        reasons.append(f"queue order {cfg.queue}")
    if cfg.preemption != "recompute":
        reasons.append(f"preemption {cfg.preemption}")
    if cfg.enable_prefix_caching:
        reasons.append("prefix caching")
    if cfg.max_queue_time_s is not None:
        reasons.append("queue timeouts")
    return reasons


def _simulate_aggregate(config: SimConfig, workload: Workload, deployment: Deployment, progress, client) -> Result:
    """The aggregate engine over a cluster shell that simpy never runs (:mod:`llmsim.aggregate_run`); the same
    recorder and cluster reports as the simpy run turn what it recorded into tables and a summary."""
    recorder = make_recorder(config)
    env = simpy.Environment()  # the cluster shell's clock: never run, the replicas keep their own time
    cluster = build_cluster(config, env, recorder, len(workload.df), lambda gpu, model, tp, pp: build_deployment(
        config.model_copy(update={"hardware": config.hardware.model_copy(
            update={"gpu": gpu, "model": model, "tp": tp, "pp": pp})})), lambda *_: None)
    run_aggregate(config, workload.df, recorder, cluster, progress)
    return _collect(config, recorder, deployment, cluster, client)


def _has_sliding_layers(model_name: str) -> bool:
    try:
        model = load_model(model_name)
    except UserError:  # an unknown model is reported where the deployment is built
        return False
    return is_sliding(getattr(model, "layer_types", None))


def fast_path_blockers(config: SimConfig) -> list[str]:
    """Why the event-skipping engine would not be exact for this config (empty: it may be used).

    A skipped decode run is committed when it ends. What routers read of a replica in the middle of one is
    computed from the run's plan (:mod:`llmsim.engine.decode_run_state`), so every router is served; what
    changes a replica's state from outside, or reads more than a router does (autoscaling, faults, P/D
    hand-offs, client timeouts), needs the per-step loop.
    """
    reasons = scheduler_blockers(config.scheduler) + _feature_blockers(config)
    return reasons + _interaction_blockers(config)


def _feature_blockers(config: SimConfig) -> list[str]:
    """Engine features only the per-step loop models."""
    reasons = []
    if config.speculative.enabled:
        reasons.append("speculative decoding")
    if _has_sliding_layers(config.hardware.model):
        reasons.append("sliding-window (hybrid) KV memory")
    return reasons


def _interaction_blockers(config: SimConfig) -> list[str]:
    """What makes replicas interact other than at routing instants (or reach into one from outside)."""
    cluster = config.cluster
    reasons = []
    if cluster.autoscaler.policy != "none":
        reasons.append("autoscaling")
    if cluster.faults.mtbf_s is not None or cluster.faults.script:
        reasons.append("fault injection")
    if isinstance(cluster.replicas, list) and any(group.role != "colocated" for group in cluster.replicas):
        reasons.append("prefill/decode disaggregation")
    if config.client.timeout_s is not None:
        reasons.append("timeouts")
    if config.client.max_concurrency is not None:
        reasons.append("closed-loop clients")
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
        kv = make_kv_cache(sched_cfg, deployment.num_gpu_blocks, deployment.num_cpu_blocks, deployment.num_offload_blocks,
                           deployment.kv_groups)
        scheduler = make_scheduler(sched_cfg, kv, deployment.max_model_len)
        if config.speculative.enabled:
            scheduler.enable_speculation(Speculator(config.speculative, stream=replica_id))
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


def _collect(config: SimConfig, recorder: Recorder, deployment: Deployment, cluster: Cluster,
             client=(None, None)) -> Result:
    # The gaps are summarised first and let go of: held with the requests table they made the peak memory.
    itl = itl_distribution(*recorder.itl_samples(), config.metrics.percentiles)
    recorder.clear_itl()
    requests = recorder.requests_frame(release=True)
    ingress, client_arrivals = client
    if ingress is not None:
        requests = client_view(requests, ingress, client_arrivals)
    requests, tables, cluster_summary = cluster_results(cluster, requests)
    steps_file = recorder.finish_stream()
    steps = None if steps_file is not None else recorder.steps_frame()
    info = recorder.step_stats()
    info["deployment"] = deployment.details
    info["engine_mode"] = engine_mode(config)
    summary = summarize(requests, None, None, info, config.slo, config.metrics.percentiles, itl=itl)
    add_intervals(summary, deployment.residuals)
    summary["seed"] = config.seed
    if ingress is not None:
        server_s = requests["server_s"].to_numpy()
        summary["server"] = {"processes": ingress.processes, "mean_server_s": float(np.mean(server_s)) if len(server_s) else 0.0,
                             "p99_server_s": float(np.percentile(server_s, 99)) if len(server_s) else 0.0}
    if config.speculative.enabled:
        summary["speculative"] = recorder.speculation_summary()
    if config.scheduler.kv_offload_gib:
        loaded = recorder.loaded_tokens
        looked_up = int(requests["prompt_tokens"].sum() + requests["recomputed_tokens"].sum())
        summary["kv_offload"] = {"loaded_tokens": loaded, "hit_rate": loaded / looked_up if looked_up else 0.0,
                                 "gpu_hit_rate": summary["prefix_cache_hit_rate"]}
    summary["cluster"] = cluster_summary
    result = Result(config=config, requests=requests, summary=summary, tables=tables,
                    steps_file=None if steps_file is None else Path(steps_file), _steps=steps)
    if steps_file is not None:
        weakref.finalize(result, shutil.rmtree, str(Path(steps_file).parent), True)
    return result
