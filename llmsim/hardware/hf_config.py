"""A model's shape from its Hugging Face ``config.json``: the field names of each family, mapped to ModelSpec.

Families spell the same quantity differently (``num_key_value_heads`` / ``num_attention_groups``,
``num_local_experts`` / ``n_routed_experts`` / ``num_experts`` / ``moe_num_experts``); this module knows the
spellings so a profile can hold a checkpoint's config as published. Configs describing layers llmsim does not
model (Mamba/state-space, linear attention) raise :class:`ProfileError` with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from llmsim.errors import ProfileError
from llmsim.hardware.precision import quant_from_config
from llmsim.hardware.specs import DTYPE_BYTES
from llmsim.hardware.model_spec import FULL_ATTENTION, SLIDING_ATTENTION, ModelSpec

_NOT_GATED = {"PhiForCausalLM", "GPT2LMHeadModel", "GPTNeoXForCausalLM", "OPTForCausalLM", "FalconForCausalLM"}
_QKV_BIAS = {"Qwen2ForCausalLM", "Qwen2MoeForCausalLM", "QWenLMHeadModel", "PhiForCausalLM"}
_ATTENTION_SINKS = {"GptOssForCausalLM"}
_SHARED_EXPERT = {"Llama4ForConditionalGeneration", "Llama4ForCausalLM"}  # one implicit shared expert per MoE layer


def _field(cfg: dict[str, Any], path: Path, *keys: str, kind: type = int, default: Any = None) -> Any:
    """First present key of ``keys`` converted to ``kind``; ProfileError naming the field otherwise."""
    for key in keys:
        if key in cfg and cfg[key] is not None:
            value = cfg[key]
            if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ProfileError(f"{path}: field '{key}': expected a non-negative integer, got {value!r}")
            if kind is bool and not isinstance(value, bool):
                raise ProfileError(f"{path}: field '{key}': expected true or false, got {value!r}")
            return value
    if default is None:
        raise ProfileError(f"{path}: field '{keys[0]}' is missing (a Hugging Face config field)")
    return default


def _dtype(cfg: dict[str, Any], path: Path) -> str:
    raw = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").lower().replace("torch.", "")
    if raw not in DTYPE_BYTES:
        raise ProfileError(f"{path}: field 'torch_dtype': expected one of {sorted(DTYPE_BYTES)}, got {raw!r}")
    return {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}.get(raw, raw)


# Layers llmsim cannot price: state-space (Mamba) and linear-attention layers keep a fixed-size recurrent
# state instead of a KV cache, and their kernels are not attention or GEMMs of the shapes modelled here.
_STATE_SPACE_KEYS = ("hybrid_override_pattern", "ssm_state_size", "mamba_num_heads", "layers_block_type")


_RECURRENT_ARCHS = {
    "MambaForCausalLM": "Mamba (state-space)",
    "Mamba2ForCausalLM": "Mamba-2 (state-space)",
    "JambaForCausalLM": "Mamba (state-space)",
    "BambaForCausalLM": "Mamba-2 (state-space)",
    "NemotronHForCausalLM": "Mamba-2 (state-space)",
    "FalconH1ForCausalLM": "Mamba-2 (state-space)",
    "Zamba2ForCausalLM": "Mamba-2 (state-space)",
    "GraniteMoeHybridForCausalLM": "Mamba-2 (state-space)",
    "Qwen3NextForCausalLM": "Gated DeltaNet (linear attention)",
    "MiniMaxText01ForCausalLM": "lightning (linear) attention",
    "MiniMaxM1ForCausalLM": "lightning (linear) attention",
}


def _check_supported(cfg: dict[str, Any], path: Path, name: str) -> None:
    """ProfileError when the config describes layers llmsim does not model (one sentence, the reason)."""
    arch = (cfg.get("architectures") or [""])[0]
    if arch in _RECURRENT_ARCHS:
        raise ProfileError(
            f"{path}: {name} ({arch}) has {_RECURRENT_ARCHS[arch]} layers, which keep a recurrent state instead "
            "of a KV cache and are not modelled by llmsim"
        )
    found = [key for key in _STATE_SPACE_KEYS if key in cfg]
    if found:
        raise ProfileError(
            f"{path}: {name} has Mamba/state-space layers (config field '{found[0]}'), which llmsim does not model"
        )
    unknown = sorted({t for t in cfg.get("layer_types") or () if t not in (FULL_ATTENTION, SLIDING_ATTENTION)})
    if unknown:
        raise ProfileError(f"{path}: field 'layer_types': {name} has {unknown[0]!r} layers, which llmsim does not model")


def _text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The language model's fields: a multimodal config nests them under ``text_config`` (Mistral3, Llava);
    ``quantization_config`` and ``torch_dtype`` may sit at the top level."""
    text = cfg.get("text_config")
    if not isinstance(text, dict):
        return cfg
    merged = {k: v for k, v in cfg.items() if k in ("quantization_config", "torch_dtype", "architectures")}
    merged.update(text)
    return merged


