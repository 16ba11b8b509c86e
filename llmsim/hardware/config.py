"""The `hardware:` section: which GPU, which model, how it is parallelised."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from llmsim.configbase import StrictModel

# fp8 = W8A8 (fp8 tensor cores where present); int8/int4 = weight-only (W8A16/W4A16, AWQ/GPTQ); w8a8 = int8
# weights and activations (int8 tensor cores); mxfp4 = OCP microscaling 4-bit (gpt-oss experts). fp8_e4m3/fp8_e5m2
# are vLLM's kv-cache-dtype spellings of fp8.
Precision = Literal["auto", "fp16", "bf16", "fp8", "fp8_e4m3", "fp8_e5m2", "int8", "int4", "mxfp4"]
WeightPrecision = Literal["auto", "fp16", "bf16", "fp8", "fp8_e4m3", "fp8_e5m2", "int8", "w8a8", "int4", "mxfp4",
                          "nvfp4"]


class HardwareConfig(StrictModel):
    gpu: str = Field("A100-80GB", description="GPU profile name, or a path to a GPU profile YAML")
    model: str = Field("Llama-2-7B", description="model profile name, or a path to a model profile YAML / HF config.json")
    tp: int = Field(1, ge=1, description="tensor-parallel degree (GPUs per pipeline stage)")
    pp: int = Field(1, ge=1, description="pipeline-parallel degree (stages)")
    ep: int = Field(
        1, ge=1, description="expert-parallel degree of MoE layers: experts split over ep of each stage's tp GPUs (divides tp)"
    )
    weight_dtype: WeightPrecision = Field(
        "auto", description="precision of the linear layers; auto = the checkpoint's (its quantization, else its dtype)"
    )
    expert_weight_dtype: WeightPrecision = Field(
        "auto", description="precision of routed MoE experts; auto = the checkpoint's expert quantization, else weight_dtype"
    )
    kv_cache_dtype: Precision = Field("auto", description="KV-cache precision; auto = the model's dtype")
    activation_reserve_gib: Optional[float] = Field(
        None, ge=0, description="memory kept for activations and non-torch allocations per GPU; computed from the model and the scheduler's limits when omitted"
    )
