"""Timeline export: valid Chrome trace-event JSON with step slices, request lifecycles and KV counters."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from llmsim.config import load_config
from llmsim.metrics.timeline import simulate_with_timeline


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    # Two replicas, a small KV cache and a bursty load: preemptions and recomputes appear in the timeline.
    config = load_config(None, ["workload.num_requests=80", "workload.rate=20", "workload.burstiness=0.3",
                                "scheduler.num_gpu_blocks=300", "cluster.replicas=2"])
    path = tmp_path_factory.mktemp("timeline") / "trace.json"
    result = simulate_with_timeline(config, path)
    return json.loads(path.read_text()), result


def test_one_named_track_per_replica(traced):
    trace, _ = traced
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {1: "replica 0", 2: "replica 1"}


def test_every_step_is_a_complete_slice_with_its_batch(traced):
    trace, result = traced
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    steps = result.steps
    assert Counter(e["pid"] - 1 for e in slices) == Counter(steps["replica"].tolist())
    for event in slices:
        args = event["args"]
        assert event["dur"] > 0 and len(args["request_ids"]) == len(args["new_tokens"])
        assert args["prefill_requests"] + args["decode_requests"] == len(args["request_ids"])
        assert sum(args["new_tokens"]) == args["prefill_tokens"] + args["decode_tokens"]
        assert event["name"] == f"{args['prefill_requests']}P+{args['decode_requests']}D"
    by_step = steps.set_index(["replica", "step"])
    sample = slices[len(slices) // 2]
    row = by_step.loc[(sample["pid"] - 1, sample["args"]["step"])]
    assert row["batch_size"] == len(sample["args"]["request_ids"])
    assert row["start_s"] * 1e6 == pytest.approx(sample["ts"])


def test_request_lifecycles_are_balanced_nested_async_slices(traced):
    trace, result = traced
    stacks: dict[str, list[str]] = defaultdict(list)
    phases: dict[str, list[str]] = defaultdict(list)
    for event in trace["traceEvents"]:
        if event["ph"] == "b":
            stacks[event["id"]].append(event["name"])
            phases[event["id"]].append(event["name"])
        elif event["ph"] == "e":
            assert stacks[event["id"]] and stacks[event["id"]][-1] == event["name"]
            stacks[event["id"]].pop()
    assert all(not stack for stack in stacks.values())
    finished = result.requests[result.requests["status"] == "finished"]
    assert len(phases) == len(result.requests) - int((result.requests["first_scheduled_s"].isna()).sum())
    rid = finished["request_id"].iloc[0]
    assert phases[f"r{rid}"][:4] == [f"request {rid}", "queued", "prefill", "decode"]
    preempted = result.requests[result.requests["num_preemptions"] > 0]
    assert len(preempted) > 0
    rid = preempted["request_id"].iloc[0]
    assert "queued (preempted)" in phases[f"r{rid}"] and "prefill (recompute)" in phases[f"r{rid}"]


def test_kv_usage_and_preemptions_are_on_the_timeline(traced):
    trace, result = traced
    kv = [e for e in trace["traceEvents"] if e["ph"] == "C" and e["name"] == "KV cache usage (%)"]
    assert len(kv) == len(result.steps)
    assert max(e["args"]["used"] for e in kv) == pytest.approx(100 * result.summary["peak_kv_usage"], abs=1e-2)
    instants = [e for e in trace["traceEvents"] if e["ph"] == "i" and e["name"] == "preempt"]
    assert len(instants) == result.summary["preemptions"] > 0


def test_run_command_writes_timeline_and_report(tmp_path):
    from llmsim.cli import main

    code = main(["run", "-q", "--json", "--set", "workload.num_requests=30", "--timeline", str(tmp_path / "t.json"),
                 "--report", str(tmp_path / "r.html")])
    assert code == 0
    assert json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    assert (tmp_path / "r.html").read_text().count("<img ") == 6
