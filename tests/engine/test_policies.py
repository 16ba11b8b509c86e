"""Each batching policy's defining behaviour, pinned on a small hand-built scenario."""

from __future__ import annotations

import pytest

from llmsim.engine.config import SchedulerConfig
from llmsim.engine.kv_cache import KVCacheManager, cdiv
from llmsim.engine.request import RequestStatus
from llmsim.engine.schedulers import SCHEDULERS, make_scheduler
from llmsim.errors import ConfigError
from tests.engine.policy_harness import make, req, run

ALL_POLICIES = ["vllm-v1", "vllm-v0", "orca", "sarathi", "static", "sglang", "trtllm-guaranteed-no-evict",
                "trtllm-max-utilization", "tgi"]


def test_every_policy_of_the_issue_is_registered():
    assert set(SCHEDULERS) == set(ALL_POLICIES)


@pytest.mark.parametrize("field, value", [("policy", "vllm-v9"), ("queue", "lifo"), ("preemption", "kill"),
                                          ("victim", "oldest")])
def test_unknown_names_are_errors_that_list_the_valid_ones(field, value):
    config = SchedulerConfig(**{field: value})
    with pytest.raises(ConfigError) as err:
        make_scheduler(config, KVCacheManager(16, 16), 4096)
    assert f"scheduler.{field}" in str(err.value)
    valid = {"policy": "vllm-v1", "queue": "shortest-first", "preemption": "recompute", "victim": "most-blocks"}
    assert valid[field] in str(err.value)


# -- static batching -------------------------------------------------------------------------------
def test_static_batching_never_admits_into_a_running_batch():
    s = make("static")
    a, b, c = req("a", 20, 2), req("b", 20, 10), req("c", 20, 2)
    trace = run(s, {0: [a, b], 1: [c]})
    for plan, running_before in zip(trace.plans, trace.running_before):
        if plan.new:
            assert running_before == []
    # c waits for the long b although a left early and blocks were free.
    assert c.first_scheduled_step == b.finish_step + 1
    assert trace.scheduled(0) == [("a", 20), ("b", 20)]  # the whole batch prefills in one step


# -- orca and vllm-v0: no chunking -------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["orca", "vllm-v0", "static", "tgi"])
def test_whole_prompt_policies_never_chunk(policy):
    s = make(policy, num_gpu_blocks=400, max_num_batched_tokens=256)
    long = req("long", 3000, 3)
    trace = run(s, {0: [long]})
    assert trace.scheduled(0) == [("long", 3000)]


def test_sarathi_and_vllm_v1_chunk_a_long_prompt_under_the_budget():
    for policy in ("sarathi", "vllm-v1"):
        trace = run(make(policy, num_gpu_blocks=400, max_num_batched_tokens=256), {0: [req("long", 600, 2)]})
        assert [trace.scheduled(i) for i in range(3)] == [[("long", 256)], [("long", 256)], [("long", 88)]]


def test_orca_batches_a_new_prompt_with_running_decodes():
    trace = run(make("orca", num_gpu_blocks=400), {0: [req("a", 50, 5)], 1: [req("b", 300, 2)]})
    assert trace.scheduled(1) == [("a", 1), ("b", 300)]


def test_orca_reserves_the_whole_output_at_admission():
    # 10 usable blocks of 16. a reserves ceil((33 + 20 - 1) / 16) = 4 blocks at once, not the 3 of its prompt;
    # b's prompt (3 blocks) fits next to a, but its whole length (ceil(99 / 16) = 7) does not, so b waits for a.
    s = make("orca", num_gpu_blocks=11)
    a, b = req("a", 33, 20), req("b", 40, 60)
    s.add_request(a)
    s.update_from_output(s.schedule())
    assert s.kv_cache.num_blocks_of(a) == cdiv(33 + 20 - 1, 16)
    s = make("orca", num_gpu_blocks=11)
    a = req("a", 33, 20)
    trace = run(s, {0: [a], 1: [b]})
    assert b.first_scheduled_step == a.finish_step + 1
    assert not any(plan.preempted for plan in trace.plans)
    assert s.kv_cache.num_blocks_of(b) == 0 and b.status == RequestStatus.FINISHED


def test_vllm_v0_steps_are_prefill_only_or_decode_only_with_prefills_first():
    s = make("vllm-v0", num_gpu_blocks=400)
    trace = run(s, {0: [req("a", 50, 5)], 2: [req("b", 40, 3), req("c", 30, 3)]})
    for plan in trace.plans:
        kinds = {"prefill" if r in plan.new or r in plan.resumed else "decode" for r, _ in plan.scheduled}
        assert len(kinds) <= 1
    assert trace.scheduled(2) == [("b", 40), ("c", 30)]  # a's decode pauses for the prefills


def test_vllm_v0_keeps_its_watermark_of_one_percent_of_blocks():
    s = make("vllm-v0", num_gpu_blocks=200)
    assert s.watermark_blocks == 2  # int(0.01 × 200)


