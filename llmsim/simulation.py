"""Assemble a run from its config and execute it: workload → cluster → replicas → recorder → results."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import simpy

from llmsim.cluster.cluster import Cluster
from llmsim.cluster.routers import make_router
from llmsim.config import SimConfig
from llmsim.engine.kv_cache import KVCacheManager
from llmsim.engine.replica import Replica
from llmsim.engine.request import Request, RequestStatus
from llmsim.engine.schedulers import make_scheduler
from llmsim.errors import ConfigError
from llmsim.hardware.memory import kv_cache_capacity
from llmsim.hardware.profiles import load_gpu, load_model
from llmsim.hardware.timing import build_timing_model
from llmsim.metrics.recorder import Recorder
from llmsim.metrics.summary import summarize
from llmsim.workload import Workload, build_workload


@dataclass
class Deployment:
    """What one replica is: its KV capacity, context limit and step-time function (derived from config)."""

    num_gpu_blocks: int
    max_model_len: int
    step_time: Callable
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    """The outcome of :func:`simulate`: per-request and per-step tables and the summary."""

    config: SimConfig
    requests: pd.DataFrame
    steps: pd.DataFrame
    summary: dict[str, Any]

    def write(self, out_dir: str | Path) -> Path:
        """Write summary.json, requests.parquet and steps.parquet. Files appear only when all are complete."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
        try:
            self.requests.to_parquet(tmp / "requests.parquet", index=False)
            self.steps.to_parquet(tmp / "steps.parquet", index=False)
            (tmp / "summary.json").write_text(json.dumps(self.summary, indent=2, sort_keys=False, allow_nan=False) + "\n")
            for name in ("requests.parquet", "steps.parquet", "summary.json"):
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
    if sched.num_gpu_blocks is not None:
        num_blocks = sched.num_gpu_blocks
    else:
        capacity = kv_cache_capacity(model, gpu, hw, sched.block_size, sched.gpu_memory_utilization)
        num_blocks = capacity.num_gpu_blocks
        details["kv_bytes_per_token"] = capacity.kv_bytes_per_token
    if not sched.enable_chunked_prefill and max_model_len > sched.max_num_batched_tokens:
        raise ConfigError(
            f"config field scheduler.max_num_batched_tokens: {sched.max_num_batched_tokens} is smaller than "
            f"max_model_len {max_model_len}; with chunked prefill off vLLM requires it to be at least max_model_len"
        )
    timing = build_timing_model(hw, gpu, model, cpu_overhead=config.engine.cpu_overhead)
    details["num_gpu_blocks"] = num_blocks
    details["max_model_len"] = max_model_len
    return Deployment(num_blocks, max_model_len, timing.step_time, details)


def _arrivals(env: simpy.Environment, workload: Workload, cluster: Cluster, recorder: Recorder):
    df = workload.df
    arrival = df["arrival_s"].to_numpy(dtype=np.float64)
    prompt = df["prompt_tokens"].to_numpy(dtype=np.int64)
    output = df["output_tokens"].to_numpy(dtype=np.int64)
    failed = df["failed"].to_numpy(dtype=bool) if "failed" in df.columns else np.zeros(len(df), dtype=bool)
    priority = df["priority"].to_numpy() if "priority" in df.columns else None
    width = len(str(max(len(df) - 1, 0)))
    for i in range(len(df)):
        delay = arrival[i] - env.now
        if delay > 0:
            yield env.timeout(delay)
        request = Request(f"{i:0{width}d}", arrival[i], int(prompt[i]), int(output[i]), index=i,
                          priority=int(priority[i]) if priority is not None else 0)
        if failed[i] or output[i] <= 0:
            request.status = RequestStatus.FAILED
            request.reason = "failed_in_trace" if failed[i] else "zero_output_tokens"
            recorder.request_ended(request)
            continue
        cluster.submit(request)


def simulate(
    config: SimConfig,
    progress: Optional[Callable[[int, int], None]] = None,
    workload: Optional[Workload] = None,
) -> Result:
    """Run one simulation. ``progress(done, total)`` is called now and then with requests ended so far.

    ``workload`` replaces the config's workload section (for scripts that build their own).
    """
    if workload is None:
        workload = build_workload(config.workload, config.seed)
    deployment = build_deployment(config)
    env = simpy.Environment()
    recorder = Recorder(keep_steps=config.metrics.step_detail)
    sched_cfg = config.scheduler
    replicas = []
    for replica_id in range(config.cluster.replicas):
        kv = KVCacheManager(deployment.num_gpu_blocks, sched_cfg.block_size, sched_cfg.watermark)
        scheduler = make_scheduler(sched_cfg, kv, deployment.max_model_len)
        replicas.append(Replica(replica_id, env, scheduler, deployment.step_time, recorder,
                                async_scheduling=sched_cfg.async_scheduling, max_model_len=deployment.max_model_len))
    cluster = Cluster(replicas, make_router(config.cluster.router, config.seed))
    env.process(_arrivals(env, workload, cluster, recorder))
    total = len(workload.df)
    if progress is None:
        env.run()
    else:
        _run_with_progress(env, recorder, total, progress)
    cluster.fail_unfinished("stalled")
    return _collect(config, recorder, deployment)


def _run_with_progress(env: simpy.Environment, recorder: Recorder, total: int, progress) -> None:
    while env.peek() != math.inf:
        # Advance in slices of simulated time; report requests ended so far after each slice.
        env.run(until=env.peek() + 5.0)
        progress(len(recorder._req["request_id"]), total)
    progress(len(recorder._req["request_id"]), total)


def _collect(config: SimConfig, recorder: Recorder, deployment: Deployment) -> Result:
    requests = recorder.requests_frame()
    steps = recorder.steps_frame()
    itl_values, itl_weights = recorder.itl_samples()
    info = recorder.step_stats()
    info["deployment"] = deployment.details
    summary = summarize(requests, itl_values, itl_weights, info, config.slo, config.metrics.percentiles)
    summary["seed"] = config.seed
    return Result(config=config, requests=requests, steps=steps, summary=summary)
