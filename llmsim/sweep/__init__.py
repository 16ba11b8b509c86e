"""Sweeps: many simulation runs from one YAML spec, on a process pool or a Dask cluster, cached per run."""

from llmsim.sweep.runner import RESULTS_FILE, SweepOutcome, run_sweep
from llmsim.sweep.spec import RunSpec, SweepSpec, config_key, expand_runs, load_sweep_spec

__all__ = ["run_sweep", "SweepOutcome", "SweepSpec", "RunSpec", "load_sweep_spec", "expand_runs", "config_key",
           "RESULTS_FILE"]
