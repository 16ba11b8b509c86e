"""Speculative decoding as vLLM V1 schedules it: drafts are scheduled tokens, accepted ones become output."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from llmsim.config import SimConfig
from llmsim.engine.config import SchedulerConfig
from llmsim.engine.kv_cache import cdiv
from llmsim.engine.schedulers import make_kv_cache, make_scheduler
from llmsim.engine.speculative import SpeculativeConfig, Speculator
from llmsim.errors import ConfigError
from llmsim.simulation import simulate
from tests.engine.policy_harness import make, req, run


def _spec_scheduler(method="draft", k=3, rate=1.0, **knobs):
    s = make("vllm-v1", num_gpu_blocks=200, **knobs)
    s.enable_speculation(Speculator(SpeculativeConfig(method=method, num_speculative_tokens=k, acceptance_rate=rate)))
    return s


def test_every_draft_accepted_yields_k_plus_one_tokens_per_step():
    s = _spec_scheduler(k=3, rate=1.0)
    r = req("r", 40, 13)
    trace = run(s, {0: [r]})
    # prefill → 1 token; then 4 tokens a step (3 drafts + the target's own): 1 + 4 + 4 + 4 = 13
    assert [n for plan in trace.plans for _, n in plan.scheduled] == [40, 4, 4, 4]
    assert r.num_output_tokens == 13 and r.num_accepted_tokens == 9 and r.num_verify_steps == 3


def test_rejected_drafts_give_their_slots_back():
    s = _spec_scheduler(k=3, rate=0.0)
    r = req("r", 40, 5)
    trace = run(s, {0: [r]})
    # One token a step. As in vLLM, the proposer does not know max_tokens: k drafts every step, even the last.
    assert [n for plan in trace.plans for _, n in plan.scheduled] == [40, 4, 4, 4, 4]
    assert r.num_accepted_tokens == 0 and r.num_draft_tokens == 12
    assert r.num_scheduled_tokens_total == 40 + 4 * 4
    # Each verification computed the real token; rejected slots were taken back: 40 + 4 tokens in KV.
    assert r.num_computed_tokens == 40 + 4


def test_drafts_count_against_the_token_budget_and_are_trimmed():
    s = _spec_scheduler(method="ngram", k=3, rate=1.0, max_num_batched_tokens=6)
    a, b = req("a", 2, 20), req("b", 2, 20)
    trace = run(s, {0: [a, b]})
    assert trace.scheduled(1) == [("a", 4), ("b", 2)]  # b keeps 1 of its 3 drafts


def test_a_draft_model_takes_one_more_input_slot_per_request():
    # vLLM's max_num_new_slots_for_drafting: a (non-parallel) draft model needs 1 slot per scheduled request.
    s = _spec_scheduler(method="draft", k=3, rate=1.0, max_num_batched_tokens=8)
    a, b = req("a", 2, 20), req("b", 2, 20)
    trace = run(s, {0: [a, b]})
    assert trace.scheduled(1) == [("a", 4), ("b", 2)]  # 8 - (4 + 1) leaves 3: b gets 3 - 1 = 2 tokens


def test_accepted_tokens_past_max_tokens_are_trimmed():
    s = _spec_scheduler(method="ngram", k=4, rate=1.0)
    r = req("r", 10, 3)
    trace = run(s, {0: [r]})
    assert [n for plan in trace.plans for _, n in plan.scheduled] == [10, 5]  # 4 drafts though 2 tokens remain
    assert r.num_output_tokens == 3 and r.finish_step == 1


def test_single_token_admission_beside_decodes_is_padded_with_drafts_never_accepted():
    s = _spec_scheduler(method="ngram", k=3, rate=1.0)
    a, b = req("a", 8, 20), req("b", 1, 5)
    trace = run(s, {0: [a], 2: [b]})
    assert trace.scheduled(2) == [("a", 4), ("b", 4)]  # b's one prompt token + 3 placeholder drafts
    assert trace.plans[2].padded == [b]
    # the padding gives 1 token (all 3 rejected though every real draft is accepted); then 1 + 3 real ones
    assert trace.scheduled(3) == [("a", 4), ("b", 4)]
    assert b.finish_step == 3 and b.num_accepted_tokens == 3 and b.num_verify_steps == 1


def test_scripted_acceptance_pattern_repeats_per_request():
    s = make("vllm-v1", num_gpu_blocks=200)
    s.enable_speculation(Speculator(SpeculativeConfig(method="ngram", num_speculative_tokens=3,
                                                      acceptance_pattern=[3, 0, 1])))
    r = req("r", 8, 12)
    run(s, {0: [r]})
    # prefill 1 token, then 1+3, 1+0, 1+1, 1+3 → 1 + 4 + 1 + 2 + 4 = 12
    assert r.num_verify_steps == 4 and r.num_accepted_tokens == 3 + 0 + 1 + 3
    with pytest.raises(ValidationError, match="acceptance_pattern"):
        SpeculativeConfig(num_speculative_tokens=2, acceptance_pattern=[3])


def test_eagle_reserves_lookahead_slots():
    s = _spec_scheduler(method="eagle", k=3, rate=0.0)
    r = req("r", 32, 10)
    s.add_request(r)
    s.update_from_output(s.schedule())
    assert s.kv_cache.num_blocks_of(r) == cdiv(32 + 3, 16)  # the prompt plus 3 slots for the head's drafts


def test_acceptance_models_agree_on_the_length_distribution():
    per = SpeculativeConfig(method="eagle", num_speculative_tokens=2, acceptance_per_position=[0.8, 0.5])
    assert np.allclose(per.length_pmf(), [0.2, 0.4, 0.4])
    assert per.expected_acceptance_length() == pytest.approx(1 + 0.4 + 0.8)
    fitted = SpeculativeConfig(method="eagle", num_speculative_tokens=2, acceptance_length_pmf=[0.2, 0.4, 0.4])
    spec = Speculator(fitted, stream=1)
    draws = np.array([spec.accepted(2) for _ in range(20000)])
    assert np.bincount(draws, minlength=3) / len(draws) == pytest.approx([0.2, 0.4, 0.4], abs=0.02)
    with pytest.raises(ValidationError, match="acceptance_length_pmf"):
        SpeculativeConfig(method="eagle", num_speculative_tokens=2, acceptance_length_pmf=[0.5, 0.5])


def test_async_loop_schedules_k_placeholder_drafts_for_every_decode():
    config = SchedulerConfig(async_scheduling=True, num_gpu_blocks=64)
    s = make_scheduler(config, make_kv_cache(config, 64), 4096)
    s.enable_speculation(Speculator(SpeculativeConfig(method="ngram", num_speculative_tokens=2, acceptance_rate=0.0)))
    r = req("r", 16, 4)
    s.add_request(r)
    first = s.schedule()
    second = s.schedule()  # before the first step's output: the token in flight and 2 placeholder drafts
    assert second.scheduled == [(r, 3)] and second.spec_drafts == [2]
    s.update_from_output(first)
    assert r.num_output_tokens == 1


def test_speculation_is_refused_where_it_is_not_modelled():
    with pytest.raises(ConfigError, match="vllm-v1 only"):
        make("sarathi").enable_speculation(Speculator(SpeculativeConfig(method="ngram")))


def test_simulation_reports_acceptance_length_and_speeds_up_decoding():
    base = {"scheduler": {"async_scheduling": False}, "workload": {"num_requests": 40}}
    off = simulate(SimConfig.model_validate(base))
    on = simulate(SimConfig.model_validate({**base, "speculative": {"method": "eagle", "acceptance_rate": 0.8}}))
    spec = on.summary["speculative"]
    assert spec["mean_acceptance_length"] == pytest.approx(1 + 0.8 + 0.64 + 0.512, rel=0.1)
    assert "speculative decoding" in on.summary["engine_mode"]
    assert on.requests["tpot_s"].mean() < 0.6 * off.requests["tpot_s"].mean()
    assert (on.requests["num_output_tokens"] == off.requests["num_output_tokens"]).all()


def test_per_position_acceptance_is_fitted_from_vllm_counters():
    # 1000 verifications: position 0 accepted 800 times, 1 (given 0) 400 times, 2 (given 1) 100 times
    per = SpeculativeConfig.per_position_from_vllm_metrics(1000, [800, 400, 100])
    assert per == pytest.approx([0.8, 0.5, 0.25])
    config = SpeculativeConfig(method="eagle", num_speculative_tokens=3, acceptance_per_position=per)
    assert config.expected_acceptance_length() == pytest.approx(1 + (800 + 400 + 100) / 1000)
