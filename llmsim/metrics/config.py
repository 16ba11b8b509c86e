"""The `slo:`, `metrics:` and `output:` sections."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, field_validator

from llmsim.configbase import StrictModel


class SLOConfig(StrictModel):
    """Service-level objectives; a request is good if it meets every one given (vLLM's --goodput)."""

    ttft_s: Optional[float] = Field(None, gt=0, description="time-to-first-token bound (s) for SLO attainment and goodput")
    tpot_s: Optional[float] = Field(None, gt=0, description="time-per-output-token bound (s); 0 for one-token answers")
    e2el_s: Optional[float] = Field(None, gt=0, description="end-to-end latency bound (s)")


class MetricsConfig(StrictModel):
    percentiles: list[float] = Field(default_factory=lambda: [50.0, 90.0, 95.0, 99.0],
                                     description="latency percentiles in the summary (50 is reported as median)")
    step_detail: bool = Field(True, description="keep the per-step table (the summary is exact either way)")
    step_sample_every: int = Field(1, ge=1, description="keep every Nth step of each replica in the step table (1 = all)")
    stream_steps: bool = Field(False, description="write the step table to Parquet in chunks during the run instead of "
                                                  "holding it in memory (long runs); Result.steps reads it back")
    stream_chunk_rows: int = Field(1_000_000, ge=1, description="steps held in memory before a chunk is written "
                                                                "(metrics.stream_steps)")
    timeseries_interval_s: float = Field(1.0, gt=0, description="bin width of KV-usage and queue time series")

    @field_validator("percentiles")
    @classmethod
    def _in_range(cls, values: list[float]) -> list[float]:
        for p in values:
            if not 0 <= p <= 100:
                raise ValueError(f"percentile {p} is outside 0..100")
        return values


class OutputConfig(StrictModel):
    dir: Optional[str] = Field(None, description="write summary.json, requests.parquet, steps.parquet here")
