"""Admission: why a request never reaches an engine, or why an engine refuses it on arrival (one statement
each, used by both engines)."""

from __future__ import annotations

from typing import Optional


def rejection_reason(total_tokens: int, *, max_model_len: int, block_size: int, num_usable_blocks: int,
                     num_waiting: int, max_waiting_requests: Optional[int]) -> Optional[str]:
    """Why a request of ``total_tokens`` (prompt + output) is refused as a real engine refuses it, or None.

    Too long for the model's context; more KV blocks than the whole cache (the last output token is never fed
    back, so it needs slots for ``total_tokens − 1``); or admission control's bounded queue is full.
    """
    if total_tokens > max_model_len:
        return "exceeds_max_model_len"
    if -(-(total_tokens - 1) // block_size) > num_usable_blocks:
        return "exceeds_kv_capacity"
    if max_waiting_requests is not None and num_waiting >= max_waiting_requests:
        return "queue_full"
    return None


def unservable_reason(failed: bool, prompt_tokens: int, output_tokens: int) -> str:
    """Why a workload row is recorded as failed at its arrival without reaching a replica ("" if it is not).

    A row the trace marks as failed stays failed; an empty prompt is refused as vLLM's API server refuses
    it (HTTP 400: the prompt must hold at least one token), never "finished" with a TTFT of 0; a request
    for 0 output tokens has nothing to generate."""
    if failed:
        return "failed_in_trace"
    if prompt_tokens <= 0:
        return "empty_prompt"
    if output_tokens <= 0:
        return "zero_output_tokens"
    return ""
