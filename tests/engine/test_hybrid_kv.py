"""Hybrid KV memory: sliding-window groups release blocks that leave the window (vLLM's hybrid allocator)."""

from __future__ import annotations

import pytest

from llmsim.engine.config import SchedulerConfig
from llmsim.engine.hybrid_kv import HybridKVCacheManager, kv_cache_groups
from llmsim.engine.hybrid_prefix_cache import HybridPrefixCachingKVCacheManager
from llmsim.engine.schedulers import make_kv_cache, make_scheduler
from llmsim.errors import ConfigError
from tests.engine.policy_harness import req, run


def test_layers_are_grouped_in_equal_groups_per_attention_type():
    # gpt-oss-like: alternating sliding and full layers, 12 of each → one group of 12 layers per type, in the
    # order of each type's first layer (as vLLM orders them)
    assert kv_cache_groups(["sliding_attention", "full_attention"] * 12, 128) == ([128, None], 12)
    # Gemma-3-like 5:1 → the 10 sliding layers form five groups of 2, the 2 full layers one
    assert kv_cache_groups((["sliding_attention"] * 5 + ["full_attention"]) * 2, 1024) == ([1024] * 5 + [None], 2)
    # 12 sliding + 13 full: under 1.5 times apart, so vLLM pads to two groups of 13 rather than three of 12
    assert kv_cache_groups(["sliding_attention", "full_attention"] * 12 + ["full_attention"], 128) == ([128, None], 13)
    with pytest.raises(ConfigError, match="sliding_window"):
        kv_cache_groups(["sliding_attention", "full_attention"], None)


def test_a_sliding_group_holds_the_whole_prefill_then_only_the_window():
    kv = HybridKVCacheManager(num_gpu_blocks=200, block_size=16, groups=[None, 64])
    r = req("r", 320, 50)
    assert kv.allocate_slots(r, 320)
    assert kv.num_blocks_of(r) == 20 + 20  # both groups hold the prompt while it is computed
    r.num_computed_tokens = 320
    r.num_output_tokens = 1
    assert kv.allocate_slots(r, 1)
    # full: 21 blocks; sliding: slots 0..(320 - 64 + 1) // 16 - 1 = 0..15 released, 5 of 21 remain
    assert kv.num_blocks_of(r) == 21 + 5
    assert kv.num_free_blocks == kv.num_usable_blocks - 26
    kv.free(r)
    assert kv.num_free_blocks == kv.num_usable_blocks


def test_a_sliding_window_model_preempts_less_under_pressure():
    def preemptions(groups):
        config = SchedulerConfig(num_gpu_blocks=161, async_scheduling=False, max_num_batched_tokens=2048)
        kv = (HybridKVCacheManager(321, 16, groups) if groups else make_kv_cache(config, 161))
        s = make_scheduler(config, kv, 8192)
        reqs = [req(f"r{i}", 400, 300) for i in range(6)]
        run(s, {0: reqs}, max_steps=20_000)
        assert all(r.num_output_tokens == 300 for r in reqs)
        return sum(r.num_preemptions for r in reqs)

    # Same memory: 160 blocks of the whole model, or 320 pages of half its layers when half of them slide over
    # 128 tokens. Long decodes outgrow the full-attention cache; the sliding half stays small.
    hybrid, full = preemptions([None, 128]), preemptions(None)
    assert hybrid < full


