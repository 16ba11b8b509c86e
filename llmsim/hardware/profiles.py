"""Load GPU and model profiles by name or from a user's file.

Profiles live in ``hardware_profiles/{gpus,models}/*.yaml`` at the top of a source checkout, and inside the
installed package as ``llmsim/hardware_profiles`` (the wheel force-includes the folder). A name is matched
case-insensitively against each profile's ``name`` and ``aliases``; anything that looks like a path
(``.yaml``, ``.yml``, ``.json`` or an existing file) is read directly, so ``hardware.gpu: ./my_gpu.yaml``
and ``hardware.model: ./config.json`` (a Hugging Face config) both work.
"""

from __future__ import annotations

import copy

from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmsim.errors import ProfileError
from llmsim.hardware.specs import GIB, DTYPE_BYTES, Efficiency, GPUSpec, ModelSpec

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def profiles_dir() -> Path:
    """The folder holding ``gpus/`` and ``models/``: the installed copy, else the checkout's top level."""
    for candidate in (_PACKAGE_DIR / "hardware_profiles", _PACKAGE_DIR.parent / "hardware_profiles"):
        if (candidate / "gpus").is_dir():
            return candidate
    raise FileNotFoundError(f"hardware_profiles not found next to {_PACKAGE_DIR}")


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
    cpu_step_overhead_ms: float = Field(Efficiency.cpu_step_overhead_s * 1e3, ge=0)
    cpu_per_request_overhead_us: float = Field(Efficiency.cpu_per_request_overhead_s * 1e6, ge=0)
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


class GPUYAML(_Strict):
    name: str
    aliases: list[str] = []
    description: str = ""
    peak_bf16_tflops: float = Field(gt=0)
    peak_fp8_tflops: Optional[float] = Field(None, gt=0)
    peak_int8_tops: Optional[float] = Field(None, gt=0)
    memory_gib: float = Field(gt=0, description="memory as the driver reports it")
    hbm_bandwidth_gbps: float = Field(gt=0)
    interconnect: str = "PCIe"
    interconnect_bandwidth_gbps: float = Field(gt=0, description="per direction, per GPU")
    pcie_bandwidth_gbps: float = Field(gt=0, description="host link, per direction")
    interconnect_group_size: int = Field(8, ge=1, description="GPUs joined at interconnect speed")
    gpus_per_node: int = Field(8, ge=1)
    internode_bandwidth_gbps: float = Field(25.0, gt=0, description="per GPU, to other nodes")
    cost_per_hour_usd: float = Field(ge=0)
    activation_reserve_gib: float = Field(5.0, ge=0)
    efficiency: EfficiencyYAML = EfficiencyYAML()
    sources: dict[str, str] = {}

    def to_spec(self, source_file: str) -> GPUSpec:
        return GPUSpec(
            name=self.name,
            aliases=tuple(self.aliases),
            peak_flops=self.peak_bf16_tflops * 1e12,
            peak_fp8_flops=self.peak_fp8_tflops * 1e12 if self.peak_fp8_tflops else None,
            peak_int8_ops=self.peak_int8_tops * 1e12 if self.peak_int8_tops else None,
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
            source_file=source_file,
        )


def _one_line(error: ValidationError, path: Path) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{path}: field '{where}': {first['msg']}"


_PARSED: dict[tuple[str, int, int], dict[str, Any]] = {}


