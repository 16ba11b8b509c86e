"""Replay every golden trace of the real vLLM V1 scheduler and compare exactly.

Both golden folders are replayed: ``../shared/goldens/vllm_v1`` (defaults: FCFS, no prefix caching) and
``../shared/goldens/vllm_v1_prefix_priority`` (prefix caching and the priority policy; gzip-compressed).
Every field the goldens READMEs list under "What a replay test should compare" must match, step by step and
request by request, for the synchronous engine loop and for vLLM's default async loop, under the vLLM
version named in the golden. New goldens (``*.golden.json`` or ``*.golden.json.gz``) dropped into either
folder are picked up automatically.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from llmsim.engine.replay import replay_scenario
from llmsim.engine.scenario import load_scenario
from tests.conftest import SHARED_DIR, shared_path

GOLDEN_FOLDERS = ("vllm_v1", "vllm_v1_prefix_priority")
STEP_FIELDS = ("scheduled", "preempted", "free_blocks_after_schedule", "free_blocks_after_update", "finished")
REQUEST_FIELDS = ("first_scheduled_step", "first_token_step", "finish_step", "num_preemptions")
EXTENDED_REQUEST_FIELDS = ("cached_tokens_at_admission", "num_cached_tokens", "priority", "prefix_group", "prefix_len")
SUMMARY_FIELDS = ("total_preemptions", "num_requests_preempted", "total_scheduled_tokens",
                  "min_free_blocks_after_schedule", "max_running", "num_steps", "num_busy_steps")
EXTENDED_SUMMARY_FIELDS = ("num_requests_with_prefix_hit", "total_cached_tokens_first_admission",
                           "num_resume_admissions", "num_resume_admissions_with_hit", "total_cached_tokens_on_resume")


def _scenario_name(golden_name: str) -> str:
    stem = golden_name.split("/")[-1]
    for suffix in (".async.golden.json.gz", ".async.golden.json", ".golden.json.gz", ".golden.json"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)] + ".scenario.json"
    raise ValueError(golden_name)


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for folder in GOLDEN_FOLDERS:
        root = SHARED_DIR / "goldens" / folder
        for pattern in ("*.golden.json", "*.golden.json.gz"):
            for golden in sorted(root.glob(pattern)):
                cases.append((folder, golden.name, "sync"))
            for golden in sorted((root / "async_engine").glob(pattern)):
                cases.append((folder, "async_engine/" + golden.name, "async"))
    if not cases:
        cases.append(("vllm_v1", "missing.golden.json", "sync"))  # makes the test skip (or fail under CI) below
    return cases


def load_golden(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)


@pytest.mark.parametrize("folder,golden_name,engine", _cases())
def test_golden_replays_exactly(folder: str, golden_name: str, engine: str) -> None:
    golden = load_golden(shared_path("goldens", folder, *golden_name.split("/")))
    scenario_path = shared_path("goldens", folder, _scenario_name(golden_name))
    trace = replay_scenario(load_scenario(scenario_path), engine, vllm_version=golden["generator"]["vllm_version"])

    assert_replay_matches(trace, golden, engine)


def assert_replay_matches(trace: dict, golden: dict, engine: str) -> None:
    """Every field the goldens' READMEs list, step by step, request by request, then the summary."""
    assert len(trace["steps"]) == len(golden["steps"])
    for ours, theirs in zip(trace["steps"], golden["steps"]):
        for field in STEP_FIELDS:
            assert ours[field] == theirs[field], f"step {theirs['step']} field {field}"
    extended = "cached_tokens_at_admission" in next(iter(golden["requests"].values()))
    fields = REQUEST_FIELDS + (EXTENDED_REQUEST_FIELDS if extended else ())
    if engine == "async":
        fields += ("first_token_delivered_step", "finish_delivered_step")
    for request_id, theirs in golden["requests"].items():
        ours = trace["requests"][request_id]
        for field in fields:
            assert ours[field] == theirs[field], f"request {request_id} field {field}"
    for field in SUMMARY_FIELDS + (EXTENDED_SUMMARY_FIELDS if extended else ()):
        assert trace["summary"][field] == golden["summary"][field], field


