"""The `scheduler:` and `engine:` sections. Knob names and defaults follow vLLM (0.32, V1 engine)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from llmsim.configbase import StrictModel


class SchedulerConfig(StrictModel):
    policy: str = Field("vllm-v1", description="batching scheduler (see the README's policy table)")
    max_num_seqs: int = Field(256, ge=1, description="cap on RUNNING requests (vLLM default 256 on A100)")
    max_num_batched_tokens: int = Field(2048, ge=1, description="token budget of one step, prefill and decode together")
    enable_chunked_prefill: bool = True
    long_prefill_token_threshold: int = Field(0, ge=0, description="most tokens one request gets in one step; 0 = off")
    block_size: int = Field(16, ge=1, description="tokens per KV block")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="fraction of GPU memory vLLM may use")
    num_gpu_blocks: Optional[int] = Field(None, ge=2, description="KV blocks per replica, overriding the memory model")
    max_model_len: Optional[int] = Field(None, ge=1, description="longest prompt+output; the model's context length when omitted")
    watermark: float = Field(0.0, ge=0, lt=1, description="fraction of blocks kept free at admission")
    scheduler_reserve_full_isl: bool = Field(True, description="admit only if the whole prompt fits the free blocks now")
    async_scheduling: bool = Field(True, description="vLLM's default engine loop: schedule step s+1 before step s's output")
    queue: str = Field("fcfs", description="waiting-queue order")
    preemption: str = Field("recompute", description="what happens to a preempted request's KV blocks")
    enable_prefix_caching: bool = False


class EngineConfig(StrictModel):
    mode: Literal["fast", "reference"] = Field("fast", description="fast: event-skipping; reference: one event per step")
    cpu_overhead: bool = Field(True, description="add the profile's per-step CPU (scheduler/framework) time")
