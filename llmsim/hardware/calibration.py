"""Check and fit the timing model against measured operator timings (Vidur's profiling format).

A Vidur ``mlp.csv`` holds, for one model shape, the median time of each operator of ONE transformer layer on
one GPU of a TP group, for batches of 1-4096 tokens and TP 1/2/4/8 (``../shared/vidur_profiling/SOURCE.md``).
``check_mlp`` rebuilds each row's shape from its columns, predicts the same operators with
``llmsim.hardware.ops`` and reports the mean absolute percentage error (MAPE) of the per-layer total and per
operator group. ``fit_mlp`` chooses the GPU's efficiencies (achieved fractions of peak, kernel overheads)
that minimise the relative error over several files: a handful of physical constants, not a table, so the
fit carries over to models and shapes it never saw (verified leave-one-model-out in the tests).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from llmsim.errors import ProfileError
from llmsim.hardware.collectives import allreduce_time, send_recv_time
from llmsim.hardware.ops import LayerShape, Roofline, layer_op_times
from llmsim.hardware.specs import Efficiency, GPUSpec
from llmsim.hardware.model_spec import ModelSpec


def least_squares(*args, **kwargs):
    """scipy's least_squares, imported when a fit runs: scipy.optimize takes a third of a second to import, and
    every ``llmsim`` command loads this module."""
    from scipy.optimize import least_squares as solve

    return solve(*args, **kwargs)

OP_GROUPS: dict[str, tuple[str, ...]] = {
    "projections": ("attn_pre_proj", "attn_post_proj"),
    "mlp": ("mlp_up_proj", "mlp_down_proj"),
    "elementwise": ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add"),
}
LAYER_OPS = tuple(op for ops in OP_GROUPS.values() for op in ops)
SHAPE_COLUMNS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp")
# Efficiency fields fitted on mlp.csv files, with bounds (fractions of peak; overheads in seconds).
MLP_PARAMS: dict[str, tuple[float, float]] = {
    "linear_mfu": (0.05, 1.0),
    "linear_mbu": (0.05, 1.0),
    "linear_overhead_s": (0.0, 50e-6),
    "linear_half_tiles": (0.0, 2000.0),
    "elementwise_mbu": (0.02, 1.0),
    "elementwise_overhead_s": (0.0, 50e-6),
}


#: Columns that count things (heads, tokens, GPUs): each cell must be an integer ≥ 1 (0 would divide by 0).
_COUNT_COLUMNS = ("n_head", "n_kv_head", "n_q_head", "n_embd", "num_tokens", "num_tensor_parallel_workers",
                  "num_workers", "devices_per_node", "batch_size")


def _read_measurements(path: Path) -> pd.DataFrame:
    """A measurement CSV as a frame: UTF-8 text with a header and rows, every count column an integer ≥ 1 and
    every time column a number; anything else is a ProfileError naming the file, row and column."""
    from llmsim.errors import UserError
    from llmsim.inputs import check_text_file, one_line

    try:
        check_text_file(path, "measurement file")
        frame = pd.read_csv(path)
    except UserError as exc:
        raise ProfileError(str(exc)) from None
    except pd.errors.EmptyDataError:
        raise ProfileError(f"{path}: measurement file is empty; expected a Vidur profiling CSV") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ProfileError(f"{path}: cannot read measurement file ({one_line(str(exc))})") from None
    if frame.empty:
        raise ProfileError(f"{path}: measurement file has a header but no rows")
    for column in frame.columns:
        is_count = column in _COUNT_COLUMNS
        if not (is_count or column.startswith("time_stats.")):
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        if is_count:
            bad = values.isna() | (values < 1) | (values % 1 != 0)
        else:  # a time: missing is allowed (the row is skipped), negative is not
            bad = (values.isna() & frame[column].notna()) | (values < 0)
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            expected = "an integer ≥ 1" if is_count else "a non-negative number"
            raise ProfileError(f"{path.name} row {row + 1}, column {column!r}: expected {expected}, "
                               f"got {frame[column].iloc[row]!r}")
        frame[column] = values
    return frame


def read_mlp_csv(path: Path) -> pd.DataFrame:
    """Rows of a Vidur mlp.csv with usable medians (NaN and mis-timed rows dropped, SOURCE.md 'Checks')."""
    path = Path(path)
    frame = _read_measurements(path)
    needed = [*SHAPE_COLUMNS, "num_tokens", "num_tensor_parallel_workers"]
    needed += [f"time_stats.{op}.median" for op in ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ProfileError(f"{path}: column '{missing[0]}' is missing; expected Vidur's mlp.csv format")
    # operators a model does not have (phi-2: no post-attention norm) are simply absent: compare the rest
    for op in LAYER_OPS:
        if f"time_stats.{op}.median" not in frame.columns:
            frame[f"time_stats.{op}.median"] = 0.0
    medians = frame[[f"time_stats.{op}.median" for op in LAYER_OPS]]
    usable = medians.notna().all(axis=1)
    # a QKV projection cannot take under 10 us on >64 tokens: those rows timed the wrong kernel
    usable &= ~((frame["time_stats.attn_pre_proj.median"] < 0.01) & (frame["num_tokens"] > 64))
    return frame[usable].reset_index(drop=True)


def shape_of_row(row: pd.Series) -> ModelSpec:
    """A ModelSpec carrying just the shape that Vidur's columns give (layers/vocab don't matter per layer)."""
    return ModelSpec(
        name="measured",
        hidden_size=int(row["n_embd"]),
        num_layers=1,
        num_heads=int(row["n_head"]),
        num_kv_heads=int(row["n_kv_head"]),
        intermediate_size=int(row["n_expanded_embd"]),
        vocab_size=int(row["vocab_size"]),
        dtype="fp16",
        gated_mlp=bool(row["use_gated_mlp"]),
    )


def predict_mlp_ops(frame: pd.DataFrame, gpu: GPUSpec) -> pd.DataFrame:
    """Predicted milliseconds of each layer operator for every row of a read mlp.csv."""
    roof = Roofline.of(gpu, "fp16")
    shapes: dict[tuple, ModelSpec] = {}
    rows = []
    for row in frame.itertuples(index=False):
        key = tuple(getattr(row, c) for c in SHAPE_COLUMNS)
        model = shapes.get(key) or shapes.setdefault(key, shape_of_row(pd.Series(dict(zip(SHAPE_COLUMNS, key)))))
        shape = LayerShape.of(model, int(row.num_tensor_parallel_workers))
        ops = layer_op_times(roof, shape, int(row.num_tokens), 2.0, 2.0)
        rows.append({op: seconds * 1e3 for op, seconds in ops.items()})
    return pd.DataFrame(rows, columns=list(LAYER_OPS))


def measured_ops(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({op: frame[f"time_stats.{op}.median"].to_numpy() for op in LAYER_OPS})


def _present(predicted: pd.DataFrame, measured: pd.DataFrame) -> pd.DataFrame:
    """Zero the predictions of operators the file did not measure (absent columns read as 0)."""
    return predicted.where(measured != 0.0, 0.0)


def mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Mean absolute percentage error over the rows with a positive measured time (a 0 cannot be a ratio's
    denominator; such rows measured nothing)."""
    predicted, measured = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    positive = measured > 0
    if not positive.any():
        raise ProfileError("no measured row has a positive time, so there is nothing to compare against")
    return float(np.mean(np.abs(predicted[positive] - measured[positive]) / measured[positive]))


