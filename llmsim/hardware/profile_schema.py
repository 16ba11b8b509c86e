"""The GPU profile's YAML schema (``hardware_profiles/gpus/*.yaml``): what each block may hold, validated when a
profile loads, and its conversion to the SI-unit :class:`~llmsim.hardware.specs.GPUSpec` the timing model uses.
Loading and lookup by name live in :mod:`llmsim.hardware.profiles`."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from llmsim.hardware.specs import GIB, APIServerCosts, Efficiency, GPUSpec, PredictionResiduals

# ---------------------------------------------------------------------------------------------------
# GPU profile schema (YAML units: TFLOP/s, GiB, GB/s; GPUSpec converts to SI)
# ---------------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkLayoutYAML(_Strict):
    gpus_per_node: int = Field(ge=1)
    efficiency: float = Field(gt=0, description="achieved node rate as a fraction of one GPU's line rate")
    latency_us: float = Field(ge=0)


class EfficiencyYAML(_Strict):
    linear_mfu: float = Field(Efficiency.linear_mfu, gt=0, le=1)
    linear_mbu: float = Field(Efficiency.linear_mbu, gt=0, le=1)
    linear_overhead_us: float = Field(Efficiency.linear_overhead_s * 1e6, ge=0)
    linear_token_tile: int = Field(Efficiency.linear_token_tile, ge=1)
    elementwise_mbu: float = Field(Efficiency.elementwise_mbu, gt=0, le=1)
    elementwise_overhead_us: float = Field(Efficiency.elementwise_overhead_s * 1e6, ge=0)
    attn_prefill_mfu: float = Field(Efficiency.attn_prefill_mfu, gt=0, le=1)
    attn_prefill_half_tokens: float = Field(Efficiency.attn_prefill_half_tokens, ge=0)
    attn_prefill_context_weight: float = Field(Efficiency.attn_prefill_context_weight, gt=0)
    attn_decode_mbu: float = Field(Efficiency.attn_decode_mbu, gt=0, le=1)
    attn_overhead_us: float = Field(Efficiency.attn_overhead_s * 1e6, ge=0)
    allreduce_bus_efficiency: float = Field(Efficiency.allreduce_bus_efficiency, gt=0, le=1)
    allreduce_latency_us: float = Field(Efficiency.allreduce_latency_s * 1e6, ge=0)
    slow_link_efficiency: float = Field(Efficiency.slow_link_efficiency, gt=0, le=1)
    send_recv_efficiency: float = Field(Efficiency.send_recv_efficiency, gt=0, le=1)
    send_recv_latency_us: float = Field(Efficiency.send_recv_latency_s * 1e6, ge=0)
    network_efficiency: float = Field(Efficiency.network_efficiency, gt=0, le=1)
    network_gpu_scaling: float = Field(Efficiency.network_gpu_scaling, ge=0, le=1)
    network_latency_us: float = Field(Efficiency.network_latency_s * 1e6, ge=0)
    network_send_recv_efficiency: float = Field(Efficiency.network_send_recv_efficiency, gt=0, le=1)
    network_send_recv_latency_us: float = Field(Efficiency.network_send_recv_latency_s * 1e6, ge=0)
    network_burst_mb: float = Field(Efficiency.network_burst_bytes / 1e6, ge=0)
    network_burst_speedup: float = Field(Efficiency.network_burst_speedup, ge=1)
    network_by_gpus: list[NetworkLayoutYAML] = []
    sustained_compute_fraction: float = Field(Efficiency.sustained_compute_fraction, gt=0, le=1)
    sustained_half_tokens: float = Field(Efficiency.sustained_half_tokens, gt=0)
    linear_half_tiles: float = Field(Efficiency.linear_half_tiles, ge=0, le=10000)
    moe_gemm_efficiency: float = Field(Efficiency.moe_gemm_efficiency, gt=0, le=1)
    moe_gemm_bandwidth_efficiency: float = Field(Efficiency.moe_gemm_bandwidth_efficiency, gt=0, le=1)
    weight_only_gemm_efficiency: float = Field(Efficiency.weight_only_gemm_efficiency, gt=0, le=1)
    kernel_launch_us: float = Field(Efficiency.kernel_launch_s * 1e6, ge=0, le=100)
    kernel_gap_us: float = Field(Efficiency.kernel_gap_s * 1e6, ge=0, le=100)
    graph_launch_us: float = Field(Efficiency.graph_launch_s * 1e6, ge=0, le=1000)
    custom_allreduce_latency_us: float = Field(Efficiency.custom_allreduce_latency_s * 1e6, ge=0, le=1000)
    custom_allreduce_max_mb: float = Field(Efficiency.custom_allreduce_max_bytes / 1e6, ge=0)
    cpu_step_overhead_ms: float = Field(Efficiency.cpu_step_overhead_s * 1e3, ge=0, le=100)
    cpu_per_request_overhead_us: float = Field(Efficiency.cpu_per_request_overhead_s * 1e6, ge=0, le=1000)
    cpu_per_token_us: float = Field(Efficiency.cpu_per_token_s * 1e6, ge=0, le=100)
    cpu_per_sampled_token_us: float = Field(Efficiency.cpu_per_sampled_token_s * 1e6, ge=0, le=1000)
    fitted_on: str = Efficiency.fitted_on

    def to_efficiency(self) -> Efficiency:
        values: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if name == "network_by_gpus":
                values[name] = tuple((r["gpus_per_node"], r["efficiency"], r["latency_us"] * 1e-6) for r in value)
            elif name.endswith("_us"):
                values[name[:-3] + "_s"] = value * 1e-6
            elif name.endswith("_ms"):
                values[name[:-3] + "_s"] = value * 1e-3
            elif name.endswith("_mb"):
                values[name[:-3] + "_bytes"] = value * 1e6
            else:
                values[name] = value
        return Efficiency(**values)


class APIServerYAML(_Strict):
    """Per-request and per-token CPU costs of vLLM's API server on this machine (see APIServerCosts)."""

    request_overhead_ms: float = Field(APIServerCosts.request_overhead_s * 1e3, ge=0, le=1000)
    tokenize_us_per_token: float = Field(APIServerCosts.tokenize_s_per_token * 1e6, ge=0, le=1000)
    stream_us_per_token: float = Field(APIServerCosts.stream_s_per_token * 1e6, ge=0, le=10000)

    def to_costs(self) -> APIServerCosts:
        return APIServerCosts(self.request_overhead_ms * 1e-3, self.tokenize_us_per_token * 1e-6,
                              self.stream_us_per_token * 1e-6)


