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
    # One token a step; drafts never reach past the last output token (3, 2, 1, then none).
    assert [n for plan in trace.plans for _, n in plan.scheduled] == [40, 4, 3, 2, 1]
    assert r.num_accepted_tokens == 0 and r.num_draft_tokens == 6
    assert r.num_scheduled_tokens_total == 40 + 4 + 3 + 2 + 1
    # Each verification computed the real token; rejected slots were taken back: 40 + 4 tokens in KV.
    assert r.num_computed_tokens == 40 + 4


def test_drafts_count_against_the_token_budget_and_are_trimmed():
    s = _spec_scheduler(k=3, rate=1.0, max_num_batched_tokens=6)
    a, b = req("a", 2, 20), req("b", 2, 20)
    trace = run(s, {0: [a, b]})
    assert trace.scheduled(1) == [("a", 4), ("b", 2)]  # b keeps 1 of its 3 drafts


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


def test_speculation_is_refused_where_it_is_not_modelled():
    config = SchedulerConfig(async_scheduling=True, num_gpu_blocks=64)
    with pytest.raises(ConfigError, match="async_scheduling"):
        make_scheduler(config, make_kv_cache(config, 64), 4096).enable_speculation(
            Speculator(SpeculativeConfig(method="ngram")))
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
