"""Cluster metrics, computed after the run from what the cluster recorded.

- per replica (``replicas.parquet``): lifetime, GPU-seconds and cost, busy time and utilisation, mean KV
  usage while busy, requests routed and finished, failures;
- per replica over time (``replica_timeseries.parquet``): KV usage, outstanding and waiting requests, state;
- the cluster (``summary["cluster"]``): replica counts, GPU-seconds and cost per GPU kind, utilisation,
  load balance, disaggregation transfers, autoscaling actions, failures by cause, and the accounting check
  that every request ended exactly once.

GPU-seconds run from a replica's provisioning (its cold start included) to its stop, or to the end of the
run (the last request's end); cost = GPU-hours × the GPU profile's ``cost_per_hour_usd``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from llmsim.cluster.cluster import Cluster


def run_end_s(cluster: Cluster) -> float:
    arrivals = cluster.arrival_times
    return max(cluster.last_end_s, arrivals[-1] if arrivals else 0.0)


def replicas_frame(cluster: Cluster, end_s: float) -> pd.DataFrame:
    rows = []
    for r in cluster.replicas:
        stop = end_s if r.stopped_s is None else min(r.stopped_s, end_s)
        lifetime = max(stop - r.provisioned_s, 0.0)
        down = r.down_s_until(stop)  # a failure never repaired counts until the replica's end, not as 0
        serving = 0.0 if r.ready_s is None else max(stop - r.ready_s - down, 0.0)
        gpu_s = lifetime * r.spec.num_gpus
        rows.append({
            "replica": r.replica_id, "role": r.spec.role, "gpu": r.spec.gpu, "model": r.spec.model,
            "tp": r.spec.tp, "pp": r.spec.pp, "gpus": ",".join(r.gpus), "state": r.state.value,
            "provisioned_s": r.provisioned_s, "ready_s": np.nan if r.ready_s is None else r.ready_s,
            "stopped_s": np.nan if r.stopped_s is None else r.stopped_s,
            "gpu_seconds": gpu_s, "cost_usd": gpu_s / 3600.0 * r.spec.cost_per_gpu_hour_usd,
            "busy_s": r.busy_s, "utilization": r.busy_s / serving if serving > 0 else 0.0,
            "mean_kv_usage_busy": r.kv_usage_s / r.busy_s if r.busy_s else 0.0,
            "num_steps": r.num_steps, "routed": r.num_routed, "finished": r.num_finished,
            "failures": r.num_failures, "down_s": down,
        })
    return pd.DataFrame(rows)


def timeseries_frame(cluster: Cluster) -> pd.DataFrame:
    return pd.DataFrame(cluster.timeseries)


def request_columns(cluster: Cluster, request_ids: pd.Series) -> dict[str, np.ndarray]:
    """Extra requests-table columns: which prefill/decode replica served each request, its retries, KV transfer."""
    columns: dict[str, np.ndarray] = {
        # Without retries, zeros at once: mapping a million ids through an empty dict took half a second.
        "retries": (request_ids.map(cluster.retries).fillna(0).astype("int64").to_numpy() if cluster.retries
                    else np.zeros(len(request_ids), dtype=np.int64)),
    }
    d = cluster.disaggregation
    if d is not None:
        columns["prefill_replica"] = request_ids.map(d.prefill_replica).fillna(-1).astype("int64").to_numpy()
        columns["decode_replica"] = request_ids.map(d.decode_replica).fillna(-1).astype("int64").to_numpy()
        columns["kv_transfer_s"] = request_ids.map(d.transfer_s).astype("float64").to_numpy()
    return columns


def _load_balance(finished: pd.Series) -> dict[str, Optional[float]]:
    """Spread of finished requests over replicas: max/mean (1 = perfect) and coefficient of variation."""
    if finished.empty or finished.mean() == 0:
        return {"max_over_mean": None, "cv": None}
    return {"max_over_mean": float(finished.max() / finished.mean()), "cv": float(finished.std(ddof=0) / finished.mean())}


def cluster_summary(cluster: Cluster, replicas: pd.DataFrame, requests: pd.DataFrame,
                    extra: dict[str, Any]) -> dict[str, Any]:
    by_kind = replicas.groupby("gpu")[["gpu_seconds", "cost_usd"]].sum() if len(replicas) else pd.DataFrame()
    summary: dict[str, Any] = {
        "replicas": int(len(replicas)),
        "replicas_by_role": {str(k): int(v) for k, v in replicas["role"].value_counts().sort_index().items()},
        "gpu_seconds": float(replicas["gpu_seconds"].sum()),
        "gpu_hours": float(replicas["gpu_seconds"].sum() / 3600.0),
        "cost_usd": float(replicas["cost_usd"].sum()),
        "gpu_seconds_by_kind": {str(k): float(v) for k, v in by_kind.get("gpu_seconds", pd.Series()).items()},
        "cost_usd_by_kind": {str(k): float(v) for k, v in by_kind.get("cost_usd", pd.Series()).items()},
        "utilization": float(replicas["busy_s"].sum() / max((replicas["gpu_seconds"] / (replicas["tp"] * replicas["pp"])).sum(), 1e-12)),
        "load_balance": _load_balance(replicas.loc[replicas["role"] != "prefill", "finished"]),
        "retried_requests": int(len(cluster.retries)),
        "requests_failed_by_cause": dict(sorted(cluster.failed_by_cause.items())),
        "parked_at_end": len(cluster.pending),
    }
    ids = requests["request_id"]
    unique = _count_unique(ids)  # once: a million string ids take a fifth of a second to count
    summary["accounting"] = {"expected": cluster.num_requests, "recorded": int(len(ids)), "unique": unique,
                             "ok": bool(len(ids) == cluster.num_requests and unique == len(ids))}
    summary.update(extra)
    return summary


def _count_unique(ids: pd.Series) -> int:
    """``ids.nunique()``. Ids that are all decimal numbers of one width (the engines' zero-padded row numbers)
    are equal exactly when their numbers are: those are counted as integers, sorted (several times faster)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(ids)
    textual = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    if len(values) and not values.null_count and textual:
        lengths = pc.min_max(pc.utf8_length(values)).as_py()
        if lengths["min"] == lengths["max"] <= 18 and pc.all(pc.ascii_is_decimal(values)).as_py():
            numbers = np.sort(pc.cast(values, pa.int64()).to_numpy())
            return int(np.count_nonzero(numbers[1:] != numbers[:-1])) + 1
    return int(ids.nunique())


def transfers_summary(transfers: pd.DataFrame) -> dict[str, Any]:
    if transfers.empty:
        return {"count": 0}
    t = transfers["transfer_s"].to_numpy()
    w = transfers["wait_s"].to_numpy()
    return {"count": int(len(transfers)), "bytes": float(transfers["bytes"].sum()),
            "transfer_s_mean": float(t.mean()), "transfer_s_p99": float(np.percentile(t, 99)),
            "wait_s_mean": float(w.mean()), "wait_s_p99": float(np.percentile(w, 99))}
