"""Batch schedulers by name (``scheduler.policy``). One dict, one place: add a policy here."""

from __future__ import annotations

from llmsim.engine.config import SchedulerConfig
from llmsim.engine.kv_cache import KVCacheManager
from llmsim.engine.scheduler import BatchScheduler
from llmsim.engine.schedulers.vllm_v1 import VLLMV1Scheduler
from llmsim.errors import ConfigError

SCHEDULERS: dict[str, type] = {
    "vllm-v1": VLLMV1Scheduler,
}


def make_scheduler(config: SchedulerConfig, kv_cache: KVCacheManager, max_model_len: int) -> BatchScheduler:
    try:
        cls = SCHEDULERS[config.policy]
    except KeyError:
        valid = ", ".join(sorted(SCHEDULERS))
        raise ConfigError(f"config field scheduler.policy: unknown policy {config.policy!r}; valid: {valid}") from None
    return cls(config, kv_cache, max_model_len)