def check_mlp(path: Path, gpu: GPUSpec) -> dict:
    """MAPE of the per-layer total and of each operator group, as fractions (0.07 = 7%)."""
    frame = read_mlp_csv(path)
    if frame.empty:
        raise ProfileError(f"{path}: no usable rows (every row has a missing or implausible median)")
    measured = measured_ops(frame)
    predicted = _present(predict_mlp_ops(frame, gpu), measured)
    by_op = {
        group: mape(predicted[list(ops)].sum(axis=1).to_numpy(), measured[list(ops)].sum(axis=1).to_numpy())
        for group, ops in OP_GROUPS.items()
    }
    return {
        "file": str(path),
        "gpu": gpu.name,
        "rows": int(len(frame)),
        "mape_layer": mape(predicted.sum(axis=1).to_numpy(), measured.sum(axis=1).to_numpy()),
        "mape_by_op": by_op,
    }


def with_efficiency(gpu: GPUSpec, **changes) -> GPUSpec:
    return dataclasses.replace(gpu, efficiency=dataclasses.replace(gpu.efficiency, **changes))


def fit_mlp(paths: Iterable[Path], gpu: GPUSpec) -> Efficiency:
    """Efficiencies minimising the log-ratio error of every operator over all rows of all files."""
    frames = [read_mlp_csv(Path(p)) for p in paths]
    frame = pd.concat(frames, ignore_index=True)
    measured = measured_ops(frame)
    names = list(MLP_PARAMS)
    lower = np.array([MLP_PARAMS[n][0] for n in names])
    upper = np.array([MLP_PARAMS[n][1] for n in names])
    scale = np.array([1e-6 if n.endswith("_s") else 1.0 for n in names])

    def residuals(x: np.ndarray) -> np.ndarray:
        candidate = with_efficiency(gpu, **dict(zip(names, x * scale)))
        predicted = _present(predict_mlp_ops(frame, candidate), measured)
        parts = [
            np.log(predicted[list(ops)].sum(axis=1).to_numpy() / measured[list(ops)].sum(axis=1).to_numpy())
            for ops in OP_GROUPS.values()
        ]
        layer = np.log(predicted.sum(axis=1).to_numpy() / measured.sum(axis=1).to_numpy())
        return np.concatenate([*parts, 3.0 * layer])

    start = np.clip(np.array([getattr(gpu.efficiency, n) for n in names]) / scale, lower / scale, upper / scale)
    result = least_squares(residuals, start, bounds=(lower / scale, upper / scale), loss="soft_l1", f_scale=0.1)
    files = ", ".join(str(Path(p)) for p in paths)
    return dataclasses.replace(gpu.efficiency, **dict(zip(names, result.x * scale)), fitted_on=f"mlp: {files}")


