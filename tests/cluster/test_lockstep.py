"""A state-reading router sees, at every arrival, exactly the replica state the per-step reference engine shows
it — from the aggregate engine in lockstep (llmsim.cluster.lockstep) and from the event-skipping loop in the
middle of a decode run (llmsim.engine.decode_run_state) — and parallel workers change no result."""

from __future__ import annotations

import numpy as np
import pytest

from llmsim.config import SimConfig
from llmsim.simulation import simulate
from tests.engine.test_invariants import make_workload


class RecordingRouter:
    """Least outstanding, writing down everything it read at each routing instant."""

    seen: list = []

    def __init__(self, seed: int = 0) -> None:
        RecordingRouter.seen = []

    def choose(self, request, replicas) -> int:
        RecordingRouter.seen.append((request.request_id, [
            (r.replica_id, r.num_outstanding, r.num_waiting, r.kv_usage, r.estimated_queue_time_s) for r in replicas]))
        return min(range(len(replicas)), key=lambda i: (replicas[i].num_outstanding, replicas[i].kv_usage))


def _workload(seed: int, n: int = 250):
    rng = np.random.default_rng(seed)
    gaps = np.where(rng.random(n) < 0.2, 0.0, rng.exponential(0.04, n))  # some arrivals share an instant
    return make_workload(list(zip(gaps.tolist(), rng.integers(10, 600, n).tolist(), rng.integers(1, 150, n).tolist())))


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_router_reads_the_reference_engines_state_at_every_arrival(async_scheduling: bool) -> None:
    workload = _workload(1)
    seen = {}
    for mode in ("reference", "fast"):
        config = SimConfig.model_validate({
            "engine": {"mode": mode}, "cluster": {"replicas": 3, "router": f"{__name__}:RecordingRouter"},
            "scheduler": {"num_gpu_blocks": 400, "async_scheduling": async_scheduling}})
        result = simulate(config, workload=workload)
        seen[mode] = RecordingRouter.seen
    assert result.summary["engine_mode"] == "fast"
    assert len(seen["fast"]) == len(workload.df)
    assert seen["fast"] == seen["reference"]


@pytest.mark.parametrize("scheduler", [
    # (prefix caching on this workload, which shares no prefix: the aggregate engine; with queue timeouts or KV
    # offload: the event-skipping loop)
    {"policy": "sarathi", "enable_prefix_caching": True, "max_queue_time_s": 2.0},
    {"policy": "vllm-v1", "enable_prefix_caching": True, "kv_offload_gib": 1},
    {"policy": "tgi", "async_scheduling": False, "max_queue_time_s": 0.5},
    {"policy": "sglang", "enable_prefix_caching": True},
    {"policy": "static", "async_scheduling": False, "max_queue_time_s": 1.0},
    {"policy": "vllm-v0", "preemption": "swap", "async_scheduling": False},
])
def test_router_reads_the_reference_state_in_the_middle_of_decode_runs(scheduler: dict) -> None:
    """The event-skipping loop (policies the aggregate engine does not serve): a replica read in the middle of a
    skipped decode run answers from the run's plan (llmsim.engine.decode_run_state) what the per-step loop shows."""
    workload = _workload(3)
    seen = {}
    for mode in ("reference", "fast"):
        config = SimConfig.model_validate({
            "engine": {"mode": mode}, "cluster": {"replicas": 3, "router": f"{__name__}:RecordingRouter"},
            "scheduler": {"num_gpu_blocks": 400, **scheduler}})
        result = simulate(config, workload=workload)
        seen[mode] = RecordingRouter.seen  # a run given up and made again: the second run's router's
    assert result.summary["engine_mode"].startswith("fast (event-skipping loop:"), result.summary["engine_mode"]
    assert len(seen["fast"]) == len(workload.df)
    assert seen["fast"] == seen["reference"]


def test_parallel_workers_change_nothing() -> None:
    workload = _workload(2, 400)
    results = []
    for workers in (1, 2):
        config = SimConfig.model_validate({"engine": {"workers": workers}, "cluster": {"replicas": 4},
                                           "scheduler": {"num_gpu_blocks": 600}})
        results.append(simulate(config, workload=workload))
    one, two = results
    assert one.requests.equals(two.requests)
    assert one.steps.equals(two.steps)
    assert one.tables["replica_timeseries"].equals(two.tables["replica_timeseries"])
    assert one.summary == two.summary
