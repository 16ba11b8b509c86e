"""How well a GPU profile without end-to-end points is served by borrowing another GPU's end-to-end fit.

Each GPU fitted end to end is treated, in turn, as if it had no points: its points are predicted with its
kernel-fit values alone (what a profile without ``end_to_end_from`` gets), and with the values it would borrow
through ``end_to_end_from`` from another fitted GPU (its chip-specific values kept:
``llmsim.hardware.profiles.CHIP_SPECIFIC``). Its own end-to-end fit is shown for reference (in-sample).

Run from the repository root: ``python -m experiments.end_to_end_transfer [--jobs 2]`` (about 3 minutes on 2
cores; the table goes in docs/validation.md).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import yaml

from llmsim.hardware.profiles import CHIP_SPECIFIC, load_gpu
from llmsim.validation.fit import FIT_PARAMETERS, Evaluator, current_values
from llmsim.validation.points import read_points
from llmsim.validation.setup import SkipPoint, build_setup

POINTS = Path(os.environ.get("LLMSIM_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "realworld" / "points.csv"
#: (GPU treated as unfitted, the fitted GPU it borrows from): the bundled rule (A100-80GB for every NVIDIA GPU,
#: MI300X for AMD's) where the GPU is not the donor itself, else the other large NVIDIA fit.
CASES = (("H100-80GB", "A100-80GB"), ("H200", "A100-80GB"), ("A100-80GB", "H100-80GB"), ("MI300X", "A100-80GB"),
         ("Ascend-910B", "A100-80GB"))
METRICS = ("request_throughput", "throughput_tok_s_unspecified", "mean_ttft_ms", "mean_tpot_ms")


def _profile(name: str) -> dict:
    return yaml.safe_load(Path(load_gpu(name).source_file).read_text())


def _fitted(profile: dict) -> dict[str, float]:
    return {p.key: float(profile[p.block][p.name]) for p in FIT_PARAMETERS}


def _errors(points, predictions) -> dict[str, tuple[float, int]]:
    out = {}
    for metric in METRICS:
        errors = [abs(x[metric] / p.measured[metric] - 1) for p, x in zip(points, predictions)
                  if p.measured.get(metric) and metric in x]
        if errors:
            out[metric] = (100 * float(np.median(errors)), len(errors))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    all_points = read_points(POINTS)
    print("| GPU (points) | values | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for target, donor in CASES:
        name = load_gpu(target).name
        points = []
        for p in all_points:
            try:
                if build_setup(p).config.hardware.gpu == name:
                    points.append(p)
            except SkipPoint:
                continue
        base = _profile(target)
        own_kernel = current_values(base, FIT_PARAMETERS)
        borrowed = {k: (own_kernel[k] if k in CHIP_SPECIFIC else v) for k, v in _fitted(_profile(donor)).items()}
        variants = (("its kernel fit alone", own_kernel), (f"borrowed from {donor}", borrowed),
                    ("its own end-to-end fit", _fitted(base)))
        evaluator = Evaluator(base, points, jobs=args.jobs)
        try:
            for label, theta in variants:
                errors = _errors(points, evaluator.predict(theta))
                cells = [f"{errors[m][0]:.1f} % (n={errors[m][1]})" if m in errors else "–" for m in METRICS]
                print(f"| {name} ({len(points)}) | {label} | " + " | ".join(cells) + " |")
        finally:
            evaluator.close()


if __name__ == "__main__":
    main()
