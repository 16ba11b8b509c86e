"""Waiting-queue orders, the starvation guard and the length predictor."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from llmsim.engine.config import SchedulerConfig
from llmsim.engine.queues import make_queue_order, predicted_output_tokens
from tests.engine.policy_harness import make, req, run


def admission_order(trace) -> list[str]:
    return [r.request_id for plan in trace.plans for r in plan.new]


@pytest.mark.parametrize("policy", ["vllm-v1", "vllm-v0", "sarathi", "tgi", "orca"])
def test_priority_queue_admits_the_most_urgent_first(policy):
    s = make(policy, num_gpu_blocks=400, max_num_seqs=1, queue="priority")
    reqs = [req("low", 20, 3, priority=9), req("high", 20, 3, priority=0, arrival_s=1.0),
            req("mid", 20, 3, priority=4, arrival_s=2.0)]
    assert admission_order(run(s, {0: reqs})) == ["high", "mid", "low"]


def test_shortest_and_longest_first_order_by_remaining_output():
    reqs = lambda: [req("a", 20, 30), req("b", 20, 5), req("c", 20, 12)]  # noqa: E731
    shortest = run(make("vllm-v1", max_num_seqs=1, queue="shortest-first"), {0: reqs()})
    longest = run(make("vllm-v1", max_num_seqs=1, queue="longest-first"), {0: reqs()})
    assert admission_order(shortest) == ["b", "c", "a"]
    assert admission_order(longest) == ["a", "c", "b"]


def test_fcfs_keeps_insertion_order():
    s = make("vllm-v1", max_num_seqs=1)
    assert admission_order(run(s, {0: [req("a", 20, 30), req("b", 20, 5)]})) == ["a", "b"]


def test_length_predictor_error_is_seeded_and_log_normal():
    a = req("a", 10, 100)
    b = req("a", 10, 100)
    assert predicted_output_tokens(a, 0.0, 1) == 100.0
    noisy = [predicted_output_tokens(req(f"r{i}", 10, 100), 0.5, 7) for i in range(2000)]
    again = [predicted_output_tokens(req(f"r{i}", 10, 100), 0.5, 7) for i in range(2000)]
    assert noisy == again
    logs = np.log(np.asarray(noisy) / 100)
    assert abs(logs.mean()) < 0.05 and logs.std() == pytest.approx(0.5, rel=0.08)
    assert predicted_output_tokens(b, 0.5, 8) != predicted_output_tokens(req("a", 10, 100), 0.5, 7)


def test_starvation_guard_promotes_requests_that_waited_too_long():
    order = make_queue_order(SchedulerConfig(queue="shortest-first", starvation_guard_s=10.0))
    old_long = req("old_long", 10, 500, arrival_s=0.0)
    new_short = req("new_short", 10, 5, arrival_s=8.0)
    assert [r.request_id for r in order.order(deque([old_long, new_short]), now_s=9.0)] == ["new_short", "old_long"]
    assert [r.request_id for r in order.order(deque([old_long, new_short]), now_s=11.0)] == ["old_long", "new_short"]
