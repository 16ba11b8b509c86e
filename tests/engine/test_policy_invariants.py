"""The foundation invariants hold for EVERY policy × preemption mode (and queue orders, prefix caching).

- blocks never over-committed; every request ends exactly once; time never goes backwards;
- a finished request was scheduled prompt + output − 1 + recomputed − cached tokens (cached = 0 without
  prefix caching: the foundation's formula).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsim.config import SimConfig
from llmsim.engine.schedulers import SCHEDULERS
from llmsim.simulation import simulate
from llmsim.workload import Workload

rows_strategy = st.lists(
    st.tuples(st.floats(0.0, 1.0), st.integers(0, 200), st.integers(1, 50), st.integers(0, 3), st.integers(0, 2)),
    min_size=1, max_size=30,
)


@st.composite
def policy_settings(draw):
    return {
        "policy": draw(st.sampled_from(sorted(SCHEDULERS))),
        "preemption": draw(st.sampled_from(["recompute", "swap", "none"])),
        "queue": draw(st.sampled_from(["fcfs", "fcfs", "priority", "shortest-first", "longest-first"])),
        "enable_prefix_caching": draw(st.booleans()),
        "num_gpu_blocks": draw(st.integers(10, 60)),
        "block_size": 16,
        "max_num_seqs": draw(st.integers(1, 12)),
        "max_num_batched_tokens": draw(st.integers(64, 512)),
        "max_model_len": 4096,
        "async_scheduling": draw(st.booleans()),
        "swap_space_gib": draw(st.sampled_from([0.001, 4.0])),  # 0.001 GiB holds 128 blocks of Llama-2-7B
    }


def make_workload(rows) -> Workload:
    gaps, prompts, outputs, priority, prefix = zip(*rows)
    return Workload(pd.DataFrame({
        "arrival_s": np.cumsum(np.asarray(gaps, dtype=np.float64)),
        "prompt_tokens": np.asarray(prompts, dtype=np.int64),
        "output_tokens": np.asarray(outputs, dtype=np.int64),
        "priority": np.asarray(priority, dtype=np.int64),
        # Three shared system prompts (hash ids of 512-token blocks, here 8 tokens each), or none.
        "prefix_hashes": [(p, 10 + p, 20 + p) if p else () for p in prefix],
    }))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, knobs=policy_settings())
def test_invariants_hold_for_every_policy_and_preemption_mode(rows, knobs) -> None:
    knobs = dict(knobs, prefix_hash_block_tokens=8)
    config = SimConfig.model_validate({"scheduler": knobs, "metrics": {"step_detail": True}})
    workload = make_workload(rows)
    result = simulate(config, workload=workload)
    req, steps = result.requests, result.steps
    # Every request ends exactly once.
    assert len(req) == len(workload) and req["request_id"].is_unique
    assert set(req["status"]) <= {"finished", "rejected", "failed"}
    assert "stalled" not in set(req["reason"])
    # Blocks never over-committed.
    usable = knobs["num_gpu_blocks"] - 1
    if len(steps):
        assert (steps["used_blocks"] <= usable).all() and (steps["free_blocks"] >= 0).all()
    # An empty prompt (drawn on purpose) fails at arrival under every policy; it never finishes.
    assert (req.loc[req["prompt_tokens"] == 0, "reason"] == "empty_prompt").all()
    # Token accounting of finished requests.
    done = req[req["status"] == "finished"]
    expected = (done["prompt_tokens"] + done["output_tokens"] - 1 + done["recomputed_tokens"]
                - done["cached_tokens"])
    assert (done["scheduled_tokens"] == expected).all()
    assert (done["num_output_tokens"] == done["output_tokens"]).all()
    if not knobs["enable_prefix_caching"]:
        assert (req["cached_tokens"] == 0).all()
    if knobs["preemption"] == "none":
        assert (req["num_preemptions"] == 0).all()
    # Time never goes backwards.
    for _, s in steps.groupby("replica"):
        start = s["start_s"].to_numpy()
        end = start + s["duration_s"].to_numpy()
        assert (start[1:] >= end[:-1] - 1e-12).all()
    assert (done["first_scheduled_s"] >= done["arrival_s"]).all()
    assert (done["first_token_s"] > done["first_scheduled_s"]).all()
    assert (done["finish_s"] >= done["first_token_s"]).all()
