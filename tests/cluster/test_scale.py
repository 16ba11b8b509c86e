"""A 16-replica cluster serves 100,000 requests and its summary adds up (each request ends once).

Wall time: about 9 s on one core of the development machine (engine fast path on), so it is not marked slow.
"""

from __future__ import annotations

import numpy as np
import pytest

from llmsim.config import build_config
from llmsim.simulation import simulate
from llmsim.workload.workload import Workload, canonical_frame

NUM_REQUESTS = 100_000
REPLICAS = 16


def short_request_workload() -> Workload:
    rng = np.random.default_rng(11)
    arrivals = np.cumsum(rng.exponential(1 / 320.0, NUM_REQUESTS))  # 320 req/s Poisson: 20 per replica
    frame = canonical_frame({"arrival_s": arrivals, "prompt_tokens": rng.integers(50, 500, NUM_REQUESTS),
                             "output_tokens": rng.integers(5, 50, NUM_REQUESTS)})
    return Workload(frame, "scale test").validate()


@pytest.mark.slow
def test_sixteen_replicas_serve_100k_requests_with_a_consistent_summary():
    config = build_config({"seed": 0, "hardware": {"gpu": "A100-80GB", "model": "Llama-2-7B"},
                           "cluster": {"replicas": REPLICAS, "router": "least-outstanding"},
                           "metrics": {"step_detail": False}})
    result = simulate(config, workload=short_request_workload())
    s, req = result.summary, result.requests
    assert s["num_requests"] == NUM_REQUESTS == len(req)
    assert req["request_id"].is_unique
    assert s["completed"] + s["rejected"] + s["failed"] == NUM_REQUESTS
    assert s["completed"] == NUM_REQUESTS  # this load is well within the fleet's capacity
    cluster = s["cluster"]
    assert cluster["accounting"]["ok"] and cluster["replicas"] == REPLICAS
    replicas = result.tables["replicas"]
    assert replicas["finished"].sum() == s["completed"] and (replicas["finished"] > 0).all()
    assert replicas["routed"].sum() == NUM_REQUESTS
    assert cluster["load_balance"]["max_over_mean"] < 1.05
    assert s["request_throughput"] == pytest.approx(s["completed"] / s["duration_s"])
    assert s["output_throughput"] == pytest.approx(req["num_output_tokens"].sum() / s["duration_s"])
    assert (req["num_output_tokens"] == req["output_tokens"]).all()
    assert cluster["gpu_seconds"] == pytest.approx(REPLICAS * req["finish_s"].max(), rel=1e-9)
    assert 0 < cluster["utilization"] <= 1
