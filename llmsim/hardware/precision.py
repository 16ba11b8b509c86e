"""Number formats of weights and KV caches: what a value costs in memory and which tensor-core peak runs it.

A quantized checkpoint stores each weight in fewer bits plus *scales* (and zero points) shared by a group of
weights, and its GEMM kernels run in one of two ways:

* **weight and activation quantized** (W8A8 fp8): the tensor cores multiply fp8 by fp8, so the GEMM runs at
  the GPU's fp8 peak; on a GPU without fp8 tensor cores (Ampere) vLLM falls back to a weight-only kernel
  (Marlin) that dequantizes to bf16, which saves bandwidth but keeps the bf16 peak;
* **weight-only** (AWQ/GPTQ int4 = W4A16, MXFP4 on Hopper): weights are dequantized to bf16 inside the
  kernel, so compute runs at the bf16 peak and only the bytes read shrink. MXFP4 runs natively (fp4 tensor
  cores) where the GPU has them (Blackwell).

Embeddings, the LM head and norms stay in the model's own dtype in every scheme vLLM runs (AWQ, GPTQ, FP8,
MXFP4 all quantize linear layers only), and a checkpoint may quantize only its routed experts (gpt-oss:
MXFP4 experts, bf16 attention). :class:`llmsim.hardware.model_spec.ModelSpec` therefore carries a precision per
component; this module only says what one value of each format costs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class NumberFormat:
    """One storage format: element size, per-weight share of its scales, and the GEMM peak it runs at."""

    element_bytes: float
    scale_bytes: float = 0.0  # quantization scales/zero points per weight (0 for KV caches and plain floats)
    compute: str = "bf16"  # "bf16", "fp8" or "fp4": which tensor-core peak a GEMM on these weights reaches


# AWQ/GPTQ int4: one fp16 scale + one packed 4-bit zero point per group of 128 weights = 20 bits / 128.
# MXFP4 (OCP microscaling): one e8m0 (8-bit) scale per block of 32 values = 8 bits / 32 -> 4.25 bits/weight.
# fp8 block quantization (128x128 blocks, one fp32 scale) adds 4 bytes / 16384 weights: negligible.
FORMATS: dict[str, NumberFormat] = {
    "fp32": NumberFormat(4.0, compute="fp32"),
    "fp16": NumberFormat(2.0),
    "bf16": NumberFormat(2.0),
    "fp8": NumberFormat(1.0, compute="fp8"),
    "int8": NumberFormat(1.0),  # weight-only int8 (W8A16): dequantized to bf16 in the kernel
    "w8a8": NumberFormat(1.0, compute="int8"),  # int8 weights and activations: int8 tensor-core GEMMs (CUTLASS)
    "int4": NumberFormat(0.5, scale_bytes=20 / 128 / 8),
    "mxfp4": NumberFormat(0.5, scale_bytes=8 / 32 / 8, compute="fp4"),
    # NVFP4: one e4m3 (8-bit) scale per block of 16 values (the per-tensor fp32 scale is negligible) -> 4.5 bits.
    "nvfp4": NumberFormat(0.5, scale_bytes=8 / 16 / 8, compute="fp4"),
}

# Spellings of the same formats (Hugging Face torch_dtype names, vLLM's kv-cache-dtype names).
_SYNONYMS = {
    "float32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "fp8_e4m3": "fp8",
    "fp8_e5m2": "fp8",
    "float8_e4m3fn": "fp8",
    "w4a16": "int4",
    "w8a16": "int8",
    "awq": "int4",
    "gptq": "int4",
}


def canonical(name: str) -> str:
    """The canonical format name of a spelling (``bfloat16`` -> ``bf16``); ValueError if unknown."""
    key = name.lower().replace("torch.", "")
    key = _SYNONYMS.get(key, key)
    if key not in FORMATS:
        raise ValueError(f"unknown precision {name!r}; expected one of {sorted(FORMATS)}")
    return key


def element_bytes(name: str) -> float:
    """Bytes of one stored value (a KV-cache element, or a weight without its scales)."""
    return FORMATS[canonical(name)].element_bytes


def weight_bytes_per_param(name: str) -> float:
    """Bytes one weight costs in a checkpoint of this format, its share of the quantization scales included."""
    fmt = FORMATS[canonical(name)]
    return fmt.element_bytes + fmt.scale_bytes


#: The alignment vLLM pads MXFP4 routed experts to, (hidden size, each rank's intermediate size), per kernel
#: family (``Mxfp4MoEMethod.create_weights`` in vllm/model_executor/layers/quantization/mxfp4.py, 0.10-0.11; the
#: 0.32 oracle keeps these for Marlin, Triton and ROCm). Marlin, which GPUs before Hopper run, needs n % 256 and
#: k % 128 in both expert GEMMs; Hopper's Triton kernels pad the intermediate size to 64 only; Blackwell's
#: FlashInfer kernels 256 and 128; ROCm 256 and 256. Padding is memory the weights take and bytes the kernels
#: stream (gpt-oss-120b, hidden 2880, loads 65.97 GiB through Marlin against 60.7 GiB unpadded: vLLM issue 23278).
MXFP4_MOE_ALIGNMENT: dict[str, tuple[int, int]] = {
    "marlin": (256, 128),
    "triton": (1, 64),
    "flashinfer": (256, 128),
    "rocm": (256, 256),
    "none": (1, 1),
}


def mxfp4_expert_dims(kernel: str, hidden: int, intermediate_per_rank: float) -> tuple[int, int]:
    """(hidden size, per-rank intermediate size) of MXFP4 experts as ``kernel`` lays them out (padded)."""
    hidden_align, inter_align = MXFP4_MOE_ALIGNMENT[kernel]
    inter = math.ceil(intermediate_per_rank)
    return -(-hidden // hidden_align) * hidden_align, -(-inter // inter_align) * inter_align


# ---------------------------------------------------------------------------------------------------
# What a checkpoint is quantized to: its config.json `quantization_config`, or its name's suffix
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointQuant:
    """Precision of a checkpoint's linear layers (None = the model dtype) and of its routed experts."""

    weights: Optional[str] = None
    experts: Optional[str] = None