def _first_dense_layers(cfg: dict[str, Any], path: Path, num_layers: int) -> int:
    """Leading dense layers: ``first_k_dense_replace`` (DeepSeek, GLM) or the layers before the first entry of
    ``moe_layers_enum`` (Step-3.5: a comma-separated list of MoE layers, which must be one contiguous tail)."""
    if "moe_layers_enum" in cfg and cfg["moe_layers_enum"] is not None:
        raw = cfg["moe_layers_enum"]
        layers = sorted(int(x) for x in (raw.split(",") if isinstance(raw, str) else raw))
        if layers != list(range(layers[0], num_layers)):
            raise ProfileError(f"{path}: field 'moe_layers_enum': expected the MoE layers to be the last layers, got {raw!r}")
        return layers[0]
    return _field(cfg, path, "first_k_dense_replace", default=0)


def _sliding_window(cfg: dict[str, Any]) -> Optional[int]:
    """The window, unless the config switches it off (Qwen2/3 ship ``sliding_window`` with
    ``use_sliding_window: false``)."""
    if cfg.get("use_sliding_window") is False:
        return None
    window = cfg.get("sliding_window")
    return int(window) if window else None


def _layer_types(cfg: dict[str, Any], num_layers: int) -> tuple[str, ...]:
    """Per-layer attention kinds: ``layer_types``, or Gemma's ``sliding_window_pattern`` (every n-th layer
    full, the others sliding) in configs written before ``layer_types`` existed."""
    if cfg.get("layer_types"):
        return tuple(str(t) for t in cfg["layer_types"])
    pattern = cfg.get("sliding_window_pattern")
    if isinstance(pattern, int) and pattern > 1 and _sliding_window(cfg):
        return tuple(FULL_ATTENTION if (i + 1) % pattern == 0 else SLIDING_ATTENTION for i in range(num_layers))
    return ()


def _vision_encoder_params(cfg: dict[str, Any]) -> int:
    """Weights of a ViT ``vision_config`` (QKV + output projections and the MLP per layer; patch embedding and
    norms are ignored): loaded with the model, idle on text-only requests."""
    vision = cfg.get("vision_config")
    if not isinstance(vision, dict) or "hidden_size" not in vision:
        return 0
    h, layers = int(vision["hidden_size"]), int(vision.get("num_hidden_layers", 0))
    inter = int(vision.get("intermediate_size", 4 * h))
    gated = 3 if str(vision.get("hidden_act", "gelu")).lower() in ("silu", "swiglu") else 2
    return layers * (4 * h * h + gated * h * inter)


