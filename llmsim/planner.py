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

import typer

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
        for e in sorted((e for e in self.evaluations if e.error is None), key=lambda e: (e.cost_per_hour, -_att(e))):
            if _att(e) > best:
                out.append(e)
                best = _att(e)
        return out


def _att(e: Evaluation) -> float:
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


def _print_plan(plan: Plan) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmsim.metrics.display import plural

    console = Console(width=None if Console().is_terminal else 250)
    frontier = {id(e) for e in plan.frontier()}
    table = Table(title=f"Deployments simulated (SLO: {', '.join(map(str, plan.terms))}; "
                        f"joint attainment ≥ {plan.attainment:.2%})")
    for column in ("candidate", "replicas", "$/h", "SLO attainment", "p99 TTFT (s)", "p99 TPOT (ms)", "meets SLO",
                   "frontier"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for e in sorted(plan.evaluations, key=lambda e: (e.cost_per_hour, e.label(), e.replicas)):
        m = e.metrics
        table.add_row(e.label(), str(e.replicas), f"{e.cost_per_hour:,.2f}",
                      "error" if e.error else f"{_att(e):.2%}",
                      _num(m.get("ttft_s.p99")), _num(m.get("tpot_s.p99"), 1000),
                      "yes" if e.feasible else "no", "●" if id(e) in frontier else "")
    console.print(table)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
    if plan.chosen is None:
        console.print("no deployment met the SLOs within the limits", style="bold red")
        return
    c = plan.chosen
    console.print(f"chosen plan: {c.label()}, {plural(c.replicas, 'replica')}, ${c.cost_per_hour:,.2f}/h, "
                  f"SLO attainment {_att(c):.2%}", style="bold green", markup=False)


def _num(value, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:,.3g}"


def _preflight(base) -> None:
    """Load the workload and size the run once, before any candidate: a bad trace or preset is the input's
    fault, reported as such, not a candidate that "misses the SLO"."""
    from llmsim.limits import check_run
    from llmsim.workload import build_workload

    check_run(base)
    check_run(base, build_workload(base.workload, base.seed))


def _parse_tps(text: str) -> list[int]:
    """``--tp 1,2,4`` → [1, 2, 4]; anything but positive integers is a UserError naming --tp."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise UserError(f"--tp {text!r}: expected comma-separated positive integers, e.g. 1,2,4")
    return [int(p) for p in parts]


def _parse_vary(items: list[str]) -> dict[str, list[Any]]:
    import yaml

    out: dict[str, list[Any]] = {}
    for item in items:
        path, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError(f"--vary {item!r}: expected PATH=V1,V2 (e.g. scheduler.max_num_seqs=64,256)")
        out[path.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    return out


def plan_command(
    workload: str = typer.Option(..., "--workload", "-w", help="trace file, or preset:NAME (burstgpt, poisson, gamma)"),
    slo: str = typer.Option(..., "--slo", help="bounds, e.g. ttft_p99=2s,tpot_p99=100ms"),
    gpus: str = typer.Option("A100-80GB", "--gpus", help="comma-separated GPU profiles to consider"),
    tp: str = typer.Option("1", "--tp", help="comma-separated tensor-parallel degrees to consider"),
    vary: list[str] = typer.Option([], "--vary", help="also search a knob: PATH=V1,V2 (repeatable)"),
    attainment: Optional[float] = typer.Option(None, "--attainment", help="joint SLO attainment required (default: smallest percentile)"),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="most $/h to consider"),
    max_replicas: int = typer.Option(64, "--max-replicas", help="largest fleet to consider per candidate"),
    rate: Optional[float] = typer.Option(None, "--rate", help="preset workloads: mean arrival rate (req/s)"),
    burstiness: Optional[float] = typer.Option(None, "--burstiness", help="preset workloads: gamma shape (1 = Poisson)"),
    num_requests: Optional[int] = typer.Option(None, "--num-requests", "-n", help="requests to simulate"),
    config: Optional[Path] = typer.Option(None, "--config", help="base config (model, scheduler knobs, …)"),
    set_: list[str] = typer.Option([], "--set", help="override a base config field: PATH=VALUE"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="simulations in parallel"),
    cache: Optional[Path] = typer.Option(None, "--cache", help="folder caching every simulation by its config"),
    write_config: Optional[Path] = typer.Option(None, "--write-config", help="write the chosen deployment's full config YAML"),
) -> None:
    """Find the cheapest deployment (GPU kind, TP, replicas) meeting the SLOs; print the cost/attainment frontier."""
    from llmsim.config import config_to_yaml, load_config
    from llmsim.fileio import atomic_write_text

    from llmsim.hardware.memory import check_tensor_parallel
    from llmsim.hardware.profiles import load_model
    from llmsim.inputs import check_number, check_output_file

    check_output_file(write_config, "--write-config")
    check_number(attainment, "--attainment", minimum=0, maximum=1, exclusive_minimum=True)
    check_number(max_replicas, "--max-replicas", minimum=1)
    check_number(max_cost, "--max-cost", minimum=0, exclusive_minimum=True)
    check_number(rate, "--rate", minimum=0, exclusive_minimum=True)
    check_number(burstiness, "--burstiness", minimum=0.01, maximum=1000)
    check_number(num_requests, "-n/--num-requests", minimum=1)
    check_number(jobs, "--jobs", minimum=1)
    tps = _parse_tps(tp)
    terms = parse_slo(slo)
    overrides = [f"{k}={'null' if v is None else v}" for k, v in
                 workload_overrides(workload, rate, burstiness, num_requests).items()]
    base = load_config(config, [*overrides, *set_])
    _preflight(base)
    model = load_model(base.hardware.model)
    for degree in tps:  # a degree vLLM would refuse is a bad flag, not a candidate that "misses the SLO"
        check_tensor_parallel(model, degree, "--tp")
    plan = make_plan(base, terms, gpus=[g.strip() for g in gpus.split(",") if g.strip()],
                     tps=tps, vary=_parse_vary(vary),
                     attainment=attainment, max_replicas=max_replicas, max_cost=max_cost, jobs=jobs, cache_dir=cache,
                     progress=lambda e: typer.echo(f"  simulated {e.label()} × {e.replicas}: "
                                                   f"{'meets' if e.feasible else 'misses'} SLO", err=True))
    _print_plan(plan)
    if plan.chosen is None:
        raise UserError("no deployment met the SLOs; raise --max-replicas / --max-cost or relax --slo")
    if write_config is not None:
        atomic_write_text(write_config, config_to_yaml(plan.config_of(plan.chosen)))
        typer.echo(f"wrote {write_config}")
