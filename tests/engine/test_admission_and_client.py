"""Swap time in step durations, admission control, client timeouts and retries, in simulated time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import simpy

from llmsim.config import SimConfig
from llmsim.engine.replica import Replica
from llmsim.engine.request import Request
from llmsim.deployment import build_deployment
from llmsim.simulation import simulate
from llmsim.workload import Workload, synthetic_workload
from tests.engine.policy_harness import make

STEP_S = 0.01


class PlanRecorder:
    """The recorder interface, keeping the plans and the ended requests."""

    def __init__(self):
        self.plans, self.ended = [], []

    def step(self, replica, plan, outcome, used_blocks, free_blocks):
        self.plans.append(plan)

    def tokens_emitted(self, emitted, time_s, previous_step_end_s):
        for request in emitted:
            if request.first_token_s is None:
                request.first_token_s = time_s
            request.last_token_s = time_s

    def request_ended(self, request):
        self.ended.append(request)


def test_swap_transfer_time_is_added_to_the_step_duration():
    env = simpy.Environment()
    recorder = PlanRecorder()
    scheduler = make("vllm-v1", num_gpu_blocks=12, num_cpu_blocks=100, preemption="swap")
    replica = Replica(0, env, scheduler, lambda new, ctx, sampled: STEP_S, recorder, async_scheduling=False,
                      max_model_len=4096, swap_s_per_block=0.002)
    for i in range(4):
        replica.submit(Request(f"r{i}", 0.0, 40, 40))
    env.run()
    assert len(recorder.ended) == 4
    swapping = [p for p in recorder.plans if p.swap_out_blocks or p.swap_in_blocks]
    assert swapping
    for plan in recorder.plans:
        blocks = plan.swap_out_blocks + plan.swap_in_blocks
        assert plan.end_s - plan.start_s == pytest.approx(STEP_S + 0.002 * blocks)


def test_swap_time_per_block_comes_from_pcie_bandwidth_and_block_bytes():
    config = SimConfig.model_validate({"scheduler": {"preemption": "swap", "swap_space_gib": 4}})
    d = build_deployment(config)
    # Llama-2-7B fp16: 2 × 32 layers × 4096 × 2 bytes = 512 KiB per token; a 16-token block is 8 MiB.
    block_bytes = 16 * 2 * 32 * 4096 * 2
    assert d.num_cpu_blocks == 4 * 2**30 // block_bytes == 512
    assert d.swap_s_per_block > 0
    recompute = build_deployment(SimConfig.model_validate({}))
    assert recompute.num_cpu_blocks == 0


def burst(n=40, prompt=200, output=50, gap_s=0.0):
    return Workload(pd.DataFrame({
        "arrival_s": np.arange(n, dtype=float) * gap_s,
        "prompt_tokens": np.full(n, prompt, dtype=np.int64),
        "output_tokens": np.full(n, output, dtype=np.int64),
    }))


def test_a_full_waiting_queue_rejects_arrivals_with_a_reason():
    config = SimConfig.model_validate({"scheduler": {"max_waiting_requests": 5, "max_num_seqs": 4}})
    result = simulate(config, workload=burst())
    rejected = result.requests[result.requests["status"] == "rejected"]
    assert len(rejected) > 0 and set(rejected["reason"]) == {"queue_full"}
    assert result.summary["completed"] + len(rejected) == 40


def test_requests_not_scheduled_within_the_queue_time_cap_are_rejected():
    config = SimConfig.model_validate({"scheduler": {"max_queue_time_s": 0.5, "max_num_seqs": 2}})
    result = simulate(config, workload=burst(output=200))
    late = result.requests[result.requests["reason"] == "queue_timeout"]
    assert len(late) > 0 and (late["status"] == "rejected").all()
    done = result.requests[result.requests["status"] == "finished"]
    assert (done["queue_s"] <= 0.5 + 1e-9).all()


def test_client_timeout_abandons_requests_and_frees_their_blocks():
    config = SimConfig.model_validate({"scheduler": {"num_gpu_blocks": 200, "max_num_seqs": 8},
                                       "client": {"timeout_s": 2.0}})
    result = simulate(config, workload=burst(output=300))
    timed_out = result.requests[result.requests["reason"] == "client_timeout"]
    assert len(timed_out) > 0 and (timed_out["status"] == "failed").all()
    assert result.summary["completed"] + len(timed_out) == 40
    # Once the abandoned requests left, the others finished: nothing leaked blocks or stalled.
    assert "stalled" not in set(result.requests["reason"])


def test_retries_keep_one_row_per_request_with_its_retry_count():
    config = SimConfig.model_validate({"scheduler": {"max_waiting_requests": 5, "max_num_seqs": 4},
                                       "client": {"max_retries": 3, "retry_backoff_s": 1.0}})
    result = simulate(config, workload=burst())
    req = result.requests
    assert len(req) == 40 and req["request_id"].is_unique
    assert (req["retries"] > 0).any()
    assert req["retries"].max() <= 3
    gave_up = req[req["status"] == "rejected"]
    assert (gave_up["retries"] == 3).all()
    # A retried request that finished counts its TTFT from its first arrival.
    retried_done = req[(req["retries"] > 0) & (req["status"] == "finished")]
    assert (retried_done["ttft_s"] >= 1.0).all()


def test_failures_rise_with_burstiness_under_admission_control_and_timeouts():
    def failures(burstiness):
        total = 0
        for seed in (1, 2):
            workload = synthetic_workload("burstgpt", num_requests=400, rate=2.0, burstiness=burstiness, seed=seed)
            config = SimConfig.model_validate({
                "scheduler": {"num_gpu_blocks": 2000, "max_waiting_requests": 16, "max_queue_time_s": 10},
                "client": {"timeout_s": 30, "max_retries": 1, "retry_backoff_s": 2}})
            summary = simulate(config, workload=workload).summary
            total += summary["failed"] + summary["rejected"]
        return total

    assert 2 * failures(1.0) < failures(0.1)


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_a_full_waiting_queue_holds_exactly_the_cap_in_both_engines(mode):
    # 40 arrivals at t = 0, before any step: the first 5 wait, every later one finds 5 waiting.
    config = SimConfig.model_validate({"scheduler": {"max_waiting_requests": 5, "max_num_seqs": 4},
                                       "engine": {"mode": mode}, "server": {"enabled": False}})  # all at the engine at 0
    req = simulate(config, workload=burst()).requests
    assert req.loc[req["status"] == "rejected", "request_id"].tolist() == [f"{i:02d}" for i in range(5, 40)]


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_retries_back_off_exponentially(mode):
    # The k-th retry waits retry_backoff_s × 2^(k-1): a request sent again k times cannot be scheduled before
    # 1 + 2 + … + 2^(k-1) = 2^k − 1 seconds after its arrival at 0.
    config = SimConfig.model_validate({"scheduler": {"max_waiting_requests": 5, "max_num_seqs": 4},
                                       "client": {"max_retries": 3, "retry_backoff_s": 1.0}, "engine": {"mode": mode}})
    req = simulate(config, workload=burst()).requests
    done = req[(req["status"] == "finished") & (req["retries"] >= 2)]
    assert len(done) > 0
    assert (done["first_scheduled_s"] >= 2.0 ** done["retries"] - 1 - 1e-9).all()
