"""llmsim: a discrete-event simulator of LLM serving clusters under bursty, real-world workloads."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["simulate", "load_config", "SimConfig", "Result", "__version__"]


def __getattr__(name: str):
    # Imported lazily so that `import llmsim` stays cheap for the CLI's fast paths.
    if name in ("simulate", "Result"):
        from llmsim import simulation

        return getattr(simulation, name)
    if name in ("load_config", "SimConfig"):
        from llmsim import config

        return getattr(config, name)
    raise AttributeError(name)
