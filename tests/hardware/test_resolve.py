"""Free-text benchmark setups resolve to profiles and precisions, or to one-sentence reasons."""

from __future__ import annotations

import pytest
import yaml

from llmsim.errors import ProfileError
from llmsim.hardware.coverage import check_points
from llmsim.hardware.profiles import list_gpus, load_gpu, load_model, profiles_dir
from llmsim.hardware.resolve import parse_precision, resolve_deployment, resolve_gpu
from tests.conftest import shared_path


@pytest.mark.parametrize(
    "text, profile",
    [
        ("A100-80GB SXM", "A100-80GB"),
        ("A100 SXM (80GB assumed)", "A100-80GB"),
        ("A100 (memory size not stated)", "A100-80GB"),
        ("H100-80GB SXM", "H100-80GB"),
        ("H100 PCIe", "H100-PCIe"),
        ("H200-141GB SXM", "H200"),
        ("MI300X-192GB (750W)", "MI300X"),
        ("Ascend 910B NPU", "Ascend-910B"),
        ("RTX 4090-24GB", "RTX-4090"),
        ("RTX 3090-24GB", "RTX-3090"),
        ("A10G-24GB", "A10G"),
        ("NVIDIA H20", "H20"),
        ("A100-80GB PCIe", "A100-80GB-PCIe"),
    ],
)
def test_gpu_spellings(text, profile):
    assert resolve_gpu(text)[0] == profile


def test_gpu_without_memory_size_says_what_was_assumed():
    name, note = resolve_gpu("A100 (memory size not stated)")
    assert name == "A100-80GB" and "not stated" in note


def test_unknown_gpu_is_one_sentence():
    with pytest.raises(ProfileError, match="GPU 'TPU v5e' matches no GPU profile") as info:
        resolve_gpu("TPU v5e")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("BF16", ("auto", "auto", "auto")),
        ("FP16/BF16 (default)", ("auto", "auto", "auto")),
        ("BF16 ('TP4+FP16' per recipe)", ("auto", "auto", "auto")),
        ("FP8 (block-quantized checkpoint)", ("fp8", "auto", "auto")),
        ("FP8 W8A8 dynamic (checkpoint not named)", ("fp8", "auto", "auto")),
        ("AWQ INT4 (W4A16)", ("int4", "auto", "auto")),
        ("MXFP4 MoE weights (native), BF16 activations/attention", ("auto", "mxfp4", "auto")),
        ("FP8 weights + FP8 KV cache (FP8-KV checkpoint)", ("fp8", "auto", "fp8")),
        ("BF16 weights, FP8 E4M3 KV cache", ("auto", "auto", "fp8")),
        ("FP8 (native checkpoint per recipe 'precision: fp8')", ("fp8", "auto", "auto")),
    ],
)
def test_precision_prose(text, expected):
    assert parse_precision(text, load_model("Qwen3-8B")) == expected


def test_sixteen_bit_on_a_quantized_checkpoint_is_explicit():
    assert parse_precision("BF16", load_model("DeepSeek-V3"))[0] == "bf16"


def test_unsupported_quantization_reason():
    with pytest.raises(ProfileError, match="GGUF is not modelled"):
        resolve_deployment("B200", "Qwen/Qwen3-8B", "GGUF Q4_K_M")


def test_nvfp4_weights_are_a_precision():
    deployment = resolve_deployment("B200", "Qwen/Qwen3-8B", "NVFP4 weights")
    assert deployment.weight_dtype == "nvfp4"


def test_deployment_carries_the_checkpoint_suffix_into_hardware_config():
    d = resolve_deployment("H100-80GB SXM", "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "FP8 (block-quantized checkpoint)")
    assert (d.gpu, d.model, d.weight_dtype) == ("H100-80GB", "Qwen3-235B-A22B", "fp8")
    hw = d.hardware(tp=4)
    assert load_model(hw.model).weight_quant == "fp8" and hw.tp == 4


def test_unsupported_architecture_reason_has_no_path():
    with pytest.raises(ProfileError) as info:
        resolve_deployment("H200-141GB", "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-FP8", "FP8 weights, FP8 KV cache")
    message = str(info.value)
    assert "state-space" in message and ".yaml" not in message


@pytest.mark.parametrize("name", list_gpus())
def test_gpu_profile_sanity(name):
    gpu = load_gpu(name)
    data = yaml.safe_load(gpu_source(name))
    for field in ("peak_bf16_tflops", "memory_gib", "hbm_bandwidth_gbps", "interconnect_bandwidth_gbps"):
        assert field in data["sources"], f"{name}: {field} has no source"
    assert 10 < gpu.memory_gib < 300
    assert 100e9 < gpu.hbm_bandwidth < 10e12
    # a GPU's fp8 peak is twice its bf16 peak where it exists (dense, same accumulate precision)
    if gpu.peak_fp8_flops:
        assert gpu.peak_fp8_flops == pytest.approx(2 * gpu.peak_flops, rel=0.02)
    # ridge point (FLOP per byte at which GEMMs turn compute-bound) within what real parts span (H20 ~37 .. L4 ~400)
    assert 20 < gpu.peak_flops / gpu.hbm_bandwidth < 500
    assert gpu.efficiency.fitted_on


def gpu_source(name: str) -> str:
    for path in (profiles_dir() / "gpus").glob("*.yaml"):
        if yaml.safe_load(path.read_text())["name"] == name:
            return path.read_text()
    raise AssertionError(name)


def test_real_world_points_are_covered_and_fit():
    rows = check_points(shared_path("realworld", "points.csv"))
    modelled = [r for r in rows if r.ok]
    skipped = {f"{r.gpu} | {r.model}: {r.reason}" for r in rows if not r.ok}
    print(f"\n{len(modelled)} of {len(rows)} rows modelled; not modelled: {sorted(skipped)}")
    assert len(modelled) >= 0.95 * len(rows)
    for r in modelled:  # fits at the row's parallelism and leaves KV blocks
        assert r.capacity.num_gpu_blocks > 0
        assert r.capacity.weight_bytes_per_gpu < r.capacity.usable_bytes_per_gpu
    assert all(r.reason for r in rows if not r.ok)


@pytest.mark.parametrize("checkpoint, profile, quant", [
    ("meta-llama/Meta-Llama-3-8B-Instruct", "Llama-3-8B", None),
    ("NousResearch/Llama-2-7b-chat-hf", "Llama-2-7B", None),
    ("google/gemma-3-27b-it", "Gemma-3-27B", None),
    ("Qwen/Qwen3-30B-A3B-Thinking-2507", "Qwen3-30B-A3B", None),
    ("Qwen/Qwen2.5-7B-Instruct-AWQ", "Qwen2.5-7B", "int4"),
])
def test_a_tuned_checkpoint_has_its_base_models_architecture(checkpoint, profile, quant):
    model = load_model(checkpoint)
    assert (model.name, model.weight_quant) == (profile, quant)


def test_only_tune_suffixes_are_dropped():
    with pytest.raises(ProfileError, match="Llama-9-8B-Instruct"):
        load_model("meta-llama/Llama-9-8B-Instruct")  # no Llama-9: the suffix alone does not make a match
    with pytest.raises(ProfileError):
        load_model("deepseek-ai/DeepSeek-V9")  # a version is part of the name, not a tune
