"""Prefix caching in the aggregate engine, on a workload that shares no prefix (llmsim.engine_modes).

Every block key is then private to its request, so only one kind of hit is possible: a request preempted by
recompute finding some of its own blocks again when it resumes. Which of them are left depends on which cached
blocks the pool evicted meanwhile, and that depends only on counts, as vLLM's free queue works
(llmsim.engine.prefix_cache): blocks without content (a request's partial last block) are reused first; cached
blocks are evicted in the order they were freed; a request's blocks are freed tail first, so its tail blocks go
first and what survives is a run of its leading blocks. The queue is kept as segments ``[count, owner]`` in
eviction order: the registered blocks of a finished request (``owner`` −1: nobody will look them up again) or of a
preempted one (its index, until it resumes or finishes).

Blocks registered when a request is freed (:meth:`OwnBlockCache._registered`): the full blocks vLLM registered at
the request's last allocation and, in the async loop, at the last update that delivered it a token. A hit takes
the segment's blocks off the queue. What a resume leaves of its segment (a request whose tokens end on a block
boundary keeps its last full block out of the hit, one token being always computed) stays cached as an older copy
of a key the request will register again; a later lookup of that key would take the older copy, wherever it
stands in the queue, so a resume whose lookup reaches such a key gives the run up (``BlockContentsNeeded``).
"""

from __future__ import annotations

from collections import deque

from llmsim.engine.aggregate.rules import BlockContentsNeeded


class OwnBlockCache:
    """The free queue's cached part as counts (module docstring); mixed into the aggregate replica."""

    def _init_own_block_cache(self, enabled: bool) -> None:
        self.prefix_caching = enabled
        self.cached_total = 0  # free blocks that hold cached content
        self.cached_queue: deque[list] = deque()  # [count, owner] in eviction order
        self.own_segment: dict[int, list] = {}  # preempted request → its segment (it may hit it on resuming)
        self.older_copies: dict[int, list] = {}  # request → [(segment, key index)] its resumes left cached

    def _cache_take(self, count: int, free_before: int) -> None:
        """``count`` blocks handed out when ``free_before`` were free: uncached ones first, then the front of the
        cached queue, whose content is evicted."""
        evict = count - (free_before - self.cached_total)
        if evict <= 0:
            return
        self.cached_total -= evict
        queue = self.cached_queue
        while evict:
            segment = queue[0]
            taken = segment[0] if segment[0] < evict else evict
            segment[0] -= taken
            evict -= taken
            if not segment[0]:
                queue.popleft()

    def _registered(self, i: int) -> int:
        """Request ``i``'s leading blocks in the cache as it stands (its computed tokens ``comp``, delivered outputs
        ``out``, tokens in flight ``ph``): vLLM registers at an allocation the full blocks of ``min(computed, known
        tokens)``, and the async update those of ``computed − in flight``. In the async loop the allocation of the
        request's last schedule knew one token fewer than now when the update since delivered one to it."""
        c, known = self.comp[i], self.P[i] + self.out[i]
        if self.depth == 2:
            # (the last update delivered to it exactly when its last token's instant is that update's end)
            delivered_since = 1 if self.out[i] and self.last_tok[i] == self.last_update_end else 0
            allocated = min(c, known - delivered_since)
            updated = c - self.ph[i]
            return (allocated if allocated > updated else updated) // self.bs
        return min(c, known) // self.bs

    def _cache_release(self, i: int, owner: int) -> None:
        """Request ``i``'s blocks go back to the pool (a finish: ``owner`` −1; a preemption: ``owner`` = i)."""
        registered = self._registered(i)
        own = self.own_segment.pop(i, None)
        if own is not None:  # a request that finishes while preempted: nobody will look its blocks up again
            own[1] = -1
        if owner < 0:
            self.older_copies.pop(i, None)  # nor its older copies
        if not registered:
            return
        self.cached_total += registered
        queue = self.cached_queue
        if owner < 0 and queue and queue[-1][1] < 0:
            queue[-1][0] += registered
            return
        segment = [registered, owner]
        queue.append(segment)
        if owner >= 0:
            self.own_segment[i] = segment

    def _own_hits(self, i: int) -> int:
        """Leading blocks a resuming request finds: what is left of its segment, at most ``(tokens − 1) //
        block_size`` (one token is always computed)."""
        segment = self.own_segment.get(i)
        left = segment[0] if segment is not None else 0
        limit = (self.P[i] + self.out[i] - 1) // self.bs
        for copy, key in self.older_copies.get(i, ()):
            if copy[0] and key < limit and key <= left:  # the lookup would reach a key with an older copy
                raise BlockContentsNeeded(f"replica {self.replica_id}: request {i} would hit an older copy")
        return left if left < limit else limit

    def _take_hits(self, i: int, hits: int) -> None:
        """The resuming request takes its hit blocks off the queue (its segment, wherever it stands); what is left
        of the segment stays cached as an older copy of the keys from ``hits`` on (at most one block)."""
        segment = self.own_segment.pop(i, None)
        if segment is None:
            return
        segment[0] -= hits
        self.cached_total -= hits
        if segment[0]:
            self.older_copies.setdefault(i, []).append((segment, hits))
        # an emptied segment stays in the queue until it reaches the front (_cache_take pops it there)
