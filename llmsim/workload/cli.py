"""Workload commands for the ``llmsim`` CLI: ``analyze``, ``generate`` and ``trace fetch``.

The lead's ``llmsim/cli.py`` mounts them::

    app.command("analyze")(analyze_command)
    app.command("generate")(generate_command)
    app.add_typer(trace_app, name="trace")

User errors are raised as :class:`~llmsim.errors.UserError`; ``llmsim.cli.main`` prints them on one line
and exits with status 2.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from llmsim.errors import UserError
from llmsim.workload.workload import Workload

trace_app = typer.Typer(help="Trace files: download official releases.", no_args_is_help=True)


def _progress(**kwargs) -> Progress:
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
    return Progress(*columns, transient=True, disable=not sys.stderr.isatty(), **kwargs)


def _json_ready(value):
    """NaN/inf → null so the JSON is valid everywhere; numpy scalars → Python numbers."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def analyze_command(
    trace: Path = typer.Argument(..., help="trace file (BurstGPT, Azure, Mooncake, generic CSV/Parquet/JSONL)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the figures as JSON here"),
    report: Optional[Path] = typer.Option(None, "--report", help="write one PNG per view into this folder"),
    format: Optional[str] = typer.Option(None, "--format", help="trace format (auto-detected by default)"),
    model: Optional[str] = typer.Option(None, help="keep rows of this model"),
    service: Optional[str] = typer.Option(None, help="keep rows of this service / log type"),
    fit_window_s: Optional[float] = typer.Option(None, "--fit-window", help="seconds per window for the per-window fits"),
) -> None:
    """Characterise a trace as the BurstGPT study does (rate, periodicity, burstiness, fits, lengths, failures)."""
    from llmsim.inputs import check_number, check_output_dir, check_output_file
    from llmsim.workload.analyze import analyze_workload
    from llmsim.workload.loaders import load_trace

    check_output_file(json_out, "--json")
    check_output_dir(report, "--report")
    check_number(fit_window_s, "--fit-window", minimum=0, exclusive_minimum=True)
    with _progress() as progress:
        task = progress.add_task(f"loading {trace.name}", total=3)
        workload = load_trace(trace, format, model=model, service=service, include_failures=True)
        progress.update(task, advance=1, description="analysing")
        result = _json_ready(analyze_workload(workload, fit_window_s))
        progress.update(task, advance=1, description="drawing")
        written = []
        if report is not None:
            from llmsim.workload.report import write_report

            written = write_report(workload, result, report)
        progress.update(task, advance=1)
    if json_out is not None:
        from llmsim.fileio import atomic_write_text

        atomic_write_text(json_out, json.dumps(result, indent=2) + "\n")
    _print_summary(result, json_out, report, len(written))


def _print_summary(result: dict, json_out, report, num_figures: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=result["source"], show_header=False)
    fit = result.get("arrival_fit") or {}
    rows = [("requests", result["num_requests"]), ("duration_s", result["duration_s"]),
            ("mean_rps", result["mean_rps"]), ("peak_rps_1min", result["peak_rps_1min"]),
            ("interarrival_cv", result["interarrival_cv"]), ("dispersion_index_1s", result["dispersion_index_1s"]),
            ("failure_rate", result["failure_rate"]),
            ("arrival_fit", f"{fit.get('family')} shape={fit.get('shape', float('nan')):.3g} ks={fit.get('ks', float('nan')):.3f}"
             if fit else "-")]
    for column in ("prompt_tokens", "output_tokens"):
        s = result[column]
        rows.append((column, "  ".join(f"{k} {s[k]:.0f}" for k in ("mean", "p50", "p90", "p99") if s[k] is not None)))
    for name, value in rows:
        table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)
    if json_out:
        typer.echo(f"wrote {json_out}")
    if report:
        typer.echo(f"wrote {num_figures} figures to {report}")


