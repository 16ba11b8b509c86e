"""Automatic prefix caching: KV blocks identified by the tokens they hold, shared and reused across requests.

vLLM's automatic prefix caching gives every FULL block a hash of its tokens chained from its parent block, so
two requests with the same first k blocks of tokens produce the same k hashes. A new request first looks up
its longest run of leading hashes in the cache; those blocks are not computed again (its
``num_computed_tokens`` starts at the hit length, capped at ``num_tokens - 1`` so that the last prompt token
is always fed and a token can be sampled). Blocks are reference-counted: a block used by no request stays
cached in an LRU free queue and counts as free; allocating a new block takes an uncached free block first,
otherwise evicts the least recently freed cached block. A request frees its blocks tail first, so a prefix
outlives its suffixes.

llmsim does not see token ids, so a request's block identities ("keys") come from the workload:

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
from typing import Hashable

from llmsim.engine.kv_cache import KVCacheManager, cdiv
from llmsim.engine.request import Request

MOONCAKE_HASH_BLOCK_TOKENS = 512  # Mooncake trace README: each hash_id covers a 512-token block


class PrefixCachingKVCacheManager(KVCacheManager):
    """A :class:`KVCacheManager` that tracks which cached content each block holds (vLLM's BlockPool)."""

    def __init__(self, num_gpu_blocks: int, block_size: int, watermark: float = 0.0, num_cpu_blocks: int = 0,
                 hash_block_tokens: int = MOONCAKE_HASH_BLOCK_TOKENS) -> None:
        super().__init__(num_gpu_blocks, block_size, watermark, num_cpu_blocks)
        self.hash_block_tokens = hash_block_tokens
        self._refs: dict[Hashable, int] = {}  # every cached block key → number of requests using it
        self._lru: OrderedDict[Hashable, None] = OrderedDict()  # cached blocks nobody uses, evicted from the front
        self._num_plain_free = self.num_usable_blocks  # free blocks that hold nothing reusable
        self._owned: dict[str, list] = {}  # request id → per block: its key if registered in the cache, else None
        self._registered: dict[str, int] = {}  # request id → blocks already considered for registration
        self._session_keys: dict[object, tuple[list, int]] = {}  # session → (keys, tokens) of its latest turn

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
        limit = (request.num_tokens - 1) // self.block_size
        refs = self._refs
        hits = 0
        while hits < limit and keys[hits] in refs:
            hits += 1
        return hits

    def blocks_to_admit(self, request: Request, num_tokens: int, num_cached_blocks: int = 0) -> int:
        # A hit on a block nobody uses takes it off the free queue, so it costs a free block too.
        touched = sum(1 for key in self.keys_of(request)[:num_cached_blocks] if self._refs[key] == 0)
        held = len(self._owned.get(request.request_id, ()))
        return cdiv(num_tokens, self.block_size) - held - num_cached_blocks + touched

    # -- mutations ------------------------------------------------------------------------------
    def allocate_slots(self, request: Request, num_new_tokens: int, reserve_blocks: int = 0,
                       num_cached_blocks: int = 0) -> bool:
        rid = request.request_id
        owned = self._owned.get(rid)
        held = len(owned) if owned else 0
        computed = request.num_computed_tokens + num_cached_blocks * self.block_size
        needed = max(0, cdiv(computed + num_new_tokens, self.block_size) - held - num_cached_blocks)
        hit_keys = self.keys_of(request)[:num_cached_blocks] if num_cached_blocks else ()
        touched = sum(1 for key in hit_keys if self._refs[key] == 0)
        if needed + touched + reserve_blocks > self.num_free_blocks:
            return False
        if owned is None:
            owned = self._owned[rid] = []
        for key in hit_keys:
            count = self._refs[key]
            if count == 0:
                del self._lru[key]
                self.num_free_blocks -= 1
            self._refs[key] = count + 1
            owned.append(key)
        if num_cached_blocks:
            self._registered[rid] = num_cached_blocks
        self._take(owned, needed)
        self._blocks[rid] = len(owned)
        return True

    def _take(self, owned: list, count: int) -> None:
        """Hand out ``count`` free blocks: uncached ones first, then evict least recently freed cached ones."""
        for _ in range(count):
            if self._num_plain_free:
                self._num_plain_free -= 1
            else:
                key, _ = self._lru.popitem(last=False)
                del self._refs[key]
            owned.append(None)
        self.num_free_blocks -= count

    def cache_full_blocks(self, request: Request) -> None:
        """Register the blocks that the request's computed tokens have filled since the last call."""
        rid = request.request_id
        owned = self._owned.get(rid)
        if not owned:
            return
        full = min(request.num_computed_tokens // self.block_size, len(owned))
        start = self._registered.get(rid, 0)
        if full <= start:
            return
        keys = self.keys_of(request)
        refs = self._refs
        for k in range(start, full):
            key = keys[k]
            # The same content computed twice at once stays private in the later copy (vLLM keeps one).
            if owned[k] is None and key not in refs:
                refs[key] = 1
                owned[k] = key
        self._registered[rid] = full

    def _free_gpu(self, request: Request) -> int:
        rid = request.request_id
        owned = self._owned.pop(rid, None)
        self._blocks.pop(rid, None)
        self._registered.pop(rid, None)
        if not owned:
            return 0
        refs, lru = self._refs, self._lru
        freed = 0
        for key in reversed(owned):  # tail first: a prefix is evicted after the blocks that extend it
            if key is None:
                self._num_plain_free += 1
                freed += 1
                continue
            count = refs[key] - 1
            refs[key] = count
            if count == 0:  # a block still shared with another request stays in use
                lru[key] = None
                freed += 1
        self.num_free_blocks += freed
        return freed

    def take_blocks(self, request: Request, num_blocks: int) -> bool:
        if num_blocks > self.num_free_blocks:
            return False
        owned = self._owned.setdefault(request.request_id, [])
        self._take(owned, num_blocks)
        self._blocks[request.request_id] = len(owned)
        return True

    # -- checks ---------------------------------------------------------------------------------
    def num_cached_blocks(self) -> int:
        """Blocks currently holding reusable content (in use or in the LRU free queue)."""
        return len(self._refs)

    def check_consistency(self) -> None:
        """Assert the pool's counts agree (used by tests)."""
        in_use = sum(v.count(None) for v in self._owned.values()) + sum(1 for r in self._refs.values() if r > 0)
        assert in_use + self._num_plain_free + len(self._lru) == self.num_usable_blocks
        assert self.num_free_blocks == self._num_plain_free + len(self._lru)
        assert all(self._refs[k] == 0 for k in self._lru)
