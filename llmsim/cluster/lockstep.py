"""Lockstep: replicas run independently between routing instants, so state-reading routers stay exact.

In a colocated cluster without autoscaling, faults or KV transfers, replicas interact only when a request is
routed: the router reads their state and hands the request to one of them. Between two arrivals each
replica's future depends on nothing but its own state. So each replica's engine runs alone up to the next
arrival instant and pauses there (:meth:`~llmsim.engine.aggregate.AggregateReplica.process` is a generator
that yields where it must wait); the router reads the paused replicas' state — exactly the state the per-step
engine shows it at that instant — the request is submitted to the chosen replica at once (so a second
arrival at the same instant sees it), and the replicas go on.

A replica is advanced only when something reads it or a request is routed to it: the cost of a routing
instant is the router's reads, plus whatever work the read replicas really have before it; a replica nobody
reads catches up later in one go. A router that reads no replica state (round-robin, random) needs none of this: the whole workload is
routed up front and each replica runs alone from start to end.

Ties: a router at instant t sees every replica's state after its events strictly before t, and an arrival at t
is visible to a replica's engine tick at t (the aggregate engine's rule for arrivals, which the equivalence
suite pins against the per-step engine).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence


class EngineStatus:
    """What a router may read (:class:`~llmsim.cluster.routers.ReplicaStatus`) of a replica's aggregate engine,
    computed as the cluster's :class:`~llmsim.cluster.handle.ReplicaView` computes it for the per-step engine.

    Reading it first brings the engine up to the current routing instant (``clock[0]``), so a replica the router
    does not look at (power-of-two reads two) is not advanced until something needs it: it receives no request
    meanwhile, so advancing it later in one go is the same."""

    __slots__ = ("_engine", "_process", "_clock", "replica_id", "role", "_prefill_s_per_token")

    def __init__(self, engine, replica_id: int, role: str, prefill_s_per_token: float, clock: list) -> None:
        self._engine = engine
        self._process = engine.process()
        self._clock = clock
        self.replica_id = replica_id
        self.role = role
        self._prefill_s_per_token = prefill_s_per_token

    def settle(self) -> None:
        """Run the engine through every event before the current routing instant (it then pauses)."""
        engine = self._engine
        if engine.wake_s < self._clock[0]:
            engine.horizon = self._clock[0]
            next(self._process)

    def finish(self) -> None:
        """No arrival is left: run the engine to its end."""
        engine = self._engine
        engine.open_ended = False
        engine.horizon = float("inf")
        for _ in self._process:
            raise RuntimeError("a replica paused after the last arrival")

    @property
    def num_outstanding(self) -> int:
        if self._engine.wake_s < self._clock[0]:
            self.settle()
        return self._engine.outstanding

    @property
    def num_waiting(self) -> int:
        if self._engine.wake_s < self._clock[0]:
            self.settle()
        return len(self._engine.waiting)

    @property
    def kv_usage(self) -> float:
        engine = self._engine
        if engine.wake_s < self._clock[0]:
            self.settle()
        return (engine.usable - engine.free) / engine.usable

    @property
    def estimated_queue_time_s(self) -> float:
        if self._engine.wake_s < self._clock[0]:
            self.settle()
        return self._engine.pending_prefill * self._prefill_s_per_token


def run_lockstep(engines: Sequence, router, views: Sequence[EngineStatus], arrival, prompt, output, rows,
                 request_of: Callable[[int], object], progress: Optional[Callable[[int], None]] = None
                 ) -> list[list[int]]:
    """Route ``rows`` (workload indices, in arrival order) one by one and run ``engines`` to their ends.

    ``views[k]`` is what the router sees of ``engines[k]`` (sharing the routing instant in ``clock``, see
    :func:`lockstep_views`); ``request_of(row)`` the request it is shown. Returns, per engine, the workload rows
    it received in its local order."""
    assigned: list[list[int]] = [[] for _ in engines]
    clock = views[0]._clock if views else [0.0]
    for engine in engines:
        engine.open_ended = True
        engine.wake_s = -1.0  # not started yet
    for count, row in enumerate(rows):
        t = float(arrival[row])
        clock[0] = t
        position = router.choose(request_of(row), views)
        if not 0 <= position < len(engines):
            raise ValueError(f"router returned {position!r}, expected 0..{len(engines) - 1}")
        view, engine = views[position], engines[position]
        view.settle()
        engine.add_request(t, int(prompt[row]), int(output[row]))
        assigned[position].append(int(row))
        if engine.sleeping:
            engine.horizon = t  # it takes the arrival (or rejects it) and pauses again at t
            next(view._process)
        else:
            engine.advance_to(t)  # submitted now: the next arrival's routing sees it
        if progress is not None and not count & 4095:
            progress(count)
    for view in views:
        view.finish()
    return assigned


def lockstep_views(engines: Sequence, replicas: Sequence) -> list[EngineStatus]:
    """One :class:`EngineStatus` per engine (``replicas[k]`` the cluster's replica it runs), sharing one clock."""
    clock = [0.0]
    return [EngineStatus(engine, replica.replica_id, replica.spec.role, replica.spec.prefill_s_per_token, clock)
            for engine, replica in zip(engines, replicas)]
