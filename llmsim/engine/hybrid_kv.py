"""Hybrid KV memory: full-attention and sliding-window layers sharing one block pool (vLLM's hybrid allocator).

Models such as gpt-oss, Gemma 2/3 and Mistral's sliding-window variants mix full-attention layers with
sliding-window layers that only attend to the last ``W`` tokens. vLLM V1 (``kv_cache_utils.py``,
``single_type_kv_cache_manager.py``, ``kv_cache_coordinator.py``) serves them with one block pool:

- **Groups.** Layers are split by attention type into *KV cache groups* of equal size ``g`` (the smallest
  type's layer count; a larger type is cut into several groups). One block id is one page of ``g`` layers, so
  a pool sized for ``N`` blocks of the whole model holds ``N × num_layers / g`` group blocks.
- **Full-attention group:** a request holds ``ceil(tokens / bs)`` blocks, as without hybrid memory.
- **Sliding-window group:** blocks are allocated for every token like a full group, but before each
  allocation the blocks wholly before the window are released (replaced by the null block):
  with ``c`` computed tokens, the first ``(c - W + 1) // bs`` blocks. So a long prefill holds its whole prompt
  in every group during the step that computes it, and the sliding groups shrink to about ``W / bs`` blocks
  from the next step on.
- **Processed tokens.** vLLM frees on the processed-token basis: ``c`` is the computed tokens less those
  still in flight, so with the async loop a request's previous-step tokens keep their blocks one step longer.
- **Admission.** The full-sequence check charges every group ``ceil(T / bs)`` blocks, but a sliding group at
  most ``ceil((W - 1 + in-flight tokens) / bs) + 1`` (vLLM's ``max_admission_blocks_per_request``; in-flight
  tokens are ``max_num_batched_tokens``, twice that with the async loop).
- An allocation succeeds only if every group gets its blocks from the shared pool; finishing or
  preemption frees every group's blocks.

Multi-head latent attention (DeepSeek MLA) needs no allocator change: it is one full-attention group whose
per-token size is the latent's, which the memory model sizes (``ModelSpec.kv_bytes_per_token``).

This manager counts blocks; with prefix caching a hybrid model uses
:class:`llmsim.engine.hybrid_prefix_cache.HybridPrefixCachingKVCacheManager`, which tracks block identities.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

from llmsim.engine.kv_cache import KVCacheManager, cdiv
from llmsim.engine.request import Request
from llmsim.errors import ConfigError

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"
# Names model configs use for the two kinds (Hugging Face's are the first of each).
_KINDS = {"full_attention": FULL_ATTENTION, "full": FULL_ATTENTION, "global": FULL_ATTENTION,
          "attention": FULL_ATTENTION, "sliding_attention": SLIDING_ATTENTION, "sliding": SLIDING_ATTENTION,
          "sliding_window": SLIDING_ATTENTION, "local": SLIDING_ATTENTION}


def is_sliding(layer_types: Optional[Sequence[str]]) -> bool:
    """True if any layer is a sliding-window layer (the model needs the hybrid allocator)."""
    return any(_KINDS.get(t) == SLIDING_ATTENTION for t in (layer_types or ()))


def kv_cache_groups(layer_types: Sequence[str], sliding_window: Optional[int]) -> tuple[list[Optional[int]], int]:
    """vLLM's grouping of layers: (the sliding window of each group, None for full attention; layers per group).

    ``layer_types`` uses Hugging Face's names (``full_attention``, ``sliding_attention``). As in vLLM's
    ``_get_kv_cache_groups_uniform_page_size``: the group size is the smallest type's layer count, or the largest
    one when that is under 1.5 times the smallest (12 sliding + 13 full layers: two groups of 13, one padded);
    each type fills ``ceil(count / size)`` groups, and the types come in the order of their first layer.
    """
    unknown = sorted(set(layer_types) - set(_KINDS))
    if unknown:
        raise ConfigError(f"model layer_types: attention type {unknown[0]!r} is not modelled; expected one of "
                          f"{', '.join(_KINDS)}")
    counts = Counter(_KINDS[t] for t in layer_types)  # insertion order: the first layer of each kind decides
    if counts[SLIDING_ATTENTION] and not sliding_window:
        raise ConfigError("model sliding_window: sliding-attention layers need a window size")
    smallest, largest = min(counts.values()), max(counts.values())
    group_size = largest if largest < smallest * 1.5 else smallest
    groups: list[Optional[int]] = []
    for kind, count in counts.items():
        window = sliding_window if kind == SLIDING_ATTENTION else None
        groups += [window] * cdiv(count, group_size)
    return groups, group_size


def sliding_admission_cap(window: int, max_in_flight_tokens: int, max_model_len: Optional[int],
                          block_size: int) -> int:
    """vLLM's ``SlidingWindowSpec.max_admission_blocks_per_request``: the most blocks a sliding group holds for one
    request: the window (less its last token) plus every token in flight, one more for a window that starts
    mid-block."""
    return cdiv(min(window - 1 + max_in_flight_tokens, max_model_len or 1 << 62), block_size) + 1


class WholeBlockRefusals:
    """What neither hybrid manager (with or without prefix caching) models: blocks moved as a whole count."""

    def swap_out(self, request: Request) -> int:
        raise ConfigError("config field scheduler.preemption: swap is not modelled with a hybrid (sliding-window) "
                          "KV cache; use recompute")

    def take_blocks(self, request: Request, num_blocks: int) -> bool:
        raise ConfigError("a hybrid (sliding-window) KV cache cannot take blocks handed over whole (KV transfer, "
                          "swap-in); use a full-attention model or colocated replicas")


class HybridKVCacheManager(WholeBlockRefusals, KVCacheManager):
    """Block accounting of several KV cache groups over one pool (see the module docstring).

    ``num_gpu_blocks`` counts group blocks (pages of one group's layers), block 0 reserved as usual.
    ``groups[i]`` is group i's sliding window in tokens, or None for full attention.
    ``max_in_flight_tokens`` (vLLM: concurrent batches × ``max_num_batched_tokens``) and ``max_model_len`` set
    the sliding groups' admission cap; None leaves it off.
    """

    def __init__(self, num_gpu_blocks: int, block_size: int, groups: Sequence[Optional[int]],
                 watermark: float = 0.0, max_in_flight_tokens: Optional[int] = None,
                 max_model_len: Optional[int] = None) -> None:
        super().__init__(num_gpu_blocks, block_size, watermark)
        if not groups:
            raise ValueError("a hybrid KV cache needs at least one group")
        self.groups = list(groups)
        # vLLM's SlidingWindowSpec.max_admission_blocks_per_request: a sliding group never holds more than the
        # window (less its last token) plus every token in flight, one more block for a window that starts
        # mid-block; the full-sequence admission check charges a sliding group at most that.
        self.admission_caps: list[Optional[int]] = [
            None if w is None or max_in_flight_tokens is None
            else sliding_admission_cap(w, max_in_flight_tokens, max_model_len, block_size)
            for w in self.groups]
        self._group_blocks: dict[str, list[int]] = {}  # request id → real (non-null) blocks held per group
        self._group_len: dict[str, int] = {}  # request id → block slots per group (null ones included)

    # -- per-group arithmetic --------------------------------------------------------------------
    def _releasable(self, request: Request) -> list[int]:
        """Per group, held blocks now wholly before the window, not yet released: with ``p`` processed tokens
        (computed and no longer in flight: vLLM frees on the processed-token basis, so with the async loop the
        previous step's tokens still count as unprocessed), the first ``(p - W + 1) // bs`` block slots of a
        sliding group."""
        rid = request.request_id
        held = self._group_blocks.get(rid)
        if not held:
            return [0] * len(self.groups)
        length = self._group_len[rid]
        processed = request.num_computed_tokens - request.num_in_flight_tokens
        out = []
        for window, real in zip(self.groups, held):
            if window is None:
                out.append(0)
                continue
            skipped = min(max(0, (processed - window + 1) // self.block_size), length)
            out.append(max(0, skipped - (length - real)))  # length - real slots are already null
        return out

    def _new_slots(self, request: Request, num_tokens: int) -> int:
        """Block slots each group adds to hold ``num_tokens`` tokens."""
        return max(0, cdiv(num_tokens, self.block_size) - self._group_len.get(request.request_id, 0))

    # -- the KVCacheManager interface ------------------------------------------------------------
    def num_blocks_of(self, request: Request) -> int:
        return sum(self._group_blocks.get(request.request_id, ()))

    def num_new_blocks_needed(self, request: Request, num_new_tokens: int) -> int:
        new = self._new_slots(request, request.num_computed_tokens + num_new_tokens) * len(self.groups)
        return max(0, new - sum(self._releasable(request)))

    def blocks_to_admit(self, request: Request, num_tokens: int, num_cached_blocks: int = 0) -> int:
        """vLLM's full-sequence admission check: every group's blocks for ``num_tokens`` tokens, a sliding group's
        capped by its admission cap; nothing is credited for blocks about to leave the window (the check runs
        before they are released)."""
        need = cdiv(num_tokens, self.block_size)
        held = self._group_len.get(request.request_id, 0)
        total = 0
        for cap in self.admission_caps:
            total += max(0, (need if cap is None else min(need, cap)) - held)
        return total

    def allocate_slots(self, request: Request, num_new_tokens: int, reserve_blocks: int = 0,
                       num_cached_blocks: int = 0) -> bool:
        if num_cached_blocks:
            raise ValueError("the hybrid KV cache does not serve prefix-cache hits")
        rid = request.request_id
        # vLLM releases the blocks that left the window first, whether or not the allocation then succeeds.
        released = self._releasable(request)
        if any(released):
            held = self._group_blocks[rid]
            for i, n in enumerate(released):
                held[i] -= n
            self.num_free_blocks += sum(released)
            self._blocks[rid] = sum(held)
        new = self._new_slots(request, request.num_computed_tokens + num_new_tokens)
        if new * len(self.groups) + reserve_blocks > self.num_free_blocks:
            return False
        if new:
            held = self._group_blocks.setdefault(rid, [0] * len(self.groups))
            for i in range(len(held)):
                held[i] += new
            self._group_len[rid] = self._group_len.get(rid, 0) + new
            self.num_free_blocks -= new * len(self.groups)
            self._blocks[rid] = sum(held)
        return True

    def _free_gpu(self, request: Request) -> int:
        rid = request.request_id
        held = sum(self._group_blocks.pop(rid, ()))
        self._group_len.pop(rid, None)
        self._blocks.pop(rid, None)
        self.num_free_blocks += held
        return held

