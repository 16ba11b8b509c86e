"""Trace loaders: BurstGPT, Azure LLM inference, Mooncake and generic CSV / Parquet / JSONL.

Each format is a small class with ``detect(path, header)`` and ``read(path, columns)``; ``LOADERS`` maps
format names to them and :func:`load_trace` picks one by name or by sniffing the header. A loader only
parses and checks cells; ordering, filters and re-basing time to 0 are shared (:func:`_finish`), so every
format obeys the same rules. Formats are described in ../shared/traces/*/SOURCE.md.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Protocol, Sequence

import numpy as np
import pandas as pd

from llmsim.errors import TraceError, UserError, did_you_mean
from llmsim.workload import parsing as P
from llmsim.workload.workload import OPTIONAL_COLUMNS, Workload, canonical_frame

log = logging.getLogger(__name__)


@dataclass
class RawTrace:
    """What a loader hands back: timestamps in seconds on the source's clock, and parsed columns."""

    time_s: np.ndarray
    columns: dict
    where: P.Where
    time_column: str
    line_numbers: Optional[Sequence[int]] = None
    clock_is_time_of_day: bool = False  # time_s counts seconds from 00:00 of the first day
    epoch_day: Optional[pd.Timestamp] = None  # calendar midnight of that first day, when known
    meta: dict = field(default_factory=dict)


class TraceLoader(Protocol):
    name: str

    def detect(self, path: Path, header: Sequence[str]) -> bool: ...

    def read(self, path: Path, columns: Mapping[str, str]) -> RawTrace: ...


class BurstGPTLoader:
    """BurstGPT CSV (HPMLL/BurstGPT): releases 1-2 have 6 columns; release 3 adds Session ID, Elapsed time.

    Timestamp counts seconds from 00:00 of the first day. Failed requests have Response tokens == 0
    (and Request tokens == 0 too); they are flagged in ``failed``.
    """

    name = "burstgpt"
    NEEDED = ("Timestamp", "Model", "Request tokens", "Response tokens", "Log Type")

    def detect(self, path: Path, header: Sequence[str]) -> bool:
        return "Timestamp" in header and "Request tokens" in header

    def read(self, path: Path, columns: Mapping[str, str]) -> RawTrace:
        header = P.read_csv_header(path)
        P.require_columns(path, header, self.NEEDED)
        has_sessions = "Session ID" in header
        usecols = list(self.NEEDED) + (["Session ID"] if has_sessions else [])
        dtype = {"Model": "category", "Log Type": "category"}
        where = P.Where(path)
        parts: dict[str, list] = {k: [] for k in ("time", "prompt", "output", "model", "service", "session")}
        for first, chunk in P.iter_csv_chunks(path, usecols, dtype):
            parts["time"].append(P.parse_seconds(chunk["Timestamp"], where, "Timestamp", first))
            parts["prompt"].append(P.parse_tokens(chunk["Request tokens"], where, "Request tokens", first))
            parts["output"].append(P.parse_tokens(chunk["Response tokens"], where, "Response tokens", first))
            parts["model"].append(pd.Categorical(chunk["Model"]))
            parts["service"].append(pd.Categorical(chunk["Log Type"]))
            if has_sessions:
                parts["session"].append(chunk["Session ID"].to_numpy())
        output = np.concatenate(parts["output"])
        cols = {
            "prompt_tokens": np.concatenate(parts["prompt"]),
            "output_tokens": output,
            "model": P.union_categories(parts["model"]),
            "service": P.union_categories(parts["service"]),
            "failed": output == 0,
        }
        if has_sessions:
            cols["session_id"] = _session_codes(np.concatenate(parts["session"]))
        return RawTrace(np.concatenate(parts["time"]), cols, where, "Timestamp", clock_is_time_of_day=True,
                        meta={"release": 3 if has_sessions else "1-2"})