def test_replay_cli_writes_golden_format(tmp_path: Path) -> None:
    from llmsim.cli import main

    scenario = shared_path("goldens", "vllm_v1", "01_light_load.scenario.json")
    out = tmp_path / "trace.json"
    assert main(["replay-scheduler", str(scenario), "--engine", "async", "-o", str(out)]) == 0
    trace = json.loads(out.read_text())
    assert trace["generator"]["engine_loop"] == "async"
    step_keys = {"step", "arrived", "idle", "scheduled", "new", "resumed", "preempted", "num_scheduled_tokens",
                 "free_blocks_after_schedule", "free_blocks_after_update", "num_running", "num_waiting", "emitted",
                 "finished", "update_of_step"}
    assert step_keys <= set(trace["steps"][0])
    request_keys = {"arrival_step", "prompt_len", "output_len", "first_scheduled_step", "first_token_step", "finish_step",
                    "num_preemptions", "preempted_at_steps", "resumed_at_steps", "num_output_tokens", "finish_reason",
                    "total_scheduled_tokens", "first_token_delivered_step", "finish_delivered_step"}
    assert request_keys <= set(next(iter(trace["requests"].values())))


def test_replay_rejects_bad_scenario(tmp_path: Path, capsys) -> None:
    from llmsim.cli import main

    bad = tmp_path / "bad.scenario.json"
    bad.write_text(json.dumps({"config": {"num_gpu_blocks": 64, "block_size": 16, "max_num_seqs": 4,
                                          "max_num_batched_tokens": 64},
                               "requests": [{"id": "r0", "arrival_step": 0, "prompt_len": -5, "output_len": 3}]}))
    assert main(["replay-scheduler", str(bad), "-o", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "requests[0].prompt_len" in err
    assert not (tmp_path / "t.json").exists()


def test_async_loop_delays_admissions_as_the_goldens_readme_states() -> None:
    """README rule 13: with the async loop, 05 takes 963 ticks instead of 950 (admissions lag one tick)."""
    scenario = load_scenario(shared_path("goldens", "vllm_v1", "05_max_num_seqs_cap.scenario.json"))
    assert replay_scenario(scenario, "sync")["summary"]["num_steps"] == 950
    assert replay_scenario(scenario, "async")["summary"]["num_steps"] == 963


def test_full_isl_off_switch_changes_09_from_6_to_30_preemptions() -> None:
    """README rule 4: without the full-ISL check (older vLLM), 09 preempts 30 times instead of 6."""
    scenario = load_scenario(shared_path("goldens", "vllm_v1", "09_long_prefill_threshold.scenario.json"))
    assert replay_scenario(scenario, "sync")["summary"]["total_preemptions"] == 6
    scenario["config"]["scheduler_reserve_full_isl"] = False
    assert replay_scenario(scenario, "sync")["summary"]["total_preemptions"] == 30


@pytest.mark.parametrize("name,first_difference", [("pa12_priority_pressure_nopc_bs16_chunk", 253),
                                                   ("pa14_priority_pressure_pc_bs16_chunk", 27)])
def test_vllm_033_continues_the_running_pass_after_a_self_preemption(name: str, first_difference: int) -> None:
    """Prefix/priority README: under vLLM 0.33 pa12 and pa14 first differ from the 0.32 goldens at these steps,
    where the request that preempted itself is not the running list's tail."""
    golden = load_golden(shared_path("goldens", "vllm_v1_prefix_priority", f"{name}.golden.json.gz"))
    trace = replay_scenario(load_scenario(shared_path("goldens", "vllm_v1_prefix_priority", f"{name}.scenario.json")),
                            "sync", vllm_version="0.33")
    differing = [theirs["step"] for ours, theirs in zip(trace["steps"], golden["steps"])
                 if any(ours[field] != theirs[field] for field in STEP_FIELDS)]
    assert differing[0] == first_difference
    assert len(trace["steps"][first_difference]["scheduled"]) > len(golden["steps"][first_difference]["scheduled"])


def test_prefix_caching_changes_a_preempting_replay() -> None:
    """Prefix caching is honoured, not ignored: with it off, pa06's resumes find nothing and the trace differs."""
    scenario = load_scenario(shared_path("goldens", "vllm_v1_prefix_priority", "pa06_pressure_sys_bs16_chunk.scenario.json"))
    on = replay_scenario(scenario, "sync")
    scenario["config"]["enable_prefix_caching"] = False
    off = replay_scenario(scenario, "sync")
    assert on["summary"]["num_resume_admissions_with_hit"] > 0 and off["summary"]["num_resume_admissions_with_hit"] == 0
    assert on["steps"] != off["steps"]


def test_replay_refuses_a_scheduler_option_it_cannot_honour(tmp_path: Path) -> None:
    from llmsim.errors import UserError

    scenario = load_scenario(shared_path("goldens", "vllm_v1", "01_light_load.scenario.json"))
    scenario["config"]["swap_space"] = 4
    with pytest.raises(UserError, match="config.swap_space"):
        replay_scenario(scenario)
    scenario["config"].pop("swap_space")
    scenario["config"]["policy"] = "lifo"
    with pytest.raises(UserError, match="config.policy"):
        replay_scenario(scenario)
