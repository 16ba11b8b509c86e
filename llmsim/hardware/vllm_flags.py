"""vLLM's own knobs as published runs state them: server flags, version notes, and the defaults they imply.

Benchmark reports give the engine's settings as command lines (``-tp 8 --max-num-batched-tokens 4096``),
``key=value;`` notes (``max_num_seqs=1500; docker ...``) and version notes (``v0.11.0``, ``0.9.1 (ROCm build)``).
:func:`parse_engine_flags` and :func:`parse_version` read them; :func:`engine_defaults` gives vLLM's scheduler
defaults for a version, GPU and entry point where the flags say nothing. ``llmsim validate`` and ``llmsim
profiles coverage`` read them through this one module.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class EngineFlags:
    """What a row's ``engine_flags`` set, in llmsim's terms (None = the version's default)."""

    tp: Optional[int] = None
    pp: Optional[int] = None
    dp: Optional[int] = None
    max_model_len: Optional[int] = None
    max_num_seqs: Optional[int] = None
    max_num_batched_tokens: Optional[int] = None
    gpu_memory_utilization: Optional[float] = None
    kv_cache_dtype: Optional[str] = None
    weight_quantization: Optional[str] = None
    enable_chunked_prefill: Optional[bool] = None
    async_scheduling: Optional[bool] = None
    expert_parallel: bool = False
    enforce_eager: bool = False
    block_size: Optional[int] = None
    speculative: tuple[tuple[str, str], ...] = ()  # --speculative-config's fields (method, num_speculative_tokens, ...)
    num_scheduler_steps: Optional[int] = None
    ignored: tuple[str, ...] = ()  # flags read but without effect on performance in llmsim (say so in notes)


_VERSION = re.compile(r"(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int]:
    """(major, minor) of a version note like ``v0.11.0``, ``0.9.1 (ROCm build)`` or ``vLLM-Ascend v0.9.1``;
    the newest vLLM llmsim models when the note names none (``unknown``)."""
    match = _VERSION.search(text or "")
    if match is None or text.lower().startswith("nm-vllm"):
        return NEWEST_VERSION if match is None else (0, 4)  # nm-vllm 0.2 (April 2024) tracked vLLM 0.4
    return int(match.group(1)), int(match.group(2))


NEWEST_VERSION = (0, 32)

# Flags that change nothing llmsim models (tokenizer, parsers, seeds, loading): read, noted, not applied.
_NO_EFFECT = {
    "--trust-remote-code", "--enable-auto-tool-choice", "--tool-call-parser", "--reasoning-parser", "--seed",
    "--tokenizer-mode", "--tokenizer_mode", "--config-format", "--config_format", "--load-format", "--load_format",
    "--dtype", "--served-model-name", "--host", "--port", "--disable-log-requests", "--max-seq-len-to-capture",
    "--no-enable-prefix-caching", "--enable-prefix-caching", "--swap-space", "--distributed-executor-backend",
    "use-all-available-gpus",
}
_TAKES_VALUE = {
    "-tp", "--tensor-parallel-size", "-pp", "--pipeline-parallel-size", "-dp", "--data-parallel-size",
    "--max-model-len", "--max-num-seqs", "--max-num-batched-tokens", "--gpu-memory-utilization",
    "--kv-cache-dtype", "--quantization", "-q", "--block-size", "--num-scheduler-steps", "--tool-call-parser",
    "--reasoning-parser", "--seed", "--tokenizer-mode", "--tokenizer_mode", "--config-format", "--config_format",
    "--load-format", "--load_format", "--dtype", "--served-model-name", "--host", "--port",
    "--max-seq-len-to-capture", "--swap-space", "--distributed-executor-backend", "--enable-chunked-prefill",
    "--async-scheduling",
}


def _bool(text: str) -> bool:
    return text.strip().lower() not in ("false", "0", "no", "off")


def parse_engine_flags(text: str) -> EngineFlags:
    """Read vLLM server/engine flags (``-tp 8 --max-num-batched-tokens 4096 ...``), ``key=value;`` notes
    (``max_num_seqs=1500; docker ...``) and environment assignments (ignored) into :class:`EngineFlags`.
    A parenthesised remark (``(recipe's NVIDIA command)``) is dropped."""
    text = re.sub(r"\([^)]*\)", " ", text or "")
    text = re.sub(r"\bdocker\s+\S+", " ", text).replace(";", " ")
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.split()
    values: dict = {}
    ignored: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token in ("defaults", "...", "env", "per", "recipe"):
            continue
        name, value = token, None
        if token.startswith("-") and "=" in token:
            name, value = token.split("=", 1)
        elif not token.startswith("-") and "=" in token:
            key, value = token.split("=", 1)
            if key.isupper():  # VLLM_USE_TRITON_FLASH_ATTN=0: an environment variable
                ignored.append(token)
                continue
            name = "--" + key.replace("_", "-")
        elif not token.startswith("-"):
            ignored.append(token)
            continue
        if name.replace("_", "-").startswith(("--speculative-config", "--speculative-model", "--num-speculative-tokens")):
            if value is None and i < len(tokens) and not tokens[i].startswith("-"):
                value = tokens[i]
                i += 1
            _speculative_flag(values.setdefault("speculative", {}), ignored, name.replace("_", "-"), value)
            continue
        if value is None and name in _TAKES_VALUE and name not in ("--enable-chunked-prefill", "--async-scheduling"):
            if i < len(tokens):
                value = tokens[i]
                i += 1
        _apply_flag(values, ignored, name, value)
    if "speculative" in values:
        values["speculative"] = tuple(sorted(values["speculative"].items()))
    return EngineFlags(**values, ignored=tuple(ignored))


def _speculative_flag(fields: dict, ignored: list, name: str, value: Optional[str]) -> None:
    """One speculative-decoding flag into ``fields``: ``--speculative-config '{"method": "mtp", ...}'``, its dotted
    form ``--speculative-config.method mtp``, or the pre-0.8 ``--speculative-model`` / ``--num-speculative-tokens``."""
    if name == "--speculative-config":
        try:
            parsed = json.loads(value or "")
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            ignored.append(f"{name} {value}")
            return
        fields.update({str(k): str(v) for k, v in parsed.items()})
    elif name.startswith("--speculative-config."):
        fields[name.split(".", 1)[1].replace("-", "_")] = value or ""
    elif name == "--speculative-model":
        fields["method"] = "ngram" if "ngram" in (value or "") else "draft_model"
    elif name == "--num-speculative-tokens":
        fields["num_speculative_tokens"] = value or ""


def _apply_flag(values: dict, ignored: list, name: str, value: Optional[str]) -> None:
    as_int = {"-tp": "tp", "--tensor-parallel-size": "tp", "-pp": "pp", "--pipeline-parallel-size": "pp",
              "-dp": "dp", "--data-parallel-size": "dp", "--max-num-seqs": "max_num_seqs",
              "--max-num-batched-tokens": "max_num_batched_tokens", "--block-size": "block_size",
              "--num-scheduler-steps": "num_scheduler_steps", "--max-model-len": "max_model_len"}
    if name in as_int:
        if value is not None and value.lower() == "auto":
            return
        try:
            values[as_int[name]] = int(value)
        except (TypeError, ValueError):
            ignored.append(f"{name} {value}")
        return
    if name == "--gpu-memory-utilization":
        values["gpu_memory_utilization"] = float(value)
    elif name == "--kv-cache-dtype":
        if value and value.lower().startswith("fp8"):
            values["kv_cache_dtype"] = "fp8"
    elif name in ("--quantization", "-q"):
        values["weight_quantization"] = (value or "").lower()
    elif name == "--enable-chunked-prefill":
        values["enable_chunked_prefill"] = True if value is None else _bool(value)
    elif name == "--no-enable-chunked-prefill":
        values["enable_chunked_prefill"] = False
    elif name == "--async-scheduling":
        values["async_scheduling"] = True if value is None else _bool(value)
    elif name == "--no-async-scheduling":
        values["async_scheduling"] = False
    elif name == "--enable-expert-parallel":
        values["expert_parallel"] = True
    elif name == "--enforce-eager":
        values["enforce_eager"] = True
    else:
        ignored.append(name if value is None else f"{name} {value}")


def engine_defaults(version: tuple[int, int], gpu_memory_gib: float, gpu_name: str, online: bool) -> dict:
    """vLLM's scheduler defaults for a version, GPU and entry point: V1 (0.8+) budgets 2,048 tokens and 256
    sequences behind the API server, 8,192 / 256 offline; from 0.9, GPUs of at least 70 GiB that are not A100s get
    8,192 / 1,024 (server) and 16,384 / 1,024 (offline) [vLLM EngineArgs._set_default_args]; async scheduling
    from 0.13; the V0 scheduler before 0.8."""
    if version < (0, 8):
        return {"policy": "vllm-v0", "max_num_seqs": 256, "async_scheduling": False}
    big = version >= (0, 9) and gpu_memory_gib >= 70 and "a100" not in gpu_name.lower()
    if big:
        tokens, seqs = (8192, 1024) if online else (16384, 1024)
    else:
        tokens, seqs = (2048, 256) if online else (8192, 256)
    return {"policy": "vllm-v1", "max_num_seqs": seqs, "max_num_batched_tokens": tokens,
            "enable_chunked_prefill": True, "async_scheduling": version >= (0, 13)}
