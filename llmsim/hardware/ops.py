"""Roofline cost of each operator of a transformer layer on one GPU.

Every operator is costed the same way (REFERENCE.md section 3):

    time = max(FLOPs / (peak FLOP/s × mfu), bytes moved / (HBM bandwidth × mbu)) + fixed kernel overhead

``mfu``/``mbu`` are the achieved fractions of peak of that operator class, fitted per GPU on measured
operator timings (``llmsim.hardware.calibration``). Shapes are per tensor-parallel rank: TP splits the
heads of attention and the intermediate width of the MLP, so each rank does 1/tp of the work on the same
number of tokens. These functions are shared by the timing model and by ``llmsim calibrate check``, so the
calibration measures exactly what the simulator uses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmsim.hardware.collectives import all_to_all_time, allreduce_time, link_bandwidth, send_recv_time  # noqa: F401 (re-exported)
from llmsim.hardware.specs import Efficiency, GPUSpec, dtype_bytes
from llmsim.hardware.model_spec import ModelSpec


# Marlin-style weight-only GEMMs (vLLM's kernels for AWQ/GPTQ, fp8 on Ampere, MXFP4 on Hopper) tile the
# token dimension in blocks of 16 rows (IST-DASLab Marlin: "m-blocks of 16").
WEIGHT_ONLY_TOKEN_TILE = 16


@dataclass(frozen=True)
class Roofline:
    """Peaks and efficiencies of one GPU, in the units the op formulas use."""

    peak_flops: float
    hbm_bandwidth: float
    eff: Efficiency

    @classmethod
    def of(cls, gpu: GPUSpec, weight_dtype: str = "bf16") -> "Roofline":
        """The roofline of GEMMs on weights of ``weight_dtype``: its peak, and for weight-only kernels (Marlin,
        AWQ/GPTQ, MXFP4 on Hopper) row tiles of WEIGHT_ONLY_TOKEN_TILE: they are built for small decode
        batches, so a decode step does not pay the compute of a 128-row tile on dequantized weights; their
        dequantizing main loop reaches ``weight_only_gemm_efficiency`` of a bf16 GEMM's compute efficiency."""
        eff = gpu.efficiency
        if gpu.runs_weight_only(weight_dtype):
            eff = replace(eff, linear_token_tile=min(eff.linear_token_tile, WEIGHT_ONLY_TOKEN_TILE),
                          linear_mfu=eff.linear_mfu * eff.weight_only_gemm_efficiency)
        return cls(gpu.peak_flops_for(weight_dtype), gpu.hbm_bandwidth, eff)

    def linear(self, tokens: int, in_features: float, out_features: float, weight_b: float, act_b: float) -> float:
        """A GEMM ``[tokens × in] @ [in × out]``: reads the weight once, reads/writes the activations.

        Few tokens: bandwidth-bound (the weight read). Many: compute-bound at ``linear_mfu`` of peak, reached
        only once the output tiles (``⌈M/tile⌉·⌈N/128⌉``) fill the GPU: efficiency ``mfu·T/(T + half)``.
        """
        e = self.eff
        tile = e.linear_token_tile
        row_tiles = -(-tokens // tile)
        flops = 2.0 * row_tiles * tile * in_features * out_features
        bytes_moved = in_features * out_features * weight_b + tokens * (in_features + out_features) * act_b
        mfu = e.linear_mfu
        if e.linear_half_tiles:
            tiles = row_tiles * -(-out_features // 128)
            mfu = mfu * tiles / (tiles + e.linear_half_tiles)
        return max(flops / (self.peak_flops * mfu), bytes_moved / (self.hbm_bandwidth * e.linear_mbu)) + e.linear_overhead_s

    def elementwise(self, bytes_moved: float) -> float:
        """A memory-bound kernel (norm, activation, rotary embedding, residual add)."""
        return bytes_moved / (self.hbm_bandwidth * self.eff.elementwise_mbu) + self.eff.elementwise_overhead_s

    def attention(self, flops: float, bytes_moved: float) -> float:
        """One attention kernel over a mixed batch (prefill chunks and decodes in one varlen launch)."""
        e = self.eff
        return max(flops / (self.peak_flops * e.attn_prefill_mfu), bytes_moved / (self.hbm_bandwidth * e.attn_decode_mbu)) + (
            e.attn_overhead_s
        )


@dataclass(frozen=True)
class LayerShape:
    """Per-TP-rank widths of one layer's operators (what the GEMMs see on one GPU)."""

    hidden: int
    qkv_out: float  # QKV projection output width on one rank
    attn_out_in: float  # output projection input width (heads × v dim) on one rank
    mlp_up_out: float  # gate+up (gated) or up width on one rank
    mlp_down_in: float
    gated: bool
    rope_width: float  # q+k rotary width on one rank
    heads_per_rank: float
    kv_heads_per_rank: float

    @classmethod
    def of(cls, model: ModelSpec, tp: int, intermediate: int | None = None) -> "LayerShape":
        inter = model.intermediate_size if intermediate is None else intermediate
        heads = model.num_heads / tp
        kv_heads = max(1, model.num_kv_heads // tp)
        d = model.head_dim
        if model.uses_mla:
            qk = model.qk_nope_head_dim + model.qk_rope_head_dim
            qkv_out = heads * qk + model.kv_lora_rank + model.qk_rope_head_dim
            attn_out_in = heads * model.v_head_dim
        else:
            qkv_out = (heads + 2 * kv_heads) * d
            attn_out_in = heads * d
        return cls(
            hidden=model.hidden_size,
            qkv_out=qkv_out,
            attn_out_in=attn_out_in,
            mlp_up_out=(2 if model.gated_mlp else 1) * inter / tp,
            mlp_down_in=inter / tp,
            gated=model.gated_mlp,
            rope_width=(heads + kv_heads) * d,
            heads_per_rank=heads,
            kv_heads_per_rank=kv_heads,
        )


def layer_op_times(roof: Roofline, shape: LayerShape, tokens: int, weight_b: float, act_b: float) -> dict[str, float]:
    """Seconds of each non-attention operator of one dense layer for ``tokens`` tokens on one rank.

    Keys follow Vidur's profiling names so the calibration compares like with like.
    """
    h = shape.hidden
    act_in = shape.mlp_up_out  # activation reads gate+up, writes half of it when gated
    act_bytes = tokens * (act_in + (shape.mlp_down_in if shape.gated else shape.mlp_up_out)) * act_b
    return {
        "input_layernorm": roof.elementwise(2.0 * tokens * h * act_b),
        "attn_pre_proj": roof.linear(tokens, h, shape.qkv_out, weight_b, act_b),
        "attn_rope": roof.elementwise(2.0 * tokens * shape.rope_width * act_b),
        "attn_post_proj": roof.linear(tokens, shape.attn_out_in, h, weight_b, act_b),
        "post_attention_layernorm": roof.elementwise(2.0 * tokens * h * act_b),
        "mlp_up_proj": roof.linear(tokens, h, shape.mlp_up_out, weight_b, act_b),
        "mlp_act": roof.elementwise(act_bytes),
        "mlp_down_proj": roof.linear(tokens, shape.mlp_down_in, h, weight_b, act_b),
        "add": roof.elementwise(3.0 * tokens * h * act_b),
    }


def act_bytes_of(model: ModelSpec) -> float:
    """Activations run in the model's compute dtype (bf16/fp16) whatever the weight precision."""
    return dtype_bytes(model.dtype) if model.dtype in ("fp16", "bf16", "fp32") else 2.0
