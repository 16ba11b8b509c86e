import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
from llmsim.config import SimConfig
from llmsim.simulation import simulate, aggregate_blockers
from tests.engine.test_invariants import make_workload
from tests.engine.test_fast_path_equivalence import _assert_frames_equal

@st.composite
def knobs(draw):
    chunked = draw(st.booleans())
    budget = draw(st.sampled_from([32, 64, 256, 2048]))
    return {
        "num_gpu_blocks": draw(st.integers(20, 400)),
        "block_size": draw(st.sampled_from([4, 8, 16])),
        "max_num_seqs": draw(st.integers(1, 64)),
        "max_num_batched_tokens": budget,
        "enable_chunked_prefill": chunked,
        "long_prefill_token_threshold": draw(st.sampled_from([0, 0, 0, 16, 100])),
        "max_model_len": 4096 if chunked else budget,
        "async_scheduling": draw(st.booleans()),
        "watermark": draw(st.sampled_from([0.0, 0.0, 0.02])),
        "scheduler_reserve_full_isl": draw(st.booleans()),
        "max_waiting_requests": draw(st.sampled_from([None, None, 1, 8])),
    }

@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    rows=st.lists(st.tuples(st.sampled_from([0.0, 0.01, 0.05, 0.2, 1.0, 3.0]), st.integers(1, 1500), st.integers(1, 300)), min_size=1, max_size=150),
    k=knobs(), replicas=st.sampled_from([1, 2, 4]), router=st.sampled_from(["round-robin", "random"]),
    every=st.sampled_from([1, 1, 3]), interval=st.sampled_from([1.0, 0.5, 0.37]),
)
def test_hunt2(rows, k, replicas, router, every, interval):
    workload = make_workload(rows)
    res = []
    for mode in ("reference", "fast"):
        config = SimConfig.model_validate({"scheduler": k, "engine": {"mode": mode},
                                           "cluster": {"replicas": replicas, "router": router},
                                           "metrics": {"step_sample_every": every, "timeseries_interval_s": interval}})
        if mode == "fast": assert not aggregate_blockers(config)
        res.append(simulate(config, workload=workload))
    ref, fast = res
    _assert_frames_equal(ref.requests, fast.requests, "requests")
    _assert_frames_equal(ref.steps, fast.steps, "steps")
    _assert_frames_equal(ref.tables["replicas"], fast.tables["replicas"], "replicas")
    _assert_frames_equal(ref.tables["replica_timeseries"], fast.tables["replica_timeseries"], "ts")
    for key in ("num_steps", "max_num_waiting", "max_batch_size", "preemptions", "completed", "rejected"):
        assert ref.summary[key] == fast.summary[key], key
    for m in ("ttft_s", "tpot_s", "itl_s", "e2el_s"):
        for stt, v in ref.summary[m].items():
            if v is not None:
                assert np.isclose(fast.summary[m][stt], v, rtol=1e-9), (m, stt)
