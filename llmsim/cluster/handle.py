"""A replica as the cluster manages it: the engine replica plus its role, GPUs, lifecycle and counters.

The engine's :class:`~llmsim.engine.replica.Replica` knows nothing about clusters. The cluster composes
around it: each engine replica reports to an :class:`EngineProbe` (in place of the recorder), which
forwards every record to the real recorder and lets the cluster see first tokens, finished requests and
steps as they happen — enough for per-replica metrics, queue-time estimates, draining and disaggregation,
without touching the engine.

Lifecycle: ``starting`` (provisioned, loading weights: costs GPU time, serves nothing) → ``active`` →
``draining`` (takes no new requests, finishes what it holds) → ``stopped``; an active or draining replica
may become ``failed`` and, once repaired, ``active`` again with an empty cache.
"""

from __future__ import annotations

import numpy as np

from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Optional, Protocol

from llmsim.engine.request import Request


class ReplicaState(str, Enum):
    STARTING = "starting"
    ACTIVE = "active"
    DRAINING = "draining"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ReplicaSpec:
    """What one replica of a group is (resolved from config and profiles)."""

    group: int
    role: str  # colocated | prefill | decode
    gpu: str
    model: str
    tp: int
    pp: int
    num_gpu_blocks: int
    block_size: int
    max_model_len: int
    kv_bytes_per_token: float  # whole model, all layers (what one token's KV weighs in a transfer)
    prefill_s_per_token: float  # seconds per prompt token at a full token budget (queue-time estimates)
    cost_per_gpu_hour_usd: float
    allowed_nodes: Optional[tuple[str, ...]]
    deployment: Any  # the engine deployment (step-time function etc.), opaque to the cluster

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp


class ClusterReplica:
    """One replica's cluster-side state and counters. ``engine`` is None while starting, failed or stopped."""

    def __init__(self, replica_id: int, spec: ReplicaSpec, gpus: list[str], provisioned_s: float) -> None:
        self.replica_id = replica_id
        self.spec = spec
        self.gpus = gpus
        self.state = ReplicaState.STARTING
        self.engine = None
        self.probe: Optional[EngineProbe] = None
        self.provisioned_s = provisioned_s
        self.ready_s: Optional[float] = None
        self.stopped_s: Optional[float] = None
        self.busy_s = 0.0
        self.kv_usage_s = 0.0  # ∫ KV usage dt over busy steps
        self.num_steps = 0
        self.num_routed = 0
        self.num_finished = 0
        self.num_failures = 0
        self.down_s = 0.0  # time spent failed and repaired; see down_s_until for a failure still open
        self.failed_since_s: Optional[float] = None  # when the current failure began (None: not failed)
        self.inbound_transfers = 0  # decode side: KV transfers holding blocks here
        self._pending_prefill: dict[str, int] = {}
        self.pending_prefill_tokens = 0
        self._settled_memo: tuple = (None, 0)  # (requests, their pending prompt tokens): pending_prefill_tokens_now
        self.view = ReplicaView(self)

    def down_s_until(self, end_s: float) -> float:
        """Seconds out of service by ``end_s``: repaired failures plus the one still open (never repaired)."""
        open_s = max(end_s - self.failed_since_s, 0.0) if self.failed_since_s is not None else 0.0
        return self.down_s + open_s

    @property
    def accepting(self) -> bool:
        return self.state == ReplicaState.ACTIVE

    @property
    def num_outstanding(self) -> int:
        held = self.engine.num_outstanding_now() if self.engine is not None else 0
        return held + self.inbound_transfers

    @property
    def pending_prefill_tokens_now(self) -> int:
        """Prompt tokens accepted and not yet prefilled, as of now (a decode run still in flight may not have
        reported the first tokens it delivered or the waiting requests aborted meanwhile)."""
        pending = self.pending_prefill_tokens
        if not pending or self.engine is None:
            return pending
        settled = self.engine.unreported_prefill_ends()
        if not settled:
            return pending
        # A run's list of first tokens is the same object at every look (a static batch's can hold dozens, and a
        # router looks at every arrival), and the prompts it settles do not change: they are summed once.
        if settled is not self._settled_memo[0]:
            self._settled_memo = (settled, sum(self._pending_prefill.get(r.request_id, 0) for r in settled))
        return pending - self._settled_memo[1]

    def assign(self, request: Request, prefill_tokens: int) -> None:
        """Hand ``request`` to the engine; ``prefill_tokens`` of prompt it still has to compute."""
        self.num_routed += 1
        if prefill_tokens:
            self._pending_prefill[request.request_id] = prefill_tokens
            self.pending_prefill_tokens += prefill_tokens
        self.engine.submit(request)

    def prefill_done(self, request: Request) -> None:
        tokens = self._pending_prefill.pop(request.request_id, 0)
        self.pending_prefill_tokens -= tokens

    def held_requests(self) -> list[Request]:
        """Requests the engine holds (running, then waiting), e.g. to fail or retry them."""
        if self.engine is None:
            return []
        scheduler = self.engine.scheduler
        return list(scheduler.running) + list(scheduler.waiting)

    def clear_pending(self) -> None:
        self._pending_prefill.clear()
        self.pending_prefill_tokens = 0


