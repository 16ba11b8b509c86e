"""A sweep spec: one YAML file that names many simulation runs.

A *run* is one fully resolved :class:`~llmsim.config.SimConfig`. The spec builds them from

- ``base:`` a config file (relative to the spec file), or omitted for the bundled default config;
- ``set:`` overrides applied to every run (a map from config path to value);
- ``grid:`` a map from a config path (``scheduler.max_num_seqs``) to a list of values — every combination;
- ``runs:`` a list of override maps — each one is combined with every grid point;
- ``seeds:`` a list of seeds — each run above is repeated once per seed (``seed`` is set in the config).

The runs are the product ``grid × runs × seeds`` in that nesting order (the last grid key varies fastest),
so 2 × 3 grid values, 2 run maps and 4 seeds give 48 runs. Every run is identified by the hash of its full
resolved config (:func:`config_key`): two runs with the same config are the same run, whichever spec,
machine or executor produced them.

Example::

    base: my_config.yaml          # optional
    set: {workload.num_requests: 500}
    grid:
      workload.burstiness: [1.0, 0.5, 0.1]
      scheduler.max_num_seqs: [64, 256]
    runs:
      - {scheduler.policy: vllm-v1}
    seeds: [0, 1, 2]
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import Field, ValidationError, field_validator

from llmsim.config import DEFAULT_CONFIG_PATH, SimConfig, _read_yaml, apply_override, build_config
from llmsim.configbase import StrictModel
from llmsim.errors import ConfigError

#: Bumped when the meaning of a cached run result changes (so old caches are not reused by mistake).
CACHE_FORMAT_VERSION = 1


class SweepSpec(StrictModel):
    """The validated content of a sweep YAML file (see the module docstring)."""

    name: Optional[str] = Field(None, description="a label for reports")
    base: Optional[str] = Field(None, description="config file the runs start from; the bundled default when omitted")
    set: dict[str, Any] = Field(default_factory=dict, description="overrides applied to every run")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="config path -> values; runs are the product")
    runs: Optional[list[dict[str, Any]]] = Field(None, description="override maps, each combined with every grid point")
    seeds: Optional[list[int]] = Field(None, description="each run is repeated per seed; the base seed when omitted")

    @field_validator("grid")
    @classmethod
    def _non_empty_lists(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in grid.items():
            if not values:
                raise ValueError(f"grid entry {path!r} has no values")
        return grid


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its position, the values that make it differ, and its resolved config."""

    index: int
    swept: dict[str, Any]  # config path -> value, for the grid and runs keys of this run
    seed: int
    config: SimConfig
    key: str = field(default="")


def config_key(config: SimConfig) -> str:
    """A stable hash of everything a run's result depends on: the identity of a run and the name of its
    cached result. That is the full resolved config, plus what the config only names: the code and the
    bundled profiles (a refit or a bug fix must not reuse stale results) and the trace file's identity."""
    trace = config.workload.trace
    trace_id = None
    if trace:
        try:
            stat = Path(trace).stat()
            trace_id = [str(Path(trace).resolve()), stat.st_size, stat.st_mtime_ns]
        except OSError:
            trace_id = [trace]
    payload = json.dumps({"v": CACHE_FORMAT_VERSION, "code": code_fingerprint(), "trace": trace_id,
                          "config": config.model_dump(mode="json")},
                         sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hash of llmsim's source and bundled profiles (computed once per process)."""
    import llmsim
    from llmsim.hardware.profiles import profiles_dir

    digest = hashlib.sha256()
    package = Path(llmsim.__file__).parent
    files = sorted(package.rglob("*.py")) + sorted(package.glob("*.yaml")) + sorted(Path(profiles_dir()).rglob("*.yaml"))
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load_sweep_spec(path: str | Path) -> tuple[SweepSpec, Path]:
    """Read and validate a sweep YAML file; returns the spec and the folder relative paths are taken from."""
    path = Path(path)
    return spec_from_dict(_read_yaml(path), str(path)), path.parent


def spec_from_dict(data: dict[str, Any], source: str = "sweep spec") -> SweepSpec:
    """Validate a spec given as a mapping (the Python API's equivalent of a YAML file)."""
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (expected name, base, set, grid, runs, seeds)"
        raise ConfigError(f"{source}: sweep field {loc}: {msg}") from None


def _base_data(spec: SweepSpec, root: Path) -> dict[str, Any]:
    if spec.base is None:
        return _read_yaml(DEFAULT_CONFIG_PATH)
    base = Path(spec.base)
    if not base.is_absolute():
        base = root / base
    return _read_yaml(base)


def _apply(data: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    for dotted, value in overrides.items():
        keys = str(dotted).split(".")
        if not all(keys):
            raise ConfigError(f"{where}: empty name in config path {dotted!r}")
        apply_override(data, keys, copy.deepcopy(value))


def expand_runs(spec: SweepSpec, root: Path | str = ".", source: str = "sweep") -> list[RunSpec]:
    """Every run of the spec, in spec order, each with its validated config and its cache key."""
    root = Path(root)
    base = _base_data(spec, root)
    _apply(base, spec.set, f"{source}: set")
    grid_paths = list(spec.grid)
    grid_points = list(itertools.product(*(spec.grid[p] for p in grid_paths))) if grid_paths else [()]
    run_maps = spec.runs if spec.runs else [{}]
    seeds = spec.seeds if spec.seeds else [None]
    out: list[RunSpec] = []
    for point in grid_points:
        for run_no, run_map in enumerate(run_maps):
            for seed in seeds:
                data = copy.deepcopy(base)
                swept = dict(zip(grid_paths, point))
                _apply(data, swept, f"{source}: grid")
                _apply(data, run_map, f"{source}: runs[{run_no}]")
                swept.update({str(k): v for k, v in run_map.items()})
                if seed is not None:
                    data["seed"] = seed
                where = f"{source} run {len(out)} ({_describe(swept, seed)})"
                config = build_config(data, where)
                out.append(RunSpec(len(out), swept, config.seed, config, config_key(config)))
    return out


def _describe(swept: dict[str, Any], seed: Optional[int]) -> str:
    parts = [f"{k}={v}" for k, v in swept.items()]
    if seed is not None:
        parts.append(f"seed={seed}")
    return ", ".join(parts) or "base config"


def dump_spec(spec: SweepSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
