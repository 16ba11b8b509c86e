"""Which rows of a table of published benchmarks llmsim can model, and whether each fits its GPUs.

The table needs the columns ``gpu``, ``model``, ``dtype/quantization``, ``tp`` and optionally ``pp``, ``id``
and ``engine_flags`` (the layout of ``shared/realworld/points.csv``). Every row is resolved with
:func:`llmsim.hardware.resolve.resolve_deployment`, then sized with vLLM's memory budget
(:func:`llmsim.hardware.memory.kv_cache_capacity`) at the row's parallelism: weights per GPU and the KV
blocks left. ``engine_flags`` are read as ``llmsim validate`` reads them (:mod:`llmsim.hardware.vllm_flags`):
parallelism, ``--gpu-memory-utilization``, ``--max-num-seqs``, ``--kv-cache-dtype`` and ``--block-size`` override
vLLM's defaults for the row's version, GPU and entry point (0.9, its ``max_num_seqs``, the precision text).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from llmsim.errors import ProfileError, UserError
from llmsim.hardware.memory import KVCapacity, kv_cache_capacity
from llmsim.hardware.profiles import load_gpu, load_model
from llmsim.hardware.resolve import ResolvedDeployment, resolve_deployment
from llmsim.hardware.vllm_flags import engine_defaults, parse_engine_flags, parse_version

REQUIRED_COLUMNS = ("gpu", "model", "dtype/quantization", "tp")
BLOCK_SIZE = 16  # vLLM's default on GPUs


@dataclass(frozen=True)
class RowCoverage:
    """One row: what it resolved to and its memory budget, or why it cannot be modelled."""

    row_id: str
    gpu: str
    model: str
    quantization: str
    deployment: Optional[ResolvedDeployment] = None
    capacity: Optional[KVCapacity] = None
    reason: str = ""  # empty when the row is modelled and fits

    @property
    def ok(self) -> bool:
        return not self.reason


def check_row(row: dict[str, str], row_id: str) -> RowCoverage:
    """Resolve one row and size its memory (see the module docstring)."""
    base = RowCoverage(row_id, row["gpu"], row["model"], row["dtype/quantization"])
    flags = parse_engine_flags(row.get("engine_flags") or "")
    try:
        deployment = resolve_deployment(row["gpu"], row["model"], row["dtype/quantization"])
        if flags.kv_cache_dtype:
            deployment = replace(deployment, kv_cache_dtype=flags.kv_cache_dtype)
        hw = deployment.hardware(tp=flags.tp or int(float(row["tp"] or 1)),
                                 pp=flags.pp or int(float(row.get("pp") or 1)))
        gpu = load_gpu(hw.gpu)
        defaults = engine_defaults(parse_version(row.get("vllm_version", "")), gpu.memory_gib, gpu.name,
                                   online=(row.get("benchmark") or "serve").strip().lower() == "serve")
        utilization = flags.gpu_memory_utilization or 0.9
        capacity = kv_cache_capacity(load_model(hw.model), gpu, hw, flags.block_size or BLOCK_SIZE, utilization,
                                     max_num_seqs=flags.max_num_seqs or defaults["max_num_seqs"],
                                     max_num_batched_tokens=(flags.max_num_batched_tokens
                                                             or defaults.get("max_num_batched_tokens", 2048)))
    except ProfileError as exc:
        return replace(base, reason=str(exc))
    except ValueError as exc:  # a malformed tp/pp value, or a precision pydantic rejects
        return replace(base, reason=f"unreadable row value ({str(exc).splitlines()[0]})")
    if capacity.num_gpu_blocks < 1:
        return replace(base, deployment=deployment, capacity=capacity, reason="no KV-cache block left after the weights")
    return replace(base, deployment=deployment, capacity=capacity)


def check_points(path: Path) -> list[RowCoverage]:
    """Every row of a benchmark table, resolved and sized; UserError if the file or a column is missing."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{path}: column '{missing[0]}' is missing; expected {', '.join(REQUIRED_COLUMNS)}")
            rows = list(reader)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the table ({exc.strerror})") from None
    cache: dict[tuple, RowCoverage] = {}
    results = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        row_id = row.get("id") or f"line {number}"
        key = tuple(row.get(c, "") for c in (*REQUIRED_COLUMNS, "pp", "engine_flags", "vllm_version", "benchmark"))
        if key not in cache:
            cache[key] = check_row(row, row_id)
        results.append(replace(cache[key], row_id=row_id))
    return results


__all__ = ["RowCoverage", "check_row", "check_points"]
