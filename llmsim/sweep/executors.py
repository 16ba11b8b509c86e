"""Where the runs of a sweep execute: in this process, on a local process pool, or on a Dask cluster.

Every executor does one thing: apply a function to a list of arguments and yield ``(index, ok, value)`` as
each call finishes, in whatever order they finish. Results do not depend on the executor: a run is a pure
function of its config (every random draw is seeded from it), and the runner orders the table by run, not
by completion.

- ``local``: ``jobs`` worker processes (``concurrent.futures`` with the forkserver start method, which is safe
  next to the progress bar's thread); ``jobs=1`` runs in this process, with no pool at all.
- ``dask``: an existing ``dask.distributed`` scheduler at ``scheduler_address`` (its workers need llmsim
  installed, the same version).
- ``dask-local``: starts a ``LocalCluster`` of ``jobs`` single-threaded worker processes for the sweep.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

from llmsim.errors import ConfigError

Outcome = tuple[int, bool, Any]  # (argument index, finished without exception, value or exception)


class Executor(Protocol):
    """Maps a function over arguments, yielding outcomes as they complete."""

    def map_unordered(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Outcome]: ...
    def close(self) -> None: ...


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def exit_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Pool-worker initializer: end this worker when the sweep's main process is gone.

    A worker is a child of the forkserver, not of the main process, and holds the pool's queue pipes and
    the resource tracker's pipe open itself, so after a ``kill -9`` of the main process nothing would ever
    tell it to stop: workers, forkserver and resource tracker lived on for the rest of their runs (up to half
    an hour). A daemon thread polls the main process (gone, or a zombie) and the worker's own parent, and
    exits the worker at once; the forkserver then sees its pipe close and exits too, and so does the tracker.
    """
    import threading
    import time

    def main_alive() -> bool:
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:
            with open(f"/proc/{parent_pid}/stat") as handle:
                return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return True  # no /proc (macOS): the kill probe above is all we have

    original_parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != original_parent or not main_alive():
                os._exit(1)

    threading.Thread(target=watch, name="llmsim-exit-with-parent", daemon=True).start()


class LocalExecutor:
    """A process pool of ``jobs`` workers (``jobs=1``: run in this process)."""

    def __init__(self, jobs: Optional[int] = None) -> None:
        self.jobs = jobs or default_jobs()
        self._pool: Optional[ProcessPoolExecutor] = None

    def map_unordered(self, fn, args):
        if self.jobs <= 1 or len(args) <= 1:
            for i, arg in enumerate(args):
                try:
                    yield i, True, fn(arg)
                except Exception as exc:  # noqa: BLE001 - the runner records it as the run's failure
                    yield i, False, exc
            return
        if self._pool is None:  # one pool for every call until close(): workers start (and import) once
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("forkserver"),
                                             initializer=exit_with_parent, initargs=(os.getpid(),))
        futures = {self._pool.submit(fn, arg): i for i, arg in enumerate(args)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                exc = future.exception()
                yield futures[future], exc is None, exc if exc is not None else future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor:
    """Runs on a ``dask.distributed`` cluster: an existing scheduler, or a LocalCluster started here."""

    def __init__(self, scheduler_address: Optional[str] = None, jobs: Optional[int] = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - dask is a declared optional dependency
            raise ConfigError("--executor dask needs dask.distributed: pip install 'llmsim[dask]'") from None
        self._cluster = None
        if scheduler_address is None:
            self._cluster = LocalCluster(n_workers=jobs or default_jobs(), threads_per_worker=1, processes=True,
                                         dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self._cluster)
        else:
            try:
                self.client = Client(scheduler_address, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"--scheduler {scheduler_address}: cannot reach a Dask scheduler ({exc})") from None

    def map_unordered(self, fn, args):
        from distributed import as_completed

        futures = self.client.map(fn, list(args), pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        for future in as_completed(futures):
            i = index[future.key]
            if future.status == "finished":
                yield i, True, future.result()
            else:
                yield i, False, future.exception()
            future.release()

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "local": lambda jobs=None, scheduler_address=None: LocalExecutor(jobs),
    "dask": lambda jobs=None, scheduler_address=None: DaskExecutor(_require_address(scheduler_address), jobs),
    "dask-local": lambda jobs=None, scheduler_address=None: DaskExecutor(None, jobs),
}


def _require_address(address: Optional[str]) -> str:
    if not address:
        raise ConfigError("--executor dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786); "
                          "use --executor dask-local to start a local Dask cluster")
    return address


def check_executor(name: str) -> None:
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {name!r}: unknown executor; valid: {', '.join(EXECUTORS)}")


def make_executor(name: str, jobs: Optional[int] = None, scheduler_address: Optional[str] = None) -> Executor:
    check_executor(name)
    return EXECUTORS[name](jobs=jobs, scheduler_address=scheduler_address)
