"""Run a sweep: expand the spec, skip runs already cached, execute the rest, gather one Parquet table.

Layout of a sweep's output folder ``DIR``::

    DIR/spec.yaml          the spec as run
    DIR/cache/<key>.json   one record per run, written atomically as the run finishes
    DIR/runs/<key>/        per-run summary.json, requests.parquet, steps.parquet (only with keep_runs)
    DIR/results.parquet    one row per run: swept values, seed, status, error, every scalar summary
                           metric flattened (``ttft_s.p99``), ``attainment.<slo>``; wall-clock in ``wall_*``

Killing a sweep loses only the runs in flight; running it again reuses every cached record. A failed run
is recorded (``status == "failed"``, ``error``) and does not stop the others; by default it is retried the
next time the sweep runs.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pandas as pd

from llmsim.fileio import atomic_write_text
from llmsim.sweep.cache import ResultCache
from llmsim.sweep.executors import check_executor, make_executor
from llmsim.sweep.spec import RunSpec, SweepSpec, dump_spec, expand_runs, load_sweep_spec, spec_from_dict
from llmsim.sweep.worker import execute_run

RESULTS_FILE = "results.parquet"


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did: the gathered table and how many runs were cached, run and failed."""

    table: pd.DataFrame
    out_dir: Path
    num_runs: int
    num_cached: int
    num_executed: int
    num_failed: int

    @property
    def results_path(self) -> Path:
        return self.out_dir / RESULTS_FILE


def resolve_spec(spec: SweepSpec | dict | str | Path, root: Optional[Path] = None) -> tuple[SweepSpec, Path]:
    if isinstance(spec, SweepSpec):
        return spec, Path(root or ".")
    if isinstance(spec, dict):
        return spec_from_dict(spec), Path(root or ".")
    loaded, spec_root = load_sweep_spec(spec)
    return loaded, Path(root) if root is not None else spec_root


def run_sweep(
    spec: SweepSpec | dict | str | Path,
    out_dir: str | Path,
    *,
    jobs: Optional[int] = None,
    executor: str = "local",
    scheduler_address: Optional[str] = None,
    progress: bool = False,
    retry_failed: bool = True,
    keep_runs: bool = False,
    root: Optional[str | Path] = None,
    on_record: Optional[Callable[[RunSpec, dict], None]] = None,
) -> SweepOutcome:
    """Run every run of ``spec`` not already in ``out_dir``'s cache and write ``out_dir/results.parquet``.

    ``spec`` is a YAML path, a mapping or a :class:`SweepSpec`; relative ``base:`` paths are taken from the
    spec file's folder (or ``root``). ``on_record(run, record)`` is called as each run's record is stored.
    """
    check_executor(executor)
    sweep_spec, spec_root = resolve_spec(spec, Path(root) if root else None)
    runs = expand_runs(sweep_spec, spec_root, source=str(spec) if isinstance(spec, (str, Path)) else "sweep spec")
    preflight(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "spec.yaml", dump_spec(sweep_spec))
    cache = ResultCache(out_dir / "cache")
    records: dict[str, dict] = {}
    todo: list[RunSpec] = []
    for run in runs:
        if run.key in records:
            continue  # the same config twice in one spec is one run
        cached = cache.load(run.key)
        if cached is not None and (cached["status"] == "ok" or not retry_failed):
            records[run.key] = cached
        else:
            todo.append(run)
    num_cached = len(records)
    failed = sum(1 for r in records.values() if r["status"] != "ok")
    with _progress_bar(progress, total=len(records) + len(todo), done=num_cached, failed=failed) as tick:
        for run, record in _execute(todo, out_dir, executor, jobs, scheduler_address, keep_runs):
            record = cache.store(record)
            records[run.key] = record
            tick(record["status"] == "ok")
            if on_record is not None:
                on_record(run, record)
    table = gather_table(runs, records)
    write_table(table, out_dir / RESULTS_FILE)
    return SweepOutcome(table, out_dir, len(runs), num_cached, len(todo),
                        int((table["status"] != "ok").sum()) if len(table) else 0)


