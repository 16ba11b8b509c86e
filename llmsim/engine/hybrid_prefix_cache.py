"""Prefix caching with hybrid KV memory: vLLM 0.32's ``HybridKVCacheCoordinator`` over one block pool.

A model with full-attention and sliding-window layers (see :mod:`llmsim.engine.hybrid_kv`) keeps one block table
per KV cache group, all drawing blocks from one pool whose free queue and eviction order are those of
:mod:`llmsim.engine.prefix_cache`. A block's cached content is keyed by (block key, group). On top of both:

- **Lookup** (``find_longest_cache_hit``, one full-attention and one sliding-window spec): the full-attention
  groups find the longest run of leading blocks cached in all of them (capped at ``(T - 1) // bs``); within that
  length the sliding groups look from the right for ``ceil((W - 1) / bs)`` consecutive blocks cached in all of
  them (or a shorter run starting at block 0). The hit ends there; the full groups are cut to it. Sliding-group
  hit blocks before the run are null. When the full groups found more than the hit, that longer length is the
  request's *shared-prefix boundary*.
- **What a sliding group caches** (``prefix_cache_retention_interval`` 0, vLLM's default): only the
  ``ceil((W - 1) / bs)`` blocks ending at the request's replay boundary (its last full prompt block before token
  ``P - 1``) and, if set, at its shared-prefix boundary — the blocks a later hit could end on. Its other blocks
  are never cached, so they go to the front of the free queue when freed. Full groups cache every full block.
- **Admission with a hit**: per group, the blocks before the window of the hit are not taken (null); the full
  check and the allocation charge, besides new blocks, each taken hit block that was free.
- Out-of-window blocks leave sliding groups before each allocation (processed-token basis), a freed request
  returns group by group, each tail first.
"""

from __future__ import annotations

from typing import Optional, Sequence

from llmsim.engine.hybrid_kv import WholeBlockRefusals, sliding_admission_cap
from llmsim.engine.kv_cache import cdiv
from llmsim.engine.prefix_cache import PrefixCachingKVCacheManager
from llmsim.engine.request import Request
from llmsim.errors import ConfigError


