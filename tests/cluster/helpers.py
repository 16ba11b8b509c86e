"""Small builders shared by the cluster simulation tests."""

from __future__ import annotations

import numpy as np

from llmsim.config import build_config
from llmsim.simulation import simulate
from llmsim.workload.workload import Workload, canonical_frame


def workload(arrivals, prompt=500, output=20, **columns) -> Workload:
    n = len(arrivals)
    frame = canonical_frame({"arrival_s": np.asarray(arrivals, dtype=float),
                             "prompt_tokens": np.full(n, prompt) if np.isscalar(prompt) else prompt,
                             "output_tokens": np.full(n, output) if np.isscalar(output) else output, **columns})
    return Workload(frame, "test").validate()


def run(cluster: dict, wl: Workload, **sections):
    # engine-only (no API server in front) unless a test asks for one: these tests time cluster mechanics
    data = {"seed": 0, "hardware": {"gpu": "A100-80GB", "model": "Llama-2-7B"},
            "scheduler": {"max_num_batched_tokens": 2048, "num_gpu_blocks": 4000}, "cluster": cluster,
            "server": {"enabled": False}, **sections}
    return simulate(build_config(data), workload=wl)
