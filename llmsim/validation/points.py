"""Published end-to-end vLLM measurements, one :class:`BenchmarkPoint` per CSV row.

The file format is the one of ``realworld/points.csv`` (see the validation docs page): one row per published
benchmark run, with the deployment (``gpu``, ``model``, ``dtype/quantization``, ``tp``, ``pp``,
``vllm_version``, ``engine_flags``), the client (``benchmark`` = serve | throughput | latency, ``dataset``,
``input_len``, ``output_len``, ``num_prompts``, ``request_rate``, ``max_concurrency``, ``benchmark_client``)
and whatever the source measured, under ``vllm bench serve``'s own names (:data:`METRICS`). Extra columns
are ignored.

Reading is strict about the *file* (not a CSV, a required column missing, a duplicate id, a number that is
not a number: one line naming the file, row and column, exit 2) and lenient about a *row* that cannot be
modelled (no lengths, no measured metric): such rows become skips with a reason downstream, never silent drops.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from llmsim.errors import UserError

#: Measured columns llmsim predicts, with the unit they are stored in (as ``vllm bench serve`` prints them).
METRICS: tuple[str, ...] = (
    "request_throughput", "output_token_throughput", "total_token_throughput",
    "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms",
    "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms",
    "mean_itl_ms", "median_itl_ms", "p99_itl_ms",
    "mean_e2el_ms", "median_e2el_ms",
    "latency_s",
    "throughput_tok_s_unspecified",
)
#: Metric → the class of prediction residuals (and interval) it belongs to (see llmsim.metrics.intervals).
METRIC_CLASS: dict[str, str] = {
    **{m: "throughput" for m in ("request_throughput", "output_token_throughput", "total_token_throughput",
                                 "throughput_tok_s_unspecified")},
    **{m: "ttft" for m in ("mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms")},
    **{m: "tpot" for m in ("mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "median_itl_ms",
                           "p99_itl_ms")},
    **{m: "e2el" for m in ("mean_e2el_ms", "median_e2el_ms", "latency_s")},
}
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "gpu", "model", "tp", "benchmark")
BENCHMARKS: tuple[str, ...] = ("serve", "throughput", "latency")
_NUMERIC = ("tp", "pp", "num_gpus", "input_len", "output_len", "num_prompts", "request_rate", "max_concurrency",
            "batch_size", "successful_requests", "total_input_tokens", "total_output_tokens", *METRICS)


class PointsFileError(UserError):
    """A points file that cannot be read as a whole (names the file, row and column)."""


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
    speculative: Optional[str] = None
    num_scheduler_steps: Optional[int] = None
    ignored: tuple[str, ...] = ()  # flags read but without effect on performance in llmsim (say so in notes)


@dataclass(frozen=True)
class BenchmarkPoint:
    """One published measurement: the setup to simulate and the figures to compare with."""

    id: str
    row: int  # 1-based data row in the file (the header is row 0), for messages
    benchmark: str
    gpu: str
    model: str
    quantization: str
    vllm_version: str
    tp: int
    pp: int
    engine_flags: str
    dataset: str
    input_len: Optional[float]
    output_len: Optional[float]
    num_prompts: Optional[int]
    request_rate: float
    max_concurrency: Optional[int]
    batch_size: Optional[int]
    successful_requests: Optional[float]
    total_input_tokens: Optional[float]
    total_output_tokens: Optional[float]
    benchmark_client: str
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def ignore_eos(self) -> bool:
        """Whether every request ran to its nominal output length (``--ignore-eos``)."""
        return "--ignore-eos" in self.benchmark_client or self.benchmark in ("latency",)

    def version(self) -> tuple[int, int]:
        return parse_version(self.vllm_version)

    def flags(self) -> EngineFlags:
        return parse_engine_flags(self.engine_flags)


def _number(value, path: Path, row: int, column: str) -> Optional[float]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        raise PointsFileError(f"{path}: row {row}, column {column}: expected a number, got {text!r}") from None
    if math.isnan(number) or (math.isinf(number) and column != "request_rate") or number < 0:
        raise PointsFileError(f"{path}: row {row}, column {column}: expected a non-negative number, got {text!r}")
    return number


def _positive_int(value: Optional[float], path: Path, row: int, column: str) -> Optional[int]:
    if value is None:
        return None
    if value < 1 or value != int(value):
        raise PointsFileError(f"{path}: row {row}, column {column}: expected a whole number >= 1, got {value:g}")
    return int(value)


def read_points(path: str | Path) -> list[BenchmarkPoint]:
    """Every row of a points CSV as a :class:`BenchmarkPoint` (file problems raise :class:`PointsFileError`)."""
    path = Path(path)
    if not path.is_file():
        raise PointsFileError(f"{path}: no such file" if not path.exists() else f"{path}: is not a file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError:
        raise PointsFileError(f"{path}: not UTF-8 text; expected a CSV file of benchmark points") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty file"
        raise PointsFileError(f"{path}: not a readable CSV ({reason})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise PointsFileError(f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                              f"expected the realworld points format (id, gpu, model, tp, benchmark, ...)")
    if frame.empty:
        raise PointsFileError(f"{path}: no data rows")
    points, seen = [], {}
    for index, raw in enumerate(frame.to_dict("records")):
        row = index + 1
        point_id = raw["id"].strip()
        if not point_id:
            raise PointsFileError(f"{path}: row {row}, column id: empty; every point needs an id")
        if point_id in seen:
            raise PointsFileError(f"{path}: row {row}, column id: {point_id!r} repeats row {seen[point_id]}")
        seen[point_id] = row
        benchmark = raw["benchmark"].strip().lower()
        if benchmark not in BENCHMARKS:
            raise PointsFileError(f"{path}: row {row}, column benchmark: {raw['benchmark']!r}; expected one of "
                                  f"{', '.join(BENCHMARKS)}")
        numbers = {c: _number(raw.get(c), path, row, c) for c in _NUMERIC if c in raw}
        tp = _positive_int(numbers.get("tp"), path, row, "tp")
        if tp is None:
            raise PointsFileError(f"{path}: row {row}, column tp: empty; expected the tensor-parallel degree")
        rate = numbers.get("request_rate")
        measured = {m: numbers[m] for m in METRICS if numbers.get(m) is not None}
        points.append(BenchmarkPoint(
            id=point_id, row=row, benchmark=benchmark, gpu=raw["gpu"].strip(), model=raw["model"].strip(),
            quantization=raw.get("dtype/quantization", "").strip(), vllm_version=raw.get("vllm_version", "").strip(),
            tp=tp, pp=_positive_int(numbers.get("pp"), path, row, "pp") or 1,
            engine_flags=raw.get("engine_flags", "").strip(), dataset=raw.get("dataset", "").strip().lower(),
            input_len=numbers.get("input_len"), output_len=numbers.get("output_len"),
            num_prompts=_positive_int(numbers.get("num_prompts"), path, row, "num_prompts"),
            request_rate=math.inf if rate is None else rate,
            max_concurrency=_positive_int(numbers.get("max_concurrency"), path, row, "max_concurrency"),
            batch_size=_positive_int(numbers.get("batch_size"), path, row, "batch_size"),
            successful_requests=numbers.get("successful_requests"),
            total_input_tokens=numbers.get("total_input_tokens"), total_output_tokens=numbers.get("total_output_tokens"),
            benchmark_client=raw.get("benchmark_client", "").strip(), measured=measured))
    return points


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
        if name.startswith("--speculative-config"):
            values["speculative"] = (name + ("=" + value if value else "")).split("--speculative-config.")[-1]
            if value is None and i < len(tokens) and not tokens[i].startswith("-"):
                i += 1
            continue
        if value is None and name in _TAKES_VALUE and name not in ("--enable-chunked-prefill", "--async-scheduling"):
            if i < len(tokens):
                value = tokens[i]
                i += 1
        _apply_flag(values, ignored, name, value)
    return EngineFlags(**values, ignored=tuple(ignored))


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