# ---------------------------------------------------------------------------------------------------
# Collectives (Vidur network/<setup>/{all_reduce,send_recv}.csv)
# ---------------------------------------------------------------------------------------------------
# intra-node all-reduce (NVLink / PCIe) and inter-node (network) parameters, fitted on their own rows
COLLECTIVE_PARAMS: dict[str, tuple[float, float]] = {
    "allreduce_bus_efficiency": (0.05, 1.0),
    "allreduce_latency_s": (1e-6, 200e-6),
    "slow_link_efficiency": (0.01, 1.0),
}
NETWORK_PARAMS: dict[str, tuple[float, float]] = {"network_efficiency": (0.005, 8.0), "network_latency_s": (1e-6, 500e-6)}
SEND_RECV_PARAMS: dict[str, tuple[float, float]] = {
    "send_recv_efficiency": (0.01, 1.0),
    "send_recv_latency_s": (0.5e-6, 200e-6),
}
NETWORK_SEND_RECV_PARAMS: dict[str, tuple[float, float]] = {
    "network_send_recv_efficiency": (0.01, 1.0),
    "network_send_recv_latency_s": (0.5e-6, 500e-6),
    "network_burst_bytes": (0.0, 64e6),
    "network_burst_speedup": (1.0, 20.0),
}


def read_collective_csv(path: Path) -> pd.DataFrame:
    path = Path(path)
    frame = _read_measurements(path)
    medians = [c for c in frame.columns if c.startswith("time_stats.") and c.endswith(".median")]
    for column in ("num_workers", "size", "devices_per_node"):
        if column not in frame.columns:
            raise ProfileError(f"{path}: column '{column}' is missing; expected Vidur's all_reduce/send_recv format")
    if not medians:
        raise ProfileError(f"{path}: no time_stats.<collective>.median column")
    frame = frame.rename(columns={medians[0]: "median_ms"})
    frame["kind"] = medians[0].split(".")[1]
    frame["inter_node"] = frame["num_workers"] > frame["devices_per_node"]
    return frame[frame["median_ms"].notna() & (frame["median_ms"] > 0)].reset_index(drop=True)


