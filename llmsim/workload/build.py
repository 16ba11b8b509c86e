"""The one entry point the simulator calls: a workload config and a seed → a :class:`Workload`."""

from __future__ import annotations

from llmsim.workload.config import WorkloadConfig
from llmsim.workload.loaders import load_trace
from llmsim.errors import ConfigError
from llmsim.workload.synthetic import PRESETS, synthetic_workload
from llmsim.workload.workload import Workload


def build_workload(cfg: WorkloadConfig, seed: int) -> Workload:
    """A trace when ``cfg.trace`` is set (filters, first ``num_requests``, ``time_scale``), else the preset.

    For a synthetic preset with ``duration_s``, ``num_requests`` caps the count only when the config sets
    it explicitly (its default of 2,000 would otherwise cut every long duration short).
    """
    if cfg.trace is not None:
        workload = load_trace(cfg.trace, cfg.format, model=cfg.model, service=cfg.service, start_s=cfg.start_s,
                              end_s=cfg.end_s, include_failures=cfg.include_failures, sort=cfg.sort,
                              num_requests=cfg.num_requests if "num_requests" in cfg.model_fields_set else None)
        if cfg.time_scale != 1.0:
            df = workload.df.copy()
            df["arrival_s"] = df["arrival_s"] * cfg.time_scale
            workload = workload.with_df(df, f"{workload.source} (naive time compression × {cfg.time_scale:g})")
        return workload.validate()
    num_requests = cfg.num_requests
    explicit = "num_requests" in cfg.model_fields_set
    if (cfg.duration_s is not None or (cfg.preset or "").startswith("fit:")) and not explicit:
        num_requests = None
    if cfg.diurnal_amplitude and cfg.preset not in PRESETS:
        raise ConfigError(f"workload.diurnal_amplitude: only the synthetic presets ({', '.join(PRESETS)}) take a "
                          f"daily curve; {cfg.preset!r} keeps its source's own rate over time")
    if cfg.diurnal_amplitude:
        return synthetic_workload(cfg.preset, num_requests=num_requests, duration_s=cfg.duration_s, rate=cfg.rate,
                                  burstiness=cfg.burstiness, seed=seed, diurnal_amplitude=cfg.diurnal_amplitude,
                                  day_s=cfg.day_s, peak_s=cfg.peak_s)
    return _preset_workload(cfg.preset, num_requests=num_requests, duration_s=cfg.duration_s,
                            rate=cfg.rate, burstiness=cfg.burstiness, seed=seed)


def _preset_workload(preset: str, **kwargs) -> Workload:
    """``burstgpt`` | ``gamma`` | ``poisson`` | ``servegen:<pool>/<client>`` | ``fit:<trace file>``."""
    if preset.startswith("servegen:"):
        from llmsim.workload.servegen import servegen_workload

        return servegen_workload(preset.split(":", 1)[1], **kwargs)
    if preset.startswith("fit:"):
        return _fitted_workload(preset.split(":", 1)[1], **kwargs)
    return synthetic_workload(preset, **kwargs)


def _fitted_workload(trace: str, *, num_requests, duration_s, rate, burstiness, seed) -> Workload:
    """A model fitted to a trace used directly as the workload (same as ``llmsim generate --fit``)."""
    from llmsim.errors import ConfigError
    from llmsim.workload.fit import FittedWorkload

    if burstiness is not None:
        raise ConfigError("workload.burstiness: a fitted workload keeps its source's burstiness; use rate to scale it")
    workload = FittedWorkload.fit(load_trace(trace, include_failures=True)).generate(duration_s, rate=rate, seed=seed)
    if num_requests is not None:
        workload = workload.with_df(workload.df.iloc[:num_requests])
    return workload
