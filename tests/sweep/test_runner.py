"""The sweep runner: same table on every executor, resume after a kill, failures recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from llmsim.sweep import RESULTS_FILE, run_sweep
from llmsim.sweep.spec import expand_runs, spec_from_dict

# 2 × 3 grid values × 2 run maps × 4 seeds = 48 runs, each a few dozen requests (a few hundredths of a second).
SPEC_48 = {
    "set": {"workload.preset": "gamma", "workload.num_requests": 24, "workload.rate": 30.0,
            "hardware.model": "Llama-2-7B", "scheduler.num_gpu_blocks": 400},
    "grid": {"workload.burstiness": [1.0, 0.2], "scheduler.max_num_seqs": [4, 16, 64]},
    "runs": [{"scheduler.max_num_batched_tokens": 512}, {"scheduler.max_num_batched_tokens": 2048}],
    "seeds": [0, 1, 2, 3],
}


def _comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=[c for c in table.columns if c.startswith("wall_")])


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    outcome = run_sweep(SPEC_48, out, jobs=2, executor="local")
    return outcome


def test_local_sweep_writes_one_row_per_run(local_sweep):
    table = pd.read_parquet(local_sweep.results_path)
    assert len(table) == 48 and (table["status"] == "ok").all()
    for column in ("workload.burstiness", "scheduler.max_num_seqs", "scheduler.max_num_batched_tokens", "seed",
                   "ttft_s.p99", "tpot_s.p99", "goodput", "preemptions", "peak_kv_usage", "wall_run_s"):
        assert column in table.columns
    assert table["run"].tolist() == list(range(48))
    assert len(list((local_sweep.out_dir / "cache").glob("*.json"))) == 48
    # Different configs give different outcomes: the swept values reach the simulation.
    assert (table["max_batch_size"] <= table["scheduler.max_num_seqs"]).all()
    assert table.loc[table["scheduler.max_num_seqs"] == 4, "max_batch_size"].max() == 4


@pytest.mark.slow
def test_dask_local_cluster_gives_the_identical_table(local_sweep, tmp_path):
    pytest.importorskip("distributed")
    outcome = run_sweep(SPEC_48, tmp_path, jobs=2, executor="dask-local")
    assert outcome.num_executed == 48
    pd.testing.assert_frame_equal(_comparable(outcome.table), _comparable(local_sweep.table))
    pd.testing.assert_frame_equal(_comparable(pd.read_parquet(tmp_path / RESULTS_FILE)),
                                  _comparable(pd.read_parquet(local_sweep.results_path)))


@pytest.mark.slow
def test_killed_sweep_resumes_with_only_the_missing_runs(local_sweep, tmp_path):
    spec_path = tmp_path / "sweep.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC_48, sort_keys=False))
    out = tmp_path / "out"
    cache = out / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "llmsim.cli", "sweep", str(spec_path), "-o", str(out), "--jobs", "1",
                             "--quiet"], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(cache.glob("*.json"))) < 6:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 midway: no chance to clean up
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    assert 6 <= len(before) < 48
    assert not (out / RESULTS_FILE).exists()
    executed = []
    outcome = run_sweep(spec_path, out, jobs=1, on_record=lambda run, record: executed.append(run.key))
    all_keys = {run.key for run in expand_runs(spec_from_dict(SPEC_48))}
    assert outcome.num_cached == len(before) and outcome.num_executed == 48 - len(before)
    assert set(executed) == all_keys - {name[:-5] for name in before}
    after = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    assert len(after) == 48 and all(after[name] == mtime for name, mtime in before.items())
    pd.testing.assert_frame_equal(_comparable(outcome.table), _comparable(local_sweep.table))


def test_interrupted_in_process_sweep_keeps_finished_runs(tmp_path):
    spec = {**SPEC_48, "seeds": [0]}

    def stop_after_three(run, record, seen=[]):
        seen.append(run.key)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path, jobs=1, on_record=stop_after_three)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3
    outcome = run_sweep(spec, tmp_path, jobs=1)
    assert (outcome.num_cached, outcome.num_executed, len(outcome.table)) == (3, 9, 12)


def test_failed_run_is_recorded_and_does_not_stop_the_sweep(tmp_path):
    spec = {"set": {"workload.num_requests": 10, "workload.rate": 10.0},
            "grid": {"hardware.gpu": ["A100-80GB", "no-such-gpu"]}}
    outcome = run_sweep(spec, tmp_path, jobs=2)
    table = outcome.table.set_index("hardware.gpu")
    assert table.loc["A100-80GB", "status"] == "ok" and table.loc["A100-80GB", "completed"] == 10
    assert table.loc["no-such-gpu", "status"] == "failed"
    assert "no-such-gpu" in table.loc["no-such-gpu", "error"]
    assert outcome.num_failed == 1
    # Failures are retried on the next run of the sweep; successes come from the cache.
    again = run_sweep(spec, tmp_path, jobs=1)
    assert (again.num_cached, again.num_executed) == (1, 1)


def test_sweep_command_prints_counts(tmp_path):
    from llmsim.cli import main

    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(yaml.safe_dump({"set": {"workload.num_requests": 5}, "seeds": [0, 1]}))
    assert main(["sweep", str(spec_path), "-o", str(tmp_path / "o"), "-j", "1", "-q"]) == 0
    assert len(pd.read_parquet(tmp_path / "o" / RESULTS_FILE)) == 2
    assert main(["sweep", str(spec_path), "-o", str(tmp_path / "o"), "--executor", "nope"]) == 2
