"""Fault injection: replicas fail and come back.

Two sources, combinable:

- **random** (``cluster.faults.mtbf_s``): each serving replica fails after an exponentially distributed
  time with mean MTBF (a memoryless failure process, the usual model for hardware faults such as GPU Xid
  errors or NIC flaps) and serves again after an exponential repair time with mean MTTR. Draws come from a
  generator seeded by the run's seed, one stream per replica, so a run is reproducible.
- **scripted** (``cluster.faults.script``): replica R fails at time T for D seconds, with a cause label.

What happens to the requests a failed replica held is the cluster's job (``on_failure``: fail, or retry on
another replica up to ``max_retries`` times); every request still ends exactly once in the requests table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from llmsim.cluster.config import FaultsConfig
from llmsim.cluster.handle import ClusterReplica, ReplicaState

if TYPE_CHECKING:
    from llmsim.cluster.cluster import Cluster

EVENT_COLUMNS = ("time_s", "replica", "cause", "down_s", "requests_held")


class FaultInjector:
    def __init__(self, cluster: "Cluster", cfg: FaultsConfig, seed: int) -> None:
        self.cluster, self.cfg = cluster, cfg
        self._seed = seed
        self._incarnation: dict[int, int] = {}
        self.events: dict[str, list] = {name: [] for name in EVENT_COLUMNS}
        self.not_applied: list[str] = []  # scripted failures that found no serving replica to fail
        if cfg.mtbf_s is not None:
            cluster.activation_hooks.append(self._arm)
            for replica in cluster.replicas:
                if replica.state == ReplicaState.ACTIVE:
                    self._arm(replica)
        for entry in cfg.script:
            cluster.env.process(self._scripted(entry))

    def _rng(self, replica: ClusterReplica) -> np.random.Generator:
        # One stream per (replica, incarnation): adding replicas does not change others' failure times.
        return np.random.default_rng([self._seed, 7919, replica.replica_id, self._incarnation[replica.replica_id]])

    def _arm(self, replica: ClusterReplica) -> None:
        self._incarnation[replica.replica_id] = self._incarnation.get(replica.replica_id, -1) + 1
        self.cluster.env.process(self._random_failure(replica, self._incarnation[replica.replica_id]))

    def _random_failure(self, replica: ClusterReplica, incarnation: int):
        rng = self._rng(replica)
        up_s, down_s = rng.exponential(self.cfg.mtbf_s), rng.exponential(self.cfg.mttr_s)
        yield self.cluster.env.timeout(up_s)
        if self._incarnation.get(replica.replica_id) == incarnation and not self.cluster.done.triggered:
            self._fail(replica, "random", down_s)

    def _scripted(self, entry):
        yield self.cluster.env.timeout(entry.at_s)
        replicas = self.cluster.replicas
        if self.cluster.done.triggered:
            return
        if entry.replica >= len(replicas):
            self._skip(entry, f"replica {entry.replica} does not exist at {entry.at_s:g} s ({len(replicas)} replicas)")
        elif not self._fail(replicas[entry.replica], entry.cause, entry.down_s):
            state = replicas[entry.replica].state.value
            self._skip(entry, f"replica {entry.replica} is {state} at {entry.at_s:g} s (the autoscaler or an "
                              "earlier failure took it out of service)")

    def _skip(self, entry, why: str) -> None:
        """A scripted failure that cannot apply is reported (a warning and ``summary.cluster``), never dropped."""
        import warnings

        message = f"cluster.faults.script failure '{entry.cause}' not applied: {why}"
        self.not_applied.append(message)
        warnings.warn(message, stacklevel=2)

    def _fail(self, replica: ClusterReplica, cause: str, down_s) -> bool:
        held = replica.num_outstanding
        if not self.cluster.fail(replica, cause, down_s):
            return False
        for name, value in zip(EVENT_COLUMNS, (self.cluster.env.now, replica.replica_id, cause,
                                               float("nan") if down_s is None else down_s, held)):
            self.events[name].append(value)
        return True

    def failures_by_cause(self) -> dict[str, int]:
        causes: dict[str, int] = {}
        for cause in self.events["cause"]:
            causes[cause] = causes.get(cause, 0) + 1
        return causes
