"""Routers (global schedulers): which replica gets a request. One class per policy, chosen by name.

A router sees each candidate replica only through a read-only :class:`ReplicaStatus` (outstanding
requests, KV-cache usage, queue length, estimated queue time), never the scheduler's internals, and returns
the *position* of its choice in the candidate list. Candidates are the replicas that accept new requests
now (serving, not starting, draining or failed), in replica-id order.

A user policy is any class with ``choose(request, replicas) -> int`` whose constructor takes ``seed``:
``cluster.router: "mypkg.routing:MyRouter"``. A router whose choices depend on the arrival order alone may say
so with the class attribute ``reads_replica_state = False``: the fast engine then routes the whole workload
before running any replica.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Hashable, Optional, Protocol, Sequence

import numpy as np

from llmsim.engine.request import Request
from llmsim.errors import ConfigError, did_you_mean


class ReplicaStatus(Protocol):
    """What a router may know about a replica (read-only)."""

    @property
    def replica_id(self) -> int: ...
    @property
    def num_outstanding(self) -> int: ...  # accepted and not yet ended (waiting + running + in transfer)
    @property
    def num_waiting(self) -> int: ...
    @property
    def kv_usage(self) -> float: ...  # fraction of usable KV blocks in use
    @property
    def estimated_queue_time_s(self) -> float: ...  # prefill work queued ahead of a new request, in seconds


@dataclass(frozen=True)
class ReplicaSnapshot:
    """A hand-built :class:`ReplicaStatus` (tests, what-if analyses)."""

    replica_id: int
    num_outstanding: int = 0
    num_waiting: int = 0
    kv_usage: float = 0.0
    estimated_queue_time_s: float = 0.0


class Router(Protocol):
    def choose(self, request: Request, replicas: Sequence[ReplicaStatus]) -> int: ...


def _argmin(replicas: Sequence[ReplicaStatus], key, tie_key=None) -> int:
    """Position of the smallest key; ties go to the smallest ``tie_key``, then to the earliest candidate (lowest
    replica id). ``tie_key`` is read only for the tied candidates (a replica's state costs a look each)."""
    best, best_key, tied = 0, key(replicas[0]), None
    for i in range(1, len(replicas)):
        k = key(replicas[i])
        if k < best_key:
            best, best_key, tied = i, k, None
        elif tie_key is not None and k == best_key:
            tied = [best] if tied is None else tied
            tied.append(i)
    if tied is None:
        return best
    return min(tied, key=lambda i: (tie_key(replicas[i]), i))


class RoundRobinRouter:
    """Candidates in turn, ignoring load."""

    reads_replica_state = False  # its choices depend on the arrival order alone: the workload routes up front

    def __init__(self, seed: int = 0) -> None:
        self._next = 0

    def choose(self, request: Request, replicas: Sequence[ReplicaStatus]) -> int:
        index = self._next % len(replicas)
        self._next += 1
        return index

    def choose_many(self, count: int, replicas: Sequence[ReplicaStatus]) -> np.ndarray:
        """The next ``count`` choices at once (as ``count`` calls of :meth:`choose` give them)."""
        indexes = (self._next + np.arange(count, dtype=np.int64)) % len(replicas)
        self._next += count
        return indexes


class RandomRouter:
    """A uniformly random candidate (seeded)."""

    reads_replica_state = False

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def choose(self, request: Request, replicas: Sequence[ReplicaStatus]) -> int:
        return int(self._rng.integers(len(replicas)))


class LeastOutstandingRouter:
    """The candidate with the fewest requests in flight (join-the-shortest-queue)."""

    def __init__(self, seed: int = 0) -> None:
        pass

    def choose(self, request: Request, replicas: Sequence[ReplicaStatus]) -> int:
        return _argmin(replicas, lambda r: r.num_outstanding)


class LeastKVRouter:
    """The candidate with the lowest KV-cache usage (fewest outstanding breaks ties): memory is what preempts."""

    def __init__(self, seed: int = 0) -> None:
        pass

    def choose(self, request: Request, replicas: Sequence[ReplicaStatus]) -> int:
        return _argmin(replicas, lambda r: r.kv_usage, lambda r: r.num_outstanding)


class ShortestQueueTimeRouter:
    """The candidate whose queued prefill work would delay a new request least (fewest outstanding breaks ties)."""

    def __init__(self, seed: int = 0) -> None:
        pass

    def choose(self, request: Request, replicas: Sequence[ReplicaStatus]) -> int:
        return _argmin(replicas, lambda r: r.estimated_queue_time_s, lambda r: r.num_outstanding)


class PowerOfTwoRouter:
    """Sample two distinct candidates at random, keep the one with fewer outstanding requests.

    Mitzenmacher's "power of two choices": nearly the balance of least-outstanding while probing only two
    replicas (ties go to the first sampled).
    """

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def choose(self, request: Request, replicas: Sequence[ReplicaStatus]) -> int:
        n = len(replicas)
        if n == 1:
            return 0
        a, b = (int(x) for x in self._rng.choice(n, size=2, replace=False))
        return b if replicas[b].num_outstanding < replicas[a].num_outstanding else a


class SessionAffinityRouter:
    """A conversation sticks to the replica that served its previous turn, where its prefix is cached.

    The key is the request's ``session_id`` (else its first prefix-block hash). A new key, or one whose
    replica no longer takes requests, goes to the least-outstanding candidate and sticks there from then
    on. Requests with no key are routed by least outstanding.
    """

    def __init__(self, seed: int = 0) -> None:
        self._home: dict[Hashable, int] = {}

    @staticmethod
    def key_of(request: Request) -> Optional[Hashable]:
        if request.session_id is not None:
            return ("session", request.session_id)
        if request.prefix_hashes:
            return ("prefix", request.prefix_hashes[0])
        return None

    def choose(self, request: Request, replicas: Sequence[ReplicaStatus]) -> int:
        key = self.key_of(request)
        if key is not None:
            home = self._home.get(key)
            if home is not None:
                for i, replica in enumerate(replicas):
                    if replica.replica_id == home:
                        return i
        index = _argmin(replicas, lambda r: r.num_outstanding)
        if key is not None:
            self._home[key] = replicas[index].replica_id
        return index


ROUTERS: dict[str, type] = {
    "round-robin": RoundRobinRouter,
    "random": RandomRouter,
    "least-outstanding": LeastOutstandingRouter,
    "least-kv": LeastKVRouter,
    "shortest-queue-time": ShortestQueueTimeRouter,
    "power-of-two": PowerOfTwoRouter,
    "session-affinity": SessionAffinityRouter,
}


def load_user_class(spec: str, field: str) -> type:
    """``"package.module:ClassName"`` → the class, or a ConfigError naming ``field``."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"config field {field}: cannot import module {module_name!r} ({exc})") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError(f"config field {field}: module {module_name!r} has no attribute {attr!r}")
    return cls


def make_router(name: str, seed: int, field: str = "cluster.router") -> Router:
    """The router named ``name`` (a key of :data:`ROUTERS`, or ``module:Class`` for a user policy)."""
    if name in ROUTERS:
        return ROUTERS[name](seed=seed)
    if ":" in name:
        router = load_user_class(name, field)(seed=seed)
        if not callable(getattr(router, "choose", None)):
            raise ConfigError(f"config field {field}: {name!r} has no choose(request, replicas) method")
        return router
    valid = ", ".join(ROUTERS)
    raise ConfigError(f"config field {field}: unknown router {name!r}{did_you_mean(name, ROUTERS)}; valid: {valid}, or module:Class")
