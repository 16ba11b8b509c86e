"""Model families of the real-world benchmarks: parameter counts against published totals, KV bytes by hand."""

from __future__ import annotations

import pytest

from llmsim.errors import ProfileError
from llmsim.hardware.profiles import load_model, model_from_hf_config


@pytest.mark.parametrize(
    "name, total",
    [
        # published totals (model cards / technical reports)
        ("Llama-3.1-8B", 8.03e9),
        ("Llama-3.1-70B", 70.6e9),
        ("Llama-3.1-405B", 405.9e9),
        ("Qwen3-8B", 8.2e9),
        ("Qwen3-14B", 14.8e9),
        ("Qwen3-30B-A3B", 30.5e9),
        ("Qwen3-235B-A22B", 235e9),
        ("gpt-oss-20b", 20.9e9),
        ("gpt-oss-120b", 116.8e9),
        ("GLM-4.5", 355e9),
        ("GLM-4.5-Air", 106e9),
        ("GLM-5", 744e9),
        ("DeepSeek-V3", 671e9),
        ("Seed-OSS-36B", 36e9),
        ("Step-3.5-Flash", 196e9),
        ("Ministral-3-3B", 3.4e9 + 0.4e9),  # language model + vision encoder
        ("Ministral-3-8B", 8.4e9 + 0.4e9),
        ("Ministral-3-14B", 13.5e9 + 0.4e9),
        ("Llama-3.2-1B", 1.24e9),
        ("Llama-3.2-3B", 3.21e9),
        ("Qwen2.5-72B", 72.7e9),
        ("Qwen3-32B", 32.8e9),
        ("Qwen3-Coder-480B-A35B", 480e9),
        ("Kimi-K2", 1.0e12),
        ("Mixtral-8x22B", 141e9),
        ("Mistral-Small-24B", 24e9),
        ("Gemma-3-27B", 27e9),
        ("Llama-4-Scout-17B-16E", 109e9),
        ("Llama-4-Maverick-17B-128E", 400e9),
    ],
)
def test_parameter_count_within_3_percent_of_published_total(name, total):
    assert load_model(name).num_params == pytest.approx(total, rel=0.03)


@pytest.mark.parametrize(
    "name, active, counts_input_embedding",
    [
        # publishers differ on whether the input embedding (a lookup, no multiply) counts as "active"
        ("Qwen3-235B-A22B", 22e9, True),
        ("Qwen3-30B-A3B", 3.3e9, True),
        ("gpt-oss-120b", 5.13e9, False),
        ("gpt-oss-20b", 3.61e9, False),
        ("GLM-4.5", 32e9, False),
        ("DeepSeek-V3", 37e9, False),
        ("GLM-5", 40e9, False),
        # sliding layers of Step-3.5 have 96 query heads, modelled as 64 (profile notes): 1.1B short
        ("Step-3.5-Flash", 11e9 - 1.1e9, False),
        ("Llama-4-Scout-17B-16E", 17e9, True),
        ("Llama-4-Maverick-17B-128E", 17e9, True),
    ],
)
def test_moe_active_parameters_match_published(name, active, counts_input_embedding):
    model = load_model(name)
    counted = model.active_params_per_token
    if not counts_input_embedding:
        counted -= model.vocab_size * model.hidden_size
    assert counted == pytest.approx(active, rel=0.05)


def test_qwen3_gqa_kv_bytes_by_hand_with_explicit_head_dim():
    model = load_model("Qwen3-14B")  # 40 heads of 128 on a 5120 hidden: head_dim is NOT hidden/heads (128)
    assert model.head_dim == 128
    # 2 (K, V) × 40 layers × 8 KV heads × 128 × 2 bytes
    assert model.kv_bytes_per_token() == 2 * 40 * 8 * 128 * 2
    # Qwen3-235B has 4 KV heads: at TP 8 each rank keeps one replicated head
    big = load_model("Qwen3-235B-A22B")
    assert big.kv_bytes_per_token(tp=8) == 2 * 94 * 1 * 128 * 2


def test_qwen_sliding_window_switched_off_by_use_sliding_window():
    model = load_model("Qwen3-8B")
    assert model.sliding_window is None and model.num_sliding_layers == 0


def test_gpt_oss_alternates_sliding_and_full_layers():
    model = load_model("gpt-oss-120b")
    assert model.sliding_window == 128 and model.head_dim == 64 and model.attention_sinks
    assert model.attention_layer_types[:2] == ("sliding_attention", "full_attention")
    assert model.num_sliding_layers == 18
    # per layer 2 × 8 KV heads × 64 × 2 bytes = 2 KiB; 18 full and 18 sliding layers
    full, sliding = model.kv_bytes_by_kind()
    assert full == sliding == 18 * 2 * 8 * 64 * 2
    assert model.kv_bytes_per_token() == full + sliding  # the every-token upper bound keeps its meaning