def predict_collective(frame: pd.DataFrame, gpu: GPUSpec) -> np.ndarray:
    """Predicted milliseconds of each row (all-reduce or send/recv, intra- or inter-node)."""
    out = np.empty(len(frame))
    for (kind, workers, per_node), rows in frame.groupby(["kind", "num_workers", "devices_per_node"]).indices.items():
        sizes = frame["size"].to_numpy(dtype=float)[rows]
        if kind == "send_recv":
            out[rows] = send_recv_time(gpu, sizes, same_node=per_node >= workers) * 1e3
        else:
            out[rows] = allreduce_time(gpu, sizes, int(workers), int(per_node)) * 1e3
    return out


def check_collective(path: Path, gpu: GPUSpec) -> dict:
    frame = read_collective_csv(path)
    predicted, measured = predict_collective(frame, gpu), frame["median_ms"].to_numpy()
    inter = frame["inter_node"].to_numpy()
    result = {"file": str(path), "gpu": gpu.name, "rows": int(len(frame)), "mape_collective": mape(predicted, measured)}
    if (~inter).any():
        result["mape_intra_node"] = mape(predicted[~inter], measured[~inter])
    if inter.any():
        result["mape_inter_node"] = mape(predicted[inter], measured[inter])
    return result


def _fit_rows(frame: pd.DataFrame, gpu: GPUSpec, params: dict[str, tuple[float, float]]) -> Efficiency:
    """Fit ``params`` on ``frame``'s rows, minimising the relative error (a smooth stand-in for the MAPE)."""
    if frame.empty:
        return gpu.efficiency
    frame = frame.reset_index(drop=True)
    measured = frame["median_ms"].to_numpy()
    names = list(params)
    scale = np.array([1e-6 if n.endswith("_s") else 1e6 if n.endswith("_bytes") else 1.0 for n in names])
    lower = np.array([params[n][0] for n in names]) / scale
    upper = np.array([params[n][1] for n in names]) / scale

    def residuals(x: np.ndarray) -> np.ndarray:
        return predict_collective(frame, with_efficiency(gpu, **dict(zip(names, x * scale)))) / measured - 1.0

    start = np.clip(np.array([getattr(gpu.efficiency, n) for n in names]) / scale, lower, upper)
    best = None
    for nudge in (1.0, 0.5, 2.0):  # a few starts: the burst makes the error surface non-convex
        x0 = np.clip(start * nudge, lower, upper)
        result = least_squares(residuals, x0, bounds=(lower, upper), loss="soft_l1", f_scale=0.05)
        if best is None or result.cost < best.cost * (1.0 - 1e-6):  # ties keep the profile's own start
            best = result
    return dataclasses.replace(gpu.efficiency, **dict(zip(names, best.x * scale)))


def _collective_rows(paths: Iterable[Path], kind: str) -> pd.DataFrame:
    frame = pd.concat([read_collective_csv(Path(p)) for p in paths], ignore_index=True)
    return frame[frame["kind"] == kind]


def fit_collective(paths: Iterable[Path], gpu: GPUSpec) -> Efficiency:
    """All-reduce parameters: NVLink/PCIe ones on the intra-node rows, then network ones on the rest."""
    frame = _collective_rows(paths, "all_reduce")
    eff = _fit_rows(frame[~frame["inter_node"]], gpu, COLLECTIVE_PARAMS)
    inter = frame[frame["inter_node"]]
    if inter.empty:
        return eff
    # one achieved network rate and latency per measured layout (GPUs per node)
    table = []
    for per_node in sorted(int(g) for g in inter["devices_per_node"].unique()):
        rows = inter[inter["devices_per_node"] == per_node]
        plain = dataclasses.replace(eff, network_by_gpus=(), network_gpu_scaling=0.0)
        fitted = _fit_rows(rows, dataclasses.replace(gpu, efficiency=plain), NETWORK_PARAMS)
        table.append((per_node, float(fitted.network_efficiency), float(fitted.network_latency_s)))
    return dataclasses.replace(eff, network_by_gpus=tuple(table))


def fit_send_recv(paths: Iterable[Path], gpu: GPUSpec) -> Efficiency:
    """Send/recv parameters: NVLink ones on the intra-node rows, network ones (with the burst) on the rest."""
    frame = _collective_rows(paths, "send_recv")
    eff = _fit_rows(frame[~frame["inter_node"]], gpu, SEND_RECV_PARAMS)
    gpu = dataclasses.replace(gpu, efficiency=eff)
    return _fit_rows(frame[frame["inter_node"]], gpu, NETWORK_SEND_RECV_PARAMS)


