"""Derived model quantities against hand-computed values (HF parameter counts, REFERENCE.md section 2)."""

from __future__ import annotations

import pytest

from llmsim.hardware.profiles import load_model


@pytest.mark.parametrize(
    "name, params",
    [
        ("Llama-2-7B", 6_738_415_616),  # HF model card / safetensors total
        ("Llama-2-13B", 13_015_864_320),
        ("Llama-2-70B", 68_976_648_192),
        ("Llama-3-8B", 8_030_261_248),
        ("Llama-3-70B", 70_553_706_496),
        ("Mistral-7B", 7_241_732_096),
        ("Mixtral-8x7B", 46_702_792_704),
        ("Qwen2.5-7B", 7_615_616_512),
    ],
)
def test_parameter_count_matches_published_totals(name, params):
    assert load_model(name).num_params == params


def test_llama2_7b_kv_bytes_per_token_by_hand():
    # 2 (K and V) × 32 layers × 32 KV heads × 128 head dim × 2 bytes (fp16) = 512 KiB
    model = load_model("Llama-2-7B")
    assert model.kv_bytes_per_token() == 2 * 32 * 32 * 128 * 2 == 512 * 1024
    assert model.kv_bytes_per_token("fp8") == 256 * 1024


def test_gqa_kv_bytes_and_tp_split():
    model = load_model("Llama-3-70B")  # 80 layers, 8 KV heads
    assert model.kv_bytes_per_token() == 2 * 80 * 8 * 128 * 2 == 320 * 1024
    assert model.kv_bytes_per_token(tp=4) == 80 * 1024
    # TP beyond the KV heads replicates them (one head per rank), as vLLM does
    assert model.kv_bytes_per_token(tp=16) == 2 * 80 * 1 * 128 * 2


def test_mla_caches_one_latent_not_k_and_v():
    model = load_model("DeepSeek-V3")
    # (kv_lora_rank 512 + rope 64) × 61 layers × 2 bytes, no ×2 for K and V, not split by TP
    assert model.kv_bytes_per_token() == 576 * 61 * 2
    assert model.kv_bytes_per_token(tp=8) == 576 * 61 * 2
    assert 670e9 < model.num_params < 672e9


def test_moe_active_params_are_a_fraction_of_total():
    model = load_model("Mixtral-8x7B")
    # Mixtral reports ~12.9B active parameters per token
    assert model.active_params_per_token == pytest.approx(12.88e9, rel=0.01)
    assert model.weight_bytes() == model.num_params * 2
    # int4 (AWQ/GPTQ) quantizes the linear layers only: 4 bits + a 16-bit scale and 4-bit zero per 128 weights;
    # embeddings, LM head, norms and routers stay in bf16
    kept = model.unquantized_params
    assert kept == 2 * 32000 * 4096 + 4096 + 32 * (2 * 4096 + 4096 * 8)
    assert model.weight_bytes("int4") == pytest.approx(kept * 2 + (model.num_params - kept) * (0.5 + 20 / 1024))
