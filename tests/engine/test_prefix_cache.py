"""Automatic prefix caching: hits save exactly the shared full blocks; refcounts and LRU eviction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmsim.config import SimConfig
from llmsim.engine.prefix_cache import PrefixCachingKVCacheManager
from llmsim.engine.request import RequestStatus
from llmsim.simulation import simulate
from llmsim.workload import Workload
from tests.engine.policy_harness import make, req, run

POLICIES = ["vllm-v1", "vllm-v0", "orca", "sarathi", "sglang", "trtllm-guaranteed-no-evict", "tgi"]


@pytest.mark.parametrize("policy", POLICIES)
def test_a_prefix_hit_saves_exactly_the_shared_blocks(policy):
    s = make(policy, num_gpu_blocks=400, enable_prefix_caching=True, max_num_batched_tokens=2048)
    first = req("first", 600, 3, prefix_hashes=(11, 12))  # 1024 hashed tokens cover the 600-token prompt
    second = req("second", 700, 3, prefix_hashes=(11, 99))  # shares the first 512-token Mooncake block
    trace = run(s, {0: [first], 5: [second]})
    first_chunk = next(n for r, n in trace.plans[second.first_scheduled_step].scheduled if r is second)
    assert second.num_cached_tokens == 512  # 32 blocks of 16 tokens
    assert first_chunk == 700 - 512
    assert second.num_scheduled_tokens_total == 700 + 3 - 1 - 512
    assert first.num_cached_tokens == 0


def test_hits_are_capped_so_the_last_prompt_token_is_computed():
    s = make("vllm-v1", num_gpu_blocks=400, enable_prefix_caching=True)
    a = req("a", 512, 2, prefix_hashes=(7,))
    b = req("b", 512, 2, prefix_hashes=(7,))
    run(s, {0: [a], 3: [b]})
    assert b.num_cached_tokens == 496  # (512 − 1) // 16 = 31 blocks
    assert b.num_scheduled_tokens_total == 512 + 2 - 1 - 496


def test_a_conversation_turn_reuses_the_previous_turn():
    s = make("vllm-v1", num_gpu_blocks=400, enable_prefix_caching=True)
    turn1 = req("t1", 100, 40, session_id=5)
    turn2 = req("t2", 100 + 40 + 30, 10, session_id=5)  # history (prompt + answer) + a new question
    other = req("o", 170, 10, session_id=6)
    run(s, {0: [turn1], 60: [turn2, other]})
    # turn 1 computed 139 tokens (its last token is never fed): 8 full blocks are cached.
    assert turn2.num_cached_tokens == 8 * 16
    assert other.num_cached_tokens == 0


def test_prefix_caching_off_ignores_prefix_hashes():
    s = make("vllm-v1", num_gpu_blocks=400)
    a, b = req("a", 600, 2, prefix_hashes=(1, 2)), req("b", 600, 2, prefix_hashes=(1, 2))
    run(s, {0: [a], 3: [b]})
    assert b.num_cached_tokens == 0


def test_shared_blocks_are_counted_once_and_freed_when_the_last_user_leaves():
    kv = PrefixCachingKVCacheManager(num_gpu_blocks=101, block_size=16)
    a, b = req("a", 64, 5, prefix_hashes=(3,)), req("b", 64, 5, prefix_hashes=(3,))
    assert kv.allocate_slots(a, 64)
    a.num_computed_tokens = 64
    kv.cache_full_blocks(a)
    hit = kv.match_prefix(b)
    assert hit == 3  # (64 − 1) // 16
    assert kv.allocate_slots(b, 16, num_cached_blocks=hit)
    assert kv.num_used_blocks == 5  # a's 4 blocks + b's own last block; 3 are shared
    kv.check_consistency()
    kv.free(a)
    assert kv.num_used_blocks == 4  # the shared blocks stay in use by b
    kv.free(b)
    # cached, free, reusable; b computed a's 4th block again (the hit stops one block short), and vLLM does not
    # de-duplicate: both copies are cached
    assert kv.num_free_blocks == 100 and kv.num_cached_blocks() == 5
    kv.check_consistency()


def test_eviction_takes_uncached_blocks_first_then_least_recently_freed():
    kv = PrefixCachingKVCacheManager(num_gpu_blocks=9, block_size=16)  # 8 usable
    old, new = req("old", 64, 2, prefix_hashes=(1,)), req("new", 64, 2, prefix_hashes=(2,))
    for r in (old, new):
        assert kv.allocate_slots(r, 64)
        r.num_computed_tokens = 64
        kv.cache_full_blocks(r)
    kv.free(old)
    kv.free(new)
    filler = req("filler", 64, 2)
    assert kv.allocate_slots(filler, 64)  # no uncached free block is left: evicts old's 4 blocks
    assert kv.match_prefix(req("old2", 64, 2, prefix_hashes=(1,))) == 0
    assert kv.match_prefix(req("new2", 64, 2, prefix_hashes=(2,))) == 3
    kv.check_consistency()


def test_simulation_reports_hit_rate_and_saved_tokens():
    df = pd.DataFrame({
        "arrival_s": np.arange(6, dtype=float) * 2.0,
        "prompt_tokens": np.full(6, 1000, dtype=np.int64),
        "output_tokens": np.full(6, 20, dtype=np.int64),
        "prefix_hashes": [(1, 2)] * 6,
    })
    config = SimConfig.model_validate({"scheduler": {"enable_prefix_caching": True, "num_gpu_blocks": 2000}})
    result = simulate(config, workload=Workload(df))
    cached = result.requests["cached_tokens"].to_numpy()
    assert cached[0] == 0 and (cached[1:] == 992).all()  # (1000 − 1) // 16 = 62 blocks
    assert result.summary["prefix_cached_tokens"] == 5 * 992
    assert result.summary["prefix_cache_hit_rate"] == pytest.approx(5 * 992 / 6000)
    assert (result.requests["status"] == RequestStatus.FINISHED.value).all()