class HybridPrefixCachingKVCacheManager(WholeBlockRefusals, PrefixCachingKVCacheManager):
    """Block tables per KV cache group with prefix caching (see the module docstring).

    ``groups[i]`` is group i's sliding window, or None for full attention; every sliding group has the same
    window (vLLM's lookup handles one full-attention spec plus one other). Admission caps as in
    :class:`llmsim.engine.hybrid_kv.HybridKVCacheManager`.
    """

    def __init__(self, num_gpu_blocks: int, block_size: int, groups: Sequence[Optional[int]],
                 watermark: float = 0.0, max_in_flight_tokens: Optional[int] = None,
                 max_model_len: Optional[int] = None) -> None:
        super().__init__(num_gpu_blocks, block_size, watermark)
        windows = {w for w in groups if w is not None}
        if len(windows) != 1 or None not in groups:
            raise ConfigError("prefix caching with hybrid KV memory is modelled for full-attention layers plus "
                              "sliding-window layers of one window size")
        self.groups = list(groups)
        self.window = windows.pop()
        self.full_ids = [g for g, w in enumerate(self.groups) if w is None]
        self.sliding_ids = [g for g, w in enumerate(self.groups) if w is not None]
        self.need = cdiv(self.window - 1, block_size)  # consecutive blocks a sliding-group hit ends on
        self.admission_caps: list[Optional[int]] = [
            None if w is None or max_in_flight_tokens is None
            else sliding_admission_cap(w, max_in_flight_tokens, max_model_len, block_size)
            for w in self.groups]
        self._tables: dict[str, list[list[int]]] = {}  # request id → block ids per group (0: the null block)
        self._gcached: dict[str, list[int]] = {}  # request id → leading block slots registered, per group
        self._boundary: dict[str, int] = {}  # request id → shared-prefix boundary of its last lookup (tokens)
        self._lookup: tuple[str, int, list[list[int]]] = ("", 0, [])  # the last lookup: id, hit blocks, blocks

    # -- helpers ----------------------------------------------------------------------------------
    def _skipped_blocks(self, window: Optional[int], tokens: int) -> int:
        return 0 if window is None else max(0, tokens - window + 1) // self.block_size

    def _first(self, key, group: int) -> int:
        return next(iter(self._cache[(key, group)]))

    def _hit(self, request: Request, num_cached_blocks: int) -> list[list[int]]:
        rid, hit, blocks = self._lookup
        if not num_cached_blocks:
            return [[] for _ in self.groups]
        assert rid == request.request_id and hit == num_cached_blocks, "allocation without its lookup"
        return blocks

    # -- lookup -----------------------------------------------------------------------------------
    def match_prefix(self, request: Request) -> int:
        rid = request.request_id
        if rid in self._tables or request.num_computed_tokens:
            return 0
        keys = self.keys_of(request)
        cache = self._cache
        limit = min((request.num_tokens - 1) // self.block_size, len(keys))
        full = 0
        while full < limit and all((keys[full], g) in cache for g in self.full_ids):
            full += 1
        # Sliding groups: from the right, the first run of `need` blocks cached in every sliding group.
        run = 0
        hit = None
        for i in range(full - 1, -1, -1):
            if all((keys[i], g) in cache for g in self.sliding_ids):
                run += 1
                if run >= self.need:
                    hit, start = i + self.need, i
                    break
            else:
                run = 0
        if hit is None:
            hit, start = run, 0  # a shorter run reaching block 0 is a hit too
        blocks: list[list[int]] = []
        for g, window in enumerate(self.groups):
            if window is None:
                blocks.append([self._first(keys[k], g) for k in range(hit)])
            else:
                blocks.append([0] * start + [self._first(keys[k], g) for k in range(start, hit)])
        self._boundary[rid] = full * self.block_size if full > hit else 0
        self._lookup = (rid, hit, blocks)
        return hit

    # -- admission and allocation -------------------------------------------------------------------
    def _blocks_needed(self, request: Request, num_tokens: int, hit_blocks: list[list[int]], hit_tokens: int,
                       capped: bool) -> int:
        """vLLM's ``get_num_blocks_to_allocate`` summed over the groups."""
        tables = self._tables.get(request.request_id)
        running = request.request_id in self._gcached
        ref = self._ref
        total = 0
        for g, window in enumerate(self.groups):
            required = cdiv(num_tokens, self.block_size)
            cap = self.admission_caps[g]
            if capped and cap is not None:
                required = min(required, cap)
            held = len(tables[g]) if tables else 0
            if running:
                total += max(required - held, 0)
                continue
            skipped = self._skipped_blocks(window, hit_tokens + request.num_computed_tokens)
            total += max(required - max(skipped, len(hit_blocks[g]) + held), 0)
            total += sum(1 for b in hit_blocks[g][max(0, skipped - held):] if b and ref[b] == 0)
        return total

    def blocks_to_admit(self, request: Request, num_tokens: int, num_cached_blocks: int = 0) -> int:
        hit_blocks = self._hit(request, num_cached_blocks)
        return self._blocks_needed(request, num_tokens, hit_blocks, num_cached_blocks * self.block_size, True)

    def _remove_skipped(self, request: Request, processed: int) -> None:
        tables = self._tables.get(request.request_id)
        if not tables:
            return
        for g in self.sliding_ids:
            table = tables[g]
            skipped = min(self._skipped_blocks(self.groups[g], processed), len(table))
            freed = []
            for i in range(skipped - 1, -1, -1):
                if table[i] == 0:
                    break
                freed.append(table[i])
                table[i] = 0
            if freed:
                self._release(freed)
                self._blocks[request.request_id] -= len(freed)

    def _release(self, blocks) -> int:
        """The base class's release, skipping the null block (0) that stands for blocks outside a sliding window."""
        return super()._release(b for b in blocks if b)

    def allocate_slots(self, request: Request, num_new_tokens: int, reserve_blocks: int = 0,
                       num_cached_blocks: int = 0) -> bool:
        rid = request.request_id
        bs = self.block_size
        hit_blocks = self._hit(request, num_cached_blocks)
        hit_tokens = num_cached_blocks * bs
        computed = request.num_computed_tokens + hit_tokens
        self._remove_skipped(request, max(0, computed - request.num_in_flight_tokens))
        num_tokens = computed + num_new_tokens
        if self._blocks_needed(request, num_tokens, hit_blocks, hit_tokens, False) + reserve_blocks \
                > self.num_free_blocks:
            return False
        tables = self._tables.get(rid)
        if tables is None:
            tables = self._tables[rid] = [[] for _ in self.groups]
        if num_cached_blocks and rid not in self._gcached:
            ref, cached_free = self._ref, self._cached_free
            for g, window in enumerate(self.groups):
                skipped = self._skipped_blocks(window, computed)
                kept = hit_blocks[g][skipped:]
                for b in kept:
                    if b:
                        if ref[b] == 0:
                            del cached_free[b]
                            self.num_free_blocks -= 1
                        ref[b] += 1
                tables[g] = [0] * skipped + list(kept)
            self._gcached[rid] = [len(t) for t in tables]
        required = cdiv(num_tokens, bs)
        for table in tables:
            if required > len(table):
                self._take(table, required - len(table))
        self._blocks[rid] = sum(1 for t in tables for b in t if b)
        self.cache_full_blocks(request, min(num_tokens, request.num_tokens))
        return True

    def cache_full_blocks(self, request: Request, num_tokens: Optional[int] = None) -> None:
        """vLLM's ``cache_blocks``: register each group's newly full blocks (a sliding group only those a hit
        could end on: see the module docstring)."""
        rid = request.request_id
        tables = self._tables.get(rid)
        if not tables:
            return
        bs = self.block_size
        if num_tokens is None:
            num_tokens = min(request.num_computed_tokens, request.num_tokens)
        num_full = num_tokens // bs
        counts = self._gcached.get(rid)
        start = counts[0] if counts else 0
        if start >= num_full:
            return
        keys = self.keys_of(request)
        boundaries = [request.prompt_tokens - 1]
        if self._boundary.get(rid):
            boundaries.append(self._boundary[rid])
        sliding_mask = [False] * (num_full - start)
        for boundary in boundaries:
            end = boundary // bs
            for j in range(max(start, end - self.need), min(num_full, end)):
                sliding_mask[j - start] = True
        key_of, cache = self._key, self._cache
        for g, window in enumerate(self.groups):
            table = tables[g]
            for k in range(start, num_full):
                b = table[k]
                if not b or (window is not None and not sliding_mask[k - start]):
                    continue
                key = (keys[k], g)
                key_of[b] = key
                copies = cache.get(key)
                if copies is None:
                    cache[key] = {b: None}
                else:
                    copies[b] = None
        self._gcached[rid] = [num_full] * len(self.groups)

    def _free_gpu(self, request: Request) -> int:
        rid = request.request_id
        tables = self._tables.pop(rid, None)
        self._gcached.pop(rid, None)
        self._blocks.pop(rid, None)
        if not tables:
            return 0
        return sum(self._release(reversed(table)) for table in tables)

    def check_consistency(self) -> None:
        free = set(self._plain_free) | set(self._cached_free)
        assert len(free) == len(self._plain_free) + len(self._cached_free) == self.num_free_blocks
        users: dict[int, int] = {}
        for tables in self._tables.values():
            for table in tables:
                for b in table:
                    if b:
                        users[b] = users.get(b, 0) + 1
        assert all(self._ref[b] == n for b, n in users.items())
        assert all(self._ref[b] == 0 for b in free)
        assert len(users) + self.num_free_blocks == self.num_usable_blocks
