"""What one replica is, derived from the config: KV capacity, context limit, step times, its API server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from llmsim.config import SimConfig
from llmsim.engine.hybrid_kv import is_sliding, kv_cache_groups, sliding_admission_cap
from llmsim.engine.kv_cache import cdiv
from llmsim.engine.server import Ingress, solve_ingress
from llmsim.errors import ConfigError
from llmsim.hardware.execution import Execution, vllm_capture_sizes
from llmsim.hardware.memory import check_tensor_parallel, kv_bytes_per_gpu, kv_cache_capacity, layers_per_stage
from llmsim.hardware.profiles import load_gpu, load_model
from llmsim.hardware.specs import PredictionResiduals
from llmsim.hardware.timing import build_timing_model, swap_time
from llmsim.workload import Workload


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
                                     max_num_seqs=sched.max_num_seqs,
                                     max_num_batched_tokens=sched.max_num_batched_tokens)
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
    if sched.num_gpu_blocks is None:
        check_one_request_fits(num_blocks, max_model_len, sched, kv_groups,
                               f"{model.name} on {gpu.name} at tp={hw.tp}, pp={hw.pp}")
    return Deployment(num_blocks, max_model_len, timing.step_time, details,
                      swap_s_per_block=swap_time(gpu, block_bytes), num_cpu_blocks=num_cpu_blocks, timing=timing,
                      num_offload_blocks=num_offload_blocks, kv_groups=kv_groups, residuals=gpu.residuals)


class KVCacheBelowMaxModelLen(ConfigError):
    """vLLM refuses to start: its KV cache cannot hold one request of ``max_model_len`` tokens.

    ``blocks_needed`` is the least ``num_gpu_blocks`` (the null block included) that would start."""

    def __init__(self, message: str, blocks_needed: int) -> None:
        super().__init__(message)
        self.blocks_needed = blocks_needed


def blocks_for_one_request(num_tokens: int, block_size: int, kv_groups: Optional[list],
                           max_in_flight_tokens: int, max_model_len: int) -> int:
    """Blocks one request of ``num_tokens`` tokens may take at most: vLLM's ``max_memory_usage_bytes`` in blocks
    (a full-attention group every block of the sequence, a sliding group at most its admission cap)."""
    full = cdiv(num_tokens, block_size)
    if not kv_groups:
        return full
    return sum(full if window is None
               else min(full, sliding_admission_cap(window, max_in_flight_tokens, max_model_len, block_size))
               for window in kv_groups)


def check_one_request_fits(num_blocks: int, max_model_len: int, sched, kv_groups: Optional[list],
                           deployment: str) -> None:
    """vLLM's start-up check (``check_enough_kv_cache_memory``): the KV cache, less the null block, must hold one
    request of ``max_model_len`` tokens, or the engine refuses to start and names the longest length that fits.
    Only for a cache sized by the memory model: a ``num_gpu_blocks`` override is taken as given."""
    in_flight = sched.max_num_batched_tokens * (2 if sched.async_scheduling else 1)

    def need(length: int) -> int:
        return blocks_for_one_request(length, sched.block_size, kv_groups, in_flight, length)

    needed = need(max_model_len)
    usable = num_blocks - 1
    if usable >= needed:
        return
    low, high = 0, max_model_len  # the longest length whose one request fits: need() grows with the length
    while low < high:
        mid = (low + high + 1) // 2
        if need(mid) <= usable:
            low = mid
        else:
            high = mid - 1
    raise KVCacheBelowMaxModelLen(
        f"{deployment}: the KV cache holds {usable:,} blocks but one request of max_model_len {max_model_len:,} "
        f"tokens needs {needed:,}, so vLLM would refuse to start; set scheduler.max_model_len to at most {low:,}, "
        f"or raise scheduler.gpu_memory_utilization, hardware.tp or hardware.pp", needed + 1)


def execution_of(config: SimConfig) -> Execution:
    """How the replicas execute steps (CUDA graphs, engine-loop CPU time), from the engine and scheduler sections."""
    engine, sched = config.engine, config.scheduler
    sizes = engine.cudagraph_capture_sizes
    if sizes is None:
        sizes = vllm_capture_sizes(sched.max_num_seqs, engine.max_cudagraph_capture_size)
    return Execution(cpu_overhead=engine.cpu_overhead, async_scheduling=sched.async_scheduling,
                     cuda_graphs=engine.cuda_graphs, capture_sizes=tuple(sizes))


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
