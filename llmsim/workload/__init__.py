"""Workloads: where requests come from (trace loaders, synthetic presets, fitted models, analysis)."""

from llmsim.workload.build import build_workload
from llmsim.workload.loaders import LOADERS, detect_format, load_trace
from llmsim.workload.synthetic import PRESETS, synthetic_workload
from llmsim.workload.workload import Workload

__all__ = ["Workload", "build_workload", "load_trace", "detect_format", "LOADERS", "PRESETS", "synthetic_workload"]
