"""Benchmark (not a test): write a 5-million-row BurstGPT-format CSV, then load and analyse it.

    python experiments/bench_workload_5m.py [--rows 5000000] [--dir /tmp/llmsim_bench] [--report]

Prints the wall time of each phase and the peak resident memory of the process (ru_maxrss). The CSV is
written in chunks so that generating it does not dominate the memory figure. Goal (issue 3): load +
analyse in under 60 s and 2 GB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmsim.workload.analyze import analyze_workload
from llmsim.workload.loaders import load_trace
from llmsim.workload.synthetic import BurstGPTLengths

CHUNK = 500_000
DAYS = 121  # span of BurstGPT releases 1 + 2


def write_burstgpt_csv(path: Path, rows: int, seed: int = 0) -> None:
    """Gamma arrivals with a daily rate cycle over 121 days; BurstGPT-like lengths, models, log types, 3 % failures."""
    rng = np.random.default_rng(seed)
    mean_gap = DAYS * 86400 / rows
    lengths = BurstGPTLengths()
    t, last = 0.0, 0.0
    with open(path, "w") as out:
        out.write("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n")
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            gaps = rng.gamma(0.3, mean_gap / 0.3, size=n)
            times = t + np.cumsum(gaps)
            times = times + 0.2 * 86400 / (2 * np.pi) * np.sin(2 * np.pi * times / 86400)  # daily cycle
            times = np.maximum.accumulate(np.maximum(times, last))  # the warp must not reorder arrivals
            t, last = float(t + gaps.sum()), float(times[-1])
            prompt, output = lengths.sample(rng, n)
            failed = rng.random(n) < 0.03
            prompt[failed] = 0
            output[failed] = 0
            frame = pd.DataFrame({
                "Timestamp": np.floor(times).astype(np.int64),
                "Model": np.where(rng.random(n) < 0.8, "ChatGPT", "GPT-4"),
                "Request tokens": prompt, "Response tokens": output, "Total tokens": prompt + output,
                "Log Type": np.where(rng.random(n) < 0.7, "Conversation log", "API log"),
            })
            frame.to_csv(out, header=False, index=False)


def peak_rss_mb() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/llmsim_bench"))
    parser.add_argument("--report", action="store_true", help="also draw the PNG report")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / f"burstgpt_{args.rows}.csv"
    t0 = time.perf_counter()
    if not path.exists():
        write_burstgpt_csv(path, args.rows)
    t1 = time.perf_counter()
    print(f"generate: {t1 - t0:6.1f} s  ({path}, {path.stat().st_size / 1e6:.0f} MB)  peak RSS {peak_rss_mb():.0f} MB")
    workload = load_trace(path, include_failures=True)
    t2 = time.perf_counter()
    print(f"load:     {t2 - t1:6.1f} s  ({len(workload):,} rows)  peak RSS {peak_rss_mb():.0f} MB")
    result = analyze_workload(workload)
    t3 = time.perf_counter()
    print(f"analyse:  {t3 - t2:6.1f} s  mean_rps {result['mean_rps']:.3f}  cv {result['interarrival_cv']:.2f}  "
          f"failure_rate {result['failure_rate']:.3f}  peak RSS {peak_rss_mb():.0f} MB")
    if args.report:
        from llmsim.workload.report import write_report

        files = write_report(workload, result, args.dir / "report")
        print(f"report:   {time.perf_counter() - t3:6.1f} s  ({len(files)} PNGs)  peak RSS {peak_rss_mb():.0f} MB")
    print(f"load + analyse: {t3 - t1:.1f} s wall, peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
