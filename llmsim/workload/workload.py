"""A workload: the requests that arrive at the serving system, one row each.

Whatever the source (a BurstGPT CSV, an Azure trace, Mooncake JSONL, a synthetic preset), llmsim turns
it into the same table so that everything downstream reads one format:

===============  =========  ======================================================================
column           dtype      meaning
===============  =========  ======================================================================
arrival_s        float64    seconds from the start of the trace, non-decreasing (ties are normal)
prompt_tokens    int64      tokens in the request (BurstGPT "Request tokens", Azure ContextTokens)
output_tokens    int64      tokens the model generates (the simulated request generates exactly these)
model            category   optional: the model the request called (BurstGPT: ChatGPT | GPT-4)
service          category   optional: the service / log type (BurstGPT: Conversation log | API log)
session_id       int64      optional: conversation the request belongs to
failed           bool       optional: the source marks the request as failed (BurstGPT: 0 response tokens)
prefix_hashes    object     optional: tuple of ints, one hash per prefix block (Mooncake: 512 tokens)
priority         int64      optional: scheduling priority (lower = more urgent, as in vLLM)
===============  =========  ======================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

REQUIRED_COLUMNS: tuple[str, ...] = ("arrival_s", "prompt_tokens", "output_tokens")
OPTIONAL_COLUMNS: tuple[str, ...] = ("model", "service", "session_id", "failed", "prefix_hashes", "priority")
CANONICAL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


@dataclass
class Workload:
    """A table of requests in the canonical columns, plus where it came from.

    ``source`` says where the rows came from (a file path or ``preset:burstgpt(rate=…)``).
    ``clock_origin_s`` is, when the source says so, the wall-clock time of ``arrival_s == 0`` in seconds
    after midnight of the trace's first day (BurstGPT timestamps count from 00:00 of the first day;
    Azure gives datetimes); analysis uses it for hour-of-day and day-of-week profiles.
    ``start_datetime`` is the calendar time of ``arrival_s == 0`` when the source gives one (Azure).
    """

    df: pd.DataFrame
    source: str = "<memory>"
    clock_origin_s: Optional[float] = None
    start_datetime: Optional[pd.Timestamp] = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        return f"Workload({len(self)} requests from {self.source})"

    def head(self, n: int = 5) -> pd.DataFrame:
        return self.df.head(n)

    @property
    def duration_s(self) -> float:
        """Time from 0 to the last arrival."""
        return float(self.df["arrival_s"].iloc[-1]) if len(self.df) else 0.0

    @property
    def has_failures(self) -> bool:
        return "failed" in self.df.columns and bool(self.df["failed"].any())

    def validate(self) -> "Workload":
        """Check the canonical invariants; raise ValueError naming the first violation.

        Loaders turn bad *files* into :class:`~llmsim.errors.TraceError` before this point; a failure
        here means a bug in code that built the frame, so it is a plain ValueError.
        """
        df = self.df
        for name in REQUIRED_COLUMNS:
            if name not in df.columns:
                raise ValueError(f"workload {self.source}: missing column {name!r}")
        unknown = [c for c in df.columns if c not in CANONICAL_COLUMNS]
        if unknown:
            raise ValueError(f"workload {self.source}: unknown columns {unknown}")
        if df["arrival_s"].dtype != np.float64:
            raise ValueError(f"workload {self.source}: arrival_s must be float64, got {df['arrival_s'].dtype}")
        for name in ("prompt_tokens", "output_tokens"):
            if df[name].dtype != np.int64:
                raise ValueError(f"workload {self.source}: {name} must be int64, got {df[name].dtype}")
            if len(df) and int(df[name].min()) < 0:
                raise ValueError(f"workload {self.source}: {name} has negative values")
        arrivals = df["arrival_s"].to_numpy()
        if len(arrivals):
            if not np.isfinite(arrivals).all():
                raise ValueError(f"workload {self.source}: arrival_s has non-finite values")
            if (np.diff(arrivals) < 0).any():
                raise ValueError(f"workload {self.source}: arrival_s goes backwards")
        if "failed" in df.columns and df["failed"].dtype != bool:
            raise ValueError(f"workload {self.source}: failed must be bool, got {df['failed'].dtype}")
        if not isinstance(df.index, pd.RangeIndex) or (len(df) and df.index[0] != 0):
            raise ValueError(f"workload {self.source}: index must be a RangeIndex from 0")
        return self

    def with_df(self, df: pd.DataFrame, source: Optional[str] = None) -> "Workload":
        """A copy with another frame (same clock metadata)."""
        return Workload(df.reset_index(drop=True), source or self.source, self.clock_origin_s,
                        self.start_datetime, dict(self.meta))


def canonical_frame(columns: dict[str, object]) -> pd.DataFrame:
    """Build a frame in the canonical column order and dtypes from arrays (absent optionals skipped)."""
    data: dict[str, object] = {
        "arrival_s": np.asarray(columns["arrival_s"], dtype=np.float64),
        "prompt_tokens": np.asarray(columns["prompt_tokens"], dtype=np.int64),
        "output_tokens": np.asarray(columns["output_tokens"], dtype=np.int64),
    }
    for name in OPTIONAL_COLUMNS:
        value = columns.get(name)
        if value is None:
            continue
        if name in ("model", "service"):
            data[name] = pd.Categorical(value)
        elif name == "failed":
            data[name] = np.asarray(value, dtype=bool)
        elif name in ("session_id", "priority"):
            data[name] = np.asarray(value, dtype=np.int64)
        else:
            data[name] = pd.Series(list(value), dtype=object)
    return pd.DataFrame(data)
