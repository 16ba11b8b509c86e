"""Replay the speculative-decoding goldens of the real vLLM V1 scheduler and compare exactly.

The goldens live in the repository (``tests/goldens/vllm_v1_speculative``; see its README for how
``experiments/oracle/drive_speculative.py`` made them from vLLM 0.32.0): vLLM's own Scheduler or
AsyncScheduler with a ``SpeculativeConfig``, fed a fabricated model output whose accepted drafts follow the
scenario's acceptance pattern. llmsim replays each scenario with the same scripted acceptance and must take
the same decision at every step: tokens per request (drafts included), drafts scheduled, padded admissions,
accepted drafts, preemptions, free blocks; and every request's first-scheduled, first-token and finish steps.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from llmsim.engine.replay import replay_scenario
from llmsim.engine.scenario import load_scenario
from llmsim.errors import UserError

FOLDER = Path(__file__).resolve().parents[1] / "goldens" / "vllm_v1_speculative"
GOLDENS = sorted(p.name for p in FOLDER.glob("*.golden.json.gz"))
STEP_FIELDS = ("scheduled", "new", "resumed", "preempted", "free_blocks_after_schedule", "free_blocks_after_update",
               "finished", "emitted", "num_running", "num_waiting", "spec", "padded", "accepted")
REQUEST_FIELDS = ("first_scheduled_step", "first_token_step", "finish_step", "num_preemptions",
                  "preempted_at_steps", "resumed_at_steps", "num_output_tokens", "total_scheduled_tokens")
# Scenarios with prefix groups or priorities (drive.py's extended golden): the prefix-cache hit of each admission.
EXTENDED_REQUEST_FIELDS = ("cached_tokens_at_admission", "num_cached_tokens")
SUMMARY_FIELDS = ("total_preemptions", "num_requests_preempted", "total_scheduled_tokens",
                  "min_free_blocks_after_schedule", "max_running", "num_steps", "num_busy_steps")


def test_the_goldens_are_there():
    # Both engine loops, every vLLM method llmsim maps (ngram, draft model, EAGLE).
    assert len(GOLDENS) >= 13
    assert any(".async." in name for name in GOLDENS) and any(".async." not in name for name in GOLDENS)


@pytest.mark.parametrize("golden_name", GOLDENS)
def test_speculative_golden_replays_exactly(golden_name: str) -> None:
    with gzip.open(FOLDER / golden_name, "rt") as f:
        golden = json.load(f)
    engine = "async" if ".async." in golden_name else "sync"
    assert golden["generator"]["engine_loop"] == engine
    scenario = load_scenario(FOLDER / (golden_name.split(".")[0] + ".scenario.json"))
    trace = replay_scenario(scenario, engine, vllm_version=golden["generator"]["vllm_version"])

    assert trace["config"]["num_speculative_tokens"] == golden["config"]["num_speculative_tokens"]
    assert trace["config"]["num_lookahead_tokens"] == golden["config"]["num_lookahead_tokens"]
    assert len(trace["steps"]) == len(golden["steps"])
    fields = STEP_FIELDS + (("update_of_step",) if engine == "async" else ())
    for ours, theirs in zip(trace["steps"], golden["steps"]):
        for field in fields:
            assert ours[field] == theirs[field], f"step {theirs['step']} field {field}"
    request_fields = REQUEST_FIELDS + (
        ("first_token_delivered_step", "finish_delivered_step") if engine == "async" else ())
    if "cached_tokens_at_admission" in next(iter(golden["requests"].values())):
        request_fields += EXTENDED_REQUEST_FIELDS
    for request_id, theirs in golden["requests"].items():
        ours = trace["requests"][request_id]
        for field in request_fields:
            assert ours[field] == theirs[field], f"request {request_id} field {field}"
    for field in SUMMARY_FIELDS:
        assert trace["summary"][field] == golden["summary"][field], field


@pytest.mark.parametrize("change,message", [
    ({"speculative": {"method": "medusa", "num_speculative_tokens": 2, "acceptance_pattern": [1]}},
     r"speculative.method: expected one of"),
    ({"speculative": {"method": "ngram", "num_speculative_tokens": 0, "acceptance_pattern": [0]}},
     r"num_speculative_tokens: expected an integer from 1 to 16"),
    ({"speculative": {"method": "ngram", "num_speculative_tokens": 2, "acceptance_pattern": [3]}},
     r"acceptance_pattern: expected a non-empty list .* from 0 to 2"),
    ({"speculative": {"method": "ngram", "num_speculative_tokens": 2, "acceptance_pattern": [1], "seed": 1}},
     r"speculative.seed: unknown key"),
    ({"accepted": [1]}, r"requests\[0\].accepted: needs a top-level 'speculative' section"),
    ({"speculative": {"method": "eagle", "num_speculative_tokens": 2, "acceptance_pattern": [1]}, "accepted": []},
     r"requests\[0\].accepted: expected a non-empty list"),
])
def test_a_bad_speculative_section_is_refused_with_its_field(tmp_path, change, message) -> None:
    scenario = {"config": {"num_gpu_blocks": 16}, "requests": [{"id": "a", "arrival_step": 0, "prompt_len": 8,
                                                                 "output_len": 4}]}
    if "accepted" in change:
        scenario["requests"][0]["accepted"] = change["accepted"]
    if "speculative" in change:
        scenario["speculative"] = change["speculative"]
    path = tmp_path / "s.scenario.json"
    path.write_text(json.dumps(scenario))
    with pytest.raises(UserError, match=message):
        load_scenario(path)