def _bits_format(bits: Any, kind: str) -> Optional[str]:
    if kind == "float" and bits == 8:
        return "fp8"
    if bits == 8:
        return "int8"
    if bits == 4:
        return {"mxfp4": "mxfp4", "float": "nvfp4"}.get(kind, "int4")
    return None


def quant_from_config(qcfg: Any) -> CheckpointQuant:
    """Read a Hugging Face ``quantization_config`` block; ValueError naming the method when unsupported.

    ``fp8`` (block or per-tensor), ``awq``/``gptq`` (4 or 8 bits), ``compressed-tensors`` and AMD ``quark``
    (weights of ``num_bits`` 8/4, type float/int) quantize every linear layer; ``mxfp4`` (gpt-oss) quantizes
    the routed experts only: its ``modules_to_not_convert`` keeps attention, router and embeddings in bf16.
    """
    if not isinstance(qcfg, dict):
        return CheckpointQuant()
    method = str(qcfg.get("quant_method", "")).lower()
    if method == "fp8":
        return CheckpointQuant("fp8", "fp8")
    if method == "mxfp4":
        return CheckpointQuant(None, "mxfp4")
    if method in ("awq", "gptq", "awq_marlin", "gptq_marlin"):
        fmt = _bits_format(qcfg.get("bits", 4), "int")
        if fmt is None:
            raise ValueError(f"{method} with {qcfg.get('bits')} bits is not modelled (4 or 8 bits are)")
        return CheckpointQuant(fmt, fmt)
    if method == "modelopt":  # NVIDIA ModelOpt: quant_algo FP8 or NVFP4
        algo = str(qcfg.get("quant_algo", "")).upper()
        if algo in ("FP8", "NVFP4"):
            fmt = "fp8" if algo == "FP8" else "nvfp4"
            return CheckpointQuant(fmt, fmt)
        raise ValueError(f"modelopt quant_algo {algo or '(none)'!r} is not modelled (FP8 and NVFP4 are)")
    if method in ("compressed-tensors", "quark"):
        weights = _find_weight_scheme(qcfg)
        if weights is None:
            raise ValueError(f"{method} checkpoint without a readable weight scheme")
        return CheckpointQuant(weights, weights)
    raise ValueError(f"quantization method {method or '(none)'!r} is not modelled (fp8, awq, gptq, mxfp4, modelopt, "
                     "compressed-tensors, quark are)")


def _find_weight_scheme(qcfg: dict) -> Optional[str]:
    """The first ``weights``/``weight`` scheme of compressed-tensors ``config_groups`` or quark's global config."""
    groups = list((qcfg.get("config_groups") or {}).values())
    if "global_quant_config" in qcfg:
        groups.append(qcfg["global_quant_config"])
    for group in groups:
        scheme = group.get("weights") or group.get("weight") if isinstance(group, dict) else None
        if isinstance(scheme, dict):
            dtype = str(scheme.get("dtype", "")).lower()
            if dtype.startswith("fp8"):
                return "fp8"
            fmt = _bits_format(scheme.get("num_bits"), str(scheme.get("type", "int")))
            activations = group.get("input_activations") or {}
            if fmt == "int8" and isinstance(activations, dict) and activations.get("num_bits") == 8 \
                    and str(activations.get("type", "int")) == "int":
                return "w8a8"  # activations quantized too: int8 GEMMs, not a weight-only kernel
            if fmt:
                return fmt
    return None


# Checkpoint names that end in a quantization tag are the base architecture stored at another precision
# (Qwen/Qwen3-8B-AWQ, Qwen/Qwen3-235B-A22B-Instruct-2507-FP8, amd/Llama-3.1-70B-Instruct-FP8-KV).
_SUFFIXES: list[tuple[str, str]] = [
    (r"-fp8-kv", "fp8"),
    (r"-(w8a8-)?fp8(-(dynamic|static|block|blockwise))?", "fp8"),
    (r"-(awq|gptq)(-int4)?", "int4"),
    (r"[-.](quantized\.)?(w4a16|int4|4bit)", "int4"),
    (r"[-.](quantized\.)?w8a8(-int8)?", "w8a8"),  # RedHatAI/…-quantized.w8a8: int8 weights and activations
    (r"-(gptq-)?(int8|w8a16)|[-.]quantized\.w8a16", "int8"),
    (r"-mxfp4", "mxfp4"),
    (r"-(nv)?fp4", "nvfp4"),  # nvidia/Llama-3.3-70B-Instruct-FP4 (ModelOpt NVFP4)
    (r"-(bf16|fp16)", "bf16"),  # a dequantized re-publication (unsloth/gpt-oss-20b-BF16)
]


def split_quant_suffix(name: str) -> tuple[str, Optional[str]]:
    """``("Qwen/Qwen3-8B", "int4")`` for ``"Qwen/Qwen3-8B-AWQ"``; ``(name, None)`` without a known suffix."""
    for pattern, fmt in _SUFFIXES:
        match = re.search(pattern + r"$", name, flags=re.IGNORECASE)
        if match and match.start() > 0:
            return name[: match.start()], fmt
    return name, None


__all__ = [
    "FORMATS",
    "NumberFormat",
    "CheckpointQuant",
    "canonical",
    "element_bytes",
    "weight_bytes_per_param",
    "quant_from_config",
    "split_quant_suffix",
]
