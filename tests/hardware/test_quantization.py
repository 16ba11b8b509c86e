"""Quantization in weight memory and in kernel speed; sliding-window layers in the KV budget."""

from __future__ import annotations

import dataclasses

import pytest

from llmsim.hardware.config import HardwareConfig
from llmsim.hardware.memory import kv_cache_capacity, weight_bytes_per_gpu
from llmsim.hardware.ops import Roofline
from llmsim.hardware.precision import quant_from_config, split_quant_suffix, weight_bytes_per_param
from llmsim.hardware.profiles import load_gpu, load_model
from llmsim.hardware.timing import RooflineTimingModel


def test_bytes_per_weight_include_quantization_scales():
    assert weight_bytes_per_param("bf16") == 2.0
    assert weight_bytes_per_param("fp8") == 1.0
    assert weight_bytes_per_param("int4") == 0.5 + 20 / 128 / 8  # fp16 scale + 4-bit zero per 128 weights
    assert weight_bytes_per_param("mxfp4") == 4.25 / 8  # e8m0 scale per 32 weights


def test_fp8_checkpoint_halves_linear_weights_but_not_embeddings():
    bf16, fp8 = load_model("Qwen3-8B"), load_model("Qwen/Qwen3-8B-FP8")
    embeddings = 2 * 151936 * 4096 + 4096
    assert bf16.unquantized_params > embeddings  # plus norms
    linear = bf16.num_params - bf16.unquantized_params
    assert fp8.weight_bytes() == bf16.unquantized_params * 2 + linear * 1.0
    assert HardwareConfig(model="Qwen3-8B", weight_dtype="fp8")  # the same precision asked for explicitly
    assert bf16.weight_bytes("fp8") == fp8.weight_bytes()


def test_awq_int4_weights():
    model = load_model("Qwen/Qwen3-14B-AWQ")
    kept = model.unquantized_params
    assert model.weight_bytes() == pytest.approx(kept * 2 + (model.num_params - kept) * 0.51953125)


def test_mxfp4_quantizes_only_the_experts_of_gpt_oss():
    model = load_model("gpt-oss-120b")
    assert model.weight_precisions() == ("bf16", "mxfp4")
    rest, experts = model.weight_bytes_split()
    assert experts == model.expert_params * 4.25 / 8
    assert rest == (model.num_params - model.expert_params) * 2
    # the published checkpoint is 60.8 GiB
    assert model.weight_bytes() / 2**30 == pytest.approx(60.8, rel=0.01)


def test_expert_precision_follows_linear_layers_unless_the_checkpoint_differs():
    mixtral = load_model("Mixtral-8x7B")
    assert mixtral.weight_precisions("int4") == ("int4", "int4")
    assert mixtral.weight_precisions("fp8", "bf16") == ("fp8", "bf16")
    assert load_model("gpt-oss-20b").weight_precisions("fp8") == ("fp8", "mxfp4")


def test_expert_parallel_weights_per_gpu_use_each_components_precision():
    model = load_model("gpt-oss-120b")
    rest, experts = model.weight_bytes_split()
    per_gpu = weight_bytes_per_gpu(model, HardwareConfig(model="gpt-oss-120b", tp=4, ep=4))
    assert per_gpu == pytest.approx(rest / 4 + experts / 4)


@pytest.mark.parametrize(
    "qcfg, expected",
    [
        ({"quant_method": "fp8", "weight_block_size": [128, 128]}, ("fp8", "fp8")),
        ({"quant_method": "mxfp4"}, (None, "mxfp4")),
        ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, ("nvfp4", "nvfp4")),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4, "type": "float"}}}}, ("nvfp4", "nvfp4")),
        ({"quant_method": "awq", "bits": 4, "group_size": 128}, ("int4", "int4")),
        ({"quant_method": "gptq", "bits": 8}, ("int8", "int8")),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8, "type": "float"}}}}, ("fp8", "fp8")),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4, "type": "int"}}}}, ("int4", "int4")),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8, "type": "int"}}}}, ("int8", "int8")),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8, "type": "int"},
                                                                        "input_activations": {"num_bits": 8, "type": "int"}}}},
         ("w8a8", "w8a8")),
    ],
)
def test_quantization_config_methods(qcfg, expected):
    quant = quant_from_config(qcfg)
    assert (quant.weights, quant.experts) == expected


