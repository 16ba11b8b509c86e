"""metrics.stream_steps: the step table goes to Parquet in chunks during the run, and reads back the same."""

from __future__ import annotations

import gc
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from llmsim.config import load_config
from llmsim.simulation import simulate

BASE = ["workload.num_requests=400", "workload.rate=5", "cluster.replicas=2"]


@pytest.mark.parametrize("mode,router", [("fast", "round-robin"), ("fast", "least-kv"), ("reference", "round-robin")])
def test_streamed_step_table_equals_the_in_memory_one(mode: str, router: str, tmp_path) -> None:
    base = [f"engine.mode={mode}", f"cluster.router={router}", *BASE]
    in_memory = simulate(load_config(None, base))
    streamed = simulate(load_config(None, [*base, "metrics.stream_steps=true", "metrics.stream_chunk_rows=500"]))
    assert streamed.steps_file is not None and in_memory.steps_file is None
    # Written in chunks: several row groups, none much larger than the chunk.
    groups = pq.ParquetFile(streamed.steps_file)
    assert groups.num_row_groups > 3
    assert max(groups.metadata.row_group(i).num_rows for i in range(groups.num_row_groups)) < 2 * 500 + 1
    pd.testing.assert_frame_equal(in_memory.steps, streamed.steps)
    assert streamed.summary == in_memory.summary
    streamed.write(tmp_path)
    written = pd.read_parquet(tmp_path / "steps.parquet")
    pd.testing.assert_frame_equal(written.sort_values(["replica", "step"], kind="stable").reset_index(drop=True),
                                  in_memory.steps)


def test_streamed_file_is_removed_with_its_result() -> None:
    result = simulate(load_config(None, [*BASE, "metrics.stream_steps=true"]))
    path = result.steps_file
    assert os.path.exists(path)
    del result
    gc.collect()
    assert not os.path.exists(path)
