"""``engine.workers`` unset: one process per usable core for large runs routed up front, else one."""

import multiprocessing as mp
import os

from llmsim.aggregate_run import AUTO_WORKERS_MIN_REQUESTS, worker_count
from llmsim.engine.config import EngineConfig


def test_unset_by_default() -> None:
    assert EngineConfig().workers is None


def test_explicit_count_is_kept() -> None:
    assert worker_count(3, 10) == 3
    assert worker_count(1, 10 * AUTO_WORKERS_MIN_REQUESTS) == 1


def test_auto_is_one_for_small_runs_and_one_per_core_for_large_ones() -> None:
    assert worker_count(None, AUTO_WORKERS_MIN_REQUESTS - 1) == 1
    if "fork" in mp.get_all_start_methods():
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        assert worker_count(None, AUTO_WORKERS_MIN_REQUESTS) == max(1, cores)


def _in_daemon(queue) -> None:
    queue.put(worker_count(None, 10 * AUTO_WORKERS_MIN_REQUESTS))


def test_auto_is_one_in_a_daemonic_process() -> None:
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    queue = ctx.Queue()
    proc = ctx.Process(target=_in_daemon, args=(queue,), daemon=True)
    proc.start()
    assert queue.get(timeout=60) == 1
    proc.join()
