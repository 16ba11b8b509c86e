"""Prefix caching on the aggregate engine, exact when no two requests can share a block: a request preempted by
recompute finds what is left of its own blocks when it resumes; a state the counts do not follow gives the run up
to the event-skipping loop; a workload that shares prefixes keeps the event-skipping loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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


PRESSURE = ["scheduler.num_gpu_blocks=300"]


def test_a_preempted_request_finds_what_is_left_of_its_own_blocks():
    """A small KV pool preempts; a resumed request finds the leading blocks the pool has not evicted meanwhile (the
    hit rate is not zero), counted from the free queue's order, as the reference engine finds them block by
    block: in the async and the sync loop, behind a router that reads no state and one that does, for vLLM V1 and
    a policy written as its class with switches."""
    for extra in (["cluster.router=round-robin"], ["cluster.router=least-outstanding"],
                  ["scheduler.async_scheduling=false"], ["scheduler.policy=sarathi", "cluster.router=least-kv"]):
        reference, fast = _both(BASE + PRESSURE + extra)
        assert fast.summary["engine_mode"] == "fast", fast.summary["engine_mode"]
        assert reference.summary["preemptions"] > 0 and reference.summary["prefix_cache_hit_rate"] > 0
        _agree(reference, fast)


def _giving_up(monkeypatch):
    """Make every resume a state the counts do not follow."""
    from llmsim.engine.aggregate.prefix import OwnBlockCache
    from llmsim.engine.aggregate.rules import BlockContentsNeeded

    def give_up(self, i):
        raise BlockContentsNeeded(f"request {i}")

    monkeypatch.setattr(OwnBlockCache, "_own_hits", give_up)


def test_a_run_the_counts_cannot_follow_is_made_again_on_the_event_skipping_loop(monkeypatch):
    _giving_up(monkeypatch)
    reference, fast = _both(BASE + PRESSURE)
    assert fast.summary["engine_mode"] == "fast (event-skipping loop: prefix caching and a resumed request's blocks)"
    _agree(reference, fast)


def test_a_given_up_run_leaves_no_streamed_step_file_behind(tmp_path, monkeypatch):
    import tempfile

    _giving_up(monkeypatch)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = simulate(load_config(None, BASE + PRESSURE + ["metrics.stream_steps=true"]))
    assert result.summary["engine_mode"].startswith("fast (event-skipping loop:")
    folders = list(tmp_path.glob("llmsim-steps-*"))
    assert folders == [result.steps_file.parent]


def test_what_a_resume_leaves_behind_is_an_older_copy_that_a_later_lookup_may_not_reach():
    """A request whose tokens end on a block boundary keeps its last full block out of the hit (one token is always
    computed); that block stays cached as an older copy of a key the request registers again. A later resume whose
    lookup reaches that key would take the older copy wherever it stands, so the engine gives the run up there."""
    from llmsim.engine.aggregate.prefix import OwnBlockCache
    from llmsim.engine.aggregate.rules import BlockContentsNeeded

    cache = OwnBlockCache()
    cache._init_own_block_cache(True)
    cache.replica_id, cache.bs, cache.P, cache.out, cache.comp, cache.ph, cache.depth = 0, 16, [64], [0], [64], [0], 1
    cache._cache_release(0, 0)  # preempted with 4 full blocks registered
    assert cache.cached_total == 4 and cache.own_segment[0][0] == 4
    assert cache._own_hits(0) == 3  # 64 tokens: at most (64 − 1) // 16 = 3 blocks hit
    cache._take_hits(0, 3)
    assert cache.cached_total == 1 and [(copy[0], key) for copy, key in cache.older_copies[0]] == [(1, 3)]
    cache.out[0], cache.comp[0] = 20, 84  # it ran on, and is preempted again with 5 full blocks registered
    cache._cache_release(0, 0)
    assert cache.cached_total == 6
    with pytest.raises(BlockContentsNeeded):
        cache._own_hits(0)  # 84 tokens: the lookup goes up to key 4, past the older copy of key 3
    cache._cache_take(1, 6)  # nothing uncached is free: the older copy, first in the queue, is evicted
    assert cache._own_hits(0) == 5 and cache.cached_total == 5
    cache._cache_release(0, -1)  # it finishes: nobody will look its blocks up again
    assert 0 not in cache.older_copies and 0 not in cache.own_segment


# -- random pressure: small pools make preemptions, and so resumed requests' hits, common --------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from llmsim.config import SimConfig  # noqa: E402
from tests.engine.test_invariants import make_workload  # noqa: E402


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(st.sampled_from([0.0, 0.02, 0.1, 0.3]), st.integers(1, 500), st.integers(1, 200)),
                  min_size=5, max_size=100),
    blocks=st.integers(40, 300),
    block_size=st.sampled_from([8, 16]),
    async_scheduling=st.booleans(),
    policy=st.sampled_from(["vllm-v1", "sarathi", "trtllm-max-utilization", "static", "vllm-v0"]),
    budget=st.sampled_from([256, 512, 2048]),
    max_seqs=st.sampled_from([8, 32, 256]),
    cap=st.sampled_from([0, 0, 32, 128]),
    replicas_router=st.sampled_from([(1, "round-robin"), (2, "round-robin"), (2, "least-kv"), (3, "least-outstanding"),
                                     (3, "random")]),
)
def test_resumed_requests_hit_as_in_the_reference_on_random_pressure(rows, blocks, block_size, async_scheduling,
                                                                     policy, budget, max_seqs, cap, replicas_router):
    workload = make_workload(rows)
    knobs = {"enable_prefix_caching": True, "num_gpu_blocks": blocks, "block_size": block_size,
             "async_scheduling": async_scheduling, "policy": policy, "max_num_batched_tokens": budget,
             "max_num_seqs": max_seqs, "long_prefill_token_threshold": cap}
    replicas, router = replicas_router
    results = [simulate(SimConfig.model_validate({"scheduler": knobs, "engine": {"mode": mode},
                                                  "cluster": {"replicas": replicas, "router": router},
                                                  "metrics": {"step_detail": True}}), workload=workload)
               for mode in ("reference", "fast")]
    reference, fast = results
    assert fast.summary["engine_mode"].startswith("fast"), fast.summary["engine_mode"]
    _agree(reference, fast)
