"""Turning raw trace columns into checked arrays, with errors that name file, row and column.

Row numbers in messages are 1-based *data* rows for CSV and Parquet (the header is not counted: the first
request is row 1) and physical line numbers for JSONL. Each check is vectorised over a whole chunk and only
the first bad cell is reported, so validation costs a few array passes even on millions of rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from llmsim.errors import TraceError

#: Rows per chunk when streaming a CSV: ~1M rows of BurstGPT parse in about a second and take tens of MB.
CSV_CHUNK_ROWS = 1_000_000


@dataclass(frozen=True)
class Where:
    """Locates cells of one file in error messages: ``trace.csv row 17, column 'Request tokens'``."""

    path: Path
    row_word: str = "row"  # "row" for tables (1-based data rows), "line" for JSONL (physical lines)

    def at(self, row: int, column: str) -> str:
        return f"{self.path.name} {self.row_word} {row}, column {column!r}"


#: Largest token count accepted in a trace: no model's context comes near it, and it keeps every sum of
#: token counts far inside int64 (a cell of 1e20 would otherwise wrap to a negative number).
MAX_TOKENS = 2**31 - 1


def check_file(path: Path, text: bool = True) -> None:
    """Present, a regular file, not empty and, for text formats, UTF-8 (see :mod:`llmsim.inputs`)."""
    from llmsim.errors import UserError
    from llmsim.inputs import check_input_file, check_text_file

    try:
        check_text_file(path, "trace file") if text else check_input_file(path, "trace file")
    except UserError as exc:
        raise TraceError(str(exc)) from None
    if path.stat().st_size == 0:
        raise TraceError(f"{path}: trace file is empty")


def _first_bad(mask: np.ndarray) -> Optional[int]:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


def _row_number(i: int, first_row: int, line_numbers: Optional[Sequence[int]]) -> int:
    return int(line_numbers[i]) if line_numbers is not None else first_row + i


def parse_tokens(values: pd.Series, where: Where, column: str, first_row: int = 1,
                 line_numbers: Optional[Sequence[int]] = None) -> np.ndarray:
    """Token counts as int64; a missing, non-numeric, fractional or negative cell is a TraceError."""
    raw = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if raw.dtype.kind in "iu":
        bad = _first_bad((raw < 0) | (raw > MAX_TOKENS))
        numbers = raw.astype(np.int64, copy=False) if bad is None else None
    else:
        floats = _numbers(raw)
        with np.errstate(invalid="ignore"):
            bad = _first_bad(~np.isfinite(floats) | (floats < 0) | (floats != np.floor(floats)) | (floats > MAX_TOKENS))
        numbers = None if bad is not None else floats.astype(np.int64)
    if bad is not None:
        too_big = _numbers(raw[bad:bad + 1])[0] > MAX_TOKENS
        limit = f" of at most {MAX_TOKENS:,}" if too_big else ""
        raise TraceError(f"{where.at(_row_number(bad, first_row, line_numbers), column)}: "
                         f"expected a non-negative integer{limit}, got {_shown(raw[bad])!r}")
    return numbers


def _numbers(raw: np.ndarray) -> np.ndarray:
    """Cells as float64, NaN where a cell is not a number. JSON ``true`` is not a number (pandas would
    read it as 1), and neither is an integer too large for a float to hold exactly."""
    if raw.dtype.kind == "b":
        return np.full(len(raw), np.nan)
    if raw.dtype == object:
        raw = np.array([np.nan if isinstance(v, (bool, np.bool_, dict, list, tuple)) else v for v in raw], dtype=object)
    return pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _shown(cell) -> str:
    return "" if cell is None or (isinstance(cell, float) and np.isnan(cell)) else str(cell)


def parse_seconds(values: pd.Series, where: Where, column: str, first_row: int = 1,
                  line_numbers: Optional[Sequence[int]] = None) -> np.ndarray:
    """Timestamps as float64 (any unit; the caller scales); a missing or non-numeric cell is a TraceError."""
    raw = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if raw.dtype.kind == "M":  # Parquet date-times: seconds since the epoch (time is re-based to 0 later)
        ns = pd.DatetimeIndex(raw).as_unit("ns").asi8
        floats = np.where(pd.isna(raw), np.nan, ns / 1e9)
    elif raw.dtype.kind == "m":
        floats = pd.TimedeltaIndex(raw).total_seconds().to_numpy()
    elif raw.dtype.kind in "iuf":
        floats = raw.astype(np.float64, copy=False)
    else:
        floats = _numbers(raw)
    bad = _first_bad(~np.isfinite(floats))
    if bad is not None:
        raise TraceError(f"{where.at(_row_number(bad, first_row, line_numbers), column)}: "
                         f"expected a number of seconds, got {_shown(raw[bad])!r}")
    return floats


def parse_datetimes(values: pd.Series, where: Where, column: str, first_row: int = 1) -> pd.DatetimeIndex:
    """Datetime strings (ISO 8601, any sub-second digits, optional UTC offset) as naive UTC times."""
    parsed = pd.to_datetime(values, format="ISO8601", errors="coerce", utc=True)
    bad = _first_bad(parsed.isna().to_numpy())
    if bad is not None:
        raise TraceError(f"{where.at(first_row + bad, column)}: expected a date-time such as "
                         f"'2023-11-16 18:17:03.98', got {str(values.iloc[bad])!r}")
    return pd.DatetimeIndex(parsed).tz_localize(None).as_unit("ns")  # pandas may infer µs; callers use ns


def read_csv_header(path: Path) -> list[str]:
    check_file(path)
    with open(path, "r", encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline()
    header = [name.strip().strip('"') for name in first.rstrip("\r\n").split(",")]
    if not first.strip():
        raise TraceError(f"{path}: trace file is empty (no header line)")
    return header


def require_columns(path: Path, header: Sequence[str], needed: Sequence[str]) -> None:
    for name in needed:
        if name not in header:
            raise TraceError(f"{path.name} header: missing column {name!r} (found {', '.join(header)})")


def iter_csv_chunks(path: Path, usecols: Sequence[str], dtype: Optional[dict] = None,
                    chunk_rows: int = CSV_CHUNK_ROWS) -> Iterator[tuple[int, pd.DataFrame]]:
    """Yield (first 1-based data row, chunk) so memory stays bounded on multi-million-row files."""
    first_row = 1
    reader = None
    try:
        reader = pd.read_csv(path, usecols=list(usecols), dtype=dtype, chunksize=chunk_rows,
                             skipinitialspace=True, encoding="utf-8-sig")
        for chunk in reader:
            yield first_row, chunk
            first_row += len(chunk)
    except pd.errors.ParserError as exc:
        raise TraceError(f"{path.name}: not a well-formed CSV ({str(exc).strip().splitlines()[-1]})") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path.name}: not UTF-8 after the first rows (byte 0x{exc.object[exc.start]:02x}); "
                         "expected UTF-8 text") from None
    except ValueError as exc:  # pandas: usecols not in the header, and similar shape problems
        raise TraceError(f"{path.name}: not a well-formed CSV ({' '.join(str(exc).split())})") from None
    finally:
        if reader is not None:
            reader.close()
    if first_row == 1:
        raise TraceError(f"{path}: trace file has a header but no data rows")


def read_jsonl(path: Path, needed: Sequence[str]) -> tuple[list[dict], list[int]]:
    """Parse a JSON-lines file: one object per non-blank line. Returns records and their line numbers."""
    from llmsim.inputs import read_text

    check_file(path)
    records: list[dict] = []
    lines: list[int] = []
    for number, text in enumerate(read_text(path, "trace file").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{path.name} line {number}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise TraceError(f"{path.name} line {number}: malformed JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise TraceError(f"{path.name} line {number}: expected a JSON object, got {type(record).__name__}")
        for key in needed:
            if key not in record:
                raise TraceError(f"{path.name} line {number}, column {key!r}: missing key")
        records.append(record)
        lines.append(number)
    if not records:
        raise TraceError(f"{path}: trace file is empty (no JSON lines)")
    return records, lines


def union_categories(parts: list[pd.Categorical]) -> pd.Categorical:
    if len(parts) == 1:
        return parts[0]
    return pd.api.types.union_categoricals(parts, ignore_order=True)
