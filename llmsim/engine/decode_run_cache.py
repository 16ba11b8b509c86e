"""Prefix-cache bookkeeping of a skipped decode run (see :mod:`llmsim.engine.fastpath`).

With prefix caching the KV blocks have identities: a decode that outgrows its blocks takes one from the
front of the free queue (evicting the cached content it held, perhaps into the CPU offload tier), a block
its tokens fill is registered under its key, and a finished request's blocks go back to the free queue —
only those nobody else holds, tail first, cached ones behind uncached ones. Which block a request gets, and
which content is evicted, decides later hits, so a committed run replays takes and frees exactly as the
per-step loop makes them: tick by tick, the step's takes in running order, then the update's finishes in
running order (each registered up to its last token first, as vLLM does before freeing).

The other registrations are applied once per request at the end of the commit, which leaves the pool
exactly as the per-step loop's block-by-block registration does: a block a decode fills lies past the
prompt, so its key is private to the request (``(-1, request id, k)``), and past every block the request
ever computed before (a request resumed after a preemption re-registered all its tokens when it recomputed
them): no other block holds that key, so no eviction or free in the run can touch it, and no lookup
happens inside a run (nobody waits: the policies' ``decode_run_rules`` ensure it). The registered count
after step m is the same for every policy in a steady decode: ``min(computed, known tokens) // block_size``
as schedule() sees it — vLLM V1 registers when it allocates or a block fills, the reserving policies at
every step (``allocate_slots`` and the catch-up in ``_finish_plan``), and the async update's registration
(``computed − placeholders``) gets no further while the request runs on; at its finish every full block
of its computed tokens is registered.
"""

from __future__ import annotations

import numpy as np


def replay_prefix_cache(replica, run, j0: int, j: int) -> None:
    """Replay ticks ``j0+1 .. j``: takes and finishes in order, then the registrations; records the blocks
    the finishes freed in ``run.freed_by_tick`` (planned as none)."""
    kv = replica.kv_cache
    bs = kv.block_size
    steps = np.arange(j0, j + 1)  # step j0 is the state already committed
    scheduled = np.minimum(steps[None, :], run.last_step[:, None])  # steps it took part in, up to each step
    held = np.maximum(run.held_start[:, None], -(-(run.contexts[:, None] + scheduled) // bs))
    take = np.diff(held, axis=1).T  # (tick, request), row-major: tick by tick, in running order
    owned_of, blocks = kv._owned, kv._blocks
    requests = run.requests
    finish_ticks = run.finish_tick.tolist()
    finishes = sorted((f, i) for i, f in enumerate(finish_ticks) if j0 < f <= j)
    freed = np.zeros(j - j0 + 1, dtype=np.int64)  # index: tick − j0
    next_finish = 0

    def finish_until(tick: int) -> int:
        """Free the requests finishing at ticks < ``tick`` (an update follows its tick's schedule)."""
        n = next_finish
        while n < len(finishes) and finishes[n][0] < tick:
            f, i = finishes[n]
            request = requests[i]
            kv._register(request, owned_of[request.request_id], int(run.contexts[i] + run.last_step[i]) // bs)
            freed[f - j0] += kv.free(request)
            n += 1
        return n

    for t, i in zip(*np.nonzero(take)):
        tick = int(t) + j0 + 1
        next_finish = finish_until(tick)
        request = requests[i]
        owned = owned_of[request.request_id]
        kv._take(owned, int(take[t, i]))
        blocks[request.request_id] = len(owned)
    finish_until(j + 1)
    freed_by_tick = run.freed_by_tick
    freed_by_tick[j0 + 1: j + 1] = freed_by_tick[j0] + np.cumsum(freed[1:])
    freed_by_tick[j + 1:] = freed_by_tick[j]
    # Computed tokens after step j's schedule, and prompt + outputs delivered when it scheduled.
    full = (np.minimum(run.contexts + j, run.known_start + j - 1) // bs).tolist()
    for request, n, f in zip(requests, full, finish_ticks):
        if f > j:
            kv._register(request, owned_of[request.request_id], n)
