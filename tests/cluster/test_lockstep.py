"""Lockstep (llmsim.cluster.lockstep): a state-reading router sees, at every arrival, exactly the replica state
the per-step reference engine shows it, and parallel workers change no result."""

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
