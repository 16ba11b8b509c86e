"""How long one engine step takes: the interface the engine calls, and its roofline implementation.

An engine step is one forward pass of the whole batch through every layer of every pipeline stage, plus the
CPU work around it (scheduling, input preparation, sampling). Its cost depends on the batch *shape* only:
how many tokens each request feeds (a prefill chunk, or 1 for a decode) and how many tokens each already
has cached (what its attention must read).

The roofline model prices each operator as max(compute time, memory time) + a launch overhead
(``llmsim.hardware.ops``) with efficiencies fitted per GPU, and adds tensor-parallel all-reduces and
pipeline send/recv over the interconnect. Everything that depends only on the number of tokens in the batch
(all GEMMs, norms, collectives) is memoised per token count, so a step costs one pass over the batch in
pure Python; this is the simulator's hottest call (10^5-10^6 per run).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from llmsim.errors import ProfileError
from llmsim.hardware.config import HardwareConfig
from llmsim.hardware.memory import layers_per_stage
from llmsim.hardware.ops import LayerShape, Roofline, act_bytes_of, allreduce_time, layer_op_times, send_recv_time
from llmsim.hardware.specs import GPUSpec, ModelSpec, dtype_bytes


class TimingModel(Protocol):
    """What the engine needs from a timing model: the duration of a step from its batch shape."""

    def step_time(self, new_tokens: Sequence[int], context_lens: Sequence[int], num_sampled: int) -> float:
        """Seconds of ONE engine step.

        ``new_tokens[i]``: tokens fed for request i (prefill chunk, or 1 for a decode);
        ``context_lens[i]``: tokens of request i already in the KV cache before this step;
        ``num_sampled``: requests that produce a token this step (rows of the LM head).
        """
        ...

    def decode_step_times(self, context_lens: np.ndarray, num_steps: int) -> np.ndarray:
        """Durations of ``num_steps`` consecutive decode-only steps of this batch (contexts grow by 1 a step)."""
        ...


class RooflineTimingModel:
    """Per-operator roofline of every layer, summed over layers and pipeline stages, plus CPU overhead."""

    def __init__(self, hw: HardwareConfig, gpu: GPUSpec, model: ModelSpec, cpu_overhead: bool = True) -> None:
        self.hw, self.gpu, self.model = hw, gpu, model
        weight_dtype = model.resolve_dtype(hw.weight_dtype)
        self._weight_b = dtype_bytes(weight_dtype)
        self._act_b = act_bytes_of(model)
        self._roof = Roofline.of(gpu, weight_dtype)
        self._tp = hw.tp
        self._stage_layers = layers_per_stage(model.num_layers, hw.pp)
        self._num_layers = model.num_layers
        self._shape = LayerShape.of(model, hw.tp)
        # Attention constants (per layer, per TP rank). MLA attends in the latent space (absorbed weights):
        # scores over kv_lora_rank + rope dims, values of kv_lora_rank dims.
        if model.uses_mla:
            qk_dim, v_dim = model.kv_lora_rank + model.qk_rope_head_dim, model.kv_lora_rank
        else:
            qk_dim = v_dim = model.head_dim
        heads = self._shape.heads_per_rank
        kv_b = dtype_bytes(model.resolve_dtype(hw.kv_cache_dtype))
        self._attn_flops_per_unit = heads * (qk_dim + v_dim)  # × Σ c·(2k + c + 1)
        self._kv_bytes_per_ctx_token = model.kv_elements_per_token_per_layer(hw.tp) * kv_b
        self._qo_bytes_per_token = heads * (qk_dim + v_dim) * self._act_b
        eff = gpu.efficiency
        self._attn_flops_rate = self._roof.peak_flops * eff.attn_prefill_mfu
        self._attn_bytes_rate = gpu.hbm_bandwidth * eff.attn_decode_mbu
        self._attn_overhead = eff.attn_overhead_s
        self._cpu_step = eff.cpu_step_overhead_s if cpu_overhead else 0.0
        self._cpu_per_request = eff.cpu_per_request_overhead_s if cpu_overhead else 0.0
        self._base_cache: dict[tuple[int, int], float] = {}

    # ---- everything but attention: depends on token counts only, memoised ---------------------------
    def _dense_layer(self, tokens: int) -> float:
        ops = layer_op_times(self._roof, self._shape, tokens, self._weight_b, self._act_b)
        return sum(ops.values())

    def _moe_layer(self, tokens: int) -> float:
        """Attention half of a dense layer, then router + the routed experts' grouped GEMMs (+ shared experts).

        All experts sit in memory, but a step only reads the weights of experts that some token picked:
        with uniform routing that is E·(1 − (1 − k/E)^T) experts, and only k/E of the tokens' MLP FLOPs.
        """
        m, roof, wb, ab, tp = self.model, self._roof, self._weight_b, self._act_b, self._tp
        ops = layer_op_times(roof, self._shape, tokens, wb, ab)
        time = sum(v for k, v in ops.items() if not k.startswith("mlp_"))
        inter = m.expert_intermediate_size
        up_out = (2 if m.gated_mlp else 1) * inter / tp
        experts = m.num_experts
        touched = experts * (1.0 - (1.0 - m.experts_per_token / experts) ** tokens)
        routed = tokens * m.experts_per_token
        time += roof.linear(tokens, m.hidden_size, experts, wb, ab)  # router
        for k_in, n_out in ((m.hidden_size, up_out), (inter / tp, m.hidden_size)):
            flops = 2.0 * routed * k_in * n_out
            bytes_moved = touched * k_in * n_out * wb + routed * (k_in + n_out) * ab
            e = roof.eff
            time += max(flops / (roof.peak_flops * e.linear_mfu), bytes_moved / (roof.hbm_bandwidth * e.linear_mbu))
            time += e.linear_overhead_s
        time += roof.elementwise(routed * (up_out + inter / tp) * ab)  # activation
        if m.num_shared_experts:
            shared = LayerShape.of(m, tp, intermediate=inter * m.num_shared_experts)
            shared_ops = layer_op_times(roof, shared, tokens, wb, ab)
            time += sum(v for k, v in shared_ops.items() if k.startswith("mlp_"))
        return time

    def _base_time(self, tokens: int, num_sampled: int) -> float:
        key = (tokens, num_sampled)
        cached = self._base_cache.get(key)
        if cached is not None:
            return cached
        m, roof, ab = self.model, self._roof, self._act_b
        dense_layers = m.num_layers - m.num_moe_layers
        time = dense_layers * self._dense_layer(tokens)
        if m.num_moe_layers:
            time += m.num_moe_layers * self._moe_layer(tokens)
        allreduces_per_layer = 1 if m.parallel_attn_mlp else 2
        activation_bytes = tokens * m.hidden_size * ab
        time += m.num_layers * allreduces_per_layer * allreduce_time(self.gpu, activation_bytes, self._tp)
        time += roof.elementwise(activation_bytes) + roof.elementwise(2.0 * activation_bytes)  # embedding, final norm
        if num_sampled:
            time += roof.linear(num_sampled, m.hidden_size, m.vocab_size / self._tp, self._weight_b, ab)
        time += (len(self._stage_layers) - 1) * send_recv_time(self.gpu, activation_bytes)
        self._base_cache[key] = time
        return time

    # ---- attention: one varlen kernel per layer over the whole batch --------------------------------
    def attention_time(self, flop_units, ctx_tokens, tokens):
        """Per-layer attention time; works on Python numbers and on numpy arrays with identical arithmetic."""
        compute = flop_units * self._attn_flops_per_unit / self._attn_flops_rate
        memory = (ctx_tokens * self._kv_bytes_per_ctx_token + tokens * self._qo_bytes_per_token) / self._attn_bytes_rate
        if isinstance(compute, np.ndarray):
            return np.maximum(compute, memory) + self._attn_overhead
        return max(compute, memory) + self._attn_overhead

    def step_time(self, new_tokens: Sequence[int], context_lens: Sequence[int], num_sampled: int) -> float:
        # Pure-Python loop on purpose: batches are small lists and numpy's per-call cost would dominate.
        tokens = flop_units = ctx_tokens = 0
        for c, k in zip(new_tokens, context_lens):
            tokens += c
            flop_units += c * (2 * k + c + 1)  # causal: query i of the chunk sees k + i keys
            ctx_tokens += k + c
        if tokens == 0:
            return 0.0
        time = self._base_time(tokens, num_sampled) + self._num_layers * self.attention_time(flop_units, ctx_tokens, tokens)
        return time + (self._cpu_step + self._cpu_per_request * len(new_tokens))

    def decode_step_times(self, context_lens: np.ndarray, num_steps: int) -> np.ndarray:
        ctx = np.asarray(context_lens, dtype=np.int64)
        batch = int(ctx.size)
        if batch == 0 or num_steps <= 0:
            return np.zeros(max(num_steps, 0))
        start = int(ctx.sum())
        step = np.arange(num_steps, dtype=np.int64)
        summed = start + step * batch  # Σ context before each step
        flop_units = 2 * summed + 2 * batch  # Σ 1·(2k + 1 + 1)
        ctx_tokens = summed + batch
        attention = self.attention_time(flop_units, ctx_tokens, batch)
        time = self._base_time(batch, batch) + self._num_layers * attention
        return time + (self._cpu_step + self._cpu_per_request * batch)


TIMING_MODELS = {"roofline": RooflineTimingModel}


def build_timing_model(
    hw: HardwareConfig, gpu: GPUSpec, model: ModelSpec, cpu_overhead: bool = True, kind: str = "roofline"
) -> TimingModel:
    """The timing model named ``kind`` for this hardware (only ``roofline`` so far)."""
    try:
        cls = TIMING_MODELS[kind]
    except KeyError:
        raise ProfileError(f"timing model {kind!r} is unknown; valid names: {', '.join(TIMING_MODELS)}") from None
    return cls(hw, gpu, model, cpu_overhead=cpu_overhead)


def swap_time(gpu: GPUSpec, num_bytes: float, efficiency: float = 0.8) -> float:
    """Seconds to move ``num_bytes`` of KV cache between GPU and host memory over PCIe.

    Pinned-memory copies reach ~80% of the PCIe link's theoretical rate [R]; override ``efficiency`` if
    measured otherwise.
    """
    return num_bytes / (gpu.pcie_bandwidth * efficiency)
