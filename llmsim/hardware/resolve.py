"""From how a published benchmark names its setup to llmsim profiles: GPU, model and precisions.

Benchmark reports spell hardware and models loosely: ``"A100-80GB SXM"``, ``"H200-141GB"``,
``"MI300X-192GB (750W)"``, ``"A100 SXM (80GB assumed)"``, ``"Qwen/Qwen3-8B-AWQ (assumed)"``, and describe the
precision in prose: ``"MXFP4 MoE weights (native), BF16 activations/attention"``, ``"BF16 weights, FP8 E4M3
KV cache"``. :func:`resolve_deployment` maps such a triple onto bundled profiles with general rules (no
per-benchmark table), or raises :class:`llmsim.errors.ProfileError` with the one-sentence reason a setup
cannot be modelled (unknown accelerator, unsupported quantization, unsupported architecture).

GPU names: parenthesised remarks are dropped (a memory size inside one, "80GB assumed", is kept), words
such as NPU/GPU are dropped, then the profile is looked up as ``<name>-<memory>-<form factor>``,
``<name>-<memory>``, ``<name>-<form factor>`` and ``<name>``. A GPU named without its memory size resolves to
the profile its bare name is an alias of (``A100`` -> A100-80GB) and the note says so.

Model names: parenthesised remarks are dropped and :func:`llmsim.hardware.profiles.load_model` applies its
quantization-suffix and organisation rules (``amd/Llama-3.1-70B-Instruct-FP8-KV`` -> Llama-3.1-70B at fp8).

Precision text: split into clauses (``,``, ``+``, ``;``); a clause mentioning the KV cache sets the KV
precision, one mentioning MoE/experts sets the expert precision, any other sets the linear layers. Without
a stated precision the checkpoint's own is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from llmsim.errors import ProfileError
from llmsim.hardware.config import HardwareConfig
from llmsim.hardware.profiles import load_gpu, load_model
from llmsim.hardware.model_spec import ModelSpec


@dataclass(frozen=True)
class ResolvedDeployment:
    """Profiles and ``hardware.*`` precisions for one benchmarked setup, and what was assumed to get them."""

    gpu: str  # GPU profile name
    model: str  # model profile name
    weight_dtype: str  # hardware.weight_dtype ("auto" = the checkpoint's)
    kv_cache_dtype: str  # hardware.kv_cache_dtype
    expert_weight_dtype: str = "auto"  # hardware.expert_weight_dtype
    model_id: str = ""  # the checkpoint name as load_model resolves it (carries a -FP8/-AWQ suffix)
    note: str = ""  # assumptions made ("memory size not stated: ...")

    def hardware(self, tp: int = 1, pp: int = 1, ep: int = 1) -> HardwareConfig:
        """The ``hardware:`` config section of this deployment at a parallelism."""
        return HardwareConfig(
            gpu=self.gpu,
            model=self.model_id or self.model,
            tp=tp,
            pp=pp,
            ep=ep,
            weight_dtype=self.weight_dtype,
            expert_weight_dtype=self.expert_weight_dtype,
            kv_cache_dtype=self.kv_cache_dtype,
        )


_REMARK = re.compile(r"\([^)]*\)")
_MEMORY = re.compile(r"(\d+)\s*GB", re.IGNORECASE)
_FORM = re.compile(r"\b(SXM\d?|PCIe|NVL|OAM)\b", re.IGNORECASE)
_NOISE = re.compile(r"\b(NPU|GPU|Accelerator|NVIDIA|AMD|Huawei|GeForce|Instinct|Tesla|HBM\d?e?|GDDR\dX?)\b", re.IGNORECASE)
_COUNT = re.compile(r"^\s*\d+\s*[x×]\s*", re.IGNORECASE)  # "8x H200": a node, not a GPU name


def _gpu_candidates(text: str) -> tuple[list[str], Optional[str], Optional[str]]:
    """Profile names to try for a GPU spelling, most specific first, and the memory size and form factor
    found (if any)."""
    text = _COUNT.sub("", text)
    memory = _MEMORY.search(text)  # anywhere, remarks included ("80GB assumed")
    base = _REMARK.sub(" ", text)
    form = _FORM.search(base)
    core = _NOISE.sub(" ", _FORM.sub(" ", _MEMORY.sub(" ", base)))
    core = "-".join(core.replace("-", " ").split())
    mem = f"{memory.group(1)}GB" if memory else None
    ff = form.group(1) if form else None
    whole = "-".join(_NOISE.sub(" ", base).replace("-", " ").split())
    names = [whole]
    for parts in ((core, mem, ff), (core, mem), (core, ff), (core,)):
        if all(parts):
            names.append("-".join(parts))
    return list(dict.fromkeys(n for n in names if n)), mem, ff


def resolve_gpu(text: str) -> tuple[str, str]:
    """(GPU profile name, note) for a free-text accelerator name; ProfileError when no profile matches."""
    candidates, memory, form = _gpu_candidates(text)
    for index, name in enumerate(candidates):
        try:
            spec = load_gpu(name)
        except ProfileError:
            continue
        notes = []
        if memory is None:
            notes.append(f"GPU memory size not stated: {spec.name} ({spec.memory_gib:.0f} GiB) assumed")
        elif re.search(r"assum", text, re.IGNORECASE):
            notes.append(f"GPU memory size assumed by the source ({memory}): {spec.name}")
        if form and index > 0 and form.lower() not in name.lower():
            notes.append(f"no {form} profile: {spec.name} used")
        return spec.name, "; ".join(notes)
    raise ProfileError(f"GPU {text!r} matches no GPU profile (tried {', '.join(candidates)}); add one with 'llmsim profiles add-gpu'")


def resolve_model(text: str) -> tuple[ModelSpec, str, str]:
    """(model spec, checkpoint id used, note) for a free-text model name; ProfileError with the reason."""
    remark = " ".join(_REMARK.findall(text)).strip("() ")
    name = _REMARK.sub(" ", text).strip()
    try:
        spec = load_model(name)
    except ProfileError as exc:
        reason = re.sub(r"^\S+\.(yaml|yml|json): ", "", str(exc))  # the sentence, without the profile's path
        if "valid names:" in reason:
            reason = "no model profile matches it"
        raise ProfileError(f"model {text!r} cannot be modelled: {reason}") from None
    note = f"model remark ignored: ({remark})" if remark else ""
    return spec, name, note


_UNSUPPORTED = re.compile(r"\b(gguf|bitsandbytes|bnb|nf4|int3|int2|2-?bit|3-?bit|exl2|hqq)\b", re.IGNORECASE)
_CLAUSE = re.compile(r"[,;+]")


def _clause_format(clause: str) -> Optional[str]:
    """The precision a clause of prose names, or None (bf16 and fp16 both read as 16-bit: "16")."""
    c = clause.lower()
    if "mxfp4" in c:
        return "mxfp4"
    if re.search(r"\b(nvfp4|fp4)\b", c):
        return "nvfp4"
    if re.search(r"\b(awq|gptq|int4|w4a16|4-?bit)\b", c):
        return "int4"
    if "fp8" in c or "float8" in c:
        return "fp8"
    if re.search(r"\bw8a8\b", c):
        return "w8a8"  # int8 weights and activations (an fp8 W8A8 said fp8 above)
    if re.search(r"\b(int8|w8a16|8-?bit)\b", c):
        return "int8"
    if re.search(r"\b(bf16|fp16|bfloat16|float16|16-?bit|default)\b", c):
        return "16"
    return None


def parse_precision(text: str, model: ModelSpec) -> tuple[str, str, str]:
    """(weight_dtype, expert_weight_dtype, kv_cache_dtype) from a precision description (module docstring).

    A 16-bit statement means the model's own dtype; ``auto`` wherever the text says nothing, so the
    checkpoint's quantization (config or name suffix) applies.
    """
    bad = _UNSUPPORTED.search(text)
    if bad:
        raise ProfileError(f"quantization {text!r}: {bad.group(1)} is not modelled (fp8, int8, int8 W8A8, AWQ/GPTQ int4, MXFP4, NVFP4 are)")
    main = _REMARK.sub(" ", text)
    clauses = [c for c in _CLAUSE.split(main) if c.strip()]
    if not any(_clause_format(c) for c in clauses):  # only the remark names a precision: "(... 'precision: fp8')"
        clauses = [c for c in _CLAUSE.split(text) if c.strip()]
    weight = expert = kv = "auto"
    for clause in clauses:
        fmt = _clause_format(clause)
        if fmt is None:
            continue
        fmt = model.dtype if fmt == "16" else fmt
        lower = clause.lower()
        if "kv" in lower:
            kv = fmt
        elif "moe" in lower or "expert" in lower or fmt == "mxfp4":
            expert = fmt
        elif weight == "auto":
            weight = fmt
    if weight == model.dtype and model.weight_quant is None:
        weight = "auto"  # what the checkpoint already is
    return weight, expert, kv


def resolve_deployment(gpu: str, model: str, quantization: str) -> ResolvedDeployment:
    """Profiles and precisions for one benchmarked (GPU, model, precision description) triple.

    Raises :class:`ProfileError` with one sentence when the setup cannot be modelled.
    """
    gpu_name, gpu_note = resolve_gpu(gpu)
    spec, model_id, model_note = resolve_model(model)
    weight, expert, kv = parse_precision(quantization or "", spec)
    notes = [n for n in (gpu_note, model_note) if n]
    if weight == "auto" and expert == "auto" and not _clause_format(quantization or ""):
        notes.append("precision not stated: the checkpoint's own")
    return ResolvedDeployment(
        gpu=gpu_name,
        model=spec.name,
        weight_dtype=weight,
        kv_cache_dtype=kv,
        expert_weight_dtype=expert,
        model_id=model_id,
        note="; ".join(notes),
    )


__all__ = ["ResolvedDeployment", "resolve_deployment", "resolve_gpu", "resolve_model", "parse_precision"]
