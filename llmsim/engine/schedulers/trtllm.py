"""TensorRT-LLM's in-flight batching capacity schedulers (``batch_manager/capacityScheduler.cpp``).

Both run every step's batch from the running requests first, then new ones, under the token budget
``max_num_tokens`` (llmsim: ``scheduler.max_num_batched_tokens``); a context longer than the remaining budget
is chunked when ``scheduler.enable_chunked_prefill`` is on (TensorRT-LLM's chunked context).

- ``trtllm-guaranteed-no-evict`` (TensorRT-LLM's default): a request is admitted only if its prompt plus
  max output fits next to the reservations of the running requests; admission stops at the first misfit
  and a started request is never paused.
- ``trtllm-max-utilization``: packs by current need — a request is admitted if this step's tokens fit — and
  when blocks run out it pauses the most recently started request (its KV is freed; it resumes from the
  waiting queue's head). llmsim models this with vLLM V1's step rules minus the full-prompt admission check;
  like vLLM, a step that paused a request admits nobody (our choice: the exact interleaving of pause and
  admission in TensorRT-LLM is not documented).
"""

from __future__ import annotations

from llmsim.engine.schedulers.vllm_v1 import V1CoreScheduler, VLLMV1Scheduler


class TRTLLMGuaranteedNoEvictScheduler(V1CoreScheduler):
    """vLLM V1's core step, reserving each request's whole length at admission (so no request is ever paused);
    chunked context as ``enable_chunked_prefill`` says."""

    name = "trtllm-guaranteed-no-evict"
    reserve_whole_length = True


class TRTLLMMaxUtilizationScheduler(VLLMV1Scheduler):
    name = "trtllm-max-utilization"
    full_prompt_check = False
