"""Waiting-queue orders (``scheduler.queue``) and preemption victim rules (``scheduler.victim``).

A queue order decides which waiting request a scheduler considers next; every batching policy admits from
the head of its waiting queue, so the order is independent of the policy. FCFS keeps insertion order (and
the vLLM rule that preempted requests are put back at the head); the other orders re-sort the waiting queue
before each step by a key, stable so that ties keep FCFS order:

- ``priority``: the request's ``priority`` field, lower value first, then arrival time, then request id
  (vLLM's ``--scheduling-policy priority`` keeps its waiting queue as a heap of exactly that key; a
  preempted request is pushed back into the heap, so it takes its place by key, not the head).
- ``shortest-first`` / ``longest-first``: by remaining output tokens (predicted total − produced so far).
  The prediction is the true output length times a log-normal error ``exp(N(0, σ))`` with
  σ = ``scheduler.length_predictor_error`` (0 = an oracle), drawn once per request from
  ``scheduler.length_predictor_seed``, as length-prediction schedulers (e.g. SSJF, learning-to-rank
  schedulers) are evaluated against an oracle.

A starvation guard (``scheduler.starvation_guard_s``, aging) moves every request that has waited longer than
the threshold since its submission to the front, oldest first, whatever the order.

The victim rule picks which running request loses its KV blocks when memory runs out. vLLM pops the most
recently admitted request (FCFS) or the one with the largest (priority, arrival) (priority policy).
"""

from __future__ import annotations

import zlib
from collections import deque
from typing import Callable, Optional, Sequence

import numpy as np

from llmsim.engine.config import SchedulerConfig
from llmsim.engine.kv_cache import KVCacheManager
from llmsim.engine.request import Request
from llmsim.errors import ConfigError, did_you_mean


class QueueOrder:
    """FCFS: insertion order; the base class of the sorting orders."""

    name = "fcfs"

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.starvation_guard_s = config.starvation_guard_s

    def key(self, request: Request):
        """Sort key of a waiting request; None keeps insertion order (FCFS)."""
        return None

    @property
    def arrivals_keep_head(self) -> bool:
        """Whether a new arrival always queues behind the current head (FCFS: it joins the tail; aging moves
        only requests that have waited longer than the guard)."""
        return type(self).key is QueueOrder.key

    def next_aging(self, waiting: deque, now_s: float) -> Optional[tuple[float, float]]:
        """(submitted_s, guard) of the waiting request that starts to age first after ``now_s``, or None:
        until a schedule() at a time t with ``t - submitted_s > guard`` the order stays as it is now."""
        guard = self.starvation_guard_s
        if guard is None:
            return None
        fresh = [r.submitted_s for r in waiting if not now_s - r.submitted_s > guard]
        return (min(fresh), guard) if fresh else None

    def order(self, waiting: deque, now_s: float) -> deque:
        """Return the waiting queue in the order to serve it (the same object when nothing moves)."""
        sorts = type(self).key is not QueueOrder.key
        guard = self.starvation_guard_s
        if len(waiting) < 2 or (not sorts and guard is None):
            return waiting
        items = sorted(waiting, key=self.key) if sorts else list(waiting)
        if guard is not None:
            starving = [r for r in items if now_s - r.submitted_s > guard]
            if starving:
                starving.sort(key=lambda r: (r.submitted_s, r.index))
                chosen = set(map(id, starving))
                items = starving + [r for r in items if id(r) not in chosen]
        return deque(items)


class PriorityOrder(QueueOrder):
    name = "priority"

    def key(self, request: Request):
        return (request.priority, request.arrival_s, request.request_id)


def predicted_output_tokens(request: Request, error: float, seed: int) -> float:
    """The output length a predictor with log-normal error σ = ``error`` reports for ``request``."""
    if request.predicted_output_tokens is None:
        if error == 0:
            request.predicted_output_tokens = float(request.max_output_tokens)
        else:
            rng = np.random.default_rng([seed, zlib.crc32(request.request_id.encode())])
            request.predicted_output_tokens = float(request.max_output_tokens * np.exp(rng.normal(0.0, error)))
    return request.predicted_output_tokens


class ShortestFirstOrder(QueueOrder):
    name = "shortest-first"
    sign = 1.0

    def key(self, request: Request):
        cfg = self.config
        predicted = predicted_output_tokens(request, cfg.length_predictor_error, cfg.length_predictor_seed)
        return self.sign * (predicted - request.num_output_tokens)


class LongestFirstOrder(ShortestFirstOrder):
    name = "longest-first"
    sign = -1.0


QUEUE_ORDERS: dict[str, type[QueueOrder]] = {
    "fcfs": QueueOrder,
    "priority": PriorityOrder,
    "shortest-first": ShortestFirstOrder,
    "longest-first": LongestFirstOrder,
}


def make_queue_order(config: SchedulerConfig) -> QueueOrder:
    try:
        return QUEUE_ORDERS[config.queue](config)
    except KeyError:
        raise ConfigError(f"config field scheduler.queue: unknown queue order {config.queue!r}{did_you_mean(config.queue, QUEUE_ORDERS)}; "
                          f"valid: {', '.join(QUEUE_ORDERS)}") from None


# -- victim rules -----------------------------------------------------------------------------------
VictimRule = Callable[[Sequence[Request], KVCacheManager], Request]


def most_recent(candidates: Sequence[Request], kv: KVCacheManager) -> Request:
    """vLLM: ``running.pop()`` — the most recently admitted or resumed request."""
    return max(candidates, key=lambda r: r.admitted_seq)


def lowest_priority(candidates: Sequence[Request], kv: KVCacheManager) -> Request:
    """vLLM's priority policy: the largest (priority, arrival) — least urgent, then youngest; on a tie the
    first in running order (Python's ``max``, as vLLM calls it)."""
    return max(candidates, key=lambda r: (r.priority, r.arrival_s))


def most_blocks(candidates: Sequence[Request], kv: KVCacheManager) -> Request:
    """Frees the most memory per preemption (ties: most recently admitted)."""
    return max(candidates, key=lambda r: (kv.num_blocks_of(r), r.admitted_seq))


def fewest_computed(candidates: Sequence[Request], kv: KVCacheManager) -> Request:
    """Loses the least work to recompute (ties: most recently admitted)."""
    return max(candidates, key=lambda r: (-r.num_computed_tokens, r.admitted_seq))


VICTIMS: dict[str, Optional[VictimRule]] = {
    "auto": None,  # the policy's own rule; for vLLM-like policies most-recent (fcfs) or lowest-priority (priority)
    "most-recent": most_recent,
    "lowest-priority": lowest_priority,
    "most-blocks": most_blocks,
    "fewest-computed": fewest_computed,
}


def make_victim_rule(config: SchedulerConfig, default: Optional[VictimRule] = None) -> VictimRule:
    """The configured victim rule; ``auto`` gives ``default``, else vLLM's choice for the queue order."""
    try:
        rule = VICTIMS[config.victim]
    except KeyError:
        raise ConfigError(f"config field scheduler.victim: unknown victim rule {config.victim!r}{did_you_mean(config.victim, VICTIMS)}; "
                          f"valid: {', '.join(VICTIMS)}") from None
    if rule is None:
        rule = default or (lowest_priority if config.queue == "priority" else most_recent)
    return rule
