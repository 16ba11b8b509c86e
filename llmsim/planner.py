"""Capacity planning: the cheapest deployment that serves a workload within its SLOs.

``llmsim plan --workload W --slo ttft_p99=2s,tpot_p99=100ms --gpus A100-80GB,H100 --tp 1,2`` considers every
*candidate* (GPU kind × TP degree × any ``--vary`` knob values) and, for each, searches the number of replicas:

1. **Doubling** (1, 2, 4, 8, …) until a replica count meets the SLOs (or ``--max-replicas`` / ``--max-cost``
   is reached), then
2. **bisection** between the largest failing and the smallest passing count.

This needs about 2·log2(N) simulations per candidate instead of N, and relies on more replicas never
hurting (true for identical replicas behind round-robin; a router that can misroute may break it, which is
why the chosen plan's N−1 is always simulated and shown). Candidates advance in lockstep so each round's
simulations run in parallel (``--jobs``); every simulation is cached by its full config (``--cache DIR``),
so repeating or refining a plan re-simulates nothing.

**Meeting the SLOs.** ``--slo`` names a percentile bound per metric, ``ttft_p99=2s`` meaning at least 99 % of
*all* requests have TTFT ≤ 2 s — a rejected or failed request misses every bound (it never got an answer),
so a deployment cannot pass by dropping work. In addition the fraction of requests meeting *every* bound at
once (SLO attainment, as vLLM's goodput counts it) must be at least ``--attainment`` (default: the smallest
percentile named, e.g. 0.99). Metrics: ``ttft``, ``tpot``, ``e2el``. Units: ``s``, ``ms``, ``us``.

**Workload** (``--workload``): a trace file path (format auto-detected, as ``workload.trace``), or
``preset:NAME`` for a synthetic preset (``preset:burstgpt``, ``preset:poisson``, ``preset:gamma``) with
``--rate``, ``--burstiness`` and ``--num-requests``. Everything else comes from ``--config`` / ``--set``.

**Cost** is replicas × TP × PP × the GPU profile's ``cost_per_hour_usd`` (an on-demand list price; see
hardware_profiles/gpus/*.yaml for its source).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from llmsim.errors import ConfigError, UserError

_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_METRICS = ("ttft", "tpot", "e2el")


@dataclass(frozen=True)
class SLOTerm:
    """``metric_pXX=bound``: at least XX % of all requests have ``metric`` ≤ ``bound_s``."""

    metric: str
    percentile: float
    bound_s: float

    @property
    def field(self) -> str:
        return f"{self.metric}_s"

    def __str__(self) -> str:
        return f"{self.metric}_p{self.percentile:g}≤{self.bound_s * 1000:g}ms"


def parse_slo(text: str) -> list[SLOTerm]:
    """``"ttft_p99=2s,tpot_p99=100ms"`` → terms (one per metric)."""
    terms: dict[str, SLOTerm] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(ttft|tpot|e2el)_p(\d+(?:\.\d+)?)\s*=\s*(\d+(?:\.\d+)?)\s*(s|ms|us)?", part)
        if not match:
            raise ConfigError(f"--slo {part!r}: expected METRIC_pXX=BOUND with METRIC one of {', '.join(_METRICS)} "
                              f"and BOUND in s, ms or us (e.g. ttft_p99=2s)")
        metric, pct, value, unit = match.groups()
        percentile = float(pct)
        if not 0 < percentile <= 100:
            raise ConfigError(f"--slo {part!r}: percentile must be in (0, 100]")
        terms[metric] = SLOTerm(metric, percentile, float(value) * _UNITS[unit or "s"])
    if not terms:
        raise ConfigError("--slo: give at least one bound, e.g. ttft_p99=2s,tpot_p99=100ms")
    return list(terms.values())


def workload_overrides(workload: str, rate: Optional[float], burstiness: Optional[float],
                       num_requests: Optional[int]) -> dict[str, Any]:
    """Config overrides for ``--workload`` (see the module docstring)."""
    out: dict[str, Any] = {}
    if workload.startswith("preset:"):
        out["workload.preset"] = workload.split(":", 1)[1]
        out["workload.trace"] = None
        if rate is not None:
            out["workload.rate"] = rate
        if burstiness is not None:
            out["workload.burstiness"] = burstiness
    else:
        if not Path(workload).exists():
            raise ConfigError(f"--workload {workload!r}: no such trace file; for a synthetic workload write "
                              "preset:NAME (e.g. preset:burstgpt --rate 4)")
        if rate is not None or burstiness is not None:
            raise ConfigError("--rate/--burstiness apply to preset:NAME workloads; scale a trace with "
                              "--set workload.time_scale=X")
        out["workload.trace"] = str(workload)
    if num_requests is not None:
        out["workload.num_requests"] = num_requests
    return out


@dataclass
class Evaluation:
    """One simulated deployment and whether it meets the SLOs."""

    candidate: dict[str, Any]  # config path -> value (hardware.gpu, hardware.tp, --vary knobs)
    replicas: int
    cost_per_hour: float
    feasible: bool
    metrics: dict[str, Any]
    error: Optional[str] = None

    def label(self) -> str:
        return _label(self.candidate)


@dataclass
class _Search:
    """Doubling then bisection over replicas for one candidate."""

    candidate: dict[str, Any]
    cost_per_replica: float
    max_replicas: int
    max_cost: Optional[float]
    lo: int = 0  # largest replica count known to fail
    hi: Optional[int] = None  # smallest replica count known to pass
    stopped: Optional[str] = None

    def next_probe(self) -> Optional[int]:
        if self.stopped:
            return None
        if self.hi is None:
            probe = max(1, 2 * self.lo)
            probe = min(probe, self.max_replicas)
            if probe <= self.lo:
                self.stopped = f"fails with {self.max_replicas} replicas (--max-replicas)"
                return None
            if self.max_cost is not None and probe * self.cost_per_replica > self.max_cost:
                affordable = int(self.max_cost // self.cost_per_replica)
                if affordable <= self.lo:
                    self.stopped = f"fails within --max-cost {self.max_cost:g} $/h"
                    return None
                probe = affordable
            return probe
        if self.hi - self.lo > 1:
            return (self.lo + self.hi) // 2
        return None

    def record(self, replicas: int, feasible: bool) -> None:
        if feasible:
            self.hi = replicas if self.hi is None else min(self.hi, replicas)
        else:
            self.lo = max(self.lo, replicas)


@dataclass
class Plan:
    terms: list[SLOTerm]
    attainment: float
    evaluations: list[Evaluation] = field(default_factory=list)
    chosen: Optional[Evaluation] = None
    notes: list[str] = field(default_factory=list)
    base_config: Any = None

    def config_of(self, evaluation: Evaluation, replicas: Optional[int] = None):
        """The full config of an evaluated deployment (optionally with another replica count)."""
        return _candidate_config(self.base_config, evaluation.candidate, replicas or evaluation.replicas)

    def frontier(self) -> list[Evaluation]:
        """Pareto frontier: evaluations no cheaper-or-equal one beats on SLO attainment."""
        best = -1.0
        out = []
        for e in sorted((e for e in self.evaluations if e.error is None), key=lambda e: (e.cost_per_hour, -attainment_of(e))):
            if attainment_of(e) > best:
                out.append(e)
                best = attainment_of(e)
        return out


def attainment_of(e: Evaluation) -> float:
    """The joint SLO attainment a simulation reached (0 when it recorded none)."""
    value = e.metrics.get("slo_attainment")
    return float(value) if value is not None else 0.0


def meets(metrics: dict[str, Any], terms: list[SLOTerm], attainment: float) -> bool:
    for term in terms:
        value = metrics.get(f"attainment.{term.field}")
        if value is None or value < term.percentile / 100.0 - 1e-12:
            return False
    joint = metrics.get("slo_attainment")
    return joint is not None and joint >= attainment - 1e-12


def _candidate_config(base, candidate: dict[str, Any], replicas: int):
    from llmsim.config import apply_override, build_config

    data = base.model_dump(mode="json")
    for path, value in {**candidate, "cluster.replicas": replicas}.items():
        apply_override(data, path.split("."), value)
    return build_config(data, f"plan candidate {candidate} × {replicas} replicas")


def make_plan(base_config, terms: list[SLOTerm], *, gpus: list[str], tps: list[int],
              vary: Optional[dict[str, list[Any]]] = None, attainment: Optional[float] = None,
              max_replicas: int = 64, max_cost: Optional[float] = None, jobs: int = 1,
              cache_dir: Optional[str | Path] = None, progress=None) -> Plan:
    """Search every candidate (doubling, then bisection on replicas) and pick the cheapest feasible one."""
    import itertools

    from llmsim.config import build_config
    from llmsim.hardware.profiles import load_gpu

    data = base_config.model_dump(mode="json")
    data["slo"] = {t.field: t.bound_s for t in terms}
    base = build_config(data, "plan base config")
    attainment = min(t.percentile for t in terms) / 100.0 if attainment is None else attainment
    plan = Plan(terms, attainment, base_config=base)
    vary = vary or {}
    searches = []
    for gpu, tp, *knobs in itertools.product(gpus, tps, *vary.values()):
        spec = load_gpu(gpu)
        candidate = {"hardware.gpu": gpu, "hardware.tp": tp, **dict(zip(vary, knobs))}
        per_replica = tp * base.hardware.pp * spec.cost_per_hour_usd
        searches.append(_Search(candidate, per_replica, max_replicas, max_cost))
    while True:
        probes = [(s, s.next_probe()) for s in searches]
        probes = [(s, n) for s, n in probes if n is not None]
        if not probes:
            break
        configs = [_candidate_config(base, s.candidate, n) for s, n in probes]
        records = evaluate_configs(configs, jobs=jobs, cache_dir=cache_dir)
        for (search, n), record in zip(probes, records):
            ok = record["status"] == "ok"
            feasible = ok and meets(record["metrics"], terms, attainment)
            plan.evaluations.append(Evaluation(search.candidate, n, n * search.cost_per_replica, feasible,
                                               record["metrics"], None if ok else record["error"]))
            if not ok:
                search.stopped = f"simulation failed: {record['error']}"
            else:
                search.record(n, feasible)
            if progress is not None:
                progress(plan.evaluations[-1])
    for search in searches:
        if search.stopped and search.hi is None:
            plan.notes.append(f"{_label(search.candidate)}: {search.stopped}")
    if plan.evaluations and all(e.error for e in plan.evaluations):
        # Not "no deployment met the SLOs": nothing could be simulated at all, so the cause is the input.
        first = plan.evaluations[0]
        raise UserError(f"every simulation failed; {first.label()} × {first.replicas}: {first.error}")
    feasible = [e for e in plan.evaluations if e.feasible]
    if feasible:
        plan.chosen = min(feasible, key=lambda e: (e.cost_per_hour, e.replicas, e.label()))
    return plan


def _label(candidate: dict[str, Any]) -> str:
    rest = [f"{k.split('.')[-1]}={v}" for k, v in candidate.items() if k not in ("hardware.gpu", "hardware.tp")]
    return " ".join([f"{candidate.get('hardware.gpu')} tp{candidate.get('hardware.tp')}", *rest])


def evaluate_configs(configs: list, *, jobs: int = 1, cache_dir: Optional[str | Path] = None) -> list[dict]:
    """Simulate each config (in parallel with ``jobs`` > 1), reusing cached records; records in input order."""
    from llmsim.sweep.cache import ResultCache
    from llmsim.sweep.executors import LocalExecutor
    from llmsim.sweep.spec import config_key
    from llmsim.sweep.worker import execute_run

    cache = ResultCache(cache_dir) if cache_dir else None
    keys = [config_key(c) for c in configs]
    records: list[Optional[dict]] = [cache.load(k) if cache else None for k in keys]
    todo = [i for i, r in enumerate(records) if r is None or r["status"] != "ok"]
    tasks = [{"key": keys[i], "config": configs[i].model_dump(mode="json")} for i in todo]
    executor = LocalExecutor(jobs)
    try:
        for j, ok, value in executor.map_unordered(execute_run, tasks):
            if not ok:
                value = {"key": tasks[j]["key"], "status": "failed", "metrics": {}, "error": str(value)}
            records[todo[j]] = cache.store(value) if cache else value
    finally:
        executor.close()
    return records  # type: ignore[return-value]
