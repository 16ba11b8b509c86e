"""End-to-end tests of `llmsim run`: the default job, overrides, determinism and one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from llmsim.cli import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmsim.cli", *args], capture_output=True, text=True, cwd=REPO)


def assert_one_line_error(proc_or_err, *needles: str) -> None:
    err = proc_or_err.stderr if hasattr(proc_or_err, "stderr") else proc_or_err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_default_run_simulates_the_bundled_bursty_workload(tmp_path: Path) -> None:
    proc = run_cli("run", "-o", str(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_requests"] >= 2000
    assert summary["deployment"]["model"] == "Llama-2-7B" and summary["deployment"]["gpu"] == "A100-80GB"
    # The default shows the study's phenomenon: bursts fill the KV cache and cause preemptions and queueing.
    assert summary["preemptions"] > 0
    assert summary["peak_kv_usage"] > 0.95
    assert summary["queue_s"]["p99"] > 1.0
    for key in ("num_requests", "completed", "rejected", "failed", "duration_s", "request_throughput",
                "output_throughput", "total_token_throughput", "preemptions", "slo_attainment", "goodput"):
        assert key in summary
    for key in ("ttft_s", "tpot_s", "itl_s", "e2el_s"):
        assert set(summary[key]) >= {"mean", "median", "p90", "p95", "p99"}
    assert "TTFT" in proc.stdout and "SLO attainment" in proc.stdout
    assert (tmp_path / "requests.parquet").exists() and (tmp_path / "steps.parquet").exists()


def test_same_config_and_seed_give_byte_identical_outputs(tmp_path: Path) -> None:
    args = ["run", "--quiet", "--set", "workload.num_requests=300"]
    assert main(args + ["-o", str(tmp_path / "a")]) == 0
    assert main(args + ["-o", str(tmp_path / "b")]) == 0
    for name in ("summary.json", "requests.parquet", "steps.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert main(args + ["--set", "seed=1", "-o", str(tmp_path / "c")]) == 0
    assert (tmp_path / "a" / "summary.json").read_bytes() != (tmp_path / "c" / "summary.json").read_bytes()


def test_set_overrides_any_field(tmp_path: Path) -> None:
    assert main(["run", "--quiet", "--set", "workload.num_requests=50", "--set", "scheduler.max_num_seqs=4",
                 "--set", "scheduler.num_gpu_blocks=500", "-o", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_requests"] == 50
    assert summary["max_batch_size"] <= 4
    assert summary["deployment"]["num_gpu_blocks"] == 500


def test_config_file_and_python_api_agree(tmp_path: Path) -> None:
    import llmsim

    cfg_file = tmp_path / "my.yaml"
    cfg_file.write_text("seed: 3\nworkload:\n  num_requests: 80\nscheduler:\n  max_num_seqs: 8\n")
    result = llmsim.simulate(llmsim.load_config(cfg_file))
    assert list(result.requests.columns)[:3] == ["request_id", "replica", "arrival_s"]
    assert len(result.requests) == 80 and result.summary["seed"] == 3
    assert main(["run", str(cfg_file), "--quiet", "-o", str(tmp_path / "out")]) == 0
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["ttft_s"] == result.summary["ttft_s"]


@pytest.mark.parametrize(
    "args,needles",
    [
        (["run", "does_not_exist.yaml"], ["does_not_exist.yaml", "not found"]),
        (["run", "--set", "scheduler.max_num_seqs=many"], ["scheduler.max_num_seqs", "integer"]),
        (["run", "--set", "scheduler.not_a_knob=1"], ["scheduler.not_a_knob", "unknown key"]),
        (["run", "--set", "scheduler.policy=magic"], ["scheduler.policy", "vllm-v1"]),
        (["run", "--set", "hardware.model=Llama-2-70B"], ["Llama-2-70B", "GiB short"]),
        (["run", "--set", "hardware.gpu=Z9000"], ["Z9000"]),
        (["run", "--set", 'cluster.replicas=[{"count": 0}]'], ["cluster", "0 replicas"]),
        (["run", "--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_bad_input_is_one_clear_line(args, needles, tmp_path: Path) -> None:
    proc = run_cli(*args, "-o", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize(
    "content,needles",
    [
        ("arrival_s,prompt_tokens\n0.0,10\n", ["output_tokens"]),
        ("arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n1.0,-3,5\n", ["row 2", "prompt_tokens"]),
        ("arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n1.0,ten,5\n", ["row 2", "prompt_tokens"]),
    ],
)
def test_bad_trace_is_one_clear_line(content: str, needles, tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(content)
    proc = run_cli("run", "--set", f"workload.trace={trace}", "-o", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert_one_line_error(proc, "trace.csv", *needles)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_wheel_ships_the_hardware_profiles(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(REPO)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("llmsim-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "llmsim/hardware_profiles/gpus/A100-80GB.yaml" in names
    assert "llmsim/hardware_profiles/models/Llama-2-7B.yaml" in names
    assert "llmsim/default_config.yaml" in names
    for example in ("config.yaml", "trace.csv", "sweep.yaml", "cluster_autoscale.yaml"):  # `llmsim examples copy`
        assert f"llmsim/examples/{example}" in names
