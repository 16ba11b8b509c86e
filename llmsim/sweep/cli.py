"""``llmsim sweep SPEC -o DIR``: the command-line face of :func:`llmsim.sweep.run_sweep`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from llmsim.metrics.display import plural


def sweep_command(
    spec: Path = typer.Argument(..., help="sweep spec YAML (base:, set:, grid:, runs:, seeds:)"),
    out: Path = typer.Option(..., "-o", "--out", help="output folder: cache/, results.parquet"),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="parallel runs (default: CPUs available)"),
    executor: str = typer.Option("local", "--executor", help="local (process pool), dask, dask-local"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address for --executor dask"),
    keep_runs: bool = typer.Option(False, "--keep-runs", help="also write each run's tables under DIR/runs/<key>/"),
    no_retry_failed: bool = typer.Option(False, "--no-retry-failed", help="keep cached failures instead of rerunning them"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Run every configuration of a sweep spec (cached per run) and gather DIR/results.parquet."""
    from llmsim.errors import UserError
    from llmsim.inputs import check_input_file, check_number, check_output_dir
    from llmsim.sweep.runner import run_sweep

    check_input_file(spec, "sweep spec")
    check_output_dir(out, "-o")
    check_number(jobs, "--jobs", minimum=1)
    outcome = run_sweep(spec, out, jobs=jobs, executor=executor, scheduler_address=scheduler,
                        progress=not quiet and sys.stderr.isatty(), retry_failed=not no_retry_failed,
                        keep_runs=keep_runs)
    typer.echo(f"{plural(outcome.num_runs, 'run')}: {outcome.num_cached} from cache, {outcome.num_executed} executed, "
               f"{outcome.num_failed} failed; wrote {outcome.results_path}")
    if outcome.num_failed:
        failed = outcome.table[outcome.table["status"] != "ok"]
        if outcome.num_failed == len(outcome.table):  # nothing to show for the sweep: say so in the exit status
            raise UserError(f"all {outcome.num_failed} runs failed (recorded in {outcome.results_path}); "
                            f"run {failed.iloc[0]['run']}: {failed.iloc[0]['error']}")
        for _, row in failed.head(5).iterrows():
            typer.echo(f"  run {row['run']} failed: {row['error']}", err=True)
