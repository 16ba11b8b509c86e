"""KV-cache capacity against hand-computed budgets (REFERENCE.md section 2 worked table)."""

from __future__ import annotations

import dataclasses

import pytest

from llmsim.errors import ProfileError
from llmsim.hardware.config import HardwareConfig
from llmsim.hardware.memory import (
    NCCL_RESERVE_GIB,
    NON_TORCH_GIB,
    SAMPLER_BYTES_PER_LOGIT,
    activation_reserve_bytes,
    kv_cache_capacity,
    layers_per_stage,
)
from llmsim.hardware.precision import mxfp4_expert_dims
from llmsim.hardware.profiles import load_gpu, load_model

GIB = 1024**3


def capacity(model, gpu, tp=1, pp=1, util=0.9, block=16, seqs=256, tokens=8192, **kw):
    hw = HardwareConfig(gpu=gpu, model=model, tp=tp, pp=pp, **kw)
    return kv_cache_capacity(load_model(model), load_gpu(gpu), hw, block, util, max_num_seqs=seqs,
                             max_num_batched_tokens=tokens)


def reserve_gib(model, gpu, seqs, tokens, tp=1):
    hw = HardwareConfig(gpu=gpu, model=model, tp=tp)
    return activation_reserve_bytes(load_model(model), load_gpu(gpu), hw, seqs, tokens) / GIB


