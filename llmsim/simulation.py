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
from llmsim.deployment import Deployment, build_deployment, server_config, server_ingress, server_processes
from llmsim.engine.admission import unservable_reason
from llmsim.engine.aggregate.rules import BlockContentsNeeded
from llmsim.engine.replica import Replica
from llmsim.engine.request import Request, RequestStatus
from llmsim.engine.server import Ingress, ServerQueue, client_view
from llmsim.engine.schedulers import make_kv_cache, make_scheduler
from llmsim.engine.speculative import Speculator
from llmsim.engine_modes import aggregate_blockers, engine_mode, fast_path_blockers
from llmsim.errors import UserError
from llmsim.metrics.intervals import add_intervals
from llmsim.metrics.recorder import Recorder
from llmsim.metrics.summary import itl_distribution, summarize
from llmsim.workload import Workload, build_workload


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
    abandoned = None
    if config.engine.mode == "fast" and not aggregate_blockers(config, workload):
        try:
            return _simulate_aggregate(config, workload, deployment, progress, client)
        except BlockContentsNeeded:
            # A state its block counts do not follow (llmsim.engine.aggregate.prefix): run again from the start on
            # the event-skipping loop, which keeps every block's content.
            abandoned = "prefix caching and a resumed request's blocks"
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
    return _collect(config, recorder, deployment, cluster, client, mode=engine_mode(config, workload, abandoned))


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


def _simulate_aggregate(config: SimConfig, workload: Workload, deployment: Deployment, progress, client) -> Result:
    """The aggregate engine over a cluster shell that simpy never runs (:mod:`llmsim.aggregate_run`); the same
    recorder and cluster reports as the simpy run turn what it recorded into tables and a summary."""
    recorder = make_recorder(config)
    env = simpy.Environment()  # the cluster shell's clock: never run, the replicas keep their own time
    cluster = build_cluster(config, env, recorder, len(workload.df), lambda gpu, model, tp, pp: build_deployment(
        config.model_copy(update={"hardware": config.hardware.model_copy(
            update={"gpu": gpu, "model": model, "tp": tp, "pp": pp})})), lambda *_: None)
    try:
        run_aggregate(config, workload.df, recorder, cluster, progress)
    except BlockContentsNeeded:
        recorder.discard_stream()  # the run is given up: none of what it wrote stays behind
        raise
    return _collect(config, recorder, deployment, cluster, client, mode="fast")  # the aggregate engine ran


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
             client=(None, None), *, mode: str) -> Result:
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
    info["engine_mode"] = mode
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
