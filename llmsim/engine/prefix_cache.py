"""Automatic prefix caching: KV blocks identified by the tokens they hold, shared and reused across requests.

This is vLLM V1's block pool (``vllm/v1/core/block_pool.py`` and ``kv_cache_manager.py``, 0.32), block for
block, because which cached block is evicted first decides later hits and so the schedule:

- Every FULL block of a request has a key (vLLM: a hash of its tokens chained from its parent block), so two
  requests with the same first k blocks of tokens have the same k keys.
- **Lookup** happens only when a request is admitted from the waiting queue (new, or resumed after a
  recompute preemption, when it looks up its whole current sequence, outputs included): the longest run of
  leading keys found in the cache, capped at ``(num_tokens - 1) // block_size`` blocks so that at least one
  token is fed and a token can be sampled.
- **Caching** happens when blocks are allocated for scheduled tokens: the blocks that the request's tokens
  ``min(computed + scheduled, num_tokens)`` fill are registered at once, before their KV is computed, so a
  request admitted later in the same step can already hit them. Blocks are not de-duplicated: two copies of
  the same content computed without a hit are both cached, and a lookup finds the older one.
- **Free queue.** Blocks are reference-counted; a block nobody uses is free but keeps its content. A freed
  block without a key (a partial block) goes to the front of the free queue, a freed cached block to the
  back (each request's blocks tail first), so the queue is always [uncached ...][cached, least recently
  freed first]. New blocks come from the front; taking a cached block evicts its content. A hit on a free
  cached block takes it off the queue, which is why it counts against the free blocks at admission.

llmsim does not see token ids, so a request's block keys come from the workload:

- ``block_keys`` set by the caller (the replay of a scenario's ``prefix_group``/``prefix_len``).
- ``prefix_hashes`` (Mooncake ``hash_ids``): one id per ``hash_block_tokens`` (512) tokens of the prompt.
  llmsim block k (tokens ``[k·bs, (k+1)·bs)``) is shareable when it lies inside the hashed part of the prompt;
  its key chains the previous key with the id of the 512-token block holding its last token.
- ``session_id``: a conversation's next turn starts with the previous turn's prompt and answer, so its first
  ``min(previous prompt + output, prompt) // bs`` blocks have the previous turn's keys.
- every other block gets a key private to its request (its own prompt tail and outputs), which still lets a
  request preempted by recompute find its own blocks again if they were not evicted, as in vLLM.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Optional

from llmsim.engine.kv_cache import KVCacheManager, cdiv
from llmsim.engine.request import Request

MOONCAKE_HASH_BLOCK_TOKENS = 512  # Mooncake trace README: each hash_id covers a 512-token block


class PrefixCachingKVCacheManager(KVCacheManager):
    """A :class:`KVCacheManager` that knows which cached content each block holds (vLLM's BlockPool).

    Blocks are numbered 1 … ``num_gpu_blocks - 1`` (0 is the null block). ``num_free_blocks`` counts every
    block with no user, cached or not, as vLLM's ``get_num_free_blocks`` does.
    """

    def __init__(self, num_gpu_blocks: int, block_size: int, watermark: float = 0.0, num_cpu_blocks: int = 0,
                 hash_block_tokens: int = MOONCAKE_HASH_BLOCK_TOKENS, num_offload_blocks: int = 0) -> None:
        super().__init__(num_gpu_blocks, block_size, watermark, num_cpu_blocks)
        # CPU offload tier (see llmsim.engine.offload): contents evicted from the GPU, least recently used first.
        self.num_offload_blocks = num_offload_blocks
        self._offloaded: OrderedDict[Hashable, None] = OrderedDict()
        self.num_offloaded_blocks = 0  # blocks copied to the CPU tier so far
        self.hash_block_tokens = hash_block_tokens
        self._ref = [0] * num_gpu_blocks  # users of each block
        self._key: list[Optional[Hashable]] = [None] * num_gpu_blocks  # the content a cached block holds
        # The free queue, front to back: uncached blocks (their order does not matter: taken from the end of
        # this list), then cached blocks in eviction order.
        self._plain_free: list[int] = list(range(num_gpu_blocks - 1, 0, -1))
        self._cached_free: OrderedDict[int, None] = OrderedDict()
        self._cache: dict[Hashable, dict[int, None]] = {}  # key → the blocks holding it, oldest first
        self._owned: dict[str, list[int]] = {}  # request id → its blocks in order
        self._num_cached: dict[str, int] = {}  # request id → its leading blocks already registered in the cache
        self._session_keys: dict[object, tuple[list, int]] = {}  # session → (keys, tokens) of its latest turn
        self.num_evicted_blocks = 0  # cached contents dropped to reuse their block
        # Speculative decoding: KV slots the scheduler adds to every allocation for the drafter (vLLM's
        # num_lookahead_tokens). They hold no token yet, so blocks they fill are not registered.
        self.num_lookahead_tokens = 0

    # -- block keys -----------------------------------------------------------------------------
    def keys_of(self, request: Request) -> list:
        """The request's block keys (computed once, at its first lookup)."""
        if request.block_keys is None:
            request.block_keys = self._make_keys(request)
        return request.block_keys

    def _make_keys(self, request: Request) -> list:
        bs = self.block_size
        keys: list = []
        if request.prefix_hashes:
            hashes = request.prefix_hashes
            shared = min(len(hashes) * self.hash_block_tokens, request.prompt_tokens) // bs
            key: Hashable = 0
            for k in range(shared):
                key = hash((key, int(hashes[((k + 1) * bs - 1) // self.hash_block_tokens]), k))
                keys.append(key)
        elif request.session_id is not None and request.session_id in self._session_keys:
            previous_keys, previous_tokens = self._session_keys[request.session_id]
            keys.extend(previous_keys[: min(previous_tokens, request.prompt_tokens) // bs])
        rid = request.request_id
        keys.extend((-1, rid, k) for k in range(len(keys), cdiv(request.max_total_tokens, bs)))
        if request.session_id is not None:
            self._session_keys[request.session_id] = (keys, request.max_total_tokens)
        return keys

    # -- queries --------------------------------------------------------------------------------
    def match_prefix(self, request: Request) -> int:
        """Leading blocks of ``request`` found in the cache; at most ``(num_tokens - 1) // block_size``."""
        if request.request_id in self._owned or request.num_computed_tokens:
            return 0
        keys = self.keys_of(request)
        limit = min((request.num_tokens - 1) // self.block_size, len(keys))
        cache = self._cache
        hits = 0
        while hits < limit and keys[hits] in cache:
            hits += 1
        return hits

    # -- CPU offload tier -------------------------------------------------------------------------
    def _offload(self, key: Hashable) -> None:
        """The last GPU copy of ``key`` is being reused: keep its content in the CPU tier (LRU)."""
        offloaded = self._offloaded
        if key in offloaded:
            offloaded.move_to_end(key)
            return
        offloaded[key] = None
        self.num_offloaded_blocks += 1
        if len(offloaded) > self.num_offload_blocks:
            offloaded.popitem(last=False)

    def match_offloaded(self, request: Request, num_gpu_hits: int) -> int:
        """Blocks after the GPU hit that the CPU tier holds (to be loaded), within the same hit cap."""
        offloaded = self._offloaded
        if not offloaded:
            return 0
        keys = self.keys_of(request)
        limit = min((request.num_tokens - 1) // self.block_size, len(keys))
        k = num_gpu_hits
        while k < limit and keys[k] in offloaded:
            offloaded.move_to_end(keys[k])
            k += 1
        return k - num_gpu_hits

    def _hit_blocks(self, request: Request, num_cached_blocks: int) -> list[int]:
        """The blocks a hit of ``num_cached_blocks`` takes: the oldest copy of each key."""
        cache = self._cache
        return [next(iter(cache[key])) for key in self.keys_of(request)[:num_cached_blocks]]

    def blocks_to_admit(self, request: Request, num_tokens: int, num_cached_blocks: int = 0) -> int:
        # A hit on a block nobody uses takes it off the free queue, so it costs a free block too.
        ref = self._ref
        touched = sum(1 for b in self._hit_blocks(request, num_cached_blocks) if ref[b] == 0)
        held = len(self._owned.get(request.request_id, ()))
        return cdiv(num_tokens, self.block_size) - held - num_cached_blocks + touched

    # -- mutations ------------------------------------------------------------------------------
    def allocate_slots(self, request: Request, num_new_tokens: int, reserve_blocks: int = 0,
                       num_cached_blocks: int = 0) -> bool:
        """vLLM's ``allocate_slots``: take the hit blocks, add new ones, register the newly full ones."""
        rid = request.request_id
        owned = self._owned.get(rid)
        held = len(owned) if owned else 0
        bs = self.block_size
        computed = request.num_computed_tokens + num_cached_blocks * bs
        needed = max(0, cdiv(computed + num_new_tokens, bs) - held - num_cached_blocks)
        ref = self._ref
        hit_blocks = self._hit_blocks(request, num_cached_blocks) if num_cached_blocks else ()
        touched = sum(1 for b in hit_blocks if ref[b] == 0)
        if needed + touched + reserve_blocks > self.num_free_blocks:
            return False
        if owned is None:
            owned = self._owned[rid] = []
            self._num_cached[rid] = num_cached_blocks
        for b in hit_blocks:
            if ref[b] == 0:
                del self._cached_free[b]
                self.num_free_blocks -= 1
            ref[b] += 1
            owned.append(b)
        self._take(owned, needed)
        self._blocks[rid] = len(owned)
        self._register(request, owned, min(computed + num_new_tokens - self.num_lookahead_tokens,
                                           request.num_tokens) // bs)
        return True

    def _take(self, owned: list, count: int) -> None:
        """Hand out ``count`` blocks from the front of the free queue, evicting cached contents as needed."""
        ref, plain, cached = self._ref, self._plain_free, self._cached_free
        for _ in range(count):
            if plain:
                b = plain.pop()
            else:
                b, _ = cached.popitem(last=False)
                self._evict(b)
            ref[b] = 1
            owned.append(b)
        self.num_free_blocks -= count

    def _evict(self, block: int) -> None:
        key = self._key[block]
        copies = self._cache[key]
        del copies[block]
        if not copies:
            del self._cache[key]
            if self.num_offload_blocks:
                self._offload(key)
        self._key[block] = None
        self.num_evicted_blocks += 1

    def _register(self, request: Request, owned: list, num_full: int) -> None:
        """Put the request's blocks up to ``num_full`` in the cache (vLLM's ``cache_full_blocks``)."""
        rid = request.request_id
        start = self._num_cached.get(rid, 0)
        if num_full <= start:
            return
        keys = self.keys_of(request)
        key_of, cache = self._key, self._cache
        for k in range(start, num_full):
            b = owned[k]
            key = keys[k]
            key_of[b] = key
            copies = cache.get(key)
            if copies is None:
                cache[key] = {b: None}
            else:
                copies[b] = None
        self._num_cached[rid] = num_full

    def cache_full_blocks(self, request: Request, num_tokens: Optional[int] = None) -> None:
        """Register the blocks that the request's first ``num_tokens`` tokens fill (default: its computed
        tokens that are known; a catch-up for any allocation path that did not register them)."""
        owned = self._owned.get(request.request_id)
        if owned:
            if num_tokens is None:
                num_tokens = min(request.num_computed_tokens, request.num_tokens)
            self._register(request, owned, min(num_tokens, len(owned) * self.block_size) // self.block_size)

    def _free_gpu(self, request: Request) -> int:
        rid = request.request_id
        owned = self._owned.pop(rid, None)
        self._blocks.pop(rid, None)
        self._num_cached.pop(rid, None)
        if not owned:
            return 0
        return self._release(reversed(owned))  # tail first: a prefix is evicted after the blocks that extend it

    def _release(self, blocks) -> int:
        """vLLM's ``free_blocks``: a block nobody else holds goes back to the free queue, at its front when it has
        no content (reused first), at its back when it is cached; a block still shared stays in use."""
        ref, key_of = self._ref, self._key
        freed = 0
        for b in blocks:
            ref[b] -= 1
            if ref[b] == 0:
                if key_of[b] is None:
                    self._plain_free.append(b)
                else:
                    self._cached_free[b] = None
                freed += 1
        self.num_free_blocks += freed
        return freed

    def take_blocks(self, request: Request, num_blocks: int) -> bool:
        if num_blocks > self.num_free_blocks:
            return False
        owned = self._owned.setdefault(request.request_id, [])
        self._num_cached.setdefault(request.request_id, 0)
        self._take(owned, num_blocks)
        self._blocks[request.request_id] = len(owned)
        return True

    # -- checks ---------------------------------------------------------------------------------
    def num_cached_blocks(self) -> int:
        """Blocks currently holding reusable content (in use or in the free queue)."""
        return sum(len(copies) for copies in self._cache.values())

    def check_consistency(self) -> None:
        """Assert the pool's counts agree (used by tests)."""
        free = set(self._plain_free) | set(self._cached_free)
        assert len(free) == len(self._plain_free) + len(self._cached_free) == self.num_free_blocks
        assert all(self._ref[b] == 0 for b in free)
        assert all(self._key[b] is None for b in self._plain_free)
        assert all(self._key[b] is not None for b in self._cached_free)
        used = sum(1 for b in range(1, self.num_gpu_blocks) if self._ref[b] > 0)
        assert used + self.num_free_blocks == self.num_usable_blocks
        users: dict[int, int] = {}
        for owned in self._owned.values():
            for b in owned:
                users[b] = users.get(b, 0) + 1
        assert all(self._ref[b] == n for b, n in users.items())
