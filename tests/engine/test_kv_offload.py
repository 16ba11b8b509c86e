"""KV offloading: prefix-cache blocks evicted from the GPU go to a CPU tier and are reloaded on a hit."""

from __future__ import annotations

import pytest

from llmsim.engine.prefix_cache import PrefixCachingKVCacheManager
from llmsim.errors import ConfigError
from tests.engine.policy_harness import make, req, run


def test_an_evicted_block_is_found_in_the_cpu_tier_after_the_gpu_hit():
    kv = PrefixCachingKVCacheManager(num_gpu_blocks=9, block_size=16, num_offload_blocks=4)  # 8 usable
    a = req("a", 64, 2, prefix_hashes=(1,))
    assert kv.allocate_slots(a, 64)
    kv.free(a)  # 4 cached blocks, free
    assert kv.allocate_slots(req("x", 16 * 6, 1), 16 * 6)  # 4 uncached + 2 evicted (a's last two blocks)
    again = req("a2", 80, 2, prefix_hashes=(1,))
    gpu = kv.match_prefix(again)
    assert gpu == 2 and kv.match_offloaded(again, gpu) == 2  # blocks 0-1 on the GPU, 2-3 in CPU memory
    assert kv.num_offloaded_blocks == 2
    kv.check_consistency()


def test_the_cpu_tier_keeps_the_most_recently_offloaded_blocks():
    kv = PrefixCachingKVCacheManager(num_gpu_blocks=5, block_size=16, num_offload_blocks=2)  # 4 usable
    a = req("a", 64, 2, prefix_hashes=(1,))
    assert kv.allocate_slots(a, 64)
    kv.free(a)
    assert kv.allocate_slots(req("x", 64, 1), 64)  # evicts blocks 3, 2, 1, 0 (tail first): CPU keeps 1 and 0
    again = req("a2", 80, 2, prefix_hashes=(1,))
    assert kv.match_prefix(again) == 0 and kv.match_offloaded(again, 0) == 2


def test_a_reloaded_prefix_is_not_prefilled_and_costs_a_transfer():
    s = make("vllm-v1", num_gpu_blocks=12, enable_prefix_caching=True, kv_offload_gib=1.0)
    s.kv_cache.num_offload_blocks = 100
    first = req("first", 160, 2, prefix_hashes=(7,))
    filler = req("filler", 170, 2)
    again = req("again", 170, 2, prefix_hashes=(7,))
    trace = run(s, {0: [first], 3: [filler], 6: [again]})
    assert again.num_loaded_tokens > 0
    step = again.first_scheduled_step
    assert trace.plans[step].swap_in_blocks == again.num_loaded_tokens // 16
    chunk = next(n for r, n in trace.plans[step].scheduled if r is again)
    assert chunk == 170 - again.num_cached_tokens - again.num_loaded_tokens


def test_offloading_needs_prefix_caching_and_the_vllm_v1_policy():
    with pytest.raises(ConfigError, match="enable_prefix_caching"):
        make("vllm-v1", kv_offload_gib=1.0)
    with pytest.raises(ConfigError, match="vllm-v1 only"):
        make("sarathi", kv_offload_gib=1.0, enable_prefix_caching=True)
