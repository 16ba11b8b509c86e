"""A request's own state as the engine sees it.

Vocabulary follows vLLM V1: a request of ``prompt_tokens`` prompt tokens that must produce
``max_output_tokens`` output tokens has a current length ``num_tokens`` (prompt plus the output tokens
delivered so far) and ``num_computed_tokens`` — how many of those tokens are in the KV cache. Each step
feeds it ``num_tokens - num_computed_tokens`` tokens at most (a prefill chunk, a recompute chunk, or one
decode token). With vLLM's async engine loop a sampled token is delivered one step late; until then it is
an *output placeholder* that the scheduler already counts.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional


class RequestStatus(str, Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    SWAPPED = "swapped"
    FINISHED = "finished"
    REJECTED = "rejected"
    FAILED = "failed"


class Request:
    """Per-request state owned by the replica that serves it (one object per decision-making request)."""

    __slots__ = (
        "request_id", "index", "arrival_s", "prompt_tokens", "max_output_tokens", "priority", "prefix_hashes",
        "session_id", "num_computed_tokens", "num_output_tokens", "num_output_placeholders", "status",
        "num_preemptions", "num_scheduled_tokens_total", "num_recomputed_tokens", "num_cached_tokens",
        "first_scheduled_s", "first_token_s", "last_token_s", "finish_s", "reason", "replica",
        "first_scheduled_step", "first_token_step", "finish_step", "preempted_at_steps", "resumed_at_steps",
        "was_preempted", "admitted_seq", "predicted_output_tokens", "block_keys", "retries", "submitted_s", "served_by",
        "spec_tokens", "num_draft_tokens", "num_accepted_tokens", "num_verify_steps", "num_loaded_tokens",
        "num_in_flight_tokens", "acceptance_pattern", "is_prefill_chunk",
    )

    def __init__(
        self,
        request_id: str,
        arrival_s: float,
        prompt_tokens: int,
        max_output_tokens: int,
        *,
        index: int = 0,
        priority: int = 0,
        prefix_hashes: Optional[tuple] = None,
        session_id: Optional[str] = None,
    ) -> None:
        self.request_id = request_id
        self.index = index
        self.arrival_s = float(arrival_s)
        self.prompt_tokens = int(prompt_tokens)
        self.max_output_tokens = int(max_output_tokens)
        self.priority = priority
        self.prefix_hashes = prefix_hashes
        self.session_id = session_id
        self.num_computed_tokens = 0
        self.num_output_tokens = 0
        self.num_output_placeholders = 0
        self.status = RequestStatus.WAITING
        self.num_preemptions = 0
        self.num_scheduled_tokens_total = 0
        self.num_recomputed_tokens = 0
        self.num_cached_tokens = 0
        self.first_scheduled_s: Optional[float] = None
        self.first_token_s: Optional[float] = None
        self.last_token_s: Optional[float] = None
        self.finish_s: Optional[float] = None
        self.reason = ""
        self.replica = -1
        self.served_by: list[int] = []  # every replica the request was handed to, in order (retries, P/D)
        self.first_scheduled_step: Optional[int] = None
        self.first_token_step: Optional[int] = None
        self.finish_step: Optional[int] = None
        self.preempted_at_steps: list[int] = []
        self.resumed_at_steps: list[int] = []
        self.was_preempted = False
        # Monotone counter of (re)admissions, so policies can find "the most recently admitted".
        self.admitted_seq = -1
        # Set by the queue order that needs it (shortest/longest-first), by the prefix cache, by the client.
        self.predicted_output_tokens: Optional[float] = None
        self.block_keys: Optional[list] = None
        self.retries = 0
        self.submitted_s = self.arrival_s
        # Speculative decoding: drafts proposed for (then, once scheduled, drafts in) the next step; totals.
        self.spec_tokens = 0
        self.num_draft_tokens = self.num_accepted_tokens = self.num_verify_steps = 0
        self.acceptance_pattern: Optional[list[int]] = None  # scripted acceptance of this request (replays)
        # vLLM's is_prefill_chunk: after its last schedule, the request still had prompt (or recompute) to feed.
        self.is_prefill_chunk = False
        self.num_loaded_tokens = 0  # KV offloading: tokens reloaded from the CPU tier instead of prefilled
        # Async loop: tokens scheduled in steps whose output is not applied yet (vLLM's num_in_flight_tokens;
        # a sliding-window group keeps their blocks until then).
        self.num_in_flight_tokens = 0

    def reset_for_retry(self, now_s: float) -> None:
        """Forget a failed attempt's progress: the client sends the same request again (one more retry).

        ``arrival_s`` stays the first arrival, so TTFT and E2EL include the time lost to failed attempts.
        """
        self.retries += 1
        self.submitted_s = now_s
        # The attempt's KV work is lost, like a recompute preemption's (keeps scheduled-token accounting exact).
        self.num_recomputed_tokens += self.num_computed_tokens
        self.num_computed_tokens = self.num_output_tokens = self.num_output_placeholders = 0
        self.num_in_flight_tokens = 0
        self.spec_tokens = 0
        self.status = RequestStatus.WAITING
        self.first_scheduled_s = self.first_token_s = self.last_token_s = self.finish_s = None
        self.first_scheduled_step = self.first_token_step = self.finish_step = None
        self.reason = ""
        self.was_preempted = False

    @property
    def num_tokens(self) -> int:
        """Current length: prompt plus output tokens delivered so far."""
        return self.prompt_tokens + self.num_output_tokens

    @property
    def max_total_tokens(self) -> int:
        return self.prompt_tokens + self.max_output_tokens

    @property
    def is_finished(self) -> bool:
        return self.status in (RequestStatus.FINISHED, RequestStatus.REJECTED, RequestStatus.FAILED)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (
            f"Request({self.request_id}, P={self.prompt_tokens}, O={self.num_output_tokens}/{self.max_output_tokens}, "
            f"c={self.num_computed_tokens}, {self.status.value})"
        )