class ResidualYAML(_Strict):
    n: int = Field(ge=1)
    q05: float
    q95: float


class ValidationYAML(_Strict):
    """Written by ``llmsim calibrate fit-e2e``: out-of-sample log(predicted/measured) quantiles per metric class."""

    fitted_on: str = ""
    residuals: dict[Literal["throughput", "ttft", "tpot", "e2el"], ResidualYAML] = {}
    # the fitted parameters' values before the end-to-end fit (the kernel fits'): a refit starts from them
    prior: dict[str, float] = {}


class GPUYAML(_Strict):
    name: str
    aliases: list[str] = []
    description: str = ""
    peak_bf16_tflops: float = Field(gt=0)
    peak_fp8_tflops: Optional[float] = Field(None, gt=0)
    peak_int8_tops: Optional[float] = Field(None, gt=0)
    peak_fp4_tflops: Optional[float] = Field(None, gt=0)
    mxfp4_moe_kernel: Literal["marlin", "triton", "flashinfer", "rocm", "none"] = Field(
        "marlin", description="vLLM's kernel for MXFP4 experts (llmsim.hardware.precision.MXFP4_MOE_ALIGNMENT)")
    memory_gib: float = Field(gt=0, description="memory as the driver reports it")
    hbm_bandwidth_gbps: float = Field(gt=0)
    interconnect: str = "PCIe"
    interconnect_bandwidth_gbps: float = Field(gt=0, description="per direction, per GPU")
    pcie_bandwidth_gbps: float = Field(gt=0, description="host link, per direction")
    interconnect_group_size: int = Field(8, ge=1, description="GPUs joined at interconnect speed")
    gpus_per_node: int = Field(8, ge=1)
    internode_bandwidth_gbps: float = Field(25.0, gt=0, description="per GPU, to other nodes")
    cost_per_hour_usd: float = Field(ge=0)
    activation_reserve_gib: Optional[float] = Field(None, ge=0)
    efficiency: EfficiencyYAML = EfficiencyYAML()
    api_server: APIServerYAML = APIServerYAML()
    validation: Optional[ValidationYAML] = None
    # A profile with no end-to-end measurements of its own takes the end-to-end fitted values (the keys of
    # that profile's validation.prior) of the named fitted profile (gpu_from_file).
    end_to_end_from: Optional[str] = None
    sources: dict[str, str] = {}

    def to_spec(self, source_file: str) -> GPUSpec:
        return GPUSpec(
            name=self.name,
            aliases=tuple(self.aliases),
            peak_flops=self.peak_bf16_tflops * 1e12,
            peak_fp8_flops=self.peak_fp8_tflops * 1e12 if self.peak_fp8_tflops else None,
            peak_int8_ops=self.peak_int8_tops * 1e12 if self.peak_int8_tops else None,
            peak_fp4_flops=self.peak_fp4_tflops * 1e12 if self.peak_fp4_tflops else None,
            mxfp4_moe_kernel=self.mxfp4_moe_kernel,
            memory_bytes=self.memory_gib * GIB,
            hbm_bandwidth=self.hbm_bandwidth_gbps * 1e9,
            interconnect=self.interconnect,
            interconnect_bandwidth=self.interconnect_bandwidth_gbps * 1e9,
            pcie_bandwidth=self.pcie_bandwidth_gbps * 1e9,
            interconnect_group_size=self.interconnect_group_size,
            gpus_per_node=self.gpus_per_node,
            internode_bandwidth=self.internode_bandwidth_gbps * 1e9,
            cost_per_hour_usd=self.cost_per_hour_usd,
            activation_reserve_gib=self.activation_reserve_gib,
            efficiency=self.efficiency.to_efficiency(),
            api_server=self.api_server.to_costs(),
            residuals=PredictionResiduals(
                tuple((c, r.n, r.q05, r.q95) for c, r in self.validation.residuals.items()),
                self.validation.fitted_on) if self.validation else PredictionResiduals(
                fitted_on=(f"uncalibrated on this GPU: ×/÷ 1.65 (end-to-end values borrowed from the "
                           f"{self.end_to_end_from} fit)") if self.end_to_end_from else ""),
            source_file=source_file,
        )