class AzureLoader:
    """Azure LLM inference traces 2023 / 2024 (Azure/AzurePublicDataset): TIMESTAMP, ContextTokens, GeneratedTokens."""

    name = "azure"
    NEEDED = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")

    def detect(self, path: Path, header: Sequence[str]) -> bool:
        return "TIMESTAMP" in header and "ContextTokens" in header

    def read(self, path: Path, columns: Mapping[str, str]) -> RawTrace:
        header = P.read_csv_header(path)
        P.require_columns(path, header, self.NEEDED)
        where = P.Where(path)
        times, prompts, outputs = [], [], []
        for first, chunk in P.iter_csv_chunks(path, self.NEEDED, {"TIMESTAMP": str}):
            times.append(P.parse_datetimes(chunk["TIMESTAMP"], where, "TIMESTAMP", first).asi8)
            prompts.append(P.parse_tokens(chunk["ContextTokens"], where, "ContextTokens", first))
            outputs.append(P.parse_tokens(chunk["GeneratedTokens"], where, "GeneratedTokens", first))
        ns = np.concatenate(times)
        epoch_day = pd.Timestamp(int(ns[0])).normalize()
        # Seconds after midnight of the first day, computed in integer ns first so 100-ns digits survive.
        time_s = (ns - epoch_day.value).astype(np.float64) / 1e9
        cols = {"prompt_tokens": np.concatenate(prompts), "output_tokens": np.concatenate(outputs)}
        return RawTrace(time_s, cols, where, "TIMESTAMP", clock_is_time_of_day=True, epoch_day=epoch_day)


class MooncakeLoader:
    """Mooncake FAST'25 JSONL: timestamp (ms), input_length, output_length, hash_ids (512-token prefix blocks)."""

    name = "mooncake"
    NEEDED = ("timestamp", "input_length", "output_length")

    def detect(self, path: Path, header: Sequence[str]) -> bool:
        return "input_length" in header and "timestamp" in header

    def read(self, path: Path, columns: Mapping[str, str]) -> RawTrace:
        records, lines = P.read_jsonl(path, self.NEEDED)
        where = P.Where(path, "line")
        frame = pd.DataFrame.from_records(records, columns=list(self.NEEDED) + ["hash_ids"])
        cols = {
            "prompt_tokens": P.parse_tokens(frame["input_length"], where, "input_length", line_numbers=lines),
            "output_tokens": P.parse_tokens(frame["output_length"], where, "output_length", line_numbers=lines),
        }
        if frame["hash_ids"].notna().any():
            cols["prefix_hashes"] = [tuple(h) if isinstance(h, list) else () for h in frame["hash_ids"]]
        time_s = P.parse_seconds(frame["timestamp"], where, "timestamp", line_numbers=lines) / 1000.0
        return RawTrace(time_s, cols, where, "timestamp", lines, meta={"prefix_block_tokens": 512})


class GenericTableLoader:
    """Any table with ``arrival_s``, ``prompt_tokens``, ``output_tokens`` (or a mapping from those names).

    ``columns`` maps canonical names to the file's names, e.g. ``{"arrival_s": "time"}``. Optional
    canonical columns (model, service, session_id, failed, priority) are kept when present.
    """

    def __init__(self, name: str, suffixes: tuple[str, ...]):
        self.name = name
        self.suffixes = suffixes

    def detect(self, path: Path, header: Sequence[str]) -> bool:
        return path.suffix.lower() in self.suffixes and "arrival_s" in header

    def read(self, path: Path, columns: Mapping[str, str]) -> RawTrace:
        names = {c: columns.get(c, c) for c in ("arrival_s", "prompt_tokens", "output_tokens") + OPTIONAL_COLUMNS}
        needed = [names[c] for c in ("arrival_s", "prompt_tokens", "output_tokens")]
        frame, where, lines = self._frame(path, needed)
        cols: dict = {
            "prompt_tokens": P.parse_tokens(frame[names["prompt_tokens"]], where, names["prompt_tokens"], line_numbers=lines),
            "output_tokens": P.parse_tokens(frame[names["output_tokens"]], where, names["output_tokens"], line_numbers=lines),
        }
        for canon in OPTIONAL_COLUMNS:
            if names[canon] in frame.columns:
                cols[canon] = _optional_column(canon, frame[names[canon]], where, names[canon], lines)
        time_s = P.parse_seconds(frame[names["arrival_s"]], where, names["arrival_s"], line_numbers=lines)
        return RawTrace(time_s, cols, where, names["arrival_s"], lines)

    def _frame(self, path: Path, needed: list[str]) -> tuple[pd.DataFrame, P.Where, Optional[list[int]]]:
        if self.name == "jsonl":
            records, lines = P.read_jsonl(path, needed)
            return pd.DataFrame.from_records(records), P.Where(path, "line"), lines
        if self.name == "parquet":
            from llmsim.inputs import read_parquet

            P.check_file(path, text=False)
            try:
                frame = read_parquet(path, "Parquet trace file")
            except TraceError:
                raise
            except UserError as exc:
                raise TraceError(str(exc)) from None
            P.require_columns(path, list(frame.columns), needed)
            if not len(frame):
                raise TraceError(f"{path}: trace file has no rows")
            return frame, P.Where(path), None
        header = P.read_csv_header(path)
        P.require_columns(path, header, needed)
        chunks = [chunk for _, chunk in P.iter_csv_chunks(path, header)]
        return pd.concat(chunks, ignore_index=True), P.Where(path), None