def test_unsupported_quantization_method_is_named():
    with pytest.raises(ValueError, match="'bitsandbytes' is not modelled"):
        quant_from_config({"quant_method": "bitsandbytes"})


@pytest.mark.parametrize(
    "name, base, fmt",
    [
        ("Qwen/Qwen3-8B-FP8", "Qwen/Qwen3-8B", "fp8"),
        ("amd/Llama-3.1-405B-Instruct-FP8-KV", "amd/Llama-3.1-405B-Instruct", "fp8"),
        ("RedHatAI/Qwen3-8B-FP8-dynamic", "RedHatAI/Qwen3-8B", "fp8"),
        ("Qwen/Qwen3-14B-AWQ", "Qwen/Qwen3-14B", "int4"),
        ("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", "Qwen/Qwen2.5-7B-Instruct", "int4"),
        ("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int8", "Qwen/Qwen2.5-7B-Instruct", "int8"),
        ("RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w8a8", "RedHatAI/Meta-Llama-3.1-8B-Instruct", "w8a8"),
        ("RedHatAI/Qwen3-8B-quantized.w4a16", "RedHatAI/Qwen3-8B", "int4"),
        ("RedHatAI/Qwen3-8B-quantized.w8a16", "RedHatAI/Qwen3-8B", "int8"),
        ("Qwen/Qwen3-8B-W8A8-FP8", "Qwen/Qwen3-8B", "fp8"),
        ("nvidia/Llama-3.3-70B-Instruct-FP4", "nvidia/Llama-3.3-70B-Instruct", "nvfp4"),
        ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B", None),
    ],
)
def test_name_suffix_rule(name, base, fmt):
    assert split_quant_suffix(name) == (base, fmt)


def test_gemm_peak_per_precision_and_gpu():
    h100, a100, b200 = load_gpu("H100-80GB"), load_gpu("A100-80GB"), load_gpu("B200")
    assert h100.peak_flops_for("fp8") == 1979e12  # W8A8 on fp8 tensor cores (datasheet, dense)
    assert a100.peak_flops_for("fp8") == a100.peak_flops  # Ampere: weight-only Marlin, bf16 peak
    assert h100.peak_flops_for("int4") == h100.peak_flops  # W4A16 dequantizes to bf16
    assert h100.peak_flops_for("mxfp4") == h100.peak_flops  # Hopper runs MXFP4 weight-only
    assert b200.peak_flops_for("mxfp4") == 9000e12  # Blackwell: native fp4
    assert a100.peak_flops_for("w8a8") == a100.peak_int8_ops == 624e12  # int8 W8A8: int8 tensor cores
    assert a100.peak_flops_for("int8") == a100.peak_flops and a100.runs_weight_only("int8")  # W8A16 dequantizes
    assert not a100.runs_weight_only("w8a8")
    assert b200.peak_flops_for("nvfp4") == 9000e12 and h100.runs_weight_only("nvfp4")  # NVFP4: Blackwell-native
    assert weight_bytes_per_param("nvfp4") == pytest.approx(0.5 + 1 / 16)  # an e4m3 scale per 16 values


