"""Many replicas behind a router: the only layer that sees more than one replica.

The cluster owns the replicas' lifecycle (start with a cold start, drain, stop, fail, repair), routes each
arriving request to an accepting replica through the router (or parks it until one accepts), and is the
single place where a request's *final* outcome is recorded: every request of the workload reaches the
recorder exactly once, whether it finished, was rejected, or failed after its retries. Prefill/decode
disaggregation, autoscaling and fault injection plug in as collaborators (see their modules).

The simulation ends when every request has ended (``done``). A heartbeat samples per-replica time series
and ends a run that can no longer progress (no arrivals left, nothing pending, nothing happened for a
while), whose remaining requests then fail as ``stalled``.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional

import simpy

from llmsim.cluster.handle import ClusterReplica, EngineProbe, ReplicaSpec, ReplicaState
from llmsim.cluster.topology import GPUAllocator, Topology
from llmsim.engine.request import Request, RequestStatus

ROLES = ("colocated", "prefill", "decode")

# A run with work left but no progress for this long (simulated seconds) has stalled.
STALL_AFTER_S = 120.0


def _defuse(event) -> None:
    if isinstance(event.value, simpy.Interrupt):
        event.defused = True  # an engine process we interrupted ends quietly; any other error still surfaces


class _UrgentTimeout(simpy.Event):
    """A timeout that fires before every ordinary event due at the same instant, so a heartbeat sample at
    time t always sees the state before the events at t (simpy would otherwise order ties by when each
    event was scheduled, which makes samples at integer times depend on the arrival gaps)."""

    def __init__(self, env: simpy.Environment, delay: float) -> None:
        super().__init__(env)
        self._ok = True  # a triggered event with no value, as simpy.Timeout sets it
        self._value = None
        env.schedule(self, simpy.events.URGENT, delay)


class Cluster:
    def __init__(self, env: simpy.Environment, recorder, topology: Topology, allocator: GPUAllocator,
                 routers: dict[str, object], engine_factory: Callable[[int, ReplicaSpec, EngineProbe], object],
                 *, num_requests: int, on_failure: str = "fail", max_retries: int = 0,
                 timeseries_interval_s: float = 1.0) -> None:
        self.env = env
        self.recorder = recorder
        self.topology = topology
        self.allocator = allocator
        self.routers = routers  # role → router
        self.engine_factory = engine_factory
        self.num_requests = num_requests
        self.on_failure = on_failure
        self.max_retries = max_retries
        self.timeseries_interval_s = timeseries_interval_s
        self.replicas: list[ClusterReplica] = []
        self._candidates: dict[str, list[ClusterReplica]] = {role: [] for role in ROLES}
        self._views: dict[str, list] = {role: [] for role in ROLES}
        self._stale = False  # _candidates/_views need a _rebuild before they are read
        self.pending: deque[tuple[Request, str]] = deque()  # parked until some replica accepts
        self.disaggregation = None  # set by the builder when the cluster is disaggregated
        self.listeners: list = []  # objects with on_request_end(request, now) (autoscaler SLO window)
        self.activation_hooks: list[Callable[[ClusterReplica], None]] = []  # e.g. fault timers
        self.arrival_times: list[float] = []
        self.num_ended = 0
        self.last_end_s = 0.0
        self.progress = 0
        self.timers = 0  # cold starts, repairs and transfers under way (the run may not stall meanwhile)
        self.arrivals_done = False
        self.retries: dict[str, int] = {}
        self.client = None  # client behaviour (llmsim.engine.client.Client): timeouts, retries
        self.failed_by_cause: dict[str, int] = {}
        self.timeseries: dict[str, list] = {k: [] for k in ("time_s", "replica", "role", "state", "kv_usage",
                                                             "num_outstanding", "num_waiting", "pending_prefill_tokens")}
        self.done = env.event()
        env.process(self._heartbeat())

    # -- replica lifecycle -------------------------------------------------------------------------
    def add_replica(self, spec: ReplicaSpec, *, cold_start_s: float = 0.0) -> Optional[ClusterReplica]:
        """Provision a replica on free GPUs (None when none fit); it serves after ``cold_start_s``."""
        gpus = self.allocator.place(spec.gpu, spec.num_gpus, spec.allowed_nodes)
        if gpus is None:
            return None
        replica = ClusterReplica(len(self.replicas), spec, gpus, self.env.now)
        self.replicas.append(replica)
        if cold_start_s <= 0:
            self._activate(replica)
        else:
            self.timers += 1
            self.env.process(self._cold_start(replica, cold_start_s))
        return replica

    def _cold_start(self, replica: ClusterReplica, cold_start_s: float):
        yield self.env.timeout(cold_start_s)
        self.timers -= 1
        if replica.state == ReplicaState.STARTING:
            self._activate(replica)

    def _activate(self, replica: ClusterReplica) -> None:
        replica.probe = EngineProbe(replica, self)
        replica.engine = self.engine_factory(replica.replica_id, replica.spec, replica.probe)
        replica.state = ReplicaState.ACTIVE
        if replica.ready_s is None:
            replica.ready_s = self.env.now
        if self.disaggregation is not None:
            self.disaggregation.attach(replica)
        self._refresh()
        for hook in self.activation_hooks:
            hook(replica)
        self._flush_pending()

    def _shutdown_engine(self, replica: ClusterReplica) -> None:
        if replica.probe is not None:
            replica.probe.detached = True
        engine = replica.engine
        if engine is not None and engine.process.is_alive:
            process = engine.process
            process.callbacks.append(_defuse)
            if self.env.active_process is process:
                # Called from inside the engine's own step (its last request just ended): a process may
                # not interrupt itself, so stop it as soon as this step returns control to simpy.
                self.env.timeout(0).callbacks.append(lambda _: process.is_alive and process.interrupt("shut down"))
            else:
                process.interrupt("replica shut down")
        replica.engine = None
        replica.clear_pending()

    def drain(self, replica: ClusterReplica) -> None:
        """Take no new requests; stop once everything it holds has ended (a starting replica stops now)."""
        if replica.state == ReplicaState.STARTING:
            self.stop(replica)
            return
        if replica.state != ReplicaState.ACTIVE:
            return
        replica.state = ReplicaState.DRAINING
        self._refresh()
        self._maybe_stop(replica)

    def _maybe_stop(self, replica: ClusterReplica) -> None:
        if replica.state == ReplicaState.DRAINING and replica.num_outstanding == 0:
            self.stop(replica)

    def stop(self, replica: ClusterReplica) -> None:
        self._shutdown_engine(replica)
        replica.state = ReplicaState.STOPPED
        replica.stopped_s = self.env.now
        self.allocator.release(replica.gpus)
        self._refresh()

    def fail(self, replica: ClusterReplica, cause: str, down_s: Optional[float]) -> bool:
        """Replica failure: what it holds fails or is retried elsewhere; it serves again after ``down_s``."""
        if replica.state not in (ReplicaState.ACTIVE, ReplicaState.DRAINING):
            return False
        held = replica.held_requests()
        self._shutdown_engine(replica)
        was_draining = replica.state == ReplicaState.DRAINING
        replica.state = ReplicaState.FAILED
        replica.failed_since_s = self.env.now
        replica.num_failures += 1
        self._refresh()
        in_transfer = self.disaggregation.replica_failed(replica) if self.disaggregation is not None else []
        for request in held + in_transfer:
            self.request_lost(request, cause)
        if was_draining:
            self.stop(replica)  # a draining replica that fails is simply gone
        elif down_s is not None:
            self.timers += 1
            self.env.process(self._repair(replica, down_s))
        return True

    def _repair(self, replica: ClusterReplica, down_s: float):
        yield self.env.timeout(down_s)
        self.timers -= 1
        replica.down_s += down_s
        replica.failed_since_s = None
        if replica.state == ReplicaState.FAILED:
            self._activate(replica)

    def _refresh(self) -> None:
        # Rebuilt on the next read, not here: building a cluster of N replicas activates each in turn, and
        # rebuilding at every activation cost O(N²) (seconds for a few thousand replicas).
        self._stale = True

    def _rebuild(self) -> None:
        self._stale = False
        for role in ROLES:
            self._candidates[role] = [r for r in self.replicas if r.spec.role == role and r.accepting]
            self._views[role] = [r.view for r in self._candidates[role]]

    def live_replicas(self, role: str) -> list[ClusterReplica]:
        """Starting or active replicas of ``role`` (what an autoscaler counts)."""
        return [r for r in self.replicas if r.spec.role == role
                and r.state in (ReplicaState.STARTING, ReplicaState.ACTIVE)]

    def accepting_replicas(self, role: str) -> list[ClusterReplica]:
        if self._stale:
            self._rebuild()
        return self._candidates[role]

    # -- requests ----------------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        """A request arrives from the workload."""
        self.arrival_times.append(self.env.now)
        if self.disaggregation is not None:
            self.disaggregation.submit(request)
        else:
            self.route(request, "colocated")

    def choose(self, request: Request, role: str) -> Optional[ClusterReplica]:
        """The router's pick among accepting replicas of ``role``; None when there are none."""
        candidates = self.accepting_replicas(role)
        if not candidates:
            return None
        index = self.routers[role].choose(request, self._views[role])
        if not 0 <= index < len(candidates):
            raise ValueError(f"router for {role} replicas returned {index!r}, expected 0..{len(candidates) - 1}")
        return candidates[index]

    def route(self, request: Request, role: str) -> None:
        replica = self.choose(request, role)
        if replica is None:
            self.pending.append((request, role))
            return
        replica.assign(request, request.prompt_tokens - request.num_computed_tokens)

    def _flush_pending(self) -> None:
        parked, self.pending = self.pending, deque()
        for request, role in parked:
            self.route(request, role)

    def engine_request_ended(self, replica: ClusterReplica, request: Request) -> None:
        """An engine replica says ``request`` ended there (finished or rejected)."""
        replica.prefill_done(request)
        if self.disaggregation is not None and self.disaggregation.intercept(replica, request):
            self._maybe_stop(replica)
            return
        if request.status == RequestStatus.FINISHED:
            replica.num_finished += 1
        elif self.client is not None and self.client.maybe_retry(request):
            self._maybe_stop(replica)  # the client sends it again later: it has not ended
            return
        self.request_ended(request)
        self._maybe_stop(replica)

    def request_lost(self, request: Request, cause: str) -> None:
        """A replica failed while holding ``request``: retry it elsewhere or let it fail, per config."""
        if self.disaggregation is not None:
            self.disaggregation.forget(request)
        if self.on_failure == "retry" and request.retries < self.max_retries:
            request.reset_for_retry(self.env.now)
            self.retries[request.request_id] = request.retries
            self.submit_retry(request)
            return
        request.status = RequestStatus.FAILED
        request.reason = "replica_failure"
        self.failed_by_cause[cause] = self.failed_by_cause.get(cause, 0) + 1
        self.request_ended(request)

    def submit_retry(self, request: Request) -> None:
        if self.disaggregation is not None:
            self.disaggregation.submit(request)
        else:
            self.route(request, "colocated")

    def request_ended(self, request: Request) -> None:
        """Record the final outcome of ``request`` (exactly once per request)."""
        if self.disaggregation is not None:
            self.disaggregation.finalize(request)
        self.recorder.request_ended(request)
        now = self.env.now
        self.num_ended += 1
        self.progress += 1
        self.last_end_s = now
        for listener in self.listeners:
            listener.on_request_end(request, now)
        self._check_done()

    def on_step(self, replica: ClusterReplica) -> None:
        if self.disaggregation is not None:
            self.disaggregation.blocks_may_have_freed(replica)

    def finish_arrivals(self) -> None:
        self.arrivals_done = True
        self._check_done()

    def _check_done(self) -> None:
        if self.arrivals_done and self.num_ended >= self.num_requests and not self.done.triggered:
            self.done.succeed()

    # -- heartbeat: time series and stall detection -----------------------------------------------
    def _heartbeat(self):
        interval = self.timeseries_interval_s
        last_progress, quiet_s = -1, 0.0
        while not self.done.triggered:
            self._sample()
            stuck = self.arrivals_done and self.timers == 0 and self.progress == last_progress
            quiet_s = quiet_s + interval if stuck else 0.0
            last_progress = self.progress
            if quiet_s >= STALL_AFTER_S:
                self.done.succeed("stalled")
                return
            yield _UrgentTimeout(self.env, interval)

    def _sample(self) -> None:
        ts, now = self.timeseries, self.env.now
        for r in self.replicas:
            if r.state == ReplicaState.STOPPED:
                continue
            view = r.view
            ts["time_s"].append(now)
            ts["replica"].append(r.replica_id)
            ts["role"].append(r.spec.role)
            ts["state"].append(r.state.value)
            ts["kv_usage"].append(view.kv_usage)
            ts["num_outstanding"].append(r.num_outstanding)
            ts["num_waiting"].append(view.num_waiting)
            ts["pending_prefill_tokens"].append(r.pending_prefill_tokens_now)

    def fail_unfinished(self, reason: str) -> int:
        """End everything still held anywhere (the run stopped); each request is recorded once as failed."""
        left: list[Request] = [request for request, _ in self.pending]
        self.pending.clear()
        if self.disaggregation is not None:
            left += self.disaggregation.abandon_all()
        for replica in self.replicas:
            left += replica.held_requests()
            if replica.engine is not None:
                self._shutdown_engine(replica)
        for request in left:
            if self.disaggregation is not None:
                self.disaggregation.forget(request)
            request.status = RequestStatus.FAILED
            request.reason = reason
            self.request_ended(request)
        return len(left)
