"""Speed of llmsim next to Vidur (the best-known peer simulator) on one and the same request trace.

Vidur (Agrawal et al., "Vidur: A Large-Scale Simulation Framework for LLM Inference", MLSys 2024;
https://github.com/microsoft/vidur) is installed separately, in its own virtualenv, never into the project's
environment:

    python3 -m venv /tmp/vidur_venv && /tmp/vidur_venv/bin/pip install vidur==0.0.26

It predicts each batch's duration from measured GPU operator timings ("profiling data": per-layer linear
operators in ``mlp.csv``, attention kernels in ``attention.csv``, collectives in ``all_reduce.csv`` /
``send_recv.csv``). Vidur 0.0.26 fetches those from Hugging Face datasets; this script instead serves them from a
local folder of real measurements (default: the A30 + Qwen-2-7B timings of the ``a30_fork`` snapshot in
``../shared/vidur_profiling``, the only set there that includes attention). Vidur 0.0.26 knows neither the A30 nor
Qwen-2-7B, so the worker below registers both the way Vidur registers its own (subclasses of its config classes):
A30 memory 24 GB (NVIDIA A30 datasheet), Qwen-2-7B shape from its Hugging Face config.json (the same shape as
llmsim's Qwen2.5-7B profile). Nothing of Vidur's code or data is copied into this repository.

What is run (one replica, TP 1, one CPU core, ``OMP_NUM_THREADS=1``):

1. ``llmsim generate --preset burstgpt`` writes the trace; prompts are cut so that prompt + output fits the
   profiled context (4,096 tokens), the same cut Vidur's trace reader would make, so both read identical requests.
2. Vidur, Sarathi-Serve scheduler (chunked prefill, running requests first, then new prefill chunks under a
   token budget: the policy vLLM v1 follows), token budget and batch cap equal to llmsim's settings, KV blocks
   from Vidur's own memory plan for a 24 GB A30 (llmsim is then given the same count), chrome trace and plots
   off, per-request metrics on. Vidur 0.0.26 aborts on the first preemption (``Request.restart`` leaves its
   stage counters as they were, so an assertion in ``on_batch_stage_end`` fails), hence a trace and a block
   count under which no request is preempted; llmsim's summary of the trace says so (0 preemptions).
   A first run trains Vidur's predictors (random forests, grid-searched with k-fold CV, then tabulated) and
   caches them; that time is reported separately. The timed runs reuse the cache, as Vidur does in a sweep.
3. llmsim ``run`` on the same trace (A30, Qwen2.5-7B, vllm-v1, step detail off) in ``engine.mode=fast`` and
   ``engine.mode=reference``.

Each timed run is repeated ``--repeats`` times (the fastest is kept) under ``/usr/bin/time -v`` for wall seconds
and peak resident memory. Usage::

    python experiments/bench_vs_vidur.py [--vidur-venv /tmp/vidur_venv]
        [--profiling /work/shared/vidur_profiling/a30_fork] [--rate 1.0 --duration 10800]
        [--small-predictor-grid] [--cpu 0] [--repeats 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

VIDUR_VERSION = "0.0.26"
#: The context length the A30 attention timings were profiled up to (attention.csv column max_model_len).
MAX_TOKENS = 4096
VIDUR_DATE = "2023-08-21"  # Vidur's trace reader keeps the rows of one "Date"; every row gets this one.
MODEL_NAME = "Qwen/Qwen-2-7B"  # as named by the profiling data's folder
DEVICE = "a30"
NETWORK_DEVICE = "a30_single_gpu"
LLMSIM_GPU, LLMSIM_MODEL = "A30", "Qwen2.5-7B"
MAX_NUM_SEQS = 128  # Vidur tabulates decode attention up to this batch (prediction_max_batch_size default)
TOKEN_BUDGET = 2048  # llmsim's default scheduler.max_num_batched_tokens; Vidur's Sarathi chunk_size
HERE = Path(__file__).resolve()


# ----------------------------------------------------------------------------------------------------------
# Worker: runs INSIDE the Vidur virtualenv (imports vidur only, never llmsim).
# ----------------------------------------------------------------------------------------------------------

_REGISTERED: list = []


def _register_vidur_extensions(profiling_dir: str) -> None:
    """Teach Vidur the A30 and Qwen-2-7B, and serve its profiling 'datasets' from a local folder."""
    from dataclasses import dataclass
    from typing import Optional

    from vidur.config.device_sku_config import BaseDeviceSKUConfig
    from vidur.config.model_config import Llama2ModelConfig
    from vidur.config.node_sku_config import BaseNodeSKUConfig
    from vidur.execution_time_predictor import sklearn_execution_time_predictor as skl

    @dataclass
    class A30DeviceSKUConfig(BaseDeviceSKUConfig):
        fp16_tflops: int = 165  # NVIDIA A30 datasheet, dense BF16/FP16 tensor
        total_memory_gb: int = 24  # NVIDIA A30 datasheet, HBM2

        @staticmethod
        def get_type():
            return DEVICE  # Vidur compares str(get_type()) with --replica_config_device

    @dataclass
    class A30SingleGpuNodeSKUConfig(BaseNodeSKUConfig):
        device_sku_type: str = DEVICE
        num_devices_per_node: int = 1

        @staticmethod
        def get_type():
            return NETWORK_DEVICE

    @dataclass
    class Qwen2_7BModelConfig(Llama2ModelConfig):  # Hugging Face Qwen/Qwen2-7B config.json
        num_layers: int = 28
        num_q_heads: int = 28
        num_kv_heads: int = 4
        embedding_dim: int = 3584
        mlp_hidden_dim: int = 18944
        max_model_len: int = MAX_TOKENS
        use_qkv_bias: bool = True
        rope_theta: Optional[float] = 1000000.0
        vocab_size: int = 151936  # as recorded in the profiling data's mlp.csv (Vidur filters rows on it)

        @staticmethod
        def get_name():
            return MODEL_NAME

    def local_snapshot(repo_id: str, **_kwargs) -> str:
        # Profiling datasets are named "local/<folder>"; predictions "published" on the Hub are never there,
        # so Vidur falls back to training (or to its on-disk predictor cache), as on a first run.
        if repo_id.startswith("local/"):
            return os.path.join(profiling_dir, repo_id[len("local/"):])
        raise FileNotFoundError(f"{repo_id}: no network access in this benchmark")

    skl.snapshot_download = local_snapshot
    # Python tracks subclasses through weak references: keep these alive for Vidur's name lookups.
    _REGISTERED.extend([A30DeviceSKUConfig, A30SingleGpuNodeSKUConfig, Qwen2_7BModelConfig])


def _vidur_worker(argv: list[str]) -> None:
    """Run one Vidur simulation; print one JSON line with its setup and simulation seconds."""
    profiling_dir, result_path, vidur_args = argv[0], argv[1], argv[2:]
    _register_vidur_extensions(profiling_dir)
    from vidur.config import SimulationConfig
    from vidur.simulator import Simulator
    from vidur.utils.random import set_seeds

    started = time.perf_counter()
    sys.argv = ["vidur.main", *vidur_args]
    config = SimulationConfig.create_from_cli_args()
    set_seeds(config.seed)
    simulator = Simulator(config)  # loads (or trains) the predictors and the trace
    ready = time.perf_counter()
    simulator.run()
    done = time.perf_counter()
    Path(result_path).write_text(json.dumps({"setup_s": ready - started, "simulate_s": done - ready,
                                             "num_blocks": config.cluster_config.cache_config.num_blocks,
                                             "output_dir": config.metrics_config.output_dir}))


# ----------------------------------------------------------------------------------------------------------
# Driver: runs in the project's environment.
# ----------------------------------------------------------------------------------------------------------

def _vidur_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import vidur.version as v; print(v.__version__)"],
                           capture_output=True, text=True) if python.exists() else None
    if probe is None or probe.returncode != 0:
        sys.exit(f"Vidur is not installed in {venv}: run `python3 -m venv {venv} && "
                 f"{venv}/bin/pip install vidur=={VIDUR_VERSION}` (or pass --vidur-venv).")
    if probe.stdout.strip() != VIDUR_VERSION:
        print(f"note: {venv} holds Vidur {probe.stdout.strip()}, not {VIDUR_VERSION}", file=sys.stderr)
    return python


def _make_traces(work: Path, rate: float, duration_s: float, seed: int) -> tuple[Path, Path, int]:
    """Generate the burstgpt trace, cut prompts to fit MAX_TOKENS, write llmsim's and Vidur's copies."""
    import pandas as pd

    raw = work / "trace_raw.csv"
    subprocess.run(["llmsim", "generate", "--preset", "burstgpt", "--duration", str(duration_s), "--rate", str(rate),
                    "--seed", str(seed), "-o", str(raw)], check=True, stdout=subprocess.DEVNULL)
    trace = pd.read_csv(raw)
    trace["output_tokens"] = trace["output_tokens"].clip(lower=1, upper=MAX_TOKENS - 1)
    trace["prompt_tokens"] = trace["prompt_tokens"].clip(lower=1, upper=MAX_TOKENS - trace["output_tokens"])
    llmsim_trace, vidur_trace = work / "trace_llmsim.csv", work / "trace_vidur.csv"
    trace.to_csv(llmsim_trace, index=False)
    pd.DataFrame({"Date": VIDUR_DATE, "Time": trace["arrival_s"], "PromptTokenCount": trace["prompt_tokens"],
                  "CompletionTokenCount": trace["output_tokens"]}).to_csv(vidur_trace, index=False)
    return llmsim_trace, vidur_trace, len(trace)


def _prepare_profiling(source: Path, work: Path) -> Path:
    """Lay the measured timings out as Vidur 0.0.26 expects a downloaded dataset (config.json + *.csv.xz).

    Rows whose median is missing (NaN) or implausible (a QKV projection under 0.01 ms at more than 64 tokens,
    see the data's SOURCE.md) are dropped before Vidur fits its models; nothing else is changed.
    """
    import pandas as pd

    out = work / "profiling"
    compute_src = source / "compute" / DEVICE / MODEL_NAME
    network_src = source / "network" / NETWORK_DEVICE
    for path in (compute_src / "mlp.csv", compute_src / "attention.csv", network_src / "all_reduce.csv"):
        if not path.exists():
            sys.exit(f"profiling data: {path} not found (expected the a30_fork layout, see --profiling)")
    mlp = pd.read_csv(compute_src / "mlp.csv")
    medians = [c for c in mlp.columns if c.endswith(".median")]
    mlp = mlp.dropna(subset=medians)
    mlp = mlp[~((mlp["time_stats.attn_pre_proj.median"] < 0.01) & (mlp["num_tokens"] > 64))]
    (out / "compute").mkdir(parents=True, exist_ok=True)
    (out / "network").mkdir(parents=True, exist_ok=True)
    mlp.to_csv(out / "compute" / "mlp.csv.xz", index=False)
    for src, dst in ((compute_src / "attention.csv", out / "compute" / "attention.csv.xz"),
                     (network_src / "all_reduce.csv", out / "network" / "all_reduce.csv.xz"),
                     (network_src / "send_recv.csv", out / "network" / "send_recv.csv.xz")):
        dst.write_bytes(lzma.compress(src.read_bytes()))
    (out / "compute" / "config.json").write_text(json.dumps({"model": MODEL_NAME, "device_sku": DEVICE}))
    (out / "network" / "config.json").write_text(json.dumps({"sku": NETWORK_DEVICE}))
    return out


def _timed(cmd: list[str], cpu: int, log: Path) -> dict:
    """Run cmd pinned to one core under /usr/bin/time -v; wall seconds and peak RSS (MB) from its report."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0"}
    full = ["taskset", "-c", str(cpu), "/usr/bin/time", "-v", *cmd]
    proc = subprocess.run(full, capture_output=True, text=True, env=env)
    log.write_text(proc.stdout + "\n----- stderr -----\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}); see {log}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr).group(1)
    seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall.split(":"))))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    cpu_s = sum(float(re.search(rf"{kind} time \(seconds\): (\S+)", proc.stderr).group(1))
                for kind in ("User", "System"))
    return {"wall_s": seconds, "cpu_s": cpu_s, "peak_rss_mb": rss_kb / 1024}


