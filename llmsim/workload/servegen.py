"""``servegen:<pool>/<client>`` presets from the ServeGen per-client parameter files.

ServeGen (Xiang et al., arXiv:2505.09999; github.com/alibaba/ServeGen, Apache-2.0) releases, per client of
Alibaba's Model Studio, one row per 600-s window: rate (req/s), inter-arrival CV, family (Gamma | Weibull |
empty) and its shape/scale. As ServeGen does, we draw a window's gaps from its family and rescale them to
hit the window's rate (here: c + 1 gaps rescaled to span the window, so c requests fall inside it; only the
shape matters after rescaling). Lengths come from the client's ``chunk-<id>-dataset.json`` (one
{tokens: probability} histogram per 6-hour window, input and output drawn independently, as ServeGen
does) when it is present, else from the BurstGPT-like length model.

Files are read from ``$LLMSIM_SERVEGEN_DIR`` or ``<shared>/traces/servegen/data`` where ``<shared>`` is
``$LLMSIM_SHARED_DIR`` or the ``shared`` folder beside the repository.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

from llmsim.errors import ConfigError
from llmsim.workload.synthetic import DEFAULT_NUM_REQUESTS, BurstGPTLengths
from llmsim.workload.workload import Workload, canonical_frame

WINDOW_S = 600.0
POOLS = {"m-large": "language/m-large", "m-mid": "language/m-mid", "m-small": "language/m-small",
         "deepseek-r1": "reason/deepseek-r1", "mm-image": "multimodal/mm-image"}


def servegen_dir() -> Path:
    if os.environ.get("LLMSIM_SERVEGEN_DIR"):
        return Path(os.environ["LLMSIM_SERVEGEN_DIR"])
    shared = Path(os.environ.get("LLMSIM_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
    return shared / "traces" / "servegen" / "data"


def client_files(client: str) -> tuple[Path, Path]:
    """``m-small/3`` → (trace CSV, dataset JSON) paths; errors list the valid pools."""
    pool, _, ident = client.rpartition("/")
    pool = pool.split("/")[-1]
    if pool not in POOLS or not ident:
        raise ConfigError(f"workload.preset: servegen client {client!r} must be <pool>/<id> with pool one of "
                          f"{', '.join(POOLS)} (e.g. servegen:m-small/0)")
    folder = servegen_dir() / POOLS[pool]
    trace = folder / f"chunk-{ident}-trace.csv"
    if not trace.exists():
        if not servegen_dir().is_dir():  # no data at all: say what to fetch rather than print a guessed path
            raise ConfigError(f"workload.preset: servegen client {client!r} needs ServeGen's data: clone "
                              "https://github.com/alibaba/ServeGen and set LLMSIM_SERVEGEN_DIR to its data/ folder")
        raise ConfigError(f"workload.preset: servegen client {client!r}: {trace} not found in LLMSIM_SERVEGEN_DIR "
                          f"({servegen_dir()})")
    return trace, folder / f"chunk-{ident}-dataset.json"


def _window_gaps(rng: np.random.Generator, family: str, shape: float, size: int) -> np.ndarray:
    if family == "Weibull":
        return stats.weibull_min.rvs(shape, size=size, random_state=rng)
    return rng.gamma(shape, size=size)  # Gamma, and the fallback when the family is missing


def _length_histograms(path: Path) -> Optional[list[tuple[float, tuple, tuple]]]:
    """[(window_start_s, (tokens, probs) input, (tokens, probs) output)] for non-empty windows."""
    if not path.exists():
        return None
    out = []
    for start, entry in sorted(json.loads(path.read_text()).items(), key=lambda kv: float(kv[0])):
        hists = [ast.literal_eval(entry[k]) for k in ("input_tokens", "output_tokens")]
        if all(hists):
            pairs = [(np.array(list(h.keys()), dtype=np.int64), np.array(list(h.values()), dtype=float))
                     for h in hists]
            out.append((float(start), *[(t, p / p.sum()) for t, p in pairs]))
    return out or None


def servegen_workload(client: str, *, num_requests: Optional[int] = None, duration_s: Optional[float] = None,
                      rate: Optional[float] = None, burstiness: Optional[float] = None, seed: int = 0) -> Workload:
    """Generate from a ServeGen client, starting at its first active window. ``rate`` rescales every
    window's rate so the mean over active windows is ``rate``; ``burstiness`` replaces each window's
    family with Gamma(shape = burstiness) (vLLM's definition)."""
    trace_path, dataset_path = client_files(client)
    table = pd.read_csv(trace_path, header=None, names=["start_s", "rate", "cv", "family", "shape", "scale"])
    table["family"] = table["family"].fillna("")
    active = table[table["rate"] > 0]
    if active.empty:
        raise ConfigError(f"workload.preset: servegen client {client!r} has no requests in any window")
    table = table.loc[active.index[0]:].reset_index(drop=True)
    scale = rate / active["rate"].mean() if rate is not None else 1.0
    want = None if duration_s is not None else (num_requests or DEFAULT_NUM_REQUESTS)
    arrivals_rng, lengths_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    times, total, j = [], 0, 0
    while (want is None and j * WINDOW_S < duration_s) or (want is not None and total < want):
        row = table.iloc[j % len(table)]
        expected = row["rate"] * scale * WINDOW_S
        count = int(np.floor(expected) + (arrivals_rng.random() < expected - np.floor(expected)))
        if count:
            family, shape = ("Gamma", burstiness) if burstiness else (row["family"], row["shape"] or 1.0)
            sums = np.cumsum(_window_gaps(arrivals_rng, family, float(shape), count + 1))
            times.append(j * WINDOW_S + sums[:-1] * (WINDOW_S / sums[-1]))
            total += count
        j += 1
        if j > 100 * len(table):
            break
    t = np.concatenate(times) if times else np.zeros(0)
    t = t[t < duration_s] if duration_s is not None else t[:want]
    prompt, output = _lengths(lengths_rng, dataset_path, t, float(table["start_s"].iloc[0]))
    source = f"preset:servegen:{client}(seed={seed})"
    return Workload(canonical_frame({"arrival_s": t, "prompt_tokens": prompt, "output_tokens": output}), source,
                    meta={"preset": f"servegen:{client}", "lengths": "dataset" if dataset_path.exists()
                          else "burstgpt (no ServeGen dataset file for this client)"}).validate()


def _lengths(rng, dataset_path: Path, t: np.ndarray, origin_s: float) -> tuple[np.ndarray, np.ndarray]:
    hists = _length_histograms(dataset_path)
    if hists is None:
        return BurstGPTLengths().sample(rng, len(t))
    starts = np.array([h[0] for h in hists])
    which = np.clip(np.searchsorted(starts, origin_s + t, side="right") - 1, 0, len(hists) - 1)
    prompt = np.empty(len(t), dtype=np.int64)
    output = np.empty(len(t), dtype=np.int64)
    for k in np.unique(which):
        sel = np.flatnonzero(which == k)
        (ti, pi), (to, po) = hists[k][1], hists[k][2]
        prompt[sel] = rng.choice(ti, size=len(sel), p=pi)
        output[sel] = rng.choice(to, size=len(sel), p=po)
    return prompt, np.maximum(output, 1)
