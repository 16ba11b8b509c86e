"""Print calibrate-check MAPE for every shared measurement file, and leave-one-model-out MAPE for the mlp fits.

Run from the repository root: ``python -m experiments.calibration_report [--lomo]`` (figures go in docs/explanation/hardware-model.md).
"""

from __future__ import annotations

import dataclasses
import sys

from experiments.fit_profiles import MEASURED, SHARED, files
from llmsim.hardware import calibration as cal
from llmsim.hardware.profiles import load_gpu

GPU_OF_DIR = {"a100": "A100-80GB", "h100": "H100-80GB", "a40": "A40", "a30": "A30"}


def main() -> None:
    for path in files("**/mlp.csv"):
        gpu = next(g for d, g in GPU_OF_DIR.items() if f"/{d}/" in str(path))
        r = cal.check_mlp(path, load_gpu(gpu))
        print(f"mlp {gpu:10s} {path.relative_to(SHARED)}: layer {r['mape_layer']:.3f} " + " ".join(f"{k} {v:.3f}" for k, v in r["mape_by_op"].items()))
    for name, gpu in [("a100_dgx", "A100-80GB"), ("h100_dgx", "H100-80GB"), ("a100_pairwise_nvlink", "A100-80GB-PCIe"),
                      ("h100_pairwise_nvlink", "H100-NVL"), ("a40_pairwise_nvlink", "A40")]:
        for kind in ("all_reduce", "send_recv"):
            for path in files(f"network/{name}/{kind}.csv"):
                r = cal.check_collective(path, load_gpu(gpu))
                print(f"{kind} {gpu:14s} {name}: " + " ".join(f"{k} {v:.3f}" for k, v in r.items() if k.startswith("mape")))
    for path in files("a30_fork/network/a30_single_gpu/*.csv"):
        r = cal.check_collective(path, load_gpu("A30"))
        print(f"{path.name} A30 a30_single_gpu: " + " ".join(f"{k} {v:.3f}" for k, v in r.items() if k.startswith("mape")))
    for path in files("a30_fork/**/attention.csv"):
        r = cal.check_attention(path, load_gpu("A30"))
        print("attention A30: " + " ".join(f"{k} {v:.3f}" for k, v in r.items() if k.startswith("mape")))
    if "--lomo" in sys.argv:
        for gpu_name in ("A100-80GB", "H100-80GB", "A40"):
            paths = MEASURED[gpu_name]["mlp"]
            for held in paths:
                gpu = load_gpu(gpu_name)
                eff = cal.fit_mlp([p for p in paths if p != held], gpu)
                r = cal.check_mlp(held, dataclasses.replace(gpu, efficiency=eff))
                print(f"LOMO {gpu_name} held out {held.parent.name}: layer {r['mape_layer']:.3f}")


if __name__ == "__main__":
    main()
