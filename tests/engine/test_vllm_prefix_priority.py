"""vLLM V1's prefix cache and priority policy, rule by rule, on hand-built scenarios.

The goldens (tests/engine/test_vllm_v1_goldens.py) pin the whole behaviour; these tests name its defining
rules one at a time, so that a regression says which rule broke.
"""

from __future__ import annotations

import pytest

from llmsim.config import SimConfig
from llmsim.engine.prefix_cache import PrefixCachingKVCacheManager
from llmsim.engine_modes import engine_mode
from tests.engine.policy_harness import make, req, run


def test_a_request_admitted_later_in_the_same_step_hits_blocks_being_filled():
    """Blocks are cached when allocated, before their KV is computed (prefix/priority README, rule 3)."""
    s = make("vllm-v1", num_gpu_blocks=100, enable_prefix_caching=True)
    a = req("a", 100, 3, prefix_hashes=(5,))
    b = req("b", 100, 3, prefix_hashes=(5,))
    trace = run(s, {0: [a, b]})
    assert trace.scheduled(0) == [("a", 100), ("b", 4)]  # 6 full blocks = 96 tokens found in step 0
    assert b.num_cached_tokens == 96


def test_copies_of_the_same_content_are_all_cached_and_a_lookup_takes_the_oldest():
    kv = PrefixCachingKVCacheManager(num_gpu_blocks=20, block_size=16)
    a, b = req("a", 32, 2, prefix_hashes=(9,)), req("b", 32, 2, prefix_hashes=(9,))
    assert kv.allocate_slots(a, 32) and kv.allocate_slots(b, 32)  # both compute both blocks (no hit asked)
    assert kv.num_cached_blocks() == 4
    oldest = kv._owned["a"][0]
    kv.free(b)
    kv.free(a)
    c = req("c", 40, 2, prefix_hashes=(9,))
    assert kv.match_prefix(c) == 2 and kv._hit_blocks(c, 2)[0] == oldest
    kv.check_consistency()


def test_freed_partial_blocks_are_reused_before_cached_ones_and_cached_ones_in_free_order():
    kv = PrefixCachingKVCacheManager(num_gpu_blocks=7, block_size=16)  # 6 usable
    a = req("a", 40, 2, prefix_hashes=(1,))  # 2 full cached blocks + 1 partial
    b = req("b", 40, 2, prefix_hashes=(2,))
    assert kv.allocate_slots(a, 40) and kv.allocate_slots(b, 40)
    kv.free(a)  # a's two cached blocks go to the back, its partial block to the front
    kv.free(b)
    assert kv.allocate_slots(req("x", 32, 1), 32)  # the two partial blocks: nothing evicted
    assert kv.num_evicted_blocks == 0
    assert kv.allocate_slots(req("y", 16, 1), 16)  # the least recently freed cached block: a's tail block
    assert kv.match_prefix(req("a2", 48, 1, prefix_hashes=(1,))) == 1
    assert kv.match_prefix(req("b2", 48, 1, prefix_hashes=(2,))) == 2
    kv.check_consistency()


def _priority_trio(version: str):
    """Running order [a (priority 0), b (3), c (1)]; at step 3, b needs a block and none is free."""
    s = make("vllm-v1", num_gpu_blocks=5, queue="priority", vllm_version=version)
    a = req("a", 10, 20, priority=0)
    b = req("b", 30, 20, priority=3, arrival_s=0.1)
    c = req("c", 10, 20, priority=1, arrival_s=0.2)
    return s, a, b, c, run(s, {0: [a, b], 1: [c]})


def test_priority_victim_is_the_worst_priority_even_if_already_scheduled_in_the_step():
    s = make("vllm-v1", num_gpu_blocks=5, queue="priority")  # 4 usable blocks
    low = req("low", 16, 10, priority=5)
    high = req("high", 32, 10, priority=0, arrival_s=1.0)
    trace = run(s, {0: [low], 1: [high]})
    # Step 2: low decodes first, then high needs a third block: low (already scheduled) is the victim, its
    # token goes back to the budget and it disappears from the step.
    assert [r.request_id for r in trace.plans[2].preempted] == ["low"]
    assert trace.scheduled(2) == [("high", 1)]
    fcfs = make("vllm-v1", num_gpu_blocks=5)
    low2, high2 = req("low", 16, 10, priority=5), req("high", 32, 10, priority=0, arrival_s=1.0)
    trace = run(fcfs, {0: [low2], 1: [high2]})
    assert [r.request_id for r in trace.plans[2].preempted] == ["high"]  # FCFS pops the running tail


@pytest.mark.parametrize("version, c_runs", [("0.32", False), ("0.33", True)])
def test_self_preemption_ends_the_running_pass_in_032_but_not_in_033(version, c_runs):
    s, a, b, c, trace = _priority_trio(version)
    step = b.preempted_at_steps[0]
    assert step == 3 and [r.request_id for r in trace.plans[step].preempted] == ["b"]
    assert ("c", 1) in trace.scheduled(step) if c_runs else trace.scheduled(step) == [("a", 1)]


def test_priority_heap_orders_by_priority_then_arrival_then_request_id():
    s = make("vllm-v1", num_gpu_blocks=100, queue="priority", max_num_seqs=1)
    reqs = [req("r2", 16, 1, priority=1), req("r1", 16, 1, priority=1), req("r0", 16, 1, priority=2),
            req("r3", 16, 1, priority=1, arrival_s=-1.0)]
    trace = run(s, {0: reqs})
    order = [plan.new[0].request_id for plan in trace.plans if plan.new]
    assert order == ["r3", "r1", "r2", "r0"]


def test_fast_engines_state_why_they_fall_back():
    """Prefix caching and the priority order keep the aggregate engine off; the event-skipping loop serves them
    behind round-robin and behind a state-reading router alike, and says why."""
    config = SimConfig.model_validate({"scheduler": {"enable_prefix_caching": True, "queue": "priority"}})
    mode = engine_mode(config)
    assert mode.startswith("fast (event-skipping loop:") and "prefix caching" in mode and "queue order priority" in mode
    config = SimConfig.model_validate({"scheduler": {"enable_prefix_caching": True, "queue": "priority"},
                                       "cluster": {"router": "least-kv"}})
    mode = engine_mode(config)
    assert mode.startswith("fast (event-skipping loop:") and "prefix caching" in mode and "router" not in mode
