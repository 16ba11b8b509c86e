"""The `workload:` section of a config: where requests come from."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, field_validator, model_validator

from llmsim.configbase import StrictModel


class WorkloadConfig(StrictModel):
    """Either a trace file (`trace`) or a synthetic preset (`preset`).

    The default is the bundled bursty workload: the `burstgpt` preset (gamma inter-arrivals with
    vLLM's burstiness, BurstGPT-like correlated lengths) generated from the config's seed, so a run
    needs no download.
    """

    preset: Optional[str] = Field("burstgpt", description="synthetic preset: burstgpt, poisson, gamma, servegen:<pool>/<id>, fit:<trace file>")
    trace: Optional[str] = Field(None, description="path of a trace file; overrides preset")
    format: Optional[str] = Field(None, description="trace format; auto-detected from the header when omitted")
    num_requests: Optional[int] = Field(2000, ge=1, description="number of requests (synthetic; ignored with duration_s unless set) or, when set, first N rows of a trace")
    rate: Optional[float] = Field(None, gt=0, description="mean arrival rate, requests/s (synthetic; preset default when omitted)")
    burstiness: Optional[float] = Field(None, ge=0.01, le=1000, description="gamma shape of inter-arrivals: 1 = Poisson, < 1 burstier (0.01 to 1000)")
    duration_s: Optional[float] = Field(None, gt=0, description="synthetic: generate arrivals for this long instead of num_requests")
    diurnal_amplitude: float = Field(0.0, ge=0, lt=1, description="synthetic: daily rate swing, rate = mean × (1 + a·cos(2π(t − peak_s)/day_s))")
    day_s: float = Field(86_400.0, gt=0, description="synthetic: length of the daily cycle (shorten it to compress a day)")
    peak_s: float = Field(50_400.0, ge=0, description="synthetic: time of the daily peak from the start (14:00 by default)")
    time_scale: float = Field(1.0, gt=0, description="trace: multiply arrival times (naive time compression < 1)")
    model: Optional[str] = Field(None, description="trace filter: keep rows of this model")
    service: Optional[str] = Field(None, description="trace filter: keep rows of this service / log type")
    start_s: Optional[float] = Field(None, description="trace filter: keep arrivals at or after this time")
    end_s: Optional[float] = Field(None, description="trace filter: keep arrivals before this time")
    include_failures: bool = Field(False, description="trace: keep rows the trace marks as failed")
    sort: bool = Field(False, description="trace: sort timestamps that go backwards (with a warning) instead of failing")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: Optional[str]) -> Optional[str]:
        from llmsim.workload.synthetic import PRESETS

        if name is not None and name not in PRESETS and not name.startswith(("servegen:", "fit:")):
            raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}, servegen:<pool>/<id>, "
                             "fit:<trace file>")
        return name

    @field_validator("format")
    @classmethod
    def _known_format(cls, name: Optional[str]) -> Optional[str]:
        from llmsim.workload.loaders import LOADERS

        if name is not None and name not in LOADERS:
            raise ValueError(f"unknown trace format {name!r}; valid: {', '.join(LOADERS)}")
        return name

    @model_validator(mode="after")
    def _one_source(self) -> "WorkloadConfig":
        if self.trace is None and self.preset is None:
            raise ValueError("give workload.trace or workload.preset")
        return self