def _read_mapping(path: Path) -> dict[str, Any]:
    """The profile file's mapping. Parsed once per file version: sweeps build many runs from the same files."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc.strerror})") from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    cached = _PARSED.get(key)
    if cached is None:
        cached = _PARSED[key] = _parse_mapping(path)
    return copy.deepcopy(cached)


def _parse_mapping(path: Path) -> dict[str, Any]:
    from llmsim.errors import UserError
    from llmsim.inputs import read_yaml

    try:
        data = read_yaml(path, "profile")  # JSON is a subset of YAML, so config.json loads the same way
    except UserError as exc:
        raise ProfileError(str(exc)) from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping of fields at the top level")
    return data


def gpu_from_file(path: Path) -> GPUSpec:
    try:
        return GPUYAML.model_validate(_read_mapping(path)).to_spec(str(path))
    except ValidationError as exc:
        raise ProfileError(_one_line(exc, path)) from None


# ---------------------------------------------------------------------------------------------------
# Model profiles: {name, aliases, sources, config: <Hugging Face config.json fields>} or a bare config.json
# ---------------------------------------------------------------------------------------------------
_MODEL_TOP_KEYS = {"name", "aliases", "sources", "notes", "config"}
_NOT_GATED = {"PhiForCausalLM", "GPT2LMHeadModel", "GPTNeoXForCausalLM", "OPTForCausalLM", "FalconForCausalLM"}
_QKV_BIAS = {"Qwen2ForCausalLM", "Qwen2MoeForCausalLM", "QWenLMHeadModel", "PhiForCausalLM"}


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


def model_from_hf_config(cfg: dict[str, Any], name: str, path: Path, aliases: tuple[str, ...] = ()) -> ModelSpec:
    """Build a ModelSpec from Hugging Face ``config.json`` fields (Llama, Mistral, Qwen, Mixtral, DeepSeek, Phi)."""
    arch = (cfg.get("architectures") or [""])[0]
    hidden = _field(cfg, path, "hidden_size", "n_embd", "d_model")
    heads = _field(cfg, path, "num_attention_heads", "n_head")
    intermediate = _field(cfg, path, "intermediate_size", "ffn_hidden_size", "n_inner", default=4 * hidden)
    if arch == "QWenLMHeadModel":  # Qwen (v1) stores twice the per-projection MLP width
        intermediate //= 2
    gated = cfg.get("gated_mlp", arch not in _NOT_GATED)
    qkv_bias = bool(cfg.get("attention_bias", cfg.get("qkv_bias", cfg.get("bias", arch in _QKV_BIAS))))
    return ModelSpec(
        name=name,
        aliases=aliases,
        hidden_size=hidden,
        num_layers=_field(cfg, path, "num_hidden_layers", "n_layer", "num_layers"),
        num_heads=heads,
        num_kv_heads=_field(cfg, path, "num_key_value_heads", "multi_query_group_num", default=heads),
        intermediate_size=intermediate,
        vocab_size=_field(cfg, path, "vocab_size", "padded_vocab_size"),
        dtype=_dtype(cfg, path),
        max_position_embeddings=_field(cfg, path, "max_position_embeddings", "seq_length", default=4096),
        tie_word_embeddings=_field(cfg, path, "tie_word_embeddings", kind=bool, default=False),
        qkv_bias=qkv_bias,
        gated_mlp=bool(gated),
        head_dim_override=cfg.get("head_dim") or cfg.get("kv_channels"),
        num_experts=_field(cfg, path, "num_local_experts", "n_routed_experts", "num_experts", default=0),
        experts_per_token=_field(cfg, path, "num_experts_per_tok", default=0),
        moe_intermediate_size=cfg.get("moe_intermediate_size"),
        num_shared_experts=_field(cfg, path, "n_shared_experts", default=0),
        first_dense_layers=_field(cfg, path, "first_k_dense_replace", default=0),
        kv_lora_rank=_field(cfg, path, "kv_lora_rank", default=0),
        q_lora_rank=_field(cfg, path, "q_lora_rank", default=0),
        qk_rope_head_dim=_field(cfg, path, "qk_rope_head_dim", default=0),
        qk_nope_head_dim=_field(cfg, path, "qk_nope_head_dim", default=0),
        v_head_dim=_field(cfg, path, "v_head_dim", default=0),
        parallel_attn_mlp=arch == "PhiForCausalLM",
        source_file=str(path),
    )


def model_from_file(path: Path) -> ModelSpec:
    data = _read_mapping(path)
    if "config" not in data:  # a bare Hugging Face config.json
        name = str(data.get("_name_or_path") or path.parent.name if path.name == "config.json" else path.stem)
        return model_from_hf_config(data, name.split("/")[-1] or path.stem, path)
    unknown = sorted(set(data) - _MODEL_TOP_KEYS)
    if unknown:
        raise ProfileError(f"{path}: field '{unknown[0]}' is not allowed; expected {sorted(_MODEL_TOP_KEYS)}")
    if not isinstance(data["config"], dict):
        raise ProfileError(f"{path}: field 'config': expected a mapping of Hugging Face config fields")
    name = str(data.get("name") or path.stem)
    return model_from_hf_config(data["config"], name, path, tuple(data.get("aliases") or ()))


# ---------------------------------------------------------------------------------------------------
# Lookup by name
# ---------------------------------------------------------------------------------------------------
def _looks_like_path(name_or_path: str) -> bool:
    return name_or_path.endswith((".yaml", ".yml", ".json"))


def _index(kind: str) -> dict[str, Path]:
    """Lower-cased name and aliases of every bundled profile of a kind -> its file."""
    index: dict[str, Path] = {}
    for path in sorted((profiles_dir() / kind).glob("*.yaml")):
        data = _read_mapping(path)
        for key in [data.get("name", path.stem), *(data.get("aliases") or [])]:
            index[str(key).lower()] = path
    return index


def _bundled_names(kind: str) -> list[str]:
    return [str(_read_mapping(p).get("name", p.stem)) for p in sorted((profiles_dir() / kind).glob("*.yaml"))]


def _resolve(name_or_path: str, kind: str, field_name: str) -> Path:
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    path = _index(kind).get(name_or_path.lower())  # names may contain '/' (Hugging Face ids)
    if path is not None:
        return path
    if _looks_like_path(name_or_path):
        raise ProfileError(f"{field_name}: profile file {name_or_path} does not exist")
    raise ProfileError(
        f"{field_name}: unknown {kind[:-1]} profile {name_or_path!r}; valid names: "
        f"{', '.join(_bundled_names(kind))} (or a path to a profile file)"
    )


def load_gpu(name_or_path: str) -> GPUSpec:
    """GPU profile by name/alias (``A100-80GB``, ``H100``) or from a YAML path."""
    return gpu_from_file(_resolve(name_or_path, "gpus", "hardware.gpu"))


def load_model(name_or_path: str) -> ModelSpec:
    """Model profile by name/alias (``Llama-2-7B``) or from a profile YAML / Hugging Face config.json path."""
    return model_from_file(_resolve(name_or_path, "models", "hardware.model"))


def list_gpus() -> list[str]:
    return _bundled_names("gpus")


def list_models() -> list[str]:
    return _bundled_names("models")


__all__ = ["load_gpu", "load_model", "list_gpus", "list_models", "profiles_dir", "model_from_hf_config"]
