"""Placeholder: a published deployment (GPU, model, quantization as free text) → llmsim profiles.

(Replaced by the coverage work; kept minimal here so validation can run meanwhile.)
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.errors import ProfileError
from llmsim.hardware.profiles import load_gpu, load_model


@dataclass(frozen=True)
class ResolvedDeployment:
    gpu: str
    model: str
    weight_dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    note: str = ""


def resolve_deployment(gpu: str, model: str, quantization: str) -> ResolvedDeployment:
    gpu_name = gpu.split()[0]
    model_name = model.split()[0]
    gpu_spec = load_gpu(gpu_name)
    model_spec = load_model(model_name)
    text = quantization.lower()
    weight = "fp8" if "fp8" in text and "kv" not in text.split("fp8")[1][:10] else "auto"
    if "awq" in text or "int4" in text or "mxfp4" in text:
        raise ProfileError(f"quantization {quantization!r} is not modelled")
    kv = "fp8" if "fp8 kv" in text or "fp8-kv" in text or "fp8 e4m3 kv" in text else "auto"
    return ResolvedDeployment(gpu_spec.name, model_spec.name, weight, kv)
