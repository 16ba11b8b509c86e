"""Prefix caching on the aggregate engine: exact while no two requests can share a block, given up at the first
recompute preemption (the victim may find its own blocks again), kept off where the workload shares prefixes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmsim.config import load_config
from llmsim.engine_modes import workload_shares_blocks
from llmsim.simulation import simulate
from llmsim.workload import Workload
from tests.engine.test_fast_path_equivalence import _assert_frames_equal

BASE = ["workload.num_requests=400", "workload.rate=40", "cluster.replicas=4", "metrics.step_detail=true",
        "scheduler.enable_prefix_caching=true"]


def _both(overrides: list[str]):
    return [simulate(load_config(None, [f"engine.mode={mode}", *overrides])) for mode in ("reference", "fast")]


def _agree(reference, fast) -> None:
    _assert_frames_equal(reference.requests, fast.requests, "requests")
    _assert_frames_equal(reference.steps, fast.steps, "steps")
    _assert_frames_equal(reference.tables["replica_timeseries"], fast.tables["replica_timeseries"], "timeseries")
    assert reference.summary["prefix_cache_hit_rate"] == fast.summary["prefix_cache_hit_rate"]


def test_without_shared_prefixes_and_preemptions_the_aggregate_engine_runs_it_exactly():
    for router in ("round-robin", "least-kv"):
        reference, fast = _both(BASE + [f"cluster.router={router}"])
        assert fast.summary["engine_mode"] == "fast", fast.summary["engine_mode"]
        assert reference.summary["preemptions"] == 0
        _agree(reference, fast)


def test_a_recompute_preemption_hands_the_run_to_the_event_skipping_loop():
    """A small KV pool preempts; a resumed request then finds some of its own blocks still cached (the hit rate
    is not zero), which block counts cannot know: the whole run is made again on the event-skipping loop."""
    for router in ("round-robin", "least-outstanding"):
        reference, fast = _both(BASE + ["scheduler.num_gpu_blocks=300", f"cluster.router={router}"])
        assert fast.summary["engine_mode"] == "fast (event-skipping loop: prefix caching and a recompute preemption)"
        assert reference.summary["preemptions"] > 0 and reference.summary["prefix_cache_hit_rate"] > 0
        _agree(reference, fast)


def test_a_given_up_run_leaves_no_streamed_step_file_behind(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = simulate(load_config(None, BASE + ["scheduler.num_gpu_blocks=300", "metrics.stream_steps=true"]))
    assert result.summary["engine_mode"].startswith("fast (event-skipping loop:")
    folders = list(tmp_path.glob("llmsim-steps-*"))
    assert folders == [result.steps_file.parent]


def _frame(**columns) -> Workload:
    n = len(next(iter(columns.values())))
    return Workload(pd.DataFrame({"arrival_s": np.arange(n, dtype=float), "prompt_tokens": np.full(n, 64),
                                  "output_tokens": np.full(n, 8), **columns}))


def test_a_workload_shares_blocks_only_through_a_second_turn_or_prefix_hashes():
    assert not workload_shares_blocks(_frame(arrival_s=np.zeros(3)).df)
    assert not workload_shares_blocks(_frame(session_id=np.array([1, 2, 3])).df)  # every conversation one turn
    assert workload_shares_blocks(_frame(session_id=np.array([1, 2, 1])).df)
    hashes = pd.Series([None, (4, 5), None], dtype=object)
    assert workload_shares_blocks(_frame(prefix_hashes=hashes).df)
    shared = _frame(session_id=np.array([7, 7]))
    result = simulate(load_config(None, ["scheduler.enable_prefix_caching=true"]), workload=shared)
    assert result.summary["engine_mode"] == "fast (event-skipping loop: prefix caching)"
