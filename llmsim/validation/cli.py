"""``llmsim validate POINTS.csv``: replay published vLLM benchmarks and score every prediction."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from llmsim.errors import UserError

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
    from llmsim.validation.run import run_points, summarize_errors, to_json

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
    stats = Table(title="absolute relative error per metric")
    for name, justify in (("metric", "left"), ("n", "right"), ("median", "right"), ("p90", "right")):
        stats.add_column(name, justify=justify)
    for metric, s in summary.items():
        stats.add_row(metric, str(s["n"]), f"{100 * s['median_abs_error']:.1f}%", f"{100 * s['p90_abs_error']:.1f}%")
    console.print(stats)
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