def test_step_3_5_reads_its_own_field_names():
    model = load_model("Step-3.5-Flash")
    assert (model.num_kv_heads, model.num_experts, model.experts_per_token) == (8, 288, 8)  # num_attention_groups, moe_*
    assert model.first_dense_layers == 3  # moe_layers_enum starts at layer 3
    assert model.shared_intermediate_size == 1280  # share_expert_dim
    assert model.num_sliding_layers == 33 and model.sliding_window == 512  # 48 layer_types entries cut to 45 layers


def test_gemma_sliding_window_pattern_without_layer_types():
    model = load_model("google/gemma-3-27b-it")
    kinds = model.attention_layer_types
    assert kinds[5] == "full_attention" and set(kinds[:5]) == {"sliding_attention"}
    assert model.num_sliding_layers == 62 - 10


def test_interleaved_moe_layers_of_llama4_maverick():
    from llmsim.hardware.config import HardwareConfig
    from llmsim.hardware.profiles import load_gpu
    from llmsim.hardware.timing import RooflineTimingModel

    model = load_model("Llama-4-Maverick-17B-128E")
    assert [model.is_moe_layer(i) for i in range(4)] == [False, True, False, True]
    assert model.num_moe_layers == 24 and model.intermediate_size == 16384 and model.expert_intermediate_size == 8192
    hw = HardwareConfig(model="Llama-4-Maverick-17B-128E", gpu="H200", tp=8)
    timing = RooflineTimingModel(hw, load_gpu("H200"), model)
    assert timing._stage_layout()[0][:2] == (24, 24)  # dense and MoE layers priced separately


def test_mla_kv_is_the_latent_only():
    model = load_model("GLM-5")
    assert model.uses_mla
    assert model.kv_bytes_per_token() == model.kv_bytes_per_token(tp=8) == 78 * (512 + 64) * 2


def test_glm_moe_has_dense_prefix_and_shared_expert():
    model = load_model("GLM-4.5")
    assert (model.first_dense_layers, model.num_moe_layers, model.num_shared_experts) == (3, 89, 1)
    assert model.layer_params(0) < model.layer_params(3)  # dense MLP layer vs MoE layer


def test_multimodal_config_reads_text_config_and_counts_vision_encoder():
    model = load_model("Ministral-3-8B")
    assert (model.hidden_size, model.num_layers, model.num_kv_heads) == (4096, 34, 8)
    assert model.encoder_params == 24 * (4 * 1024**2 + 3 * 1024 * 4096)
    assert model.active_params_per_token == model.num_params - model.encoder_params


@pytest.mark.parametrize(
    "name, profile, quant",
    [
        ("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "Qwen3-235B-A22B", "fp8"),
        ("Qwen/Qwen3-14B-AWQ", "Qwen3-14B", "int4"),
        ("amd/Llama-3.1-70B-Instruct-FP8-KV", "Llama-3.1-70B", "fp8"),
        ("zai-org/GLM-4.6-FP8", "GLM-4.6", "fp8"),
        ("meta-llama/Llama-3.3-70B-Instruct", "Llama-3.1-70B", None),
        ("NousResearch/Llama-2-7b-chat-hf", "Llama-2-7B", None),
        ("deepseek-ai/DeepSeek-R1-0528", "DeepSeek-V3", "fp8"),  # its config ships block fp8
        ("openai/gpt-oss-120b", "gpt-oss-120b", None),
    ],
)
def test_checkpoint_names_resolve_to_architecture_and_precision(name, profile, quant):
    model = load_model(name)
    assert model.name == profile
    assert model.weight_quant == quant


def test_unknown_quantized_name_still_reports_unknown_model():
    with pytest.raises(ProfileError, match="unknown model profile 'Foo/Bar-7B-FP8'"):
        load_model("Foo/Bar-7B-FP8")


def test_state_space_hybrid_raises_with_the_reason():
    with pytest.raises(ProfileError, match=r"Mamba-2 \(state-space\) layers") as info:
        load_model("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-FP8")
    assert "\n" not in str(info.value)


def test_state_space_config_fields_are_rejected_without_a_known_architecture(tmp_path):
    cfg = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 10, "ssm_state_size": 128}
    with pytest.raises(ProfileError, match="config field 'ssm_state_size'"):
        model_from_hf_config(cfg, "toy", tmp_path / "config.json")


def test_linear_attention_layer_type_is_rejected(tmp_path):
    cfg = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 10,
           "layer_types": ["linear_attention", "full_attention"]}
    with pytest.raises(ProfileError, match="'linear_attention' layers"):
        model_from_hf_config(cfg, "toy", tmp_path / "config.json")
