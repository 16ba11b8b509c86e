"""``llmsim plan``: the command around :mod:`llmsim.planner` (flags checked at the edge, the plan printed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from llmsim.errors import ConfigError, UserError
from llmsim.planner import Plan, attainment_of, make_plan, parse_slo, workload_overrides


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
                      "error" if e.error else f"{attainment_of(e):.2%}",
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
                  f"SLO attainment {attainment_of(c):.2%}", style="bold green", markup=False)


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
