"""Paged KV-cache memory of one replica.

The GPU memory left for the KV cache is cut into blocks of ``block_size`` tokens (PagedAttention). A request
holds exactly ``ceil(num_computed_tokens / block_size)`` blocks after each step's allocation; blocks return to
the pool when the request finishes or is preempted. As in vLLM, block 0 is a reserved null block that is never
handed out, so ``num_gpu_blocks - 1`` blocks are usable.

This manager counts blocks; it does not track block identities, because without prefix caching only the
counts decide anything (see :mod:`llmsim.engine.prefix_cache` for the hashed, reference-counted variant).
With swap preemption (vLLM V0) a preempted request's blocks move to a bounded CPU swap space instead of being
dropped, and come back when it resumes; the replica charges the PCIe transfer time to the step.
"""

from __future__ import annotations

from typing import Optional

from llmsim.engine.request import Request


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class KVCacheManager:
    """Allocates and frees KV blocks; never lets blocks in use exceed the usable capacity."""

    def __init__(self, num_gpu_blocks: int, block_size: int, watermark: float = 0.0, num_cpu_blocks: int = 0) -> None:
        if num_gpu_blocks < 2:
            raise ValueError("num_gpu_blocks must be at least 2 (block 0 is reserved)")
        self.num_gpu_blocks = num_gpu_blocks
        self.block_size = block_size
        self.num_usable_blocks = num_gpu_blocks - 1
        self.num_free_blocks = self.num_usable_blocks
        # vLLM: int(watermark × num_gpu_blocks) blocks kept free when admitting (see the scheduler).
        self.watermark_blocks = int(watermark * num_gpu_blocks)
        self._blocks: dict[str, int] = {}
        # Swap space (vLLM V0's --swap-space): CPU blocks holding swapped-out requests' KV.
        self.num_cpu_blocks = num_cpu_blocks
        self.num_free_cpu_blocks = num_cpu_blocks
        self._cpu_blocks: dict[str, int] = {}

    # -- queries ---------------------------------------------------------------------------------
    def num_blocks_of(self, request: Request) -> int:
        return self._blocks.get(request.request_id, 0)

    def blocks_for_tokens(self, num_tokens: int) -> int:
        return cdiv(num_tokens, self.block_size)

    def num_new_blocks_needed(self, request: Request, num_new_tokens: int) -> int:
        """Blocks to add so that ``num_computed_tokens + num_new_tokens`` tokens have slots."""
        need = cdiv(request.num_computed_tokens + num_new_tokens, self.block_size)
        return max(0, need - self._blocks.get(request.request_id, 0))

    @property
    def num_used_blocks(self) -> int:
        return self.num_usable_blocks - self.num_free_blocks

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_usable_blocks

    def num_cpu_blocks_of(self, request: Request) -> int:
        return self._cpu_blocks.get(request.request_id, 0)

    # -- prefix caching hooks (no-ops here; see PrefixCachingKVCacheManager) ---------------------
    def match_prefix(self, request: Request) -> int:
        """Leading blocks of ``request`` already in the cache (always 0 without prefix caching)."""
        return 0

    def match_offloaded(self, request: Request, num_gpu_hits: int) -> int:
        """Blocks after the GPU hit held by a CPU offload tier (always 0 without one)."""
        return 0

    def blocks_to_admit(self, request: Request, num_tokens: int, num_cached_blocks: int = 0) -> int:
        """Free blocks that holding ``num_tokens`` tokens would consume, given ``num_cached_blocks`` cache hits."""
        return cdiv(num_tokens, self.block_size) - self._blocks.get(request.request_id, 0)

    def cache_full_blocks(self, request: Request, num_tokens: Optional[int] = None) -> None:
        """Register the request's newly filled blocks for reuse (no-op without prefix caching)."""

    # -- mutations -------------------------------------------------------------------------------
    def allocate_slots(self, request: Request, num_new_tokens: int, reserve_blocks: int = 0,
                       num_cached_blocks: int = 0) -> bool:
        """Give ``request`` the blocks for ``num_new_tokens`` more tokens, keeping ``reserve_blocks`` free.

        ``num_cached_blocks`` (prefix caching only) are leading blocks found by :meth:`match_prefix` that
        the request takes a reference on instead of computing. Returns False (allocating nothing) when the
        pool cannot supply the blocks.
        """
        needed = self.num_new_blocks_needed(request, num_new_tokens)
        if needed + reserve_blocks > self.num_free_blocks:
            return False
        if needed:
            self._blocks[request.request_id] = self._blocks.get(request.request_id, 0) + needed
            self.num_free_blocks -= needed
        return True

    def free(self, request: Request) -> int:
        """Return all of ``request``'s blocks (GPU and swapped-out CPU ones) to their pools; returns the GPU count."""
        cpu = self._cpu_blocks.pop(request.request_id, 0)
        self.num_free_cpu_blocks += cpu
        return self._free_gpu(request)

    def _free_gpu(self, request: Request) -> int:
        held = self._blocks.pop(request.request_id, 0)
        self.num_free_blocks += held
        return held

    def swap_out(self, request: Request) -> int:
        """Copy the request's GPU blocks to CPU swap space and free them on the GPU.

        Returns the number of blocks moved, or -1 (moving nothing) when the swap space cannot hold them.
        """
        held = self._blocks.get(request.request_id, 0)
        if held > self.num_free_cpu_blocks:
            return -1
        self._free_gpu(request)
        self._cpu_blocks[request.request_id] = held
        self.num_free_cpu_blocks -= held
        return held

    def swap_in(self, request: Request) -> int:
        """Bring a swapped-out request's blocks back to the GPU; -1 (moving nothing) if they are not free."""
        held = self._cpu_blocks.get(request.request_id, 0)
        if held > self.num_free_blocks:
            return -1
        del self._cpu_blocks[request.request_id]
        self.num_free_cpu_blocks += held
        self.take_blocks(request, held)
        return held

    def take_blocks(self, request: Request, num_blocks: int) -> bool:
        """Hand ``num_blocks`` blocks to ``request`` directly (swap-in, KV transfer). False if they are not free."""
        if num_blocks > self.num_free_blocks:
            return False
        self._blocks[request.request_id] = self._blocks.get(request.request_id, 0) + num_blocks
        self.num_free_blocks -= num_blocks
        return True
