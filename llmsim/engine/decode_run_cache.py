"""Prefix-cache bookkeeping of a skipped decode run (see :mod:`llmsim.engine.fastpath`).

With prefix caching the KV blocks have identities: a decode that outgrows its blocks takes one from the
front of the free queue (evicting the cached content it held, perhaps into the CPU offload tier), and a
block its tokens fill is registered under its key. Which block a request gets, and which content is evicted,
decides later hits, so a committed run replays those two operations exactly as the per-step loop makes
them: tick by tick, running request by running request, each taking its new block and then registering
its full ones (vLLM's ``allocate_slots``).

The registered count after step m is the same for every policy in a steady decode: ``min(computed,
known tokens) // block_size`` as schedule() sees it — vLLM V1 registers when it allocates or a block
fills, the reserving policies at every step (``allocate_slots`` and the catch-up in ``_finish_plan``), and
the async update's registration (``computed − placeholders``) never gets further than that.

A run with prefix caching has nobody waiting (no lookup can see a registration out of order) and no finish
inside it (a finished request frees only the blocks no one else shares, in an order that later allocations
depend on): :func:`llmsim.engine.fastpath.plan_decode_run` and the policies' ``decode_run_rules`` ensure both.
"""

from __future__ import annotations

import numpy as np


def replay_prefix_cache(replica, run, j0: int, j: int) -> None:
    """Take and register the blocks of ticks ``j0+1 .. j`` (every request is scheduled in each of them)."""
    kv = replica.kv_cache
    bs = kv.block_size
    steps = np.arange(j0, j + 1)  # step j0 is the state already committed
    contexts = run.contexts[:, None] + steps[None, :]  # computed tokens after each step's schedule
    held = np.maximum(run.held_start[:, None], -(-contexts // bs))
    known = run.known_start[:, None] + steps[None, :] - 1  # prompt + outputs delivered when it schedules
    full = np.minimum(contexts, known) // bs
    take = np.diff(held, axis=1).T  # (tick, request), row-major: tick by tick, in running order
    registered = np.array([kv._num_cached.get(r.request_id, 0) for r in run.requests], dtype=np.int64)
    full = np.maximum.accumulate(np.maximum(full[:, 1:], registered[:, None]), axis=1)
    grows = np.diff(np.concatenate([registered[:, None], full], axis=1), axis=1).T
    ticks, members = np.nonzero((take > 0) | (grows > 0))
    requests = run.requests
    owned_of, blocks = kv._owned, kv._blocks
    for t, i in zip(ticks.tolist(), members.tolist()):
        request = requests[i]
        owned = owned_of[request.request_id]
        n = int(take[t, i])
        if n:
            kv._take(owned, n)
            blocks[request.request_id] = len(owned)
        kv._register(request, owned, int(full[i, t]))
