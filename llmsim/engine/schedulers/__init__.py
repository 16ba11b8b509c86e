"""Batch schedulers by name (``scheduler.policy``). One dict, one place: add a policy here.

The docs' Scheduling policies page (docs/explanation/policies.md) says what each models; each class's module
docstring gives the engine's rules and the choices llmsim made where the engine's exact rule is not published.
"""

from __future__ import annotations

from llmsim.engine.config import SchedulerConfig
from typing import Optional

from llmsim.engine.hybrid_kv import HybridKVCacheManager
from llmsim.engine.hybrid_prefix_cache import HybridPrefixCachingKVCacheManager
from llmsim.engine.kv_cache import KVCacheManager
from llmsim.engine.prefix_cache import PrefixCachingKVCacheManager
from llmsim.engine.step import BatchScheduler
from llmsim.engine.schedulers.orca import OrcaScheduler
from llmsim.engine.schedulers.sarathi import SarathiScheduler
from llmsim.engine.schedulers.sglang import SGLangScheduler
from llmsim.engine.schedulers.static import StaticBatchScheduler
from llmsim.engine.schedulers.tgi import TGIScheduler
from llmsim.engine.schedulers.trtllm import TRTLLMGuaranteedNoEvictScheduler, TRTLLMMaxUtilizationScheduler
from llmsim.engine.schedulers.vllm_v0 import VLLMV0Scheduler
from llmsim.engine.schedulers.vllm_v1 import VLLMV1Scheduler
from llmsim.errors import ConfigError, did_you_mean

SCHEDULERS: dict[str, type] = {
    "vllm-v1": VLLMV1Scheduler,
    "vllm-v0": VLLMV0Scheduler,
    "orca": OrcaScheduler,
    "sarathi": SarathiScheduler,
    "static": StaticBatchScheduler,
    "sglang": SGLangScheduler,
    "trtllm-guaranteed-no-evict": TRTLLMGuaranteedNoEvictScheduler,
    "trtllm-max-utilization": TRTLLMMaxUtilizationScheduler,
    "tgi": TGIScheduler,
}


def make_scheduler(config: SchedulerConfig, kv_cache: KVCacheManager, max_model_len: int) -> BatchScheduler:
    try:
        cls = SCHEDULERS[config.policy]
    except KeyError:
        valid = ", ".join(SCHEDULERS)
        raise ConfigError(f"config field scheduler.policy: unknown policy {config.policy!r}{did_you_mean(config.policy, SCHEDULERS)}; valid: {valid}") from None
    return cls(config, kv_cache, max_model_len)


def make_kv_cache(config: SchedulerConfig, num_gpu_blocks: int, num_cpu_blocks: int = 0,
                  num_offload_blocks: int = 0, kv_groups: Optional[list] = None) -> KVCacheManager:
    """The KV cache manager the config asks for: with prefix caching, the hashed, reference-counted one
    (with ``num_offload_blocks`` blocks of CPU offload tier behind it); for a model with sliding-window layers
    (``kv_groups``: each KV cache group's window, None for full attention), the hybrid one."""
    if kv_groups and any(w is not None for w in kv_groups):
        # vLLM's sliding-window admission cap counts every token that can be in flight: one step's budget per
        # concurrent batch (two with the async loop).
        in_flight = config.max_num_batched_tokens * (2 if config.async_scheduling else 1)
        if config.enable_prefix_caching:
            if config.kv_offload_gib:
                raise ConfigError("config field scheduler.kv_offload_gib: KV offloading is not modelled for models "
                                  "with sliding-window layers; set it to 0")
            return HybridPrefixCachingKVCacheManager(num_gpu_blocks, config.block_size, kv_groups, config.watermark,
                                                     max_in_flight_tokens=in_flight,
                                                     max_model_len=config.max_model_len)
        return HybridKVCacheManager(num_gpu_blocks, config.block_size, kv_groups, config.watermark,
                                    max_in_flight_tokens=in_flight, max_model_len=config.max_model_len)
    if config.kv_offload_gib and not config.enable_prefix_caching:
        raise ConfigError("config field scheduler.kv_offload_gib: KV offloading keeps prefix-cache blocks, so it needs "
                          "scheduler.enable_prefix_caching: true")
    if config.enable_prefix_caching:
        return PrefixCachingKVCacheManager(num_gpu_blocks, config.block_size, config.watermark, num_cpu_blocks,
                                           config.prefix_hash_block_tokens, num_offload_blocks)
    return KVCacheManager(num_gpu_blocks, config.block_size, config.watermark, num_cpu_blocks)
