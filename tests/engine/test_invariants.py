"""Property tests: invariants that must hold for any workload and any engine settings.

- KV blocks in use never exceed the usable blocks (and free blocks never go negative);
- every request ends exactly once (finished, rejected or failed), with no request lost or duplicated;
- a finished request was scheduled exactly prompt + output − 1 + recomputed tokens;
- simulated time never goes backwards (per replica, steps start after the previous one ends; each request's
  timestamps are ordered).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsim.config import SimConfig
from llmsim.simulation import simulate
from llmsim.workload import Workload

requests_strategy = st.lists(
    st.tuples(st.floats(0.0, 2.0), st.integers(0, 300), st.integers(0, 60)), min_size=1, max_size=40
)


@st.composite
def engine_settings(draw):
    chunked = draw(st.booleans())
    budget = draw(st.integers(64, 512))
    return {
        "num_gpu_blocks": draw(st.integers(8, 120)),
        "block_size": draw(st.sampled_from([8, 16])),
        "max_num_seqs": draw(st.integers(1, 16)),
        "max_num_batched_tokens": budget,
        "enable_chunked_prefill": chunked,
        "long_prefill_token_threshold": draw(st.sampled_from([0, 0, 32, 100])),
        "max_model_len": 4096 if chunked else budget,
        "async_scheduling": draw(st.booleans()),
        "watermark": draw(st.sampled_from([0.0, 0.0, 0.05])),
    }


def make_workload(rows) -> Workload:
    gaps, prompts, outputs = zip(*rows)
    return Workload(pd.DataFrame({
        "arrival_s": np.cumsum(np.asarray(gaps, dtype=np.float64)),
        "prompt_tokens": np.asarray(prompts, dtype=np.int64),
        "output_tokens": np.asarray(outputs, dtype=np.int64),
    }))


def check_invariants(result, workload: Workload, usable_blocks: int) -> None:
    req, steps = result.requests, result.steps
    # Every request ends exactly once.
    assert len(req) == len(workload)
    assert req["request_id"].is_unique
    assert set(req["status"]) <= {"finished", "rejected", "failed"}
    assert result.summary["completed"] + result.summary["rejected"] + result.summary["failed"] == len(workload)
    # Blocks never over-committed.
    if len(steps):
        assert (steps["used_blocks"] <= usable_blocks).all()
        assert (steps["free_blocks"] >= 0).all()
    # Rows with nothing to prefill or generate never reach a replica (vLLM refuses an empty prompt): they fail
    # at their arrival with a reason, never "finish" with a TTFT of 0.
    empty = req[(req["prompt_tokens"] == 0) | (req["output_tokens"] == 0)]
    assert (empty["status"] == "failed").all()
    assert set(empty["reason"]) <= {"empty_prompt", "zero_output_tokens"}
    assert empty["first_token_s"].isna().all()
    # Token accounting of finished requests.
    done = req[req["status"] == "finished"]
    assert (done["prompt_tokens"] > 0).all()
    expected = done["prompt_tokens"] + done["output_tokens"] - 1 + done["recomputed_tokens"]
    assert (done["scheduled_tokens"] == expected).all()
    assert (done["num_output_tokens"] == done["output_tokens"]).all()
    # Time never goes backwards.
    for _, s in steps.groupby("replica"):
        start = s["start_s"].to_numpy()
        end = start + s["duration_s"].to_numpy()
        assert (s["duration_s"] > 0).all()
        assert (start[1:] >= end[:-1] - 1e-12).all()
    assert (done["first_scheduled_s"] >= done["arrival_s"]).all()
    assert (done["first_token_s"] > done["first_scheduled_s"]).all()
    assert (done["finish_s"] >= done["first_token_s"]).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=requests_strategy, knobs=engine_settings())
def test_invariants_hold_for_random_workloads(rows, knobs) -> None:
    config = SimConfig.model_validate({"scheduler": knobs, "metrics": {"step_detail": True}})
    workload = make_workload(rows)
    result = simulate(config, workload=workload)
    check_invariants(result, workload, knobs["num_gpu_blocks"] - 1)


def test_request_that_can_never_fit_is_rejected_with_a_reason() -> None:
    config = SimConfig.model_validate({"scheduler": {"num_gpu_blocks": 10, "max_model_len": 1000}})
    workload = make_workload([(0.0, 100, 10), (0.1, 990, 20), (0.2, 200, 10)])
    result = simulate(config, workload=workload)
    by_id = result.requests.set_index("request_id")
    assert by_id.loc["0", "status"] == "finished"
    assert by_id.loc["1", "reason"] == "exceeds_max_model_len"
    assert by_id.loc["2", "reason"] == "exceeds_kv_capacity"  # 209 tokens need 14 blocks; 9 usable
    assert result.summary["rejected"] == 2