def _llmsim_overrides(trace: Path, num_blocks: int) -> list[str]:
    sets = {"workload.trace": trace, "scheduler.num_gpu_blocks": num_blocks, "workload.num_requests": "null",
            "hardware.gpu": LLMSIM_GPU,
            "hardware.model": LLMSIM_MODEL, "scheduler.policy": "vllm-v1", "scheduler.max_num_seqs": MAX_NUM_SEQS,
            "scheduler.max_num_batched_tokens": TOKEN_BUDGET, "scheduler.max_model_len": MAX_TOKENS,
            "metrics.step_detail": "false"}
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


def _llmsim_summary(trace: Path, num_blocks: int) -> dict:
    """The summary of one untimed llmsim run of the whole trace (load, preemptions)."""
    proc = subprocess.run(["llmsim", "run", *_llmsim_overrides(trace, num_blocks), "--quiet", "--json"],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


#: A reduced random-forest grid (Vidur's default: 250/500/750 trees x depth 8/16/32 x min split 2/5/10, 10-fold CV).
#: The simulation's speed does not depend on it: Vidur tabulates every prediction into a lookup table first.
SMALL_GRID = {"num_estimators": "10", "max_depth": "8", "min_samples_split": "2", "k_fold_cv_splits": "2"}


def _vidur_args(trace: Path, cache_dir: Path, out_dir: Path, small_grid: bool) -> list[str]:
    # Vidur's default predictor family (its spelling); 0.0.26's linear_regression predictor cannot be built
    # (an abstract method is left unimplemented).
    predictor = "random_forrest"
    p = f"--{predictor}_execution_time_predictor_config_"
    return [
        "--replica_config_device", DEVICE, "--replica_config_network_device", NETWORK_DEVICE,
        "--replica_config_model_name", MODEL_NAME, "--replica_config_tensor_parallel_size", "1",
        "--replica_config_num_pipeline_stages", "1", "--cluster_config_num_replicas", "1",
        "--cache_config_block_size", "16", "--cache_config_watermark_blocks_fraction", "0",
        "--replica_scheduler_config_type", "sarathi", "--sarathi_scheduler_config_chunk_size", str(TOKEN_BUDGET),
        "--sarathi_scheduler_config_batch_size_cap", str(MAX_NUM_SEQS),
        "--request_generator_config_type", "trace_replay", "--trace_request_generator_config_trace_file", str(trace),
        "--trace_request_generator_config_date", VIDUR_DATE, "--trace_request_generator_config_max_tokens",
        str(MAX_TOKENS), "--trace_request_generator_config_prefill_scale_factor", "1",
        "--trace_request_generator_config_decode_scale_factor", "1",
        "--trace_request_generator_config_time_scale_factor", "1",
        "--execution_time_predictor_config_type", predictor,
        f"{p}model_profiling_dataset", "local/compute", f"{p}network_profiling_dataset", "local/network",
        f"{p}prediction_max_tokens_per_request", str(MAX_TOKENS), f"{p}prediction_max_batch_size", str(MAX_NUM_SEQS),
        f"{p}num_training_job_threads", "1", f"{p}cache_dir", str(cache_dir),
        "--no-metrics_config_enable_chrome_trace", "--no-metrics_config_store_plots",
        "--metrics_config_output_dir", str(out_dir),
    ] + ([arg for key, value in SMALL_GRID.items() for arg in (f"{p}{key}", value)] if small_grid else [])


def _vidur_run(python: Path, profiling: Path, args: list[str], cpu: int, log: Path) -> dict:
    result = log.with_suffix(".json")
    timing = _timed([str(python), str(HERE), "_vidur-worker", str(profiling), str(result), *args], cpu, log)
    return {**timing, **json.loads(result.read_text())}


def _table(rows: list[dict], num_requests: int) -> str:
    lines = ["| simulator | mode | requests | wall s | CPU s | requests/s (wall) | peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['simulator']} | {row['mode']} | {num_requests:,} | {row['wall_s']:.2f} | "
                     f"{row['cpu_s']:.2f} | {num_requests / row['wall_s']:,.0f} | {row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vidur-venv", type=Path, default=Path("/tmp/vidur_venv"))
    parser.add_argument("--profiling", type=Path, default=HERE.parents[2] / "shared" / "vidur_profiling" / "a30_fork",
                        help="folder with compute/a30/Qwen/Qwen-2-7B/{mlp,attention}.csv and network/a30_single_gpu/")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/llmsim_vs_vidur"))
    parser.add_argument("--rate", type=float, default=1.0, help="mean arrival rate, req/s (burstgpt preset)")
    parser.add_argument("--duration", type=float, default=10800.0, help="trace length, simulated seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per row; the fastest is kept")
    parser.add_argument("--cpu", type=int, default=0, help="the one core everything is pinned to")
    parser.add_argument("--small-predictor-grid", action="store_true",
                        help="train Vidur's forests on a reduced grid (minutes less training, same simulation speed)")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    opts = parser.parse_args()

    python = _vidur_python(opts.vidur_venv)
    work = opts.work_dir
    for stale in ("logs", "vidur_out"):  # the predictor cache (vidur_cache/) is kept: training is per data set
        shutil.rmtree(work / stale, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    llmsim_trace, vidur_trace, num_requests = _make_traces(work, opts.rate, opts.duration, opts.seed)
    profiling = _prepare_profiling(opts.profiling, work)

    # Vidur's cache key ignores the forest's hyper-parameters: one cache folder per grid.
    cache = work / ("vidur_cache_small_grid" if opts.small_predictor_grid else "vidur_cache")
    def args(tag: str) -> list[str]:
        return _vidur_args(vidur_trace, cache, work / "vidur_out" / tag, opts.small_predictor_grid)
    cached = (cache / "predictions").is_dir()
    first = _vidur_run(python, profiling, args("first"), opts.cpu, work / "logs" / "vidur_first.log")
    how = "predictor cache of an earlier invocation reused" if cached else "trains and tabulates its predictors"
    print(f"Vidur first run ({how}): {first['wall_s']:.1f} s wall, of which setup {first['setup_s']:.1f} s",
          flush=True)
    num_blocks = int(first["num_blocks"])
    summary = _llmsim_summary(llmsim_trace, num_blocks)
    print(f"trace: {num_requests:,} requests over {opts.duration:.0f} s at {opts.rate} req/s (burstgpt, seed "
          f"{opts.seed}); {num_blocks:,} KV blocks of 16 tokens (Vidur's memory plan); llmsim: "
          f"{summary['preemptions']:,} preemptions, peak KV use {summary['peak_kv_usage']:.0%}, TTFT p50 "
          f"{summary['ttft_s']['median']:.3f} s, p99 {summary['ttft_s']['p99']:.2f} s", flush=True)

    rows = []
    for simulator, mode in (("Vidur " + VIDUR_VERSION, "sarathi, cached predictors"), ("llmsim", "fast"),
                            ("llmsim", "reference")):
        runs = []
        for i in range(opts.repeats):
            log = work / "logs" / f"{simulator.split()[0].lower()}_{mode.split(',')[0]}_{i}.log"
            if simulator == "llmsim":
                cmd = ["llmsim", "run", *_llmsim_overrides(llmsim_trace, num_blocks), "--set", f"engine.mode={mode}",
                       "--quiet"]
                runs.append(_timed(cmd, opts.cpu, log))
            else:
                runs.append(_vidur_run(python, profiling, args(f"run{i}"), opts.cpu, log))
        rows.append({"simulator": simulator, "mode": mode, **min(runs, key=lambda r: r["wall_s"])})
        print(f"{simulator} {mode}: " + ", ".join(f"{r['wall_s']:.2f} s" for r in runs), flush=True)

    print()
    print(_table(rows, num_requests))
    vidur, fast, reference = rows
    print(f"\nVidur setup (config, cached predictors, trace) {vidur['setup_s']:.2f} s + simulation "
          f"{vidur['simulate_s']:.2f} s; its first run's setup{'' if cached else ' (predictor training)'}: "
          f"{first['setup_s']:.1f} s.")
    print(f"speed ratio (Vidur wall / llmsim wall, one core, one session, same trace): fast "
          f"{vidur['wall_s'] / fast['wall_s']:.1f}x, reference {vidur['wall_s'] / reference['wall_s']:.1f}x; by CPU "
          f"seconds: fast {vidur['cpu_s'] / fast['cpu_s']:.1f}x, reference {vidur['cpu_s'] / reference['cpu_s']:.1f}x; "
          f"against Vidur's simulation loop alone: fast {vidur['simulate_s'] / fast['wall_s']:.1f}x.")
    if opts.json:
        opts.json.write_text(json.dumps({"requests": num_requests, "num_gpu_blocks": num_blocks, "rows": rows,
                                         "vidur_first_run": first}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_vidur-worker":
        _vidur_worker(sys.argv[2:])
    else:
        main()
