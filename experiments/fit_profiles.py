"""Refit every measured GPU profile from ../shared/vidur_profiling and write the values into the YAMLs.

Run from the repository root: ``python experiments/fit_profiles.py``. GPUs without measurements take the
efficiencies of the closest measured part (named in their ``fitted_on`` note).
"""

from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path

from llmsim.hardware.cli import fit, write_efficiency
from llmsim.hardware.profiles import load_gpu

SHARED = Path(os.environ.get("LLMSIM_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "vidur_profiling"


def files(pattern: str) -> list[Path]:
    return [Path(p) for p in sorted(glob.glob(str(SHARED / pattern), recursive=True))]


MEASURED = {
    "A100-80GB": dict(mlp=files("compute/a100/**/mlp.csv"), collective=files("network/a100_dgx/all_reduce.csv"),
                      send_recv=files("network/a100_dgx/send_recv.csv")),
    "A100-80GB-PCIe": dict(mlp=files("compute/a100/**/mlp.csv"), collective=files("network/a100_pairwise_nvlink/all_reduce.csv"),
                           send_recv=files("network/a100_pairwise_nvlink/send_recv.csv")),
    "H100-80GB": dict(mlp=files("compute/h100/**/mlp.csv"), collective=files("network/h100_dgx/all_reduce.csv"),
                      send_recv=files("network/h100_dgx/send_recv.csv")),
    "A40": dict(mlp=files("compute/a40/**/mlp.csv"), send_recv=files("network/a40_pairwise_nvlink/send_recv.csv")),
    "A30": dict(mlp=files("a30_fork/compute/a30/**/mlp.csv"), attention=files("a30_fork/compute/a30/**/attention.csv"),
                collective=files("a30_fork/network/a30_single_gpu/all_reduce.csv"),
                send_recv=files("a30_fork/network/a30_single_gpu/send_recv.csv")),
}
# measured H100 SXM link fits are reused for the NVL card's compute (same chip family, no mlp.csv for it)
COMPUTE_FROM = {"H100-NVL": "H100-80GB"}
MEASURED["H100-NVL"] = dict(collective=files("network/h100_pairwise_nvlink/all_reduce.csv"),
                            send_recv=files("network/h100_pairwise_nvlink/send_recv.csv"))
TRANSFER = {"A100-40GB": "A100-80GB", "H200": "H100-80GB", "B200": "H100-80GB", "MI300X": "H100-80GB",
            "L40S": "A40", "L4": "A40", "A10G": "A40"}
ATTENTION_FIELDS = ("attn_decode_mbu", "attn_overhead_s")


def main() -> None:
    fitted = {}
    for name, sources in MEASURED.items():
        gpu = load_gpu(name)
        if name in COMPUTE_FROM:
            base = fitted[COMPUTE_FROM[name]]
            linear = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.name.startswith(("linear", "elementwise"))}
            write_efficiency(Path(gpu.source_file), dataclasses.replace(gpu.efficiency, **linear))
        eff = fit(gpu=name, write=False, **{k: sources.get(k, []) for k in ("mlp", "collective", "send_recv", "attention")})
        if name in COMPUTE_FROM:
            eff = dataclasses.replace(eff, fitted_on=eff.fitted_on + f"; linear/elementwise from {COMPUTE_FROM[name]}")
        if "attention" not in sources:  # only the A30 fork measured attention: carry its decode MBU and overhead
            eff = dataclasses.replace(eff, fitted_on=eff.fitted_on + "; attention: decode MBU and overhead from the A30 fit, prefill MFU 0.45 [R: FlashAttention-2 forward reaches ~50-70% of A100 peak at long sequences]")
        fitted[name] = eff
    a30 = fitted["A30"]
    for name in [n for n in fitted if n != "A30"]:
        fitted[name] = dataclasses.replace(fitted[name], attn_prefill_mfu=0.45, **{f: getattr(a30, f) for f in ATTENTION_FIELDS})
    for name, eff in fitted.items():
        write_efficiency(Path(load_gpu(name).source_file), eff)
    for name, source in TRANSFER.items():
        eff = dataclasses.replace(fitted[source], fitted_on=f"transferred from the {source} fit (no measurements of {name}): {fitted[source].fitted_on}")
        write_efficiency(Path(load_gpu(name).source_file), eff)
    print("wrote", ", ".join([*fitted, *TRANSFER]))


if __name__ == "__main__":
    main()
