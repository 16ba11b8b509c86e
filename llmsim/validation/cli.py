"""``llmsim validate POINTS.csv``: replay published vLLM benchmarks and score every prediction."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from llmsim.errors import UserError
from llmsim.hardware.cli import calibrate_app

_SHORT = {
    "request_throughput": "req/s", "output_token_throughput": "out tok/s", "total_token_throughput": "tok/s",
    "mean_ttft_ms": "TTFT", "median_ttft_ms": "TTFT p50", "p99_ttft_ms": "TTFT p99",
    "mean_tpot_ms": "TPOT", "median_tpot_ms": "TPOT p50", "p99_tpot_ms": "TPOT p99",
    "mean_itl_ms": "ITL", "median_itl_ms": "ITL p50", "p99_itl_ms": "ITL p99",
    "mean_e2el_ms": "E2E", "median_e2el_ms": "E2E p50", "latency_s": "latency",
    "throughput_tok_s_unspecified": "tok/s?",
}


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def validate_command(
    points_csv: Path = typer.Argument(..., help="CSV of published measurements (the realworld points format)"),
    only: Optional[str] = typer.Option(None, "--only", help="comma-separated ids to run (default: every row)"),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="worker processes"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write rows, per-metric summary and skips as JSON"),
    out_dir: Optional[Path] = typer.Option(None, "-o", "--out", help="also write validation.json and predictions.csv here"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="only the summary table"),
) -> None:
    """Replay every published benchmark of POINTS_CSV in the simulator; print per-row and per-metric errors."""
    from rich.console import Console
    from rich.table import Table

    from llmsim.cli import _with_progress
    from llmsim.fileio import atomic_write_text
    from llmsim.validation.points import read_points
    from llmsim.validation.run import interval_coverage, run_points, summarize_errors, to_json

    points = read_points(points_csv)
    if only:
        wanted = [x.strip() for x in only.split(",") if x.strip()]
        known = {p.id for p in points}
        unknown = [x for x in wanted if x not in known]
        if unknown:
            raise UserError(f"--only: no point with id {', '.join(unknown)} in {points_csv}")
        points = [p for p in points if p.id in set(wanted)]
    for target in (json_out, out_dir):
        if target is not None and target.exists() and target.is_dir() != (target is out_dir):
            raise UserError(f"{target}: exists and is {'not ' if target is out_dir else ''}a directory")
    outcomes = _with_progress(lambda cb: run_points(points, jobs=jobs, progress=cb), "validating", enabled=not quiet)
    console = Console(width=max(Console().width, 120) if sys.stdout.isatty() else 160)
    if not quiet:
        table = Table(title=f"llmsim validate {points_csv}", show_lines=False)
        for name in ("id", "setup", "measured → predicted (error)"):
            table.add_column(name, overflow="fold")
        for o in outcomes:
            if o.skipped is not None:
                table.add_row(o.id, "skipped", o.skipped)
                continue
            errors = o.errors()
            cells = [f"{_SHORT.get(m, m)} {_fmt(o.measured[m])}→{_fmt(o.predicted[m])} ({100 * errors[m]:+.0f}%)"
                     for m in o.predicted if m in errors]
            table.add_row(o.id, o.setup, "; ".join(cells))
        console.print(table)
    summary = summarize_errors(outcomes)
    stats = Table(title="absolute relative error per metric (90 % interval coverage)")
    for name, justify in (("metric", "left"), ("n", "right"), ("median", "right"), ("p90", "right"),
                          ("in interval", "right")):
        stats.add_column(name, justify=justify)
    for metric, s in summary.items():
        coverage = s.get("interval_coverage")
        stats.add_row(metric, str(s["n"]), f"{100 * s['median_abs_error']:.1f}%", f"{100 * s['p90_abs_error']:.1f}%",
                      "-" if coverage is None else f"{100 * coverage:.0f}%")
    console.print(stats)
    coverage = interval_coverage(outcomes)
    if coverage is not None:
        typer.echo(f"interval coverage: {100 * coverage:.0f}% of measured values inside their 90 % interval")
    skipped = sum(o.skipped is not None for o in outcomes)
    typer.echo(f"{len(outcomes) - skipped} of {len(outcomes)} points modelled, {skipped} skipped")
    document = to_json(outcomes)
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    if json_out is not None:
        atomic_write_text(json_out, text)
        typer.echo(f"wrote {json_out}")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "validation.json", text)
        lines = ["id,metric,measured,predicted,error"]
        for row in document["rows"]:
            for metric, m in row["metrics"].items():
                error = "" if m["error"] is None else f"{m['error']:.6g}"
                lines.append(f"{row['id']},{metric},{m['measured']:.6g},{m['predicted']:.6g},{error}")
        atomic_write_text(out_dir / "predictions.csv", "\n".join(lines) + "\n")
        typer.echo(f"wrote {out_dir}/validation.json, predictions.csv")


@calibrate_app.command("fit-e2e")
def fit_e2e_command(
    points_csv: Path = typer.Argument(..., help="CSV of published measurements (the realworld points format)"),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="fit this GPU profile only (default: every GPU with enough points)"),
    out: Path = typer.Option(..., "-o", "--out", help="profile YAML to write (with --gpu), else a folder of them"),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="worker processes"),
    iterations: int = typer.Option(2, "--iterations", min=1, max=5, help="Gauss-Newton iterations"),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="also write every point's measured, "
                                               "in-sample and held-out (leave-one-model-out) values to this CSV"),
) -> None:
    """Fit a GPU profile's step-time parameters on end-to-end points; print leave-one-model-out errors."""
    import yaml
    from rich.console import Console
    from rich.table import Table

    from llmsim.fileio import atomic_write_text
    from llmsim.hardware.profiles import load_gpu
    from llmsim.validation.fit import (FIT_PARAMETERS, MIN_POINTS, Evaluator, fit_gpu, held_out_coverage,
                                       prediction_rows, profile_with)
    from llmsim.validation.points import METRICS, read_points
    from llmsim.validation.setup import SkipPoint, build_setup

    from llmsim.inputs import check_output_dir, check_output_file

    # Checked before a fit of several minutes, not after it.
    check_output_file(predictions, "--predictions", (".csv",))
    if gpu is not None:
        check_output_file(out, "-o", (".yaml", ".yml"))
    elif out.suffix in (".yaml", ".yml"):
        raise UserError(f"-o {out}: without --gpu, fit-e2e writes one profile per GPU; give a folder")
    else:
        check_output_dir(out)
    points = read_points(points_csv)
    groups: dict[str, list] = {}
    model_of: dict[str, str] = {}
    for point in points:
        try:
            setup = build_setup(point)
        except SkipPoint:
            continue
        name = setup.config.hardware.gpu
        groups.setdefault(name, []).append(point)
        model_of[point.id] = setup.config.hardware.model
    if gpu is not None:
        wanted = load_gpu(gpu).name
        if wanted not in groups:
            raise UserError(f"--gpu {gpu}: no modellable point of {points_csv} runs on {wanted}")
        groups = {wanted: groups[wanted]}
    else:
        groups = {g: p for g, p in groups.items() if len(p) >= MIN_POINTS}
        if not groups:
            raise UserError(f"{points_csv}: no GPU has the {MIN_POINTS} modellable points a fit needs")
    console = Console(stderr=False)
    pooled: dict[str, list[float]] = {}
    covered = [0, 0]  # measured values inside their held-out prediction's interval, all of them
    rows: list[str] = []
    for name, group in groups.items():
        spec = load_gpu(name)
        base = yaml.safe_load(Path(spec.source_file).read_text())
        typer.echo(f"fitting {name} on {len(group)} points ({len({model_of[p.id] for p in group})} models) ...", err=True)
        evaluator = Evaluator(base, group, jobs=jobs,
                              on_evaluation=lambda k: typer.echo(f"  simulation pass {k} done", err=True))
        try:
            result = fit_gpu(evaluator, lambda p: model_of[p.id], iterations=iterations)
        finally:
            evaluator.close()
        params = Table(title=f"{name}: fitted parameters")
        for column in ("parameter", "kernel fit", "end-to-end fit", "meaning"):
            params.add_column(column)
        for p in FIT_PARAMETERS:
            params.add_row(p.key, f"{result.theta0[p.key]:.4g}", f"{result.theta[p.key]:.4g}", p.meaning)
        console.print(params)
        errors = Table(title=f"{name}: median absolute error (in-sample / leave-one-model-out)")
        for column in ("metric", "n", "in-sample", "cross-validated"):
            errors.add_column(column)
        for metric, s in result.in_sample.items():
            cv = result.cross_validated.get(metric)
            errors.add_row(metric, str(s["n"]), f"{100 * s['median_abs_error']:.1f}%",
                           "-" if cv is None else f"{100 * cv['median_abs_error']:.1f}%")
        console.print(errors)
        inside, total = held_out_coverage(result)
        covered[0] += inside
        covered[1] += total
        if total:
            typer.echo(f"{name}: {100 * inside / total:.1f}% of {total} held-out predictions' measured values inside "
                       "their 90 % interval")
        profile = profile_with(base, {k: round(v, 5) for k, v in result.theta.items()})
        profile["validation"] = {
            "fitted_on": (f"llmsim calibrate fit-e2e on {Path(points_csv).name}: {result.num_points} points, models "
                          f"{', '.join(result.models)}; intervals from leave-one-model-out residuals"),
            "residuals": result.residuals,
            "prior": {k: round(v, 6) for k, v in result.theta0.items()},
        }
        target = out if gpu is not None else out / f"{name}.yaml"
        atomic_write_text(target, yaml.safe_dump(profile, sort_keys=False, allow_unicode=True))
        typer.echo(f"wrote {target} ({result.evaluations} simulation passes)")
        for metric, values in result.cv_errors.items():
            pooled.setdefault(metric, []).extend(values)
        rows.extend(prediction_rows(result))
    if predictions is not None:
        atomic_write_text(predictions, "id,gpu,metric,measured,in_sample,held_out\n" + "\n".join(rows) + "\n")
        typer.echo(f"wrote {predictions}")
    if len(groups) > 1 and pooled:
        import numpy as np

        table = Table(title="every GPU fitted: leave-one-model-out absolute error")
        for column, justify in (("metric", "left"), ("n", "right"), ("median", "right"), ("p90", "right")):
            table.add_column(column, justify=justify)
        for metric in METRICS:
            if pooled.get(metric):
                values = np.asarray(pooled[metric])
                table.add_row(metric, str(values.size), f"{100 * np.median(values):.1f}%",
                              f"{100 * np.percentile(values, 90):.1f}%")
        console.print(table)
        if covered[1]:
            typer.echo(f"held-out interval coverage: {100 * covered[0] / covered[1]:.1f}% of {covered[1]} measured "
                       "values inside their 90 % interval")