# -- sarathi: decodes first ------------------------------------------------------------------------
def test_sarathi_schedules_decodes_before_partial_prefills():
    outcomes = {}
    for policy in ("sarathi", "vllm-v1"):
        s = make(policy, num_gpu_blocks=400, max_num_batched_tokens=256)
        a, b = req("a", 10, 5), req("b", 2000, 2)
        s.add_request(a)
        s.add_request(b)
        s.update_from_output(s.schedule())  # a prefills (10), b gets a 246-token chunk
        s.running.reverse()  # the partial prefill now precedes the decode in the running list
        plan = s.schedule()
        outcomes[policy] = [(r.request_id, n) for r, n in plan.scheduled]
    assert outcomes["sarathi"] == [("a", 1), ("b", 255)]
    assert outcomes["vllm-v1"] == [("b", 256)]  # V1 keeps list order: the chunk takes the whole budget


# -- TensorRT-LLM -----------------------------------------------------------------------------------
def test_guaranteed_no_evict_never_preempts_and_reserves_the_full_length():
    s = make("trtllm-guaranteed-no-evict", num_gpu_blocks=20, block_size=16)
    reqs = [req(f"r{i}", 40, 60) for i in range(6)]
    trace = run(s, {0: reqs})
    assert not any(plan.preempted for plan in trace.plans)
    assert all(r.status == RequestStatus.FINISHED and r.num_preemptions == 0 for r in reqs)
    # 19 usable blocks; each request reserves ceil(99/16) = 7, so at most two run at once.
    assert max(len(names) for names in trace.running_before) == 2


def test_max_utilization_admits_by_current_need_where_vllm_v1_checks_the_whole_prompt():
    def first_admitted(policy):
        s = make(policy, num_gpu_blocks=21, max_num_batched_tokens=128)  # 20 usable blocks of 16
        occupant, big = req("occupant", 150, 50), req("big", 300, 2)  # big needs 19 blocks in all
        trace = run(s, {0: [occupant], 1: [big]})
        return big.first_scheduled_step, trace

    v1_step, _ = first_admitted("vllm-v1")
    mu_step, trace = first_admitted("trtllm-max-utilization")
    assert mu_step < v1_step
    assert any(plan.preempted for plan in trace.plans)  # packing by current need pays with preemptions


# -- SGLang -----------------------------------------------------------------------------------------
def test_sglang_new_token_ratio_decays_per_decode_step():
    s = make("sglang", num_gpu_blocks=400)
    run(s, {0: [req("a", 20, 30)]})
    decay = (0.7 - 0.7 * 0.14) / 600
    assert s.new_token_ratio == pytest.approx(0.7 - 29 * decay)


def test_sglang_admission_reserves_the_output_estimate():
    # 10 usable blocks × 16 = 160 tokens. b needs 60 prompt + 60 future tokens = 120, more than is left next
    # to a's estimated future, so it waits for a although its prompt alone fits (vLLM V1 admits it at once).
    def admitted_at(policy):
        s = make(policy, num_gpu_blocks=11)
        a, b = req("a", 16, 40), req("b", 60, 60)
        trace = run(s, {0: [a], 1: [b]}, max_steps=400)
        return a, b, trace

    a, b, trace = admitted_at("sglang")
    assert b.first_scheduled_step == a.finish_step + 1
    assert not any(plan.preempted for plan in trace.plans)
    assert admitted_at("vllm-v1")[1].first_scheduled_step == 1


def test_sglang_retracts_the_request_with_fewest_outputs_and_resets_the_ratio():
    s = make("sglang", num_gpu_blocks=14)  # 13 usable blocks
    s.new_token_ratio = s.min_ratio  # an optimistic estimate admits more than fits at full length
    reqs = {t: [req(f"r{t}", 10, 100)] for t in range(4)}
    trace = run(s, reqs, max_steps=3000)
    first = next(plan for plan in trace.plans if plan.preempted)
    victim = first.preempted[0]
    running = [r for r, _ in first.scheduled] + [victim]
    assert victim.num_output_tokens == min(r.num_output_tokens for r in running)
    assert s.new_token_ratio > s.min_ratio  # reset upward by the retraction
    assert all(r[0].status == RequestStatus.FINISHED for r in reqs.values())


def test_sglang_retraction_order_breaks_ties_by_longest_input():
    from llmsim.engine.schedulers.sglang import fewest_outputs_longest_input

    a, b, c = req("a", 60, 9), req("b", 90, 9), req("c", 30, 9)
    a.num_output_tokens, b.num_output_tokens, c.num_output_tokens = 3, 3, 5
    assert fewest_outputs_longest_input([a, b, c], None) is b


def test_sglang_runs_prefill_and_decode_in_separate_steps():
    trace = run(make("sglang", num_gpu_blocks=400), {0: [req("a", 50, 5)], 2: [req("b", 40, 3)]})
    assert trace.scheduled(2) == [("b", 40)]