def _session_codes(values: np.ndarray) -> np.ndarray:
    """Session ids as int64 codes; a row without an id (e.g. an API call) is a session of its own."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    codes, _ = pd.factorize(pd.Series(values).replace("", None))
    codes = codes.astype(np.int64)
    missing = codes < 0
    codes[missing] = codes.max(initial=-1) + 1 + np.arange(int(missing.sum()))
    return codes


def _optional_column(canon: str, values: pd.Series, where: P.Where, column: str, lines) -> object:
    if canon in ("model", "service"):
        return pd.Categorical(values.astype(str))
    if canon == "failed":
        return values.astype(str).str.lower().isin(["true", "1", "yes"]).to_numpy()
    if canon == "prefix_hashes":
        return [tuple(v) if isinstance(v, (list, tuple, np.ndarray)) else () for v in values]
    if canon == "session_id":
        return _session_codes(values.to_numpy())
    return P.parse_tokens(values, where, column, line_numbers=lines)  # priority: a non-negative integer


#: Format name → loader. Auto-detection tries them in this order.
LOADERS: dict[str, TraceLoader] = {
    "burstgpt": BurstGPTLoader(),
    "azure": AzureLoader(),
    "mooncake": MooncakeLoader(),
    "csv": GenericTableLoader("csv", (".csv", ".txt")),
    "parquet": GenericTableLoader("parquet", (".parquet", ".pq")),
    "jsonl": GenericTableLoader("jsonl", (".jsonl", ".json", ".ndjson")),
}


def detect_format(path: Path) -> str:
    """Pick a format from the file's suffix and header (CSV header line or the first JSON object's keys)."""
    suffix = path.suffix.lower()
    P.check_file(path, text=suffix not in (".parquet", ".pq"))
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".json", ".ndjson"):
        from llmsim.inputs import decode_utf8

        with open(path, "rb") as handle:
            first = decode_utf8(handle.read(65536), path, "trace file")
        first = next((line for line in first.splitlines() if line.strip()), "")
        header = list(_json_keys(path, first))
    else:
        header = P.read_csv_header(path)
    for name, loader in LOADERS.items():
        if loader.detect(path, header):
            return name
    raise TraceError(f"{path.name}: cannot tell the trace format from the header ({', '.join(header)[:120]}); "
                     f"give the format, one of: {', '.join(LOADERS)}")


def _json_keys(path: Path, line: str) -> list[str]:
    import json

    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path.name} line 1: malformed JSON ({exc.msg} at column {exc.colno})") from None
    return list(record) if isinstance(record, dict) else []


def load_trace(path: str | Path, format: Optional[str] = None, *, model: Optional[str] = None,
               service: Optional[str] = None, start_s: Optional[float] = None, end_s: Optional[float] = None,
               include_failures: bool = False, sort: bool = False, num_requests: Optional[int] = None,
               columns: Optional[Mapping[str, str]] = None) -> Workload:
    """Load a trace file into a :class:`Workload`.

    Times are re-based so the file's first request arrives at 0 (``start_s``/``end_s`` select a window in
    those seconds and the window's start becomes 0). ``model``/``service`` keep rows of one model / log
    type; failed rows are dropped unless ``include_failures``; ``num_requests`` keeps the first N rows left.
    Timestamps that go backwards are an error unless ``sort`` is set, which sorts them with a warning.
    """
    path = Path(path)
    if format is not None and format not in LOADERS:
        raise TraceError(f"unknown trace format {format!r}; valid formats: {', '.join(LOADERS)}")
    name = format or detect_format(path)
    if name not in LOADERS:
        raise TraceError(f"unknown trace format {name!r}{did_you_mean(name, LOADERS)}; valid formats: {', '.join(LOADERS)}")
    P.check_file(path, text=name != "parquet")
    raw = LOADERS[name].read(path, dict(columns or {}))
    return _finish(raw, name, model=model, service=service, start_s=start_s, end_s=end_s,
                   include_failures=include_failures, sort=sort, num_requests=num_requests)


def _finish(raw: RawTrace, name: str, *, model, service, start_s, end_s, include_failures, sort,
            num_requests) -> Workload:
    """Shared post-processing: order check/sort, re-base time, filters, first N."""
    time_s, cols = raw.time_s, dict(raw.columns)
    backwards = np.flatnonzero(np.diff(time_s) < 0)
    if len(backwards):
        i = int(backwards[0]) + 1
        row = raw.line_numbers[i] if raw.line_numbers is not None else i + 1
        message = (f"{raw.where.at(row, raw.time_column)}: timestamp goes backwards "
                   f"({time_s[i]:g} after {time_s[i - 1]:g})")
        if not sort:
            raise TraceError(message + "; pass sort=True (workload.sort: true) to sort the trace")
        warnings.warn(message + f"; sorting {len(backwards)} out-of-order rows as requested", stacklevel=3)
        log.warning("%s; sorted", message)
        order = np.argsort(time_s, kind="stable")
        time_s = time_s[order]
        cols = {k: _take(v, order) for k, v in cols.items()}
    t0 = float(time_s[0]) + (start_s or 0.0)
    keep = np.ones(len(time_s), dtype=bool)
    if start_s is not None:
        keep &= time_s >= t0
    if end_s is not None:
        keep &= time_s < float(time_s[0]) + end_s
    for column, wanted in (("model", model), ("service", service)):
        if wanted is not None:
            if column not in cols:
                raise TraceError(f"{raw.where.path.name}: the {name} format has no {column} column to filter on")
            values = np.asarray(cols[column].astype(str))
            if wanted not in set(values):
                raise TraceError(f"{raw.where.path.name}: no rows with {column} {wanted!r}; "
                                 f"values present: {', '.join(sorted(set(values)))}")
            keep &= values == wanted
    if "failed" in cols and not include_failures:
        keep &= ~cols["failed"]
    index = np.flatnonzero(keep)
    if not len(index):
        asked = ", ".join(f"{k}={v!r}" for k, v in (("start_s", start_s), ("end_s", end_s), ("model", model),
                                                     ("service", service)) if v is not None)
        span = float(time_s[-1] - time_s[0])
        raise TraceError(f"{raw.where.path.name}: no rows left after the filters "
                         f"({asked or 'failed rows dropped'}); the trace spans 0 to {span:g} s with {len(time_s)} rows"
                         + (" (workload.start_s / workload.end_s select seconds from its first arrival)" if asked else
                            "; set workload.include_failures to keep failed rows"))
    if num_requests is not None:
        index = index[:num_requests]
    _check_span(raw, time_s, t0)
    cols = {k: _take(v, index) for k, v in cols.items()}
    cols["arrival_s"] = time_s[index] - t0
    workload = Workload(canonical_frame(cols), str(raw.where.path), meta={"format": name, **raw.meta})
    if raw.clock_is_time_of_day:
        workload.clock_origin_s = t0
        if raw.epoch_day is not None:
            workload.start_datetime = raw.epoch_day + pd.Timedelta(seconds=t0)
    return workload.validate()


def _check_span(raw: RawTrace, time_s: np.ndarray, t0: float) -> None:
    """A trace spanning more than :data:`llmsim.limits.MAX_SPAN_S` (31 years) has a time in the wrong unit or
    a corrupt cell; simulating it would hang (a float clock cannot step past 1e300 s)."""
    from llmsim.limits import MAX_SPAN_S

    late = np.flatnonzero(time_s - t0 > MAX_SPAN_S)
    if len(late):
        i = int(late[0])
        row = raw.line_numbers[i] if raw.line_numbers is not None else i + 1
        raise TraceError(f"{raw.where.at(row, raw.time_column)}: arrival {time_s[i] - t0:.3g} s after the first "
                         f"request; llmsim handles traces spanning at most {MAX_SPAN_S:.0e} s (31 years): "
                         "is the time column in another unit?")


def _take(values, index: np.ndarray):
    if isinstance(values, pd.Categorical):
        return values.take(index)
    if isinstance(values, list):
        return [values[i] for i in index]
    return np.asarray(values)[index]
