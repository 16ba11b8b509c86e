"""The `scheduler:` and `engine:` sections. Knob names and defaults follow vLLM (0.32, V1 engine)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from llmsim.configbase import StrictModel


VLLM_VERSIONS = ("0.32", "0.33")  # vLLM releases whose scheduler differences llmsim reproduces


def vllm_version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


#: Every reason a request can fail or be rejected for (the requests table's ``reason`` column).
FAILURE_REASONS: tuple[str, ...] = ("queue_full", "queue_timeout", "client_timeout", "kv_cache_full", "replica_failure",
                                    "exceeds_kv_capacity", "exceeds_max_model_len", "empty_prompt",
                                    "zero_output_tokens", "failed_in_trace")


class SchedulerConfig(StrictModel):
    policy: str = Field("vllm-v1", description="batching scheduler (see the docs' Scheduling policies page)")
    max_num_seqs: int = Field(256, ge=1, description="cap on RUNNING requests (vLLM default 256 on A100)")
    max_num_batched_tokens: int = Field(2048, ge=1, description="token budget of one step, prefill and decode together")
    enable_chunked_prefill: bool = Field(True, description="split long prompts into chunks that share the token budget with decodes")
    long_prefill_token_threshold: int = Field(0, ge=0, description="most tokens one request gets in one step; 0 = off")
    block_size: int = Field(16, ge=1, description="tokens per KV block")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="fraction of GPU memory vLLM may use")
    num_gpu_blocks: Optional[int] = Field(None, ge=2, description="KV blocks per replica, overriding the memory model")
    max_model_len: Optional[int] = Field(None, ge=1, description="longest prompt+output; the model's context length when omitted")
    watermark: float = Field(0.0, ge=0, lt=1, description="fraction of blocks kept free at admission")
    scheduler_reserve_full_isl: bool = Field(True, description="admit only if the whole prompt fits the free blocks now")
    async_scheduling: bool = Field(True, description="vLLM's default engine loop: schedule step s+1 before step s's output")
    queue: str = Field("fcfs", description="waiting-queue order: fcfs, priority, shortest-first, longest-first")
    preemption: str = Field("recompute", description="what happens to a preempted request: recompute, swap, none")
    victim: str = Field("auto", description="which running request is preempted: auto, most-recent, lowest-priority, "
                                            "most-blocks, fewest-computed")
    enable_prefix_caching: bool = Field(False, description="vLLM's automatic prefix caching (hashed full blocks, LRU)")
    prefix_hash_block_tokens: int = Field(512, ge=1, description="tokens per entry of a request's prefix_hashes "
                                                                 "(Mooncake hash_ids cover 512 tokens)")
    vllm_version: str = Field(VLLM_VERSIONS[-1], description="vLLM release whose scheduler rules vllm-v1 follows "
                                                            "where they differ (0.32: a request that preempts itself "
                                                            "ends the running pass; 0.33: the pass goes on)")
    # Queue orders.
    length_predictor_error: float = Field(0.0, ge=0, description="shortest/longest-first: sigma of the log-normal "
                                                                 "error of the output-length predictor; 0 = true length")
    length_predictor_seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the output-length predictor's errors")
    starvation_guard_s: Optional[float] = Field(None, gt=0, description="a request waiting longer than this is "
                                                                        "served before all others (aging); None = off")
    # Swap preemption (vLLM V0: --swap-space 4 GiB of CPU memory per GPU).
    swap_space_gib: float = Field(4.0, ge=0, description="CPU memory per GPU for swapped-out KV blocks, GiB")
    # KV offloading (vLLM's native CPU offloading connector, LMCache): a CPU tier behind the prefix cache.
    kv_offload_gib: float = Field(0.0, ge=0, description="CPU memory per GPU for prefix-cache blocks evicted from the "
                                                         "GPU, reloaded over PCIe on a prefix hit, GiB; 0 = off; needs "
                                                         "enable_prefix_caching")
    # Admission control.
    max_waiting_requests: Optional[int] = Field(None, ge=0, description="reject arrivals while this many wait "
                                                                        "(TGI: max_concurrent_requests); None = no cap")
    max_queue_time_s: Optional[float] = Field(None, gt=0, description="reject a request not scheduled within this "
                                                                      "many seconds of arrival; None = no cap")
    # Policy-specific knobs, under each engine's own name.
    schedule_conservativeness: float = Field(1.0, gt=0, description="sglang: scales the initial new-token ratio")
    waiting_served_ratio: float = Field(0.3, ge=0, description="tgi: try a prefill when waiting ≥ ratio × running")
    max_waiting_tokens: int = Field(20, ge=1, description="tgi: force a prefill after this many decode steps")

    @field_validator("vllm_version")
    @classmethod
    def _known_vllm_version(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts) or ".".join(parts[:2]) not in VLLM_VERSIONS:
            raise ValueError(f"expected one of {', '.join(VLLM_VERSIONS)} (a patch number like 0.32.0 is accepted), "
                             f"got {value!r}")
        return ".".join(parts[:2])


class ClientConfig(StrictModel):
    """How clients behave: give up after a timeout, retry failed requests with exponential backoff, and (closed
    loop) keep at most ``max_concurrency`` requests outstanding."""

    timeout_s: Optional[float] = Field(None, gt=0, description="abandon a request not finished this long after "
                                                               "its (first) arrival; None = wait forever")
    max_retries: int = Field(0, ge=0, description="resubmissions after a rejection or timeout")
    retry_backoff_s: float = Field(1.0, ge=0, description="wait before the first retry; doubles each retry")
    retry_on: list[str] = Field(default_factory=lambda: ["queue_full", "queue_timeout", "client_timeout"],
                                description="failure reasons a client retries: " + ", ".join(FAILURE_REASONS))
    max_concurrency: Optional[int] = Field(None, ge=1, description="closed loop, as vllm bench serve "
                                           "--max-concurrency: at most this many requests outstanding; an arrival "
                                           "waits for a free slot and is sent (its arrival time) then; None = open loop")

    @field_validator("retry_on")
    @classmethod
    def _known_reasons(cls, reasons: list[str]) -> list[str]:
        unknown = [r for r in reasons if r not in FAILURE_REASONS]
        if unknown:  # a typo here would silently never retry anything
            raise ValueError(f"unknown failure reason {unknown[0]!r}; valid: {', '.join(FAILURE_REASONS)}")
        return reasons


class EngineConfig(StrictModel):
    """How the engine executes steps: which simulator engine runs, and what a step costs beyond its kernels
    (docs/step-time-physics.md). None of these changes a scheduling decision."""

    workers: Optional[int] = Field(
        None, ge=1, description="fast mode with a router that reads no replica state: run the replicas in this many "
                                "processes (same results); default: one per usable core for runs of 50,000 requests "
                                "or more (docs/speed.md), else 1")
    mode: Literal["fast", "reference"] = Field("fast", description="fast: aggregate engine, else event skipping (same decisions); reference: one event per step")
    cpu_overhead: bool = Field(True, description="price the engine loop's CPU time (scheduling, input preparation, "
                                                 "sampling, outputs); overlapped with the GPU under async scheduling")
    cuda_graphs: Literal["full_and_piecewise", "full_decode_only", "piecewise", "full", "none"] = Field(
        "full_and_piecewise", description="vLLM's cudagraph_mode (V1 default FULL_AND_PIECEWISE); none = enforce_eager")
    cudagraph_capture_sizes: Optional[list[int]] = Field(
        None, description="batch sizes with a captured graph; default vLLM's [1, 2, 4, 8..248 by 8, 256.. by 16]")
    max_cudagraph_capture_size: Optional[int] = Field(
        None, ge=1, description="largest default capture size; default min(2 × max_num_seqs, 512) as vLLM")

    @field_validator("cudagraph_capture_sizes")
    @classmethod
    def _positive_sizes(cls, sizes: Optional[list[int]]) -> Optional[list[int]]:
        if sizes is not None and any(size < 1 for size in sizes):
            raise ValueError("capture sizes must be positive token counts")
        return sizes