def generate_command(
    out: Path = typer.Option(..., "-o", "--out", help="output trace (.csv or .parquet, canonical columns)"),
    fit: Optional[Path] = typer.Option(None, "--fit", help="fit a model to this trace and sample from it"),
    preset: Optional[str] = typer.Option(None, "--preset", help="burstgpt | gamma | poisson | servegen:<pool>/<id>"),
    duration: Optional[float] = typer.Option(None, "--duration", help="seconds to generate (--fit: the source's by default)"),
    rate: Optional[float] = typer.Option(None, "--rate", help="target mean rate, req/s (burstiness kept)"),
    rate_scale: Optional[float] = typer.Option(None, "--rate-scale", help="multiply the rate (burstiness kept)"),
    time_scale: Optional[float] = typer.Option(None, "--time-scale", help="NAIVE time compression: multiply every time"),
    burstiness: Optional[float] = typer.Option(None, "--burstiness", help="preset: gamma shape (1 = Poisson)"),
    format: Optional[str] = typer.Option(None, "--format", help="format of the --fit trace"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a synthetic trace from a fitted model (--fit) or a preset (--preset)."""
    from llmsim.inputs import check_output_file

    check_output_file(out, "-o", suffixes=(".csv", ".parquet"))
    workload = build_generated(fit=fit, preset=preset, duration=duration, rate=rate, rate_scale=rate_scale,
                               time_scale=time_scale, burstiness=burstiness, format=format, seed=seed)
    write_trace(workload, out)
    typer.echo(f"wrote {len(workload)} requests over {workload.duration_s:.1f} s to {out} ({workload.source})")


def build_generated(*, fit=None, preset=None, duration=None, rate=None, rate_scale=None, time_scale=None,
                    burstiness=None, format=None, seed=0) -> Workload:
    """The logic of ``llmsim generate`` as a function (used by tests and scripts)."""
    from llmsim.inputs import check_number

    if (fit is None) == (preset is None):
        raise UserError("give exactly one of --fit TRACE and --preset NAME")
    for flag, value in (("--duration", duration), ("--rate", rate), ("--rate-scale", rate_scale),
                        ("--time-scale", time_scale)):
        check_number(value, flag, minimum=0, exclusive_minimum=True)
    check_number(burstiness, "--burstiness", minimum=0.01, maximum=1000)
    check_number(seed, "--seed", minimum=0, maximum=2**63 - 1)
    if sum(x is not None for x in (rate, rate_scale, time_scale)) > 1:
        raise UserError("give at most one of --rate, --rate-scale and --time-scale")
    if fit is not None:
        from llmsim.workload.fit import FittedWorkload
        from llmsim.workload.loaders import load_trace

        if burstiness is not None:
            raise UserError("--burstiness applies to presets; a fitted model keeps its source's burstiness")
        model = FittedWorkload.fit(load_trace(fit, format, include_failures=True))
        return model.generate(duration, rate=rate, rate_scale=rate_scale, time_scale=time_scale, seed=seed)
    if duration is None:
        raise UserError("--preset needs --duration S")
    from llmsim.workload.build import _preset_workload
    from llmsim.workload.synthetic import PRESETS

    base_rate = rate
    if rate_scale is not None:
        if preset not in PRESETS:
            raise UserError(f"--rate-scale needs one of the presets {', '.join(PRESETS)}; use --rate otherwise")
        base_rate = rate_scale * PRESETS[preset].rate_rps
    span = duration / time_scale if time_scale is not None else duration
    workload = _preset_workload(preset, num_requests=None, duration_s=span, rate=base_rate,
                                burstiness=burstiness, seed=seed)
    if time_scale is not None:
        df = workload.df.assign(arrival_s=workload.df["arrival_s"] * time_scale)
        workload = workload.with_df(df, f"{workload.source} (naive time compression x{time_scale:g})")
    return workload


def write_trace(workload: Workload, out: Path) -> None:
    """Canonical columns to CSV or Parquet (prefix hashes only in Parquet); the file appears only complete."""
    import io

    from llmsim.fileio import atomic_write_bytes

    df = workload.df
    suffix = out.suffix.lower()
    buffer = io.BytesIO()
    if suffix == ".parquet":
        df = df.assign(prefix_hashes=df["prefix_hashes"].map(list)) if "prefix_hashes" in df.columns else df
        df.to_parquet(buffer, index=False)
    elif suffix == ".csv":
        df.drop(columns=[c for c in ("prefix_hashes",) if c in df.columns]).to_csv(buffer, index=False, float_format="%.6f")
    else:
        raise UserError(f"{out}: output must end in .csv or .parquet")
    atomic_write_bytes(out, buffer.getvalue())


@trace_app.command("fetch")
def fetch_command(
    dataset: str = typer.Argument(..., help="dataset name: burstgpt"),
    release: str = typer.Option("1", "--release", help="1 | 2 | 3 (or 1-without-fails, 2-without-fails)"),
    dest: Optional[Path] = typer.Option(None, "--dir", help="folder (default ~/.cache/llmsim/traces/burstgpt)"),
) -> None:
    """Download an official trace release and check its sha256."""
    from llmsim.workload.fetch import fetch_burstgpt

    if dataset != "burstgpt":
        raise UserError(f"unknown dataset {dataset!r}; valid: burstgpt")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(f"BurstGPT release {release}", total=None)
        path = fetch_burstgpt(release, dest, progress=lambda done, total: progress.update(task, completed=done, total=total))
    typer.echo(f"{path} (sha256 verified)" if release != "3" else f"{path} (no published sha256 to verify)")