def model_from_hf_config(cfg: dict[str, Any], name: str, path: Path, aliases: tuple[str, ...] = ()) -> ModelSpec:
    """Build a ModelSpec from Hugging Face ``config.json`` fields (Llama, Mistral, Qwen, Mixtral, DeepSeek, Phi,
    Qwen3-MoE, gpt-oss, GLM-4.5, Step-3.5, Seed-OSS, multimodal configs with a ``text_config``)."""
    encoder_params = _vision_encoder_params(cfg)
    cfg = _text_config(cfg)
    _check_supported(cfg, path, name)
    arch = (cfg.get("architectures") or [""])[0]
    hidden = _field(cfg, path, "hidden_size", "n_embd", "d_model")
    heads = _field(cfg, path, "num_attention_heads", "n_head")
    layers = _field(cfg, path, "num_hidden_layers", "n_layer", "num_layers")
    intermediate = _field(cfg, path, "intermediate_size", "ffn_hidden_size", "n_inner", default=4 * hidden)
    moe_intermediate = cfg.get("moe_intermediate_size")
    if "intermediate_size_mlp" in cfg:  # Llama 4: intermediate_size is the experts', _mlp the dense layers'
        intermediate, moe_intermediate = _field(cfg, path, "intermediate_size_mlp"), intermediate
    if arch == "QWenLMHeadModel":  # Qwen (v1) stores twice the per-projection MLP width
        intermediate //= 2
    gated = cfg.get("gated_mlp", arch not in _NOT_GATED)
    qkv_bias = bool(cfg.get("attention_bias", cfg.get("qkv_bias", cfg.get("bias", arch in _QKV_BIAS))))
    try:
        quant = quant_from_config(cfg.get("quantization_config"))
    except ValueError as exc:
        raise ProfileError(f"{path}: field 'quantization_config': {exc}") from None
    shared = cfg.get("shared_expert_intermediate_size", cfg.get("share_expert_dim"))
    return ModelSpec(
        name=name,
        aliases=aliases,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=_field(cfg, path, "num_key_value_heads", "num_attention_groups", "multi_query_group_num", default=heads),
        intermediate_size=intermediate,
        vocab_size=_field(cfg, path, "vocab_size", "padded_vocab_size"),
        dtype=_dtype(cfg, path),
        max_position_embeddings=_field(cfg, path, "max_position_embeddings", "max_seq_len", "seq_length", default=4096),
        tie_word_embeddings=_field(cfg, path, "tie_word_embeddings", kind=bool, default=False),
        qkv_bias=qkv_bias,
        gated_mlp=bool(gated),
        head_dim_override=cfg.get("head_dim") or cfg.get("kv_channels"),
        num_experts=_field(cfg, path, "num_local_experts", "n_routed_experts", "num_experts", "moe_num_experts", default=0),
        experts_per_token=_field(cfg, path, "num_experts_per_tok", "experts_per_token", "moe_top_k", default=0),
        moe_intermediate_size=moe_intermediate,
        num_shared_experts=_field(cfg, path, "n_shared_experts", default=1 if shared or arch in _SHARED_EXPERT else 0),
        shared_expert_intermediate_size=int(shared) if shared is not None else None,
        first_dense_layers=_first_dense_layers(cfg, path, layers),
        moe_layer_step=max(1, _field(cfg, path, "interleave_moe_layer_step", default=1)),
        kv_lora_rank=_field(cfg, path, "kv_lora_rank", default=0),
        q_lora_rank=_field(cfg, path, "q_lora_rank", default=0),
        qk_rope_head_dim=_field(cfg, path, "qk_rope_head_dim", default=0),
        qk_nope_head_dim=_field(cfg, path, "qk_nope_head_dim", default=0),
        v_head_dim=_field(cfg, path, "v_head_dim", default=0),
        parallel_attn_mlp=arch == "PhiForCausalLM",
        sliding_window=_sliding_window(cfg),
        layer_types=_layer_types(cfg, layers),
        attention_sinks=arch in _ATTENTION_SINKS or bool(cfg.get("sink")),
        weight_quant=quant.weights,
        expert_weight_quant=quant.experts if quant.experts != quant.weights else None,
        encoder_params=encoder_params,
        source_file=str(path),
    )