# -- TGI ----------------------------------------------------------------------------------------------
def test_tgi_waits_for_enough_queued_requests_or_max_waiting_tokens_before_a_prefill():
    s = make("tgi", num_gpu_blocks=2000, max_num_seqs=64)
    batch = [req(f"r{i}", 20, 100) for i in range(10)]
    late = req("late", 20, 5)
    trace = run(s, {0: batch, 3: [late]})
    # 10 running × 0.3 = 3 waiting needed; one waiting request joins only after 20 decode steps.
    assert late.first_scheduled_step == 1 + 20
    prefill_step = trace.plans[late.first_scheduled_step]
    assert [r.request_id for r, _ in prefill_step.scheduled] == ["late"]  # decodes pause during a prefill


def test_tgi_never_preempts_under_memory_pressure():
    s = make("tgi", num_gpu_blocks=20)
    reqs = [req(f"r{i}", 30, 50) for i in range(8)]
    trace = run(s, {0: reqs})
    assert not any(plan.preempted for plan in trace.plans)
    assert all(r.status == RequestStatus.FINISHED for r in reqs)


# -- preemption modes ------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["vllm-v1", "vllm-v0", "sarathi", "trtllm-max-utilization", "sglang"])
def test_swap_moves_blocks_out_and_back_without_recompute(policy):
    s = make(policy, num_gpu_blocks=12, num_cpu_blocks=100, preemption="swap")
    reqs = [req(f"r{i}", 40, 40) for i in range(4)]
    arrivals = {0: reqs}
    if policy == "sglang":  # admit optimistically, one per step, so that a decode runs out of blocks
        s.new_token_ratio = s.min_ratio
        reqs = [req(f"r{i}", 10, 100) for i in range(4)]
        arrivals = {t: [r] for t, r in enumerate(reqs)}
    trace = run(s, arrivals, max_steps=2000)
    out = sum(plan.swap_out_blocks for plan in trace.plans)
    back = sum(plan.swap_in_blocks for plan in trace.plans)
    assert out > 0 and out == back
    assert all(r.status == RequestStatus.FINISHED for r in reqs)
    assert sum(r.num_recomputed_tokens for r in reqs) == 0
    assert all(r.num_scheduled_tokens_total == r.prompt_tokens + r.max_output_tokens - 1 for r in reqs)
    assert s.kv_cache.num_free_cpu_blocks == 100


def test_swap_falls_back_to_recompute_when_the_swap_space_is_full():
    s = make("vllm-v1", num_gpu_blocks=12, num_cpu_blocks=1, preemption="swap")
    reqs = [req(f"r{i}", 40, 40) for i in range(4)]
    run(s, {0: reqs}, max_steps=2000)
    assert sum(r.num_preemptions for r in reqs) > 0
    assert sum(r.num_recomputed_tokens for r in reqs) > 0


@pytest.mark.parametrize("policy", ["vllm-v1", "vllm-v0", "sarathi", "sglang"])
def test_preemption_none_never_evicts_and_fails_a_request_only_when_stuck(policy):
    s = make(policy, num_gpu_blocks=12, preemption="none")
    if policy == "sglang":
        s.new_token_ratio = s.min_ratio
    reqs = [req(f"r{i}", 40, 60) for i in range(4)]
    trace = run(s, {0: reqs}, max_steps=2000)
    assert not any(plan.preempted for plan in trace.plans)
    failed = [r for r in reqs if r.status == RequestStatus.FAILED]
    assert failed and all(r.reason == "kv_cache_full" for r in failed)
    assert any(r.status == RequestStatus.FINISHED for r in reqs)
    assert s.kv_cache.num_free_blocks == s.kv_cache.num_usable_blocks


@pytest.mark.parametrize("victim, expected", [("most-recent", "r2"), ("most-blocks", "r0"),
                                              ("fewest-computed", "r2"), ("lowest-priority", "r1")])
def test_victim_rules(victim, expected):
    s = make("vllm-v1", num_gpu_blocks=11, victim=victim)  # 10 usable blocks
    r0 = req("r0", 64, 40, priority=0)
    r1 = req("r1", 32, 40, priority=5, arrival_s=1.0)
    r2 = req("r2", 16, 40, priority=1, arrival_s=2.0)
    trace = run(s, {0: [r0], 1: [r1], 2: [r2]}, max_steps=2000)
    first = next(plan for plan in trace.plans if plan.preempted)
    assert first.preempted[0].request_id == expected


def test_reserving_policies_hold_exactly_their_reservation():
    s = make("orca", num_gpu_blocks=100)
    a = req("a", 33, 20)
    s.add_request(a)
    s.update_from_output(s.schedule())
    assert s.kv_cache.num_blocks_of(a) == cdiv(33 + 20 - 1, 16)