def test_int8_w8a8_prefills_faster_than_weight_only_int8_and_reads_the_same_bytes():
    def step(dtype, tokens):
        hw = HardwareConfig(model="Llama-3.1-8B", gpu="A100-80GB", weight_dtype=dtype)
        timing = RooflineTimingModel(hw, load_gpu("A100-80GB"), load_model("Llama-3.1-8B"), cpu_overhead=False)
        return timing.step_time([tokens], [0], 1) if tokens > 64 else timing.step_time([1] * tokens, [512] * tokens, tokens)

    assert step("w8a8", 8192) < 0.8 * step("int8", 8192)  # compute-bound: the int8 peak is twice bf16's
    assert step("w8a8", 4) == pytest.approx(step("int8", 4), rel=0.05)  # bandwidth-bound: same bytes per weight


def _decode_time(model: str, gpu: str, **hw) -> float:
    config = HardwareConfig(model=model, gpu=gpu, **hw)
    timing = RooflineTimingModel(config, load_gpu(gpu), load_model(model), cpu_overhead=False)
    return timing.step_time([1] * 8, [1000] * 8, 8)


def test_lower_precision_weights_speed_up_memory_bound_decode():
    bf16 = _decode_time("Qwen3-8B", "H100-80GB")
    fp8 = _decode_time("Qwen3-8B", "H100-80GB", weight_dtype="fp8")
    int4 = _decode_time("Qwen3-8B", "H100-80GB", weight_dtype="int4")
    assert int4 < fp8 < bf16
    assert 0.6 < fp8 / bf16 < 0.85  # weight reads halve; launch overheads, attention and the bf16 LM head stay


def test_decode_gemm_time_scales_with_bytes_per_weight():
    gpu = load_gpu("H100-80GB")
    overhead = gpu.efficiency.linear_overhead_s
    times = {d: Roofline.of(gpu, d).linear(8, 4096, 12288, weight_bytes_per_param(d), 2.0) - overhead
             for d in ("bf16", "fp8", "int4")}
    assert times["fp8"] / times["bf16"] == pytest.approx(0.5, rel=0.02)
    # weight-only int4 uses 16-row tiles: still memory-bound at 8 tokens, so ~0.52/2 of the bf16 time
    assert Roofline.of(gpu, "int4").eff.linear_token_tile == 16
    assert times["int4"] / times["bf16"] == pytest.approx(0.52 / 2, rel=0.03)


def test_mxfp4_experts_speed_up_gpt_oss_decode():
    native = _decode_time("gpt-oss-20b", "H100-80GB")
    bf16_experts = _decode_time("gpt-oss-20b", "H100-80GB", expert_weight_dtype="bf16")
    assert native < 0.6 * bf16_experts


def test_sliding_window_layers_cost_a_bounded_amount_per_request():
    model, gpu = load_model("gpt-oss-120b"), load_gpu("H100-80GB")
    hw = HardwareConfig(model="gpt-oss-120b", gpu="H100-80GB", tp=2)
    cap = kv_cache_capacity(model, gpu, hw, 16, 0.9)
    per_layer = 2 * 4 * 64 * 2  # 4 KV heads per rank at TP 2
    assert cap.kv_bytes_per_token_per_gpu == 18 * per_layer  # only the full-attention layers grow
    assert cap.window_bytes_per_request_per_gpu == 18 * per_layer * (128 + 16)
    all_full = dataclasses.replace(model, layer_types=())
    assert kv_cache_capacity(all_full, gpu, hw, 16, 0.9).num_gpu_blocks < cap.num_gpu_blocks


def test_fp8_kv_cache_doubles_tokens_of_mla_latent():
    model, gpu = load_model("DeepSeek-V3"), load_gpu("H200")
    bf16 = kv_cache_capacity(model, gpu, HardwareConfig(model="DeepSeek-V3", tp=8), 16, 0.9)
    fp8 = kv_cache_capacity(model, gpu, HardwareConfig(model="DeepSeek-V3", tp=8, kv_cache_dtype="fp8"), 16, 0.9)
    assert fp8.kv_bytes_per_token_per_gpu == 61 * 576 * 1
    assert fp8.num_gpu_blocks == pytest.approx(2 * bf16.num_gpu_blocks, abs=1)