def test_llama2_7b_on_a100_80gb_by_hand():
    cap = capacity("Llama-2-7B", "A100-80GB")
    weights = 6_738_415_616 * 2
    # 256 sampler rows × 32,000 logits (315 MB) weigh less than the forward pass over 8,192 tokens: 2 bytes ×
    # (4 × 4,096 hidden + 3 × 11,008 MLP) per token (810 MB); plus non-torch memory.
    reserve = NON_TORCH_GIB * GIB + 8192 * 2 * (4 * 4096 + 3 * 11008)
    available = 0.9 * 79.15 * GIB - weights - reserve
    assert cap.weight_bytes_per_gpu == weights
    assert cap.activation_reserve_bytes == pytest.approx(reserve)
    assert cap.available_kv_bytes_per_gpu == pytest.approx(available)
    assert cap.kv_bytes_per_token == 524_288
    assert cap.num_gpu_blocks == int(available // (16 * 524_288)) == 7398


def test_reserve_matches_published_profiling_runs():
    # llm-d (REFERENCE.md section 2): Llama-3.1-8B on an H100 with vLLM's defaults there (1,024 sequences,
    # 8,192 tokens) profiled 4.76 GiB of activations plus 0.13 GiB of non-torch memory.
    assert reserve_gib("Llama-3.1-8B", "H100", 1024, 8192) == pytest.approx(4.76 + 0.13, rel=0.03)
    # vLLM issues 23278 / 27508: gpt-oss-120b on an H100 left 7.4-7.5 GiB between weights and KV cache.
    assert 7.3 < reserve_gib("gpt-oss-120b", "H100", 1024, 8192) < 7.6


def test_sampler_reserve_grows_with_sequences_and_vocabulary():
    small, large = reserve_gib("Llama-3-8B", "A100-80GB", 256, 2048), reserve_gib("Llama-3-8B", "A100-80GB", 1024, 2048)
    expected = (1024 - 256) * 128_256 * SAMPLER_BYTES_PER_LOGIT / GIB
    assert large - small == pytest.approx(expected)
    # Rows are capped by the token budget: a step cannot sample more requests than it schedules tokens.
    assert reserve_gib("Llama-3-8B", "A100-80GB", 1024, 512) < large
    # A 201k vocabulary costs more than a 128k one at the same limits.
    assert reserve_gib("gpt-oss-20b", "A100-80GB", 1024, 2048) > large


def test_forward_pass_sets_the_reserve_for_large_budgets():
    # 16 sampler rows are nothing next to a forward pass over thousands of tokens, which grows with them.
    non_torch = NON_TORCH_GIB + NCCL_RESERVE_GIB  # tp = 4
    base = reserve_gib("Llama-3-70B", "H100", 16, 8192, tp=4) - non_torch
    double = reserve_gib("Llama-3-70B", "H100", 16, 16384, tp=4) - non_torch
    assert base * GIB == pytest.approx(8192 * 2 * (4 * 8192 + 3 * 28672 / 4))
    assert double == pytest.approx(2 * base)


@pytest.mark.parametrize(
    "model, tp, blocks",
    [  # REFERENCE.md section 2 table (H100, 79.18 GiB, util 0.9, 5.0 GiB reserve at TP 1, 5.4 at TP > 1)
        ("Llama-2-7B", 1, 6_874),
        ("Llama-2-13B", 1, 3_442),
        ("Llama-3-8B", 1, 26_267),
        ("Llama-3-70B", 4, 27_040),
        ("Mixtral-8x7B", 2, 22_903),
        ("Qwen2.5-7B", 1, 60_944),
    ],
)
def test_h100_blocks_match_reference_table(model, tp, blocks):
    # The table's arithmetic, with its fixed reserve (5.0 GiB at TP 1, 5.4 at TP > 1) given explicitly.
    reserve = 5.0 if tp == 1 else 5.4
    assert capacity(model, "H100", tp=tp, activation_reserve_gib=reserve).num_gpu_blocks == blocks


@pytest.mark.parametrize(
    "model, tp, kv_per_gpu_token, weights_params",
    [
        ("Llama-3-70B", 4, 2 * 80 * 2 * 128 * 2, 70_553_706_496),  # 8 KV heads / 4 ranks = 2 per GPU
        ("Mixtral-8x7B", 2, 2 * 32 * 4 * 128 * 2, 46_702_792_704),
    ],
)
def test_a100_capacity_by_hand(model, tp, kv_per_gpu_token, weights_params):
    cap = capacity(model, "A100-80GB", tp=tp, activation_reserve_gib=5.4)
    available = 0.9 * 79.15 * GIB - weights_params * 2 / tp - 5.4 * GIB
    assert cap.kv_bytes_per_token_per_gpu == kv_per_gpu_token
    assert cap.num_gpu_blocks == int(available // (16 * kv_per_gpu_token))


def test_tp_halves_weight_bytes_per_gpu():
    one = capacity("Llama-2-13B", "A100-80GB", tp=1)
    two = capacity("Llama-2-13B", "A100-80GB", tp=2)
    assert two.weight_bytes_per_gpu == one.weight_bytes_per_gpu / 2
    assert two.kv_bytes_per_token_per_gpu == one.kv_bytes_per_token_per_gpu / 2


def test_quantised_kv_doubles_and_quadruples_blocks():
    base = capacity("Llama-2-7B", "A100-80GB")
    fp8 = capacity("Llama-2-7B", "A100-80GB", kv_cache_dtype="fp8")
    int4 = capacity("Llama-2-7B", "A100-80GB", kv_cache_dtype="int4")
    assert fp8.num_gpu_blocks in (2 * base.num_gpu_blocks, 2 * base.num_gpu_blocks + 1)
    assert 4 * base.num_gpu_blocks <= int4.num_gpu_blocks <= 4 * base.num_gpu_blocks + 3


def test_quantised_weights_free_memory_for_kv():
    assert capacity("Llama-2-7B", "A100-80GB", weight_dtype="int4").num_gpu_blocks > 8000


def test_mxfp4_experts_take_the_padded_size_their_kernel_stores():
    """gpt-oss-120b (hidden 2880, experts 2880 wide) through Marlin on an A100: hidden padded to 3072 and the
    intermediate size to 2944, so the weights take 65.8 GiB; vLLM logged 65.97 GiB loading it through Marlin
    (issue 23278). Hopper's Triton kernels need no padding at TP 1 and pad 1440 to 1472 at TP 2."""
    a100 = capacity("gpt-oss-120b", "A100-80GB", seqs=256, tokens=2048)
    h100 = capacity("gpt-oss-120b", "H100", seqs=256, tokens=2048)
    assert a100.weight_bytes_per_gpu / GIB == pytest.approx(65.97, rel=0.01)
    assert h100.weight_bytes_per_gpu / GIB == pytest.approx(60.69, abs=0.01)
    dense, experts = load_model("gpt-oss-120b").weight_bytes_split()
    assert a100.weight_bytes_per_gpu == pytest.approx(dense + experts * 3072 * 2944 / (2880 * 2880))
    h100_tp2 = capacity("gpt-oss-120b", "H100", tp=2, seqs=256, tokens=2048)
    assert h100_tp2.weight_bytes_per_gpu == pytest.approx(dense / 2 + experts / 2 * 1472 / 1440)
    # Other precisions are stored as they are, whatever the kernel family
    assert capacity("Qwen3-30B-A3B", "A100-80GB").weight_bytes_per_gpu == pytest.approx(
        load_model("Qwen3-30B-A3B").weight_bytes())


@pytest.mark.parametrize("kernel, hidden, inter, expected", [
    ("marlin", 2880, 2880, (3072, 2944)), ("triton", 2880, 720, (2880, 768)), ("rocm", 2880, 2880, (3072, 3072)),
    ("flashinfer", 2880, 1440, (3072, 1536)), ("none", 2880, 720, (2880, 720)), ("marlin", 4096, 1536, (4096, 1536)),
])
def test_mxfp4_alignment_per_kernel(kernel, hidden, inter, expected):
    assert mxfp4_expert_dims(kernel, hidden, inter) == expected


def test_model_that_does_not_fit_says_by_how_much():
    with pytest.raises(ProfileError) as info:
        capacity("Llama-2-70B", "A100-80GB")
    message = str(info.value)
    assert "Llama-2-70B needs 128.5 GiB of weights per GPU at tp=1" in message
    assert "A100-80GB offers 71.2 GiB at gpu_memory_utilization=0.9" in message
    assert "59.2 GiB short" in message and "hardware.tp" in message


def test_activation_reserve_override():
    default = capacity("Llama-2-7B", "A100-80GB")
    fixed = capacity("Llama-2-7B", "A100-80GB", activation_reserve_gib=2.0)
    assert fixed.activation_reserve_bytes == 2.0 * GIB
    assert default.available_kv_bytes_per_gpu - fixed.available_kv_bytes_per_gpu == pytest.approx(
        2.0 * GIB - default.activation_reserve_bytes)


def test_gpu_profile_may_fix_the_reserve():
    gpu = dataclasses.replace(load_gpu("A100-80GB"), activation_reserve_gib=3.0)
    hw = HardwareConfig(gpu="A100-80GB", model="Llama-2-7B")
    assert activation_reserve_bytes(load_model("Llama-2-7B"), gpu, hw, 256, 8192) == 3.0 * GIB
    # The config's value wins over the profile's.
    hw = HardwareConfig(gpu="A100-80GB", model="Llama-2-7B", activation_reserve_gib=1.0)
    assert activation_reserve_bytes(load_model("Llama-2-7B"), gpu, hw, 256, 8192) == 1.0 * GIB


@pytest.mark.parametrize("layers, pp", [(32, 1), (32, 4), (80, 3), (61, 8), (5, 5)])
def test_pipeline_split_covers_every_layer_once(layers, pp):
    split = layers_per_stage(layers, pp)
    assert len(split) == pp and sum(split) == layers and max(split) - min(split) <= 1


def test_pipeline_stage_holds_its_layers_kv_only():
    one = capacity("Llama-2-13B", "A100-80GB", pp=1)
    two = capacity("Llama-2-13B", "A100-80GB", pp=2)
    assert two.kv_bytes_per_token_per_gpu == one.kv_bytes_per_token_per_gpu / 2
