"""The ``llmsim`` command. Each subcommand's logic lives in its package; this module only wires them.

User errors (:class:`llmsim.errors.UserError`, bad flags) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from llmsim.errors import UserError

app = typer.Typer(
    name="llmsim",
    help="Discrete-event simulator of LLM serving clusters under bursty workloads.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err_console = Console(stderr=True)


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="YAML config; the bundled bursty default when omitted"),
    set_: List[str] = typer.Option([], "--set", help="override a config field: PATH=VALUE (repeatable)"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="write summary.json, requests.parquet, steps.parquet here"),
    json_out: bool = typer.Option(False, "--json", help="print the summary as JSON instead of a table"),
    plain: bool = typer.Option(False, "--plain", help="print the summary as CSV (metric,value) instead of a table"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    report: Optional[Path] = typer.Option(None, "--report", help="also write an HTML report (plots as PNG beside it)"),
    timeline: Optional[Path] = typer.Option(None, "--timeline", help="also write a Chrome trace-event JSON (Perfetto)"),
) -> None:
    """Simulate one configuration and print its summary."""
    from contextlib import nullcontext

    from llmsim.config import load_config
    from llmsim.metrics.display import print_summary
    from llmsim.simulation import simulate

    from llmsim.inputs import check_output_dir, check_output_file

    cfg = load_config(config, set_)
    out_dir = out or (Path(cfg.output.dir) if cfg.output.dir else None)
    check_output_dir(out_dir, "-o" if out is not None else "output.dir")
    check_output_file(timeline, "--timeline")
    check_output_file(report, "--report")
    listening, recorder = nullcontext(), None
    if timeline is not None:
        from llmsim.metrics.listeners import recorder_listeners
        from llmsim.metrics.timeline import TimelineRecorder

        recorder = TimelineRecorder()
        listening = recorder_listeners(recorder)
    with listening:
        result = _with_progress(lambda cb: simulate(cfg, progress=cb), "simulating", enabled=not quiet and not json_out)
    if out_dir is not None:
        result.write(out_dir)
    if recorder is not None:
        recorder.write(timeline)
        err_console.print(f"wrote timeline {timeline} (open in https://ui.perfetto.dev)", markup=False, highlight=False)
    if report is not None:
        from llmsim.metrics.report import write_report

        write_report(result, report)
        err_console.print(f"wrote report {report}", markup=False, highlight=False)
    if json_out:
        typer.echo(json.dumps(result.summary, indent=2))
    else:
        print_summary(result.summary, plain=plain)
        if out_dir is not None:
            typer.echo(f"wrote {out_dir}/summary.json, requests.parquet, steps.parquet")


@app.command("replay-scheduler")
def replay_scheduler(
    scenario: Path = typer.Argument(..., help="scenario JSON in the vLLM goldens' format"),
    engine: str = typer.Option("sync", "--engine", help="engine loop: sync or async"),
    out: Path = typer.Option(..., "-o", "--out", help="trace JSON to write (golden format)"),
    vllm_version: Optional[str] = typer.Option(None, "--vllm-version",
                                               help="vLLM release whose rules apply where releases differ "
                                                    "(0.32 or 0.33); default: the scenario's, else the newest"),
) -> None:
    """Replay a scheduler scenario tick by tick and write the trace in the golden format."""
    from llmsim.engine.replay import replay_scenario
    from llmsim.engine.scenario import load_scenario
    from llmsim.fileio import atomic_write_text
    from llmsim.inputs import check_output_file

    check_output_file(out, "-o")
    trace = replay_scenario(load_scenario(scenario), engine, source=str(scenario), vllm_version=vllm_version)
    atomic_write_text(out, json.dumps(trace, indent=1) + "\n")
    s = trace["summary"]
    typer.echo(f"wrote {out}: {s['num_steps']} steps, {s['total_preemptions']} preemptions")


@app.command("config")
def show_config(
    config: Optional[Path] = typer.Argument(None, help="YAML config; the bundled default when omitted"),
    set_: List[str] = typer.Option([], "--set", help="override a config field: PATH=VALUE (repeatable)"),
    reference: bool = typer.Option(False, "--reference", help="print every field's type, default and meaning (markdown)"),
) -> None:
    """Print the fully resolved config (every field with its value)."""
    from llmsim.config import config_reference_markdown, config_to_yaml, load_config

    if reference:
        typer.echo(config_reference_markdown(), nl=False)
        return
    typer.echo(config_to_yaml(load_config(config, set_)), nl=False)


bench_app = typer.Typer(help="Benchmarks of the simulator itself.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(bench_app, name="bench")


@bench_app.command("speed")
def bench_speed_command(
    requests: int = typer.Option(100_000, "--requests", min=1, help="requests to simulate (fast engine)"),
    replicas: int = typer.Option(16, "--replicas", min=1, help="replicas the workload is scaled to"),
    reference_requests: int = typer.Option(10_000, "--reference-requests", min=0,
                                           help="requests for the per-step reference engine (0: skip it)"),
    seed: int = typer.Option(0, "--seed"),
    router: Optional[str] = typer.Option(None, "--router", help="cluster.router to time (default: the config's)"),
    policy: Optional[str] = typer.Option(None, "--policy", help="scheduler.policy to time (default: the config's)"),
    set_: List[str] = typer.Option([], "--set", help="override a config field: PATH=VALUE (repeatable)"),
    matrix: bool = typer.Option(False, "--matrix", help="time every policy x router x prefix caching off/on"),
    table: Optional[Path] = typer.Option(None, "--table", help="with --matrix: write the Markdown table here"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the figures as JSON here"),
) -> None:
    """Simulate N requests of the default bursty workload on R replicas at ~70% load; report speed and memory."""
    from llmsim.bench import bench_matrix, bench_speed, matrix_markdown, settings_for, write_json
    from llmsim.inputs import check_output_file

    check_output_file(json_out, "--json")
    check_output_file(table, "--table")
    if matrix:
        result = bench_matrix(requests, replicas, seed, report=typer.echo, settings=set_,
                              policies=[policy] if policy else None, routers=[router] if router else None)
        markdown = matrix_markdown(result, replicas)
        typer.echo(markdown, nl=False)
        if table is not None:
            from llmsim.fileio import atomic_write_text

            atomic_write_text(table, markdown)
            typer.echo(f"wrote {table}")
    else:
        result = bench_speed(requests, replicas, reference_requests, seed, report=typer.echo,
                             settings=settings_for(router, policy, set_))
    if json_out is not None:
        write_json(result, json_out)
        typer.echo(f"wrote {json_out}")


def _with_progress(work, label: str, enabled: bool):
    """Run ``work(callback)`` with a progress bar that appears only if the work takes a while."""
    if not enabled or not sys.stderr.isatty():
        return work(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def callback(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return work(callback)


def _mount_subcommands() -> None:
    """Attach the subcommands that live in other packages (each optional until its package provides it)."""
    import importlib

    for module_name, attr, name in (
        ("llmsim.workload.cli", "analyze_command", "analyze"),
        ("llmsim.workload.cli", "generate_command", "generate"),
        ("llmsim.sweep.cli", "sweep_command", "sweep"),
        ("llmsim.plan_cli", "plan_command", "plan"),
        ("llmsim.metrics.report", "report_command", "report"),
        ("llmsim.validation.cli", "validate_command", "validate"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, attr):
            app.command(name)(getattr(module, attr))
    for module_name, attr, name in (
        ("llmsim.workload.cli", "trace_app", "trace"),
        ("llmsim.hardware.cli", "calibrate_app", "calibrate"),
        ("llmsim.hardware.cli", "profiles_app", "profiles"),
        ("llmsim.example_files", "examples_app", "examples"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, attr):
            app.add_typer(getattr(module, attr), name=name)


_mount_subcommands()


def _print_error(message: str) -> None:
    """Exactly one line on stderr, whatever the message holds (newlines from a parser are folded)."""
    err_console.print("error: " + " ".join(message.split()), markup=False, highlight=False, soft_wrap=True)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the console script: one line and exit 2 for every user error, no traceback."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except UserError as exc:
        _print_error(str(exc))
        return exc.exit_code
    except MemoryError:
        _print_error("out of memory; make the run smaller (workload.num_requests or workload.duration_s, "
                     "metrics.step_detail: false, fewer cluster.replicas)")
        return 2
    except OSError as exc:
        # The file system refused something (disk full, permissions changed during the run, a path
        # that vanished): the user's environment, not a bug, so one line naming the path.
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _print_error(f"{where}{exc.strerror or exc}")
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        return 130
    except Exception as exc:  # noqa: BLE001 - click/typer usage errors, whichever click they vendor
        kind = type(exc).__name__
        if kind == "Exit":
            return getattr(exc, "exit_code", 0)
        if kind == "NoArgsIsHelpError":
            err_console.print(exc.format_message(), markup=False, highlight=False)
            return 0
        if kind == "Abort":
            err_console.print("aborted", markup=False)
            return 130
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            _print_error(exc.format_message())
            return exc.exit_code
        raise
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
