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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from llmsim.errors import UserError
from llmsim.hardware.vllm_flags import EngineFlags, parse_engine_flags, parse_version

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
    remarks: str = ""  # the free-text `uncertain` and `notes` columns (e.g. a quoted draft acceptance rate)

    @property
    def chat_endpoint(self) -> bool:
        """Whether the client streamed from ``/v1/chat/completions`` (``--backend openai-chat``)."""
        client = self.benchmark_client.lower()
        return "openai-chat" in client or "/chat/completions" in client

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
            benchmark_client=raw.get("benchmark_client", "").strip(), measured=measured,
            remarks=" ".join(raw.get(c, "").strip() for c in ("uncertain", "notes")).strip()))
    return points