def preflight(runs: list[RunSpec]) -> None:
    """Check, before any folder is made or worker started, what can be checked without simulating: each
    run's deployment (the model fits its GPUs, tp divides the heads), its trace file and its cost estimate
    (:mod:`llmsim.limits`). A sweep whose every run fails these checks is refused with the first reason;
    if only some do, they run anyway and are recorded as failed like any run that fails."""
    from llmsim.errors import UserError
    from llmsim.limits import check_run
    from llmsim.deployment import build_deployment
    from llmsim.workload.parsing import check_file

    first = None
    for run in runs:
        try:
            build_deployment(run.config)
            if run.config.workload.trace:
                check_file(Path(run.config.workload.trace), text=False)
            check_run(run.config)
            return  # one run that passes is enough for the sweep to be worth starting
        except UserError as exc:
            first = first or (run, exc)
    if first is not None:
        run, exc = first
        raise UserError(f"every one of the {len(runs)} runs would fail; run {run.index} "
                        f"({', '.join(f'{k}={v}' for k, v in run.swept.items()) or 'base config'}): {exc}")


def _execute(todo: list[RunSpec], out_dir: Path, executor_name: str, jobs, address, keep_runs) -> Iterable:
    if not todo:
        return
    tasks = [{"key": run.key, "config": run.config.model_dump(mode="json"),
              "keep_dir": str(out_dir / "runs" / run.key) if keep_runs else None} for run in todo]
    executor = make_executor(executor_name, jobs, address)
    try:
        for i, ok, value in executor.map_unordered(execute_run, tasks):
            if ok:
                yield todo[i], value
            else:  # the worker itself died (e.g. out of memory): still a recorded failure
                yield todo[i], {"key": todo[i].key, "status": "failed", "metrics": {},
                                "error": f"{type(value).__name__}: {value}", "wall_run_s": None}
    finally:
        executor.close()


def gather_table(runs: list[RunSpec], records: dict[str, dict]) -> pd.DataFrame:
    """One row per run in spec order (so the table does not depend on which run finished first)."""
    rows = []
    for run in runs:
        record = records.get(run.key)
        if record is None:
            continue
        row: dict[str, Any] = {"run": run.index, "run_key": run.key}
        row.update(run.swept)
        row["seed"] = run.seed
        row["status"] = record["status"]
        row["error"] = record.get("error")
        for name, value in record.get("metrics", {}).items():
            # A summary metric named like a swept config path (cluster.replicas) must not be hidden by it.
            row["summary." + name if name in run.swept else name] = value
        row["wall_run_s"] = record.get("wall_run_s")
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in table.columns:
        if table[column].dtype == object:
            kinds = {type(v) for v in table[column] if v is not None and v == v}
            if len(kinds) > 1 and not kinds <= {int, float}:
                # Parquet needs one type per column: mixed swept values (e.g. 64 and "auto") become text.
                table[column] = table[column].map(lambda v: None if v is None else str(v))
    return table


def write_table(table: pd.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _progress_bar:
    """A rich progress bar showing runs done, failed and left (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, done: int, failed: int) -> None:
        self.enabled, self.total, self.done, self.failed = enabled, total, done, failed

    def __enter__(self):
        if not self.enabled:
            return lambda ok: None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("sweep"), BarColumn(),
                             TextColumn("{task.fields[done]} done, {task.fields[failed]} failed, {task.fields[left]} left"),
                             TimeElapsedColumn(), console=Console(stderr=True))
        self._bar.start()
        self._task = self._bar.add_task("sweep", total=self.total, completed=self.done, **self._fields())
        return self._tick

    def _fields(self) -> dict[str, int]:
        return {"done": self.done - self.failed, "failed": self.failed, "left": self.total - self.done}

    def _tick(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        self._bar.update(self._task, completed=self.done, **self._fields())

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._bar.stop()
