"""Plot predicted vs measured per-layer time (Llama-2-7B on A100, every TP size) for the docs (docs/explanation/hardware-model.md).

Run from the repository root: ``python experiments/calibration_plot.py`` -> experiments/figures/calibration_a100_llama2_7b.png
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from llmsim.hardware import calibration as cal  # noqa: E402
from llmsim.hardware.profiles import load_gpu  # noqa: E402

SHARED = Path(os.environ.get("LLMSIM_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
CSV = SHARED / "vidur_profiling" / "compute" / "a100" / "meta-llama" / "Llama-2-7b-hf" / "mlp.csv"
OUT = Path(__file__).resolve().parent / "figures" / "calibration_a100_llama2_7b.png"


def main() -> None:
    frame = cal.read_mlp_csv(CSV)
    gpu = load_gpu("A100-80GB")
    predicted = cal.predict_mlp_ops(frame, gpu).sum(axis=1)
    measured = cal.measured_ops(frame).sum(axis=1)
    result = cal.check_mlp(CSV, gpu)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for tp in sorted(frame["num_tensor_parallel_workers"].unique()):
        rows = (frame["num_tensor_parallel_workers"] == tp).to_numpy()
        order = frame["num_tokens"][rows].argsort().to_numpy()
        tokens = frame["num_tokens"][rows].to_numpy()[order]
        line = ax.plot(tokens, measured[rows].to_numpy()[order], ".", ms=3, label=f"measured TP {tp}")
        ax.plot(tokens, predicted[rows].to_numpy()[order], "-", color=line[0].get_color(), lw=1.2, label=f"predicted TP {tp}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens in the batch")
    ax.set_ylabel("per-layer time of linear + element-wise ops (ms)")
    ax.set_title(f"Llama-2-7B on A100-80GB: per-layer MAPE {100 * result['mape_layer']:.1f}%")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(OUT, dpi=120)
    print(OUT)


if __name__ == "__main__":
    main()
