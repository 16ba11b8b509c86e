"""What a GPU *is*, as numbers: the hardware inputs of the memory and timing models.

A :class:`GPUSpec` holds datasheet peaks (dense bf16 FLOP/s, HBM bytes and bandwidth, links) plus the
*efficiency factors* that say how much of those peaks real kernels reach (fitted on measurements, see
``llmsim.hardware.calibration``). What a model is lives in :mod:`llmsim.hardware.model_spec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from llmsim.hardware.precision import FORMATS, canonical

# Bytes per element of each precision (KV-cache elements, unquantized weights). Quantized weights also pay
# for their scales: see ``llmsim.hardware.precision.weight_bytes_per_param``.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "float32": 4.0,
    "fp16": 2.0,
    "float16": 2.0,
    "bf16": 2.0,
    "bfloat16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "mxfp4": 0.5,
}

GIB = 1024**3


def dtype_bytes(dtype: str) -> float:
    """Bytes per element of a precision name (``bf16``, ``fp8``, ``int4`` ...)."""
    try:
        return DTYPE_BYTES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown precision {dtype!r}; expected one of {sorted(DTYPE_BYTES)}") from None


@dataclass(frozen=True)
class Efficiency:
    """Achieved fractions of peak and fixed costs, per operator class.

    A roofline says an operator takes max(FLOPs / peak_flops, bytes / peak_bandwidth); real kernels reach
    only a fraction of each peak (``*_mfu``: model FLOPs utilisation, ``*_mbu``: memory bandwidth
    utilisation) and every kernel launch costs a fixed few microseconds (``*_overhead_s``).
    """

    linear_mfu: float = 0.6
    linear_mbu: float = 0.8
    linear_overhead_s: float = 6e-6
    # GEMM kernels work on tiles of rows: a batch of 130 tokens costs as much compute as 192 with 64-row tiles
    # (tile/wave quantisation), which shows as steps in measured GEMM times.
    linear_token_tile: int = 128  # cuBLAS/CUTLASS tiles of 128 rows (chosen over 32 and 64 on the mlp.csv fits)
    elementwise_mbu: float = 0.6
    elementwise_overhead_s: float = 4e-6
    attn_prefill_mfu: float = 0.45
    # Prefill attention reaches its MFU only on long chunks: a chunk of c queries runs at mfu·c/(c + this)
    # (query tiles of FlashAttention kernels are ~64-128 rows; a short chunk leaves most of a tile idle).
    attn_prefill_half_tokens: float = 0.0
    # Cost of a prefill query-key product against the cached context relative to one inside the chunk
    # (paged-KV reads vs. the chunk's own keys in shared memory); 1 = the plain FLOP count.
    attn_prefill_context_weight: float = 1.0
    attn_decode_mbu: float = 0.7
    attn_overhead_s: float = 10e-6
    allreduce_bus_efficiency: float = 0.7
    allreduce_latency_s: float = 15e-6
    slow_link_efficiency: float = 0.5  # collectives that leave the NVLink group but stay in the node (PCIe)
    send_recv_efficiency: float = 0.7
    send_recv_latency_s: float = 15e-6
    # Collectives between nodes (``llmsim.hardware.ops``): achieved fraction of the per-GPU network line rate,
    # how a node's achieved rate grows with the GPUs it uses (rate ∝ g**scaling: 1 = one NIC per GPU,
    # 0 = one shared NIC), a fixed latency, and for point-to-point a "burst": the first bytes of a transfer
    # go faster (NIC/switch buffering) before the sustained rate sets in.
    network_efficiency: float = 0.5
    network_gpu_scaling: float = 1.0
    # Measured layouts override the power law and the latency: (GPUs per node, achieved fraction of the
    # per-GPU line rate for the whole node, latency in s). NCCL picks its algorithm and channel count by
    # layout, so the achieved rate is not monotone in GPUs per node (Vidur's A100 cluster: about 5.9, 4.4,
    # 12.5, 8.8 GB/s per node at 1, 2, 4, 8 GPUs per node).
    network_by_gpus: tuple[tuple[int, float, float], ...] = ()
    network_latency_s: float = 30e-6
    network_send_recv_efficiency: float = 0.5
    network_send_recv_latency_s: float = 20e-6
    network_burst_bytes: float = 0.0
    network_burst_speedup: float = 1.0
    # Sustained share of the FLOP rates above under serving load: operator timings are short bursts at boost
    # clock; a GPU kept busy by big GEMMs runs at its power-limited clock. The GEMMs of a step of T tokens run
    # at s + (1 − s)·h/(T + h) of the burst rate (s this fraction, h sustained_half_tokens: small decode steps
    # are memory-bound and stay at boost clock); prefill attention at s (docs/step-time-physics.md).
    sustained_compute_fraction: float = 1.0
    sustained_half_tokens: float = 512.0
    # GEMM compute efficiency grows with the output tiles T = ⌈M/tile⌉·⌈N/128⌉ that fill the SMs:
    # linear_mfu · T / (T + linear_half_tiles) (0: no ramp).
    linear_half_tiles: float = 0.0
    # Routed experts run in fused grouped GEMMs (vLLM's fused_moe): each expert's rows are padded to the
    # kernel's row block (moe_align_block_size) and the kernel reaches this share of linear_mfu
    # (small per-expert GEMMs, gather/scatter of the routed rows; 1 = as efficient as a dense GEMM).
    moe_gemm_efficiency: float = 1.0
    # The same kernels stream the experts' weights at this share of linear_mbu (small decode batches: few rows
    # per expert, one launch over scattered expert tiles; 1 = as fast as a dense GEMM's weight read).
    moe_gemm_bandwidth_efficiency: float = 1.0
    # Weight-only quantized GEMMs (Marlin, AWQ/GPTQ, FP8 or MXFP4 weights on a GPU without that compute type)
    # dequantize every weight tile to bf16 inside the main loop: bandwidth-bound decodes gain from the smaller
    # weights, but a compute-bound GEMM reaches only this share of a bf16 GEMM's linear_mfu (1 = no loss).
    weight_only_gemm_efficiency: float = 1.0
    # Launching kernels one by one (llmsim.hardware.execution): host time per eager kernel (PyTorch dispatch +
    # cudaLaunchKernel), GPU idle gap between two eagerly launched kernels, host time of one CUDA-graph replay.
    # The *_overhead_s above are GPU time (Vidur timed kernels only), kept in every mode; a forward pass takes
    # max(its kernels' GPU time + gaps, the host time to launch them).
    kernel_launch_s: float = 10e-6
    kernel_gap_s: float = 2.5e-6
    graph_launch_s: float = 10e-6
    # vLLM's custom all-reduce (one kernel over NVLink peer memory) for messages up to this size in one node:
    # its latency replaces NCCL's allreduce_latency_s.
    custom_allreduce_latency_s: float = 8e-6
    custom_allreduce_max_bytes: float = 8 * 1024 * 1024
    # The engine loop's CPU time per step (llmsim.hardware.execution).
    cpu_step_overhead_s: float = 0.4e-3
    cpu_per_request_overhead_s: float = 6e-6
    cpu_per_token_s: float = 0.1e-6
    cpu_per_sampled_token_s: float = 4e-6
    fitted_on: str = "not fitted: typical values (REFERENCE.md section 3)"


@dataclass(frozen=True)
class PredictionResiduals:
    """How far this profile's end-to-end predictions were from real measurements, out of sample.

    Per metric class (``throughput``, ``ttft``, ``tpot``, ``e2el``): the number of published points and the 5th and
    95th percentiles of log(predicted / measured) under leave-one-model-out cross-validation
    (``llmsim calibrate fit-e2e``). Empty for a profile never held against end-to-end measurements."""

    by_class: tuple[tuple[str, int, float, float], ...] = ()  # (class, n, q05, q95)
    fitted_on: str = ""

    def get(self, metric_class: str) -> Optional[tuple[int, float, float]]:
        for name, n, q05, q95 in self.by_class:
            if name == metric_class:
                return n, q05, q95
        return None


@dataclass(frozen=True)
class APIServerCosts:
    """CPU seconds vLLM's OpenAI server spends per request and per token on this kind of machine (the host the
    GPUs sit in): what ``server:`` uses where the config leaves a cost unset (``llmsim.engine.server``).

    Defaults [I]: sized so that a server of many tiny requests saturates near 40 req/s and adds ~25-30 ms to the
    TTFT of a short prompt at low load (published vLLM runs); ``llmsim calibrate fit-e2e`` fits them per GPU."""

    request_overhead_s: float = 0.025
    tokenize_s_per_token: float = 2e-6
    stream_s_per_token: float = 25e-6


@dataclass(frozen=True)
class GPUSpec:
    """One accelerator: datasheet peaks in SI units (FLOP/s, bytes, bytes/s) and achieved efficiencies."""

    name: str
    peak_flops: float  # dense bf16 FLOP/s
    memory_bytes: float  # as the driver reports it (what gpu_memory_utilization multiplies)
    hbm_bandwidth: float  # bytes/s
    interconnect: str  # "NVLink", "PCIe", "InfinityFabric"
    interconnect_bandwidth: float  # bytes/s per direction, per GPU
    pcie_bandwidth: float  # bytes/s per direction host<->GPU (KV swap)
    cost_per_hour_usd: float
    efficiency: Efficiency = field(default_factory=Efficiency)
    aliases: tuple[str, ...] = ()
    peak_fp8_flops: Optional[float] = None
    peak_int8_ops: Optional[float] = None
    peak_fp4_flops: Optional[float] = None  # dense fp4 tensor-core FLOP/s (Blackwell), None where absent
    mxfp4_moe_kernel: str = "marlin"  # which vLLM kernel runs MXFP4 experts here (how it pads them)
    activation_reserve_gib: Optional[float] = None  # fixed reserve per GPU; None: llmsim.hardware.memory computes it
    interconnect_group_size: int = 8  # GPUs that reach each other at interconnect speed (NVSwitch 8, bridge pairs 2)
    gpus_per_node: int = 8
    internode_bandwidth: float = 25e9  # bytes/s per GPU to other nodes, line rate (InfiniBand HDR 200 Gb/s per GPU)
    api_server: APIServerCosts = field(default_factory=APIServerCosts)
    residuals: PredictionResiduals = field(default_factory=PredictionResiduals)
    source_file: str = ""

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB

    def peak_flops_for(self, weight_dtype: str) -> float:
        """Peak dense FLOP/s of the GEMMs for weights of this precision.

        fp8 weights run fp8 tensor-core GEMMs (W8A8) where the GPU has them, int8 W8A8 checkpoints int8 ones, and
        MXFP4 runs fp4 ones where the GPU has them (Blackwell). Everywhere else the kernels are weight-only: they dequantize to bf16 (Marlin
        fp8 on Ampere, AWQ/GPTQ int4, int8, MXFP4 on Hopper), so they keep the bf16 peak and only save bytes.
        """
        compute = FORMATS[canonical(weight_dtype)].compute if weight_dtype != "auto" else "bf16"
        if compute == "fp8" and self.peak_fp8_flops:
            return self.peak_fp8_flops
        if compute == "fp4" and self.peak_fp4_flops:
            return self.peak_fp4_flops
        if compute == "int8" and self.peak_int8_ops:
            return self.peak_int8_ops
        return self.peak_flops

    def runs_weight_only(self, weight_dtype: str) -> bool:
        """True when GEMMs on these weights dequantize to bf16 (fewer bytes than bf16, bf16 peak)."""
        if weight_dtype == "auto":
            return False
        fmt = FORMATS[canonical(weight_dtype)]
        return fmt.element_bytes < 2.0 and self.peak_flops_for(weight_dtype) == self.peak_flops
