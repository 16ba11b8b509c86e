"""Step execution physics: CUDA graphs, the engine loop's CPU time, shape-dependent efficiency, collectives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from llmsim.hardware.calibration import with_efficiency
from llmsim.hardware.collectives import allreduce_time
from llmsim.hardware.config import HardwareConfig
from llmsim.hardware.execution import Execution, vllm_capture_sizes
from llmsim.hardware.ops import Roofline
from llmsim.hardware.profiles import load_gpu, load_model
from llmsim.hardware.timing import build_timing_model


def timing(gpu="H100", model="Llama-3-8B", tp=1, pp=1, **execution):
    spec = gpu if not isinstance(gpu, str) else load_gpu(gpu)
    hw = HardwareConfig(gpu=spec.name, model=model, tp=tp, pp=pp)
    return build_timing_model(hw, spec, load_model(model), execution=Execution(**execution))


def test_default_capture_sizes_follow_vllm():
    sizes = vllm_capture_sizes(256)
    assert sizes[:5] == (1, 2, 4, 8, 16) and sizes[-1] == 512
    assert 248 in sizes and 256 in sizes and 264 not in sizes and 272 in sizes
    assert vllm_capture_sizes(64)[-1] == 128  # min(2 × max_num_seqs, 512)


def test_decode_batch_of_five_runs_the_graph_of_eight():
    ex = Execution()
    assert ex.graph_for(5, uniform_decode=True) == ("full", 8)
    assert ex.graph_for(5, uniform_decode=False) == ("piecewise", 8)
    assert ex.graph_for(600, uniform_decode=True) == ("none", 600)  # beyond the largest capture size: eager
    assert Execution(cuda_graphs="none").graph_for(5, True) == ("none", 5)
    assert Execution(cuda_graphs="full_decode_only").graph_for(5, False) == ("none", 5)
    tm = timing()
    # every kernel but the logits (computed on the 5 sampled rows after the graph) runs 8 rows
    assert tm._consts(5, 5, True)[0] == tm._consts(8, 5, True)[0]
    exact = timing(capture_sizes=(1, 2, 4, 5, 8))
    assert exact._consts(5, 5, True)[0] < tm._consts(5, 5, True)[0]


def test_graphs_remove_kernel_launches():
    # a host so slow at launching kernels that an eager decode step is launch-bound
    slow_host = with_efficiency(load_gpu("H100"), kernel_launch_s=200e-6)
    eager = timing(slow_host, cuda_graphs="none", cpu_overhead=False)
    graphs = timing(slow_host, cpu_overhead=False)
    model = load_model("Llama-3-8B")
    kernels = model.num_layers * (9 + 2) + 3  # per layer: 9 operators, cache write, attention; embedding, norm, logits
    step = eager.step_time([1] * 4, [100] * 4, 4)
    assert step == pytest.approx(kernels * 200e-6)
    assert graphs.step_time([1] * 4, [100] * 4, 4) < 0.5 * step
    # a fast host still pays a GPU gap after each eager launch; one graph replay does not
    fast_host = timing(cuda_graphs="none", cpu_overhead=False)
    assert fast_host.step_time([1] * 4, [100] * 4, 4) == pytest.approx(
        timing(cpu_overhead=False).step_time([1] * 4, [100] * 4, 4) + (kernels - 1) * load_gpu("H100").efficiency.kernel_gap_s)
    # a mixed batch runs PIECEWISE: one launch per piece and the eager attention kernels in between
    e = slow_host.efficiency
    mixed = graphs.step_time([64, 1], [0, 100], 2)
    assert mixed == pytest.approx((model.num_layers + 1) * e.graph_launch_s + 2 * model.num_layers * 200e-6)


def test_async_period_is_max_of_cpu_and_gpu_sync_is_their_sum():
    gpu_only = timing(cpu_overhead=False)
    for async_scheduling in (True, False):
        tm = timing(async_scheduling=async_scheduling)
        for new, ctx in (([1] * 8, [500] * 8), ([512, 1, 1], [0, 40, 900]), ([1] * 300, [2000] * 300)):
            gpu = gpu_only.step_time(new, ctx, len(new))
            cpu = tm.cpu_time(sum(new), len(new), len(new))
            expected = max(gpu, cpu) if async_scheduling else gpu + cpu
            assert tm.step_time(new, ctx, len(new)) == pytest.approx(expected, rel=1e-12)
    # a slow host: the CPU sets the pace under async scheduling, whatever the batch
    slow = timing(with_efficiency(load_gpu("H100"), cpu_step_overhead_s=0.05))
    assert slow.step_time([1] * 64, [10] * 64, 64) == slow.cpu_time(64, 64, 64) > 0.05


@pytest.mark.parametrize("kw", [{}, {"async_scheduling": False}, {"cuda_graphs": "none"}, {"cuda_graphs": "piecewise"}])
def test_vectorised_decode_paths_equal_the_step_loop(kw):
    tm = timing(**kw)
    contexts = np.array([5, 100, 1000, 3, 4096])
    fast = tm.decode_step_times(contexts, 20)
    slow = [tm.step_time([1] * 5, list(contexts + j), 5) for j in range(20)]
    assert fast.tolist() == slow
    sizes = np.array([700, 700, 300, 5, 5, 1])
    sums = np.array([70_000, 70_700, 30_000, 500, 505, 100])
    totals = tm.decode_times_from_totals(sizes, sums)
    assert totals.tolist() == [tm.decode_step_time(int(b), int(s)) for b, s in zip(sizes, sums)]


def test_gemm_efficiency_rises_with_tokens_and_saturates_below_peak():
    gpu = load_gpu("H100")
    roof = Roofline.of(gpu, "bf16")
    achieved = []
    for m in (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768):
        achieved.append(2.0 * m * 4096 * 14336 / roof.linear(m, 4096, 14336, 2.0, 2.0))
    assert all(b >= a for a, b in zip(achieved, achieved[1:]))
    assert achieved[-1] < gpu.efficiency.linear_mfu * gpu.peak_flops
    assert achieved[-1] / achieved[-2] < 1.02  # saturated
    assert achieved[0] < 0.6 * achieved[-1]  # one row of tiles does not fill 132 SMs


def test_sustained_clock_slows_big_prefills_but_not_small_decodes():
    gpu = with_efficiency(load_gpu("H100"), sustained_compute_fraction=0.65)  # the kernel fit's prior
    burst = with_efficiency(gpu, sustained_compute_fraction=1.0)
    assert timing(gpu).step_time([8192], [0], 1) > 1.3 * timing(burst).step_time([8192], [0], 1)
    assert timing(gpu).step_time([1] * 4, [512] * 4, 4) == pytest.approx(timing(burst).step_time([1] * 4, [512] * 4, 4), rel=0.02)


def _prefill_tflops(gpu, model: str = "Llama-3-8B", prompt: int = 32768, chunk: int = 8192) -> float:
    tm, m = timing(gpu, model), load_model(model)
    seconds = sum(tm.step_time([chunk], [k], int(k + chunk >= prompt)) for k in range(0, prompt, chunk))
    flops = 2 * (m.num_params - m.embedding_params) * prompt + 2 * m.num_layers * m.num_heads * m.head_dim * prompt**2
    return flops / seconds / 1e12


def test_long_prefill_reaches_about_half_the_h100_peak_and_twice_the_a100():
    # the profiles' kernel fits (the end-to-end fits also absorb what the server and engine add around prefill)
    h100, a100 = _prefill_tflops(load_gpu("H100", kernel_fit=True)), _prefill_tflops(load_gpu("A100-80GB", kernel_fit=True))
    assert 0.35 * 989 <= h100 <= 0.55 * 989  # published 32k-token prefills: about half the bf16 peak
    assert 1.7 <= h100 / a100 <= 2.2  # measured H100:A100 on prefill-heavy work: 1.8-2.0


def test_vllm_custom_allreduce_only_for_small_messages_inside_an_nvlink_group():
    gpu = load_gpu("H100")
    small, big = 64 * 4096 * 2, 16 * 2**20
    assert allreduce_time(gpu, small, 4, custom=True) < allreduce_time(gpu, small, 4)
    assert allreduce_time(gpu, big, 4, custom=True) == allreduce_time(gpu, big, 4)
    assert allreduce_time(gpu, small, 16, custom=True) == allreduce_time(gpu, small, 16)  # across nodes: NCCL
    pcie = dataclasses.replace(load_gpu("L40S"), interconnect="PCIe")
    assert allreduce_time(pcie, small, 4, custom=True) == allreduce_time(pcie, small, 4)


def test_unknown_graph_mode_is_refused():
    with pytest.raises(ValueError, match="full_and_piecewise"):
        Execution(cuda_graphs="sometimes")


def test_moe_gemm_efficiency_slows_compute_bound_expert_gemms_only():
    gpu = with_efficiency(load_gpu("H100"), moe_gemm_efficiency=1.0)
    slow = with_efficiency(gpu, moe_gemm_efficiency=0.5)
    prefill_fast, prefill_slow = (timing(g, "Qwen3-30B-A3B").step_time([8192], [0], 1) for g in (gpu, slow))
    decode_fast, decode_slow = (timing(g, "Qwen3-30B-A3B").step_time([1] * 8, [512] * 8, 8) for g in (gpu, slow))
    assert prefill_slow > 1.2 * prefill_fast  # the routed experts' FLOPs dominate a long prefill
    assert decode_slow == pytest.approx(decode_fast, rel=1e-9)  # small batches stream the experts' weights
    dense = [timing(g, "Llama-3-8B").step_time([8192], [0], 1) for g in (gpu, slow)]
    assert dense[0] == dense[1]  # dense models have no routed experts


def test_moe_gemm_bandwidth_efficiency_slows_expert_weight_streaming_only():
    """The fused MoE kernels' weight read: a small decode batch of an MoE model streams its experts' weights
    slower at a lower efficiency; a long prefill (compute-bound) and a dense model are untouched."""
    gpu = with_efficiency(load_gpu("H100"), moe_gemm_bandwidth_efficiency=1.0)
    slow = with_efficiency(gpu, moe_gemm_bandwidth_efficiency=0.5)
    decode_fast, decode_slow = (timing(g, "Qwen3-30B-A3B").step_time([1] * 8, [512] * 8, 8) for g in (gpu, slow))
    assert decode_slow > 1.2 * decode_fast  # the routed experts' weights dominate a small decode step
    prefill_fast, prefill_slow = (timing(g, "Qwen3-30B-A3B").step_time([8192], [0], 1) for g in (gpu, slow))
    assert prefill_slow < 1.02 * prefill_fast  # the experts' FLOPs, not their weight reads, set a long prefill
    dense = [timing(g, "Llama-3-8B").step_time([1] * 8, [512] * 8, 8) for g in (gpu, slow)]
    assert dense[0] == dense[1]  # dense models have no routed experts


def _quantized_step(gpu, weight_dtype, tokens):
    hw = HardwareConfig(gpu=gpu.name, model="Qwen3-8B", weight_dtype=weight_dtype)
    model = build_timing_model(hw, gpu, load_model("Qwen3-8B"), execution=Execution())
    return model.step_time([tokens], [0], 1) if tokens > 64 else model.step_time([1] * tokens, [512] * tokens, tokens)


def test_weight_only_gemm_efficiency_slows_dequantizing_prefills_only():
    """Weight-only kernels (int4 everywhere, fp8 on an A100) dequantize in their main loop: a long prefill is
    slower at a lower efficiency, a small decode batch (bandwidth-bound) is not, and native fp8 on an H100 or
    unquantized weights are untouched."""
    a100 = with_efficiency(load_gpu("A100-80GB"), weight_only_gemm_efficiency=1.0)
    slow = with_efficiency(a100, weight_only_gemm_efficiency=0.5)
    for dtype in ("fp8", "int4"):
        assert _quantized_step(slow, dtype, 8192) > 1.3 * _quantized_step(a100, dtype, 8192)
        assert _quantized_step(slow, dtype, 4) < 1.02 * _quantized_step(a100, dtype, 4)  # weight reads set it
    assert _quantized_step(slow, "auto", 8192) == _quantized_step(a100, "auto", 8192)
    h100 = with_efficiency(load_gpu("H100"), weight_only_gemm_efficiency=1.0)
    h100_slow = with_efficiency(h100, weight_only_gemm_efficiency=0.5)
    assert _quantized_step(h100_slow, "fp8", 8192) == _quantized_step(h100, "fp8", 8192)  # native fp8 GEMMs
    assert _quantized_step(h100_slow, "int4", 8192) > _quantized_step(h100, "int4", 8192)
