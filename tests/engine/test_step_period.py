"""The engine loop's CPU time in simulated runs: async scheduling overlaps it with the GPU, the sync loop adds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from llmsim.config import load_config
from llmsim.hardware.profiles import profiles_dir
from llmsim.simulation import simulate


@pytest.fixture(scope="module")
def slow_host_gpu(tmp_path_factory) -> Path:
    """The H100 profile behind a host that needs 100 ms of CPU per step, more than any 512-token step's GPU time."""
    profile = yaml.safe_load((profiles_dir() / "gpus" / "H100-80GB.yaml").read_text())
    profile["name"], profile["aliases"] = "H100-slow-host", []
    profile["efficiency"].update(cpu_step_overhead_ms=100.0, cpu_per_request_overhead_us=0.0, cpu_per_token_us=0.0,
                                 cpu_per_sampled_token_us=0.0)
    path = tmp_path_factory.mktemp("gpus") / "slow_host.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_async_step_period_is_the_cpu_time_sync_adds_the_gpu(slow_host_gpu, mode):
    base = [f"engine.mode={mode}", f"hardware.gpu={slow_host_gpu}", "hardware.model=Llama-3-8B",
            "workload.num_requests=30", "scheduler.max_num_batched_tokens=512", "workload.rate=4", "server.enabled=false"]
    overlapped = simulate(load_config(None, base)).steps["duration_s"].to_numpy()
    serial = simulate(load_config(None, [*base, "scheduler.async_scheduling=false"])).steps["duration_s"].to_numpy()
    assert len(overlapped) and len(serial)
    np.testing.assert_allclose(overlapped, 0.1, rtol=1e-12)  # max(CPU, GPU): the CPU
    assert (serial > 0.1 + 1e-3).all()  # CPU + GPU: every step pays a forward pass on top
