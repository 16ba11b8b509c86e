"""The timing model: sane magnitudes, monotone in work, and the vectorised decode path equals the loop."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.errors import ProfileError
from llmsim.hardware.config import HardwareConfig
from llmsim.hardware.execution import Execution
from llmsim.hardware.profiles import load_gpu, load_model
from llmsim.hardware.timing import build_timing_model


def timing(model="Llama-2-7B", gpu="A100-80GB", **kw):
    hw = HardwareConfig(gpu=gpu, model=model, **kw)
    return build_timing_model(hw, load_gpu(gpu), load_model(model))


LLAMA7B = timing()
# the kernel-level figures below are Vidur's microbenchmarks: compare with the profile's kernel fit (the bundled
# profile's end-to-end fit also absorbs what a whole server adds around the kernels)
LLAMA7B_KERNELS = build_timing_model(HardwareConfig(gpu="A100-80GB", model="Llama-2-7B"),
                                     load_gpu("A100-80GB", kernel_fit=True), load_model("Llama-2-7B"))


def test_llama2_7b_prefill_and_decode_magnitudes():
    # Vidur measured the non-attention operators of a 2048-token Llama-2-7B layer on A100 at 4.17 ms,
    # 133.5 ms for 32 layers; attention, embedding and LM head come on top (the fit is within ~5% per layer).
    assert 0.95 * 0.1335 <= LLAMA7B_KERNELS.step_time([2048], [0], 1) <= 0.25
    assert 0.015 <= LLAMA7B_KERNELS.step_time([1] * 32, [1000] * 32, 32) <= 0.025


@pytest.mark.parametrize("model, tp, pp", [("Llama-2-7B", 1, 1), ("Llama-3-70B", 4, 2), ("Mixtral-8x7B", 2, 1),
                                           ("DeepSeek-V2-Lite", 1, 1), ("gpt-oss-120b", 2, 1), ("gpt-oss-20b", 1, 2)])
def test_decode_step_times_equals_step_loop(model, tp, pp):
    tm = timing(model, "H100", tp=tp, pp=pp)
    contexts = np.array([5, 100, 1000, 3, 4096])
    fast = tm.decode_step_times(contexts, 50)
    slow = [tm.step_time([1] * len(contexts), list(contexts + j), len(contexts)) for j in range(50)]
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=0)


batches = st.lists(st.tuples(st.integers(1, 600), st.integers(0, 5000)), min_size=1, max_size=24)


@settings(max_examples=200, deadline=None)
@given(batches, st.integers(0, 23), st.integers(1, 300))
def test_more_new_tokens_is_never_faster(batch, index, extra):
    new, ctx = [c for c, _ in batch], [k for _, k in batch]
    index %= len(batch)
    more = list(new)
    more[index] += extra
    assert LLAMA7B.step_time(more, ctx, len(batch)) >= LLAMA7B.step_time(new, ctx, len(batch))


@settings(max_examples=200, deadline=None)
@given(batches, st.integers(0, 23), st.integers(1, 5000))
def test_longer_context_is_never_faster(batch, index, extra):
    new, ctx = [c for c, _ in batch], [k for _, k in batch]
    index %= len(batch)
    longer = list(ctx)
    longer[index] += extra
    assert LLAMA7B.step_time(new, longer, len(batch)) >= LLAMA7B.step_time(new, ctx, len(batch))


def test_more_requests_in_batch_is_never_faster():
    times = [LLAMA7B.step_time([1] * n, [512] * n, n) for n in range(1, 300, 7)]
    assert all(b >= a for a, b in zip(times, times[1:]))


def test_tensor_parallel_speeds_up_a_big_prefill():
    one = timing("Llama-2-13B", "A100-80GB", tp=1).step_time([4096], [0], 1)
    two = timing("Llama-2-13B", "A100-80GB", tp=2).step_time([4096], [0], 1)
    assert 0.45 * one < two < 0.8 * one


def test_faster_gpu_is_faster():
    a100 = LLAMA7B.step_time([1] * 16, [800] * 16, 16)
    h100 = timing(gpu="H100").step_time([1] * 16, [800] * 16, 16)
    assert h100 < a100


def test_cpu_overhead_can_be_switched_off():
    hw = HardwareConfig()
    sync = Execution(async_scheduling=False)
    with_cpu = build_timing_model(hw, load_gpu("A100-80GB"), load_model("Llama-2-7B"), execution=sync)
    without = build_timing_model(hw, load_gpu("A100-80GB"), load_model("Llama-2-7B"), cpu_overhead=False, execution=sync)
    gap = with_cpu.step_time([1] * 8, [100] * 8, 8) - without.step_time([1] * 8, [100] * 8, 8)
    e = load_gpu("A100-80GB").efficiency
    cpu = e.cpu_step_overhead_s + 8 * (e.cpu_per_request_overhead_s + e.cpu_per_token_s + e.cpu_per_sampled_token_s)
    assert gap == pytest.approx(cpu)


def test_empty_step_costs_nothing():
    assert LLAMA7B.step_time([], [], 0) == 0.0
    assert LLAMA7B.decode_step_times(np.array([], dtype=int), 3).tolist() == [0.0, 0.0, 0.0]


def test_unknown_timing_model_lists_names():
    with pytest.raises(ProfileError, match="roofline"):
        build_timing_model(HardwareConfig(), load_gpu("A100"), load_model("Llama-2-7B"), kind="magic")


# ---- sliding-window layers --------------------------------------------------------------------------------
GPT_OSS = timing("gpt-oss-120b", "H100")


def _all_full(model_name: str, gpu: str = "H100"):
    tm = timing(model_name, gpu)
    tm._window = None  # the same model priced as if every layer attended to the whole context
    return tm


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 700), st.integers(0, 700), st.integers(1, 300))
def test_window_keys_match_a_query_by_query_count(c, k, w):
    tm = timing("gpt-oss-20b", "H100")
    tm._window = w
    units, ctx = tm.window_totals([c], [k])
    keys = sum(min(k + i + 1, w) for i in range(c))
    if c == 1:
        assert (units, ctx) == (2 * keys, keys)
    else:
        assert units == pytest.approx(2 * keys * (c + tm._half) / c)
        assert ctx == min(k + c, w + c - 1)


def test_sliding_layers_make_long_contexts_cheaper_not_short_ones():
    full = _all_full("gpt-oss-120b")
    # Contexts within the window: every layer reads the same keys.
    assert GPT_OSS.step_time([1] * 32, [100] * 32, 32) == pytest.approx(full.step_time([1] * 32, [100] * 32, 32), rel=1e-12)
    # Long contexts: half the layers read 128 keys instead of thousands.
    assert GPT_OSS.step_time([1] * 64, [8000] * 64, 64) < 0.95 * full.step_time([1] * 64, [8000] * 64, 64)
    assert GPT_OSS.step_time([8192], [24576], 1) < 0.8 * full.step_time([8192], [24576], 1)
    # A model without sliding layers is priced as before.
    assert timing("Llama-3-8B", "H100").sliding_window is None


def test_fast_path_decode_times_price_the_window_as_the_step_loop():
    contexts = np.array([3, 127, 128, 500, 9000])
    steps = 40
    slow = [GPT_OSS.step_time([1] * 5, list(contexts + j), 5) for j in range(steps)]
    seen = GPT_OSS.window_decode_sums(contexts, steps)
    fast = GPT_OSS.decode_times_from_totals(np.full(steps, 5), int(contexts.sum()) + np.arange(steps) * 5, seen)
    assert np.array_equal(fast, np.array(slow))  # bit for bit: the engines must agree


def _with_kernel(model, kernel, gpu="A100-80GB"):
    import dataclasses

    spec = dataclasses.replace(load_gpu(gpu), mxfp4_moe_kernel=kernel)
    return build_timing_model(HardwareConfig(gpu=gpu, model=model), spec, load_model(model))


def test_padded_mxfp4_experts_are_streamed_like_real_weights():
    """A batch-1 gpt-oss-120b decode streams its 4 experts' weights per layer: Marlin's padded layout (3072 ×
    2944 for 2880 × 2880) reads 9 % more bytes, so the MoE part of the step takes longer; a model whose experts
    are not MXFP4 is priced the same whatever the GPU's MXFP4 kernel."""
    padded, plain = _with_kernel("gpt-oss-120b", "marlin"), _with_kernel("gpt-oss-120b", "none")
    moe_padded, moe_plain = padded._layer_times(1)[1], plain._layer_times(1)[1]
    assert 1.02 < moe_padded / moe_plain < 3072 * 2944 / 2880**2
    assert padded.step_time([1], [100], 1) > plain.step_time([1], [100], 1)
    qwen = [_with_kernel("Qwen3-30B-A3B", kernel) for kernel in ("marlin", "none")]
    assert qwen[0].step_time([1, 512], [100, 0], 2) == qwen[1].step_time([1, 512], [100, 0], 2)
