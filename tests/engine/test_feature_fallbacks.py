"""Features the aggregate engine does not serve run on the event-skipping loop, or where decode runs are not
modelled (speculative decoding) on the reference engine; either way the summary says why, and the results
are exactly the reference engine's."""

from __future__ import annotations

import numpy as np
import pytest

from llmsim.config import load_config
from llmsim.simulation import simulate

FEATURES = {
    "queue order priority": ["scheduler.queue=priority"],
    "speculative decoding": ["speculative.method=eagle", "scheduler.async_scheduling=false"],
    "prefix caching, kv offload": ["scheduler.enable_prefix_caching=true", "scheduler.kv_offload_gib=2",
                                   "scheduler.num_gpu_blocks=600"],
}


REFERENCE_ONLY = {"speculative decoding"}


@pytest.mark.parametrize("reason", sorted(FEATURES))
def test_fast_mode_falls_back_with_its_reason_and_the_reference_results(reason):
    overrides = ["workload.num_requests=60", *FEATURES[reason]]
    fast = simulate(load_config(None, ["engine.mode=fast", *overrides]))
    reference = simulate(load_config(None, ["engine.mode=reference", *overrides]))
    engine = "reference (fast path off:" if reason in REFERENCE_ONLY else "fast (event-skipping loop:"
    assert fast.summary["engine_mode"].startswith(engine), fast.summary["engine_mode"]
    assert reason.split(",")[0] in fast.summary["engine_mode"]
    for column in ("ttft_s", "e2el_s", "num_output_tokens", "cached_tokens", "num_preemptions"):
        assert np.array_equal(fast.requests[column].to_numpy(), reference.requests[column].to_numpy(), equal_nan=True)