def test_a_hybrid_model_gets_hybrid_prefix_caching_and_refuses_swap():
    config = SchedulerConfig(enable_prefix_caching=True, max_num_batched_tokens=512, async_scheduling=True)
    kv = make_kv_cache(config, 100, kv_groups=[128, None])
    assert isinstance(kv, HybridPrefixCachingKVCacheManager)
    assert kv.admission_caps == [-(-(127 + 2 * 512) // 16) + 1, None]
    with pytest.raises(ConfigError, match="offload"):
        make_kv_cache(config.model_copy(update={"kv_offload_gib": 1.0}), 100, kv_groups=[128, None])
    for kv in (HybridKVCacheManager(100, 16, [None, 128]), HybridPrefixCachingKVCacheManager(100, 16, [None, 128])):
        with pytest.raises(ConfigError, match="swap"):
            kv.swap_out(req("r", 10, 1))


def test_a_sliding_group_caches_only_the_blocks_a_hit_can_end_on():
    """vLLM's default retention (interval 0): besides every full-attention block, a sliding group caches the
    ceil((W - 1) / bs) blocks ending at the prompt's last full block before token P - 1 (here blocks 13..16 of
    a 280-token prompt, W 64, bs 16); a resend of the prompt then hits 17 blocks, its sliding table null-padded."""
    kv = HybridPrefixCachingKVCacheManager(200, 16, [64, None])
    keys = [("group", "g", k) for k in range(19)]
    a, b = req("a", 280, 20), req("b", 280, 20)
    a.block_keys, b.block_keys = keys, list(keys)
    assert kv.match_prefix(a) == 0 and kv.allocate_slots(a, 280)
    assert sorted(k for (_, _, k), g in kv._cache if g == 0) == [13, 14, 15, 16]
    assert sorted(k for (_, _, k), g in kv._cache if g == 1) == list(range(17))
    assert kv.match_prefix(b) == 17 and kv.allocate_slots(b, 280 - 17 * 16, num_cached_blocks=17)
    sliding, full = kv._tables["b"]
    assert sliding[:13] == [0] * 13 and all(sliding[13:]) and full[:17] == kv._tables["a"][1][:17]
    kv.check_consistency()
    kv.free(a)
    kv.free(b)
    kv.check_consistency()
    assert kv.num_free_blocks == kv.num_usable_blocks


def test_a_model_with_sliding_layers_gets_the_hybrid_pool(monkeypatch):
    """Wiring: a spec listing sliding-window layers selects the hybrid manager and converts the capacity."""
    import dataclasses

    import llmsim.deployment as deployment
    import llmsim.engine_modes as engine_modes
    import llmsim.simulation as simulation
    from llmsim.config import SimConfig
    from llmsim.hardware.profiles import load_model

    config = SimConfig.model_validate({"workload": {"num_requests": 30}})
    plain = deployment.build_deployment(config)
    base = load_model("Llama-2-7B")
    hybrid_spec = dataclasses.make_dataclass("HybridSpec", [("layer_types", tuple, ()), ("sliding_window", int, 0)],
                                             bases=(type(base),), frozen=True)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    fields.update(layer_types=("sliding_attention", "full_attention") * (base.num_layers // 2), sliding_window=256)
    for module in (deployment, engine_modes):  # the deployment's spec, and the engine choice reading it
        monkeypatch.setattr(module, "load_model", lambda name: hybrid_spec(**fields))
    hybrid = deployment.build_deployment(config)
    assert plain.kv_groups is None and hybrid.kv_groups == [256, None]
    assert abs(hybrid.num_gpu_blocks - plain.num_gpu_blocks * 2) <= 1  # pages of 16 layers, not blocks of 32 (one floor)
    result = simulation.simulate(config)
    assert "sliding-window (hybrid) KV memory" in result.summary["engine_mode"]
    assert (result.requests["status"] == "finished").all()
    # With prefix caching the hybrid pool tracks block identities (vLLM's HybridKVCacheCoordinator).
    cached = config.model_copy(update={"scheduler": config.scheduler.model_copy(update={"enable_prefix_caching": True})})
    result = simulation.simulate(cached)
    assert (result.requests["status"] == "finished").all()


def test_admission_charges_a_sliding_group_at_most_its_window_plus_the_tokens_in_flight():
    # vLLM's SlidingWindowSpec.max_admission_blocks_per_request: ceil((W - 1 + in flight) / bs) + 1
    kv = HybridKVCacheManager(400, 16, [128, None], max_in_flight_tokens=512)
    r = req("r", 1314, 10)
    assert kv.admission_caps == [-(-(127 + 512) // 16) + 1, None] == [41, None]
    assert kv.blocks_to_admit(r, 1314) == 83 + 41  # full group: the whole prompt; sliding group: capped
    assert HybridKVCacheManager(400, 16, [128, None]).blocks_to_admit(r, 1314) == 83 + 83  # no cap given


def test_async_blocks_leave_the_window_once_their_step_is_processed():
    """vLLM frees out-of-window blocks on the processed-token basis: tokens still in flight keep theirs."""
    kv = HybridKVCacheManager(200, 16, [64, None])
    r = req("r", 320, 50)
    assert kv.allocate_slots(r, 320)
    r.num_computed_tokens = 320
    r.num_in_flight_tokens = 320  # the prefill's output is not applied yet (async loop)
    r.num_output_placeholders = 1
    assert kv.allocate_slots(r, 1)
    assert kv.num_blocks_of(r) == 21 + 21  # nothing processed, nothing released
    r.num_in_flight_tokens = 0
    assert kv.allocate_slots(r, 1)
    assert kv.num_blocks_of(r) == 21 + 5
