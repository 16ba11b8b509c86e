"""What a replica in the middle of a skipped decode run shows to an observer (a router, the heartbeat).

A decode run (:mod:`llmsim.engine.fastpath`) is committed when it ends, so while it is in flight the
replica's counters and KV cache still describe its start. An observer at instant t must see what the per-step
loop would show then, and the run's plan says it without cutting the run: tick m calls ``schedule()`` at
``tick_time(m)`` (allocating step m's blocks) and its update — the delivery that ends requests and frees
their blocks — comes at ``tick_time(m + 1)``, in the same instant as the next tick's schedule. With n the
ticks whose schedule came strictly before t (ties as in lockstep: an observer at t sees the events before
t), the replica has made the allocations of steps 1..n and the updates of ticks 1..n−1.

Arrivals are in the waiting queue as soon as they are submitted and nobody is admitted during a run, so the
queue itself needs no correction; aborts deferred to the end of the run (queue timeouts) are subtracted by
the replica (:meth:`llmsim.engine.replica.Replica.num_waiting_now`).
"""

from __future__ import annotations

import numpy as np


class MidRun:
    """A decode run as observers see it: built on the first look, then each look is a few list reads.

    A router reads every candidate at every arrival, mostly replicas in the middle of a run, so the answers
    for each tick count are laid out once as plain lists, and the tick count follows the clock forward (it
    never goes back) instead of being searched for at each look."""

    __slots__ = ("_tick_times", "_free_blocks", "_ended", "newcomers", "_ticks")

    def __init__(self, run, kv) -> None:
        k = run.k
        self._tick_times = run.tick_times(np.arange(1, k + 1)).tolist()  # non-decreasing
        freed = _prefix_freed_by_update(run, kv) if run.prefix_cache else run.freed_by_tick
        # Index n − 1, n = 1..k: after the schedules of ticks 1..n and the updates of ticks 1..n − 1.
        self._free_blocks = (run.free_blocks_start - run.alloc_cum[1: k + 1] + freed[:k]).tolist()
        self._ended = np.cumsum(run.finishing_by_tick)[:k].tolist()
        # Requests whose first token tick 1's update delivers (their prefill ends there).
        self.newcomers = [r for r in run.requests if r.last_token_s is None]
        self._ticks = 1  # tick 1 ran when the run was planned

    def ticks_scheduled(self, time_s: float) -> int:
        """Ticks whose ``schedule()`` came strictly before ``time_s`` (looks come in time order)."""
        n, times = self._ticks, self._tick_times
        while n < len(times) and times[n] < time_s:
            n += 1
        self._ticks = n
        return n

    def num_ended(self, time_s: float) -> int:
        """Requests of the run that have finished by ``time_s``."""
        return self._ended[self.ticks_scheduled(time_s) - 1]

    def num_free_blocks(self, time_s: float) -> int:
        return self._free_blocks[self.ticks_scheduled(time_s) - 1]

    def first_tokens_delivered(self, time_s: float) -> list:
        """Requests whose first token the run has delivered by ``time_s`` (not yet reported to the recorder)."""
        return self.newcomers if self.ticks_scheduled(time_s) >= 2 else []


def _prefix_freed_by_update(run, kv) -> np.ndarray:
    """Blocks freed by the updates of ticks 1..m (index m) in a prefix-caching pool, where a finish frees only
    the blocks no other request holds (the commit replays the same frees, :mod:`llmsim.engine.decode_run_cache`).

    In a run nobody is admitted, so a block's users change only as requests finish: the blocks a request
    takes during the run are its own, a block it held at the start is freed by the last of its holders to
    finish. Finishes are taken tick by tick, in running order within a tick, as the commit frees them."""
    bs = kv.block_size
    freed = np.zeros(run.k + 1, dtype=np.int64)
    users: dict[int, int] = {}
    finishes = sorted((f, i) for i, f in enumerate(run.finish_tick.tolist()) if f <= run.k)
    for tick, i in finishes:
        owned = kv._owned.get(run.requests[i].request_id, ())
        count = max(0, -(-int(run.contexts[i] + run.last_step[i]) // bs) - len(owned))  # taken in the run
        for block in owned:
            left = users.get(block, kv._ref[block]) - 1
            users[block] = left
            count += left == 0
        freed[tick] += count
    return np.cumsum(freed)