class ReplicaView:
    """The read-only window routers and autoscalers get on a replica (see :class:`~llmsim.cluster.routers.ReplicaStatus`).

    Every figure is the replica's state at the current instant as the per-step loop shows it, also in the middle
    of a skipped decode run, where the engine works it out from the run's plan (``*_now`` methods of
    :class:`~llmsim.engine.replica.Replica`)."""

    __slots__ = ("_replica",)

    def __init__(self, replica: ClusterReplica) -> None:
        self._replica = replica

    @property
    def replica_id(self) -> int:
        return self._replica.replica_id

    @property
    def role(self) -> str:
        return self._replica.spec.role

    @property
    def num_outstanding(self) -> int:
        return self._replica.num_outstanding

    @property
    def num_waiting(self) -> int:
        engine = self._replica.engine
        return engine.num_waiting_now() if engine is not None else 0

    @property
    def kv_usage(self) -> float:
        engine = self._replica.engine
        return engine.kv_usage_now() if engine is not None else 0.0

    @property
    def estimated_queue_time_s(self) -> float:
        """Prompt tokens accepted but not yet prefilled × seconds per prefill token at a full batch.

        Decode work sharing the steps is ignored, so this is a lower bound; it ranks replicas well because
        prefill is what a new request waits behind.
        """
        r = self._replica
        return r.pending_prefill_tokens_now * r.spec.prefill_s_per_token


class ProbeListener(Protocol):
    """What an :class:`EngineProbe` tells (the :class:`~llmsim.cluster.cluster.Cluster`); a protocol so that this
    module does not import the cluster that imports it."""

    recorder: Any
    progress: int

    def on_step(self, replica: ClusterReplica) -> None: ...
    def engine_request_ended(self, replica: ClusterReplica, request: Request) -> None: ...


class EngineProbe:
    """Stands in for the recorder of one engine replica: forwards every record and tells the cluster.

    After the replica fails or stops the probe is ``detached`` and drops whatever the dead engine might
    still report, so no request is recorded twice.
    """

    def __init__(self, replica: ClusterReplica, cluster: ProbeListener) -> None:
        self.replica = replica
        self.cluster = cluster
        self.recorder = cluster.recorder
        self.detached = False
        self.hide_first_tokens: Optional[Callable[[Request], bool]] = None

    def __getattr__(self, name: str):
        # Recorder methods the cluster has no interest in pass straight through.
        return getattr(self.recorder, name)

    def _count_step(self, duration: float, used_blocks: int, free_blocks: int) -> None:
        r = self.replica
        r.num_steps += 1
        r.busy_s += duration
        r.kv_usage_s += duration * used_blocks / max(used_blocks + free_blocks, 1)
        self.cluster.progress += 1

    def step(self, replica_id: int, plan, outcome, used_blocks: int, free_blocks: int) -> None:
        if self.detached:
            return
        self._count_step(plan.end_s - plan.start_s, used_blocks, free_blocks)
        self.recorder.step(replica_id, plan, outcome, used_blocks, free_blocks)
        self.cluster.on_step(self.replica)

    def step_values(self, replica: int, step: int, start_s: float, duration: float, batch_size: int,
                    prefill_tokens: int, decode_tokens: int, free_blocks: int, used_blocks: int, *rest) -> None:
        """A step the engine's fast path never materialised as a plan (decode runs)."""
        if self.detached:
            return
        self._count_step(duration, used_blocks, free_blocks)
        self.recorder.step_values(replica, step, start_s, duration, batch_size, prefill_tokens, decode_tokens,
                                  free_blocks, used_blocks, *rest)
        self.cluster.on_step(self.replica)

    def step_rows(self, replica: int, rows) -> None:
        """A few fast-path steps as rows of :meth:`step_values`' arguments after ``replica``: the same accounting
        as :meth:`step_records`, step by step."""
        if self.detached or not rows:
            return
        for _, _, duration, _, _, _, free_blocks, used_blocks, *_ in rows:
            self._count_step(duration, used_blocks, free_blocks)
        self.recorder.step_rows(replica, rows)
        self.cluster.on_step(self.replica)

    def step_records(self, replica: int, steps, starts, durations, batch_sizes, prefill_tokens, decode_tokens,
                     free_blocks, used_blocks, *rest) -> None:
        """Many fast-path steps at once: the same per-replica accounting as :meth:`step_values`, in bulk."""
        if self.detached or len(steps) == 0:
            return
        r = self.replica
        durations = np.asarray(durations, dtype=np.float64)
        used = np.asarray(used_blocks, dtype=np.int64)
        total = np.maximum(used + np.asarray(free_blocks, dtype=np.int64), 1)
        r.num_steps += len(steps)
        r.busy_s = float(np.cumsum(np.concatenate([[r.busy_s], durations]))[-1])
        r.kv_usage_s = float(np.cumsum(np.concatenate([[r.kv_usage_s], durations * used / total]))[-1])
        self.cluster.progress += len(steps)
        self.recorder.step_records(replica, steps, starts, durations, batch_sizes, prefill_tokens, decode_tokens,
                                   free_blocks, used_blocks, *rest)
        self.cluster.on_step(self.replica)

    def tokens_emitted(self, emitted: list[Request], time_s: float, previous_step_end_s: Optional[float]) -> None:
        if self.detached:
            return
        r = self.replica
        if r.pending_prefill_tokens:
            for request in emitted:
                if request.num_output_tokens == 1:
                    r.prefill_done(request)
        if self.hide_first_tokens is not None:
            # Disaggregation, first token after the transfer: the prefill replica's token is not streamed.
            emitted = [q for q in emitted if not self.hide_first_tokens(q)]
        self.recorder.tokens_emitted(emitted, time_s, previous_step_end_s)

    def request_ended(self, request: Request) -> None:
        if self.detached:
            return
        self.cluster.progress += 1
        self.cluster.engine_request_ended(self.replica, request)