# ---------------------------------------------------------------------------------------------------
# Attention (Vidur attention.csv: only the A30 fork measured it)
# ---------------------------------------------------------------------------------------------------
ATTENTION_OPS = ("attn_input_reshape", "attn_kv_cache_save", "attn_prefill", "attn_decode", "attn_output_reshape")


def read_attention_csv(path: Path) -> pd.DataFrame:
    path = Path(path)
    frame = _read_measurements(path)
    needed = ["n_embd", "n_q_head", "n_kv_head", "num_tensor_parallel_workers", "batch_size", "prefill_chunk_size", "kv_cache_size", "is_prefill"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ProfileError(f"{path}: column '{missing[0]}' is missing; expected Vidur's attention.csv format")
    present = [f"time_stats.{op}.median" for op in ATTENTION_OPS if f"time_stats.{op}.median" in frame.columns]
    frame["measured_ms"] = frame[present].fillna(0.0).sum(axis=1)
    return frame[frame["measured_ms"] > 0].reset_index(drop=True)


def predict_attention(frame: pd.DataFrame, gpu: GPUSpec) -> np.ndarray:
    """Predicted per-layer attention milliseconds (prefill: chunk c after k cached; decode: batch at context k)."""
    from llmsim.hardware.config import HardwareConfig
    from llmsim.hardware.timing import RooflineTimingModel

    out = np.empty(len(frame))
    models: dict[tuple, RooflineTimingModel] = {}
    gpu = with_efficiency(gpu, sustained_compute_fraction=1.0)  # kernel timings are bursts at boost clock
    for i, row in enumerate(frame.itertuples(index=False)):
        key = (int(row.n_embd), int(row.n_q_head), int(row.n_kv_head), int(row.num_tensor_parallel_workers))
        if key not in models:
            shape = ModelSpec("measured", key[0], 1, key[1], key[2], 4 * key[0], 32000, dtype="fp16")
            models[key] = RooflineTimingModel(HardwareConfig(tp=key[3]), gpu, shape, cpu_overhead=False)
        batch, k = int(row.batch_size), int(row.kv_cache_size)
        c = int(row.prefill_chunk_size) if bool(row.is_prefill) else 1
        e = gpu.efficiency
        units = c * (2 * k + c + 1) if c == 1 else (2 * e.attn_prefill_context_weight * k + c + 1) * (c + e.attn_prefill_half_tokens)
        out[i] = models[key].attention_time(batch * units, batch * (k + c), batch * c) * 1e3
    return out


def check_attention(path: Path, gpu: GPUSpec) -> dict:
    frame = read_attention_csv(path)
    predicted, measured = predict_attention(frame, gpu), frame["measured_ms"].to_numpy()
    prefill = frame["is_prefill"].astype(bool).to_numpy()
    return {
        "file": str(path),
        "gpu": gpu.name,
        "rows": int(len(frame)),
        "mape_attention": mape(predicted, measured),
        "mape_prefill": mape(predicted[prefill], measured[prefill]),
        "mape_decode": mape(predicted[~prefill], measured[~prefill]),
    }


def fit_attention(paths: Iterable[Path], gpu: GPUSpec) -> Efficiency:
    """Attention prefill MFU, decode MBU and kernel overhead minimising the log error."""
    frame = pd.concat([read_attention_csv(Path(p)) for p in paths], ignore_index=True)
    measured = frame["measured_ms"].to_numpy()

    def candidate(x: np.ndarray) -> GPUSpec:
        return with_efficiency(
            gpu, attn_prefill_mfu=x[0], attn_decode_mbu=x[1], attn_overhead_s=x[2] * 1e-6, attn_prefill_half_tokens=x[3] * 100,
            attn_prefill_context_weight=x[4],
        )

    def residuals(x: np.ndarray) -> np.ndarray:
        return predict_attention(frame, candidate(x)) / measured - 1.0

    result = least_squares(
        residuals, [0.4, 0.7, 10.0, 1.0, 1.0], bounds=([0.02, 0.05, 0.0, 0.0, 0.05], [1.0, 1.0, 200.0, 40.0, 4.0]),
        loss="soft_l1", f_scale=0.05,
    )
    return candidate(result.x).efficiency
