"""What a model *is*, as numbers: a decoder-only transformer's shape as its Hugging Face ``config.json`` gives it.

Everything else (parameter count, weight bytes, KV-cache bytes per token) is derived here from that shape, never
typed in, so a new model needs only its config. What a GPU is lives in :mod:`llmsim.hardware.specs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from llmsim.hardware.precision import canonical, weight_bytes_per_param
from llmsim.hardware.specs import dtype_bytes

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer's shape (Hugging Face config field names in comments)."""

    name: str
    hidden_size: int  # hidden_size
    num_layers: int  # num_hidden_layers
    num_heads: int  # num_attention_heads
    num_kv_heads: int  # num_key_value_heads (== num_heads without GQA)
    intermediate_size: int  # intermediate_size (per projection of the gated MLP)
    vocab_size: int
    dtype: str = "bf16"  # torch_dtype: activations, embeddings and every unquantized weight
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    gated_mlp: bool = True  # SwiGLU: gate + up + down
    head_dim_override: Optional[int] = None  # head_dim when it is not hidden_size / num_heads
    # Mixture of experts: every MoE layer holds num_experts MLPs; each token runs experts_per_token of them.
    num_experts: int = 0  # num_local_experts / n_routed_experts / num_experts
    experts_per_token: int = 0  # num_experts_per_tok
    moe_intermediate_size: Optional[int] = None  # per expert (DeepSeek, Qwen3-MoE); Mixtral uses intermediate_size
    num_shared_experts: int = 0  # n_shared_experts (DeepSeek, GLM): always-active experts of every MoE layer
    shared_expert_intermediate_size: Optional[int] = None  # total width of the shared experts when not n × expert
    first_dense_layers: int = 0  # first_k_dense_replace (DeepSeek): leading layers with a dense MLP
    moe_layer_step: int = 1  # interleave_moe_layer_step (Llama 4 Maverick: 2 = every other layer is MoE)
    # Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds one compressed latent per token.
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    parallel_attn_mlp: bool = False  # phi-2: attention and MLP read the same normed input
    # Hybrid attention (gpt-oss, Step-3.5): per-layer "full_attention" / "sliding_attention" (HF layer_types);
    # a sliding layer attends to, and caches, only the last sliding_window tokens.
    sliding_window: Optional[int] = None
    layer_types: tuple[str, ...] = ()
    attention_sinks: bool = False  # gpt-oss: one learned softmax "sink" logit per head
    # What the checkpoint stores (quantization_config or a -FP8/-AWQ name suffix); None = dtype.
    weight_quant: Optional[str] = None  # every linear layer (attention, dense MLP, shared experts, experts)
    expert_weight_quant: Optional[str] = None  # routed experts, when they differ (gpt-oss: mxfp4)
    encoder_params: int = 0  # vision encoder of a multimodal checkpoint: loaded, not run on text requests
    aliases: tuple[str, ...] = ()
    source_file: str = ""

    # ---- derived shape ---------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        if self.head_dim_override:
            return self.head_dim_override
        return self.hidden_size // self.num_heads

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank > 0

    def is_moe_layer(self, layer: int) -> bool:
        """Whether layer ``layer`` (0-based) holds experts: past the dense prefix, every moe_layer_step-th."""
        return self.is_moe and layer >= self.first_dense_layers and (layer + 1) % self.moe_layer_step == 0

    @property
    def num_moe_layers(self) -> int:
        return sum(1 for layer in range(self.num_layers) if self.is_moe_layer(layer))

    @property
    def expert_intermediate_size(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def shared_intermediate_size(self) -> int:
        """Width of all shared experts of one MoE layer together (0 without shared experts)."""
        if self.shared_expert_intermediate_size is not None:
            return self.shared_expert_intermediate_size
        return self.num_shared_experts * self.expert_intermediate_size

    @property
    def attention_layer_types(self) -> tuple[str, ...]:
        """Each layer's attention kind. Without ``layer_types`` every layer counts as full attention, also
        when the config names a ``sliding_window`` (Mistral-7B-v0.1): vLLM without the hybrid allocator
        sizes such a cache as full (REFERENCE.md section 2)."""
        types = self.layer_types[: self.num_layers]
        if len(types) == self.num_layers and self.sliding_window:
            return types
        return (FULL_ATTENTION,) * self.num_layers

    @property
    def num_sliding_layers(self) -> int:
        return sum(1 for kind in self.attention_layer_types if kind == SLIDING_ATTENTION)

    # ---- parameter counts (per layer, then whole model) -------------------------------------------
    def attention_params(self) -> int:
        """Q, K, V and output projection weights (and QKV biases, attention sinks) of one layer."""
        h, d = self.hidden_size, self.head_dim
        sinks = self.num_heads if self.attention_sinks else 0
        if self.uses_mla:
            qk_head = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * self.num_heads * qk_head
            else:
                q = h * self.num_heads * qk_head
            kv_down = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv_up = self.kv_lora_rank * self.num_heads * (self.qk_nope_head_dim + self.v_head_dim)
            out = self.num_heads * self.v_head_dim * h
            return q + kv_down + kv_up + out + sinks
        qkv_out = (self.num_heads + 2 * self.num_kv_heads) * d
        params = h * qkv_out + self.num_heads * d * h + sinks
        if self.qkv_bias:
            params += qkv_out
        return params

    def mlp_params(self, intermediate: int) -> int:
        """One MLP (dense, or one expert): gate+up+down when gated, else up+down."""
        return (3 if self.gated_mlp else 2) * self.hidden_size * intermediate

    def layer_params(self, layer: int) -> int:
        """All weights of layer ``layer`` (0-based), all experts included."""
        params = self.attention_params() + 2 * self.hidden_size  # two norms
        if self.is_moe_layer(layer):
            params += self.num_experts * self.mlp_params(self.expert_intermediate_size)
            params += self.mlp_params(self.shared_intermediate_size)
            params += self.hidden_size * self.num_experts  # router
        else:
            params += self.mlp_params(self.intermediate_size)
        return params

    @property
    def embedding_params(self) -> int:
        """Token embedding, plus the LM head when it is not tied to it, plus the final norm."""
        heads = 1 if self.tie_word_embeddings else 2
        return heads * self.vocab_size * self.hidden_size + self.hidden_size

    @property
    def num_params(self) -> int:
        layers = sum(self.layer_params(i) for i in range(self.num_layers))
        return self.embedding_params + layers + self.encoder_params

    @property
    def expert_params(self) -> int:
        """Weights of all routed experts (what expert parallelism splits and MXFP4 quantizes)."""
        return self.num_moe_layers * self.num_experts * self.mlp_params(self.expert_intermediate_size)

    @property
    def unquantized_params(self) -> int:
        """Weights no quantization scheme touches: embeddings, LM head, norms, routers, sinks, vision encoder."""
        norms = 2 * self.hidden_size * self.num_layers
        routers = self.num_moe_layers * self.hidden_size * self.num_experts
        sinks = self.num_layers * self.num_heads if self.attention_sinks else 0
        return self.embedding_params + norms + routers + sinks + self.encoder_params

    @property
    def active_params_per_token(self) -> int:
        """Parameters one token actually multiplies (MoE: only its routed experts; no vision encoder)."""
        active = self.num_params - self.encoder_params
        if not self.is_moe:
            return active
        inactive = (self.num_experts - self.experts_per_token) * self.mlp_params(self.expert_intermediate_size)
        return active - self.num_moe_layers * inactive

    # ---- weight memory ------------------------------------------------------------------------------
    def weight_precisions(self, weight_dtype: str = "auto", expert_dtype: str = "auto") -> tuple[str, str]:
        """(linear layers, routed experts) precision for ``hardware.weight_dtype`` / ``expert_weight_dtype``.

        ``auto`` takes what the checkpoint stores (its quantization, else its dtype); experts on ``auto``
        follow the checkpoint's expert quantization, else the linear layers' precision.
        """
        dense = (self.weight_quant or self.dtype) if weight_dtype == "auto" else canonical(weight_dtype)
        if expert_dtype != "auto":
            return dense, canonical(expert_dtype)
        return dense, self.expert_weight_quant or dense

    def weight_bytes_split(self, weight_dtype: str = "auto", expert_dtype: str = "auto") -> tuple[float, float]:
        """(bytes of everything but the routed experts, bytes of the routed experts), scales included."""
        dense, expert = self.weight_precisions(weight_dtype, expert_dtype)
        unquantized = self.unquantized_params
        linear = self.num_params - unquantized - self.expert_params
        rest = unquantized * weight_bytes_per_param(self.dtype) + linear * weight_bytes_per_param(dense)
        return rest, self.expert_params * weight_bytes_per_param(expert)

    def weight_bytes(self, dtype: str = "auto", expert_dtype: str = "auto") -> float:
        """Bytes of all weights: linear layers at ``dtype`` (``auto`` = the checkpoint's), experts at
        ``expert_dtype``, embeddings/norms/routers at the model dtype (no scheme quantizes them)."""
        rest, experts = self.weight_bytes_split(dtype, expert_dtype)
        return rest + experts

    def resolve_dtype(self, dtype: str) -> str:
        return self.dtype if dtype == "auto" else canonical(dtype)

    # ---- KV cache ----------------------------------------------------------------------------------
    def kv_elements_per_token_per_layer(self, tp: int = 1) -> int:
        """Cached elements per token per layer on one TP rank.

        Standard attention caches a key and a value vector per KV head: 2·n_kv·head_dim, with the KV heads
        split across TP ranks (replicated when TP exceeds the number of KV heads, as vLLM does). MLA caches
        one latent (kv_lora_rank + rope dims), not split by TP.
        """
        if self.uses_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        kv_heads_per_rank = max(1, self.num_kv_heads // tp)
        return 2 * kv_heads_per_rank * self.head_dim

    def kv_bytes_per_token(self, kv_dtype: str = "auto", tp: int = 1, num_layers: Optional[int] = None) -> float:
        """KV-cache bytes one token occupies on one TP rank across ``num_layers`` layers (default all),
        as if every layer kept every token (sliding-window layers keep fewer: :meth:`kv_bytes_by_kind`)."""
        layers = self.num_layers if num_layers is None else num_layers
        return layers * self.kv_elements_per_token_per_layer(tp) * dtype_bytes(self.resolve_dtype(kv_dtype))

    def kv_bytes_by_kind(self, kv_dtype: str = "auto", tp: int = 1, layers: Optional[range] = None) -> tuple[float, float]:
        """(full-attention, sliding-window) KV bytes per token on one TP rank over ``layers`` (default all).

        A full-attention layer keeps every token of a request; a sliding layer at most ``sliding_window``
        of them (plus the partly filled block), so only the first number grows with the context.
        """
        kinds = self.attention_layer_types
        chosen = range(self.num_layers) if layers is None else layers
        sliding = sum(1 for i in chosen if kinds[i] == SLIDING_ATTENTION)
        per_layer = self.kv_elements_per_token_per_layer(tp) * dtype_bytes(self.resolve_dtype(kv_dtype))
        return (len(chosen) - sliding) * per_layer, sliding * per_layer
