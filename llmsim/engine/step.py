"""One engine step: what the scheduler plans (:class:`StepPlan`), what its output changes (:class:`StepOutcome`),
and the protocol every batching policy implements (:class:`BatchScheduler`).

An engine step is: the scheduler plans a batch (:meth:`BatchScheduler.schedule` → :class:`StepPlan`), the
replica costs it with the timing model and advances time, then the scheduler applies the step's sampled
tokens (:meth:`BatchScheduler.update_from_output` → :class:`StepOutcome`). Schedulers never touch simpy or
time: given their queues and the KV cache they return a plan, which is why they can be replayed tick by tick
against the golden traces of the real vLLM scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from llmsim.engine.kv_cache import KVCacheManager
from llmsim.engine.request import Request


@dataclass(slots=True)
class StepPlan:
    """What one engine step runs. ``scheduled`` is in vLLM's order: running requests, then admissions."""

    step: int
    scheduled: list[tuple[Request, int]] = field(default_factory=list)
    context_lens: list[int] = field(default_factory=list)  # tokens in KV before this step, per scheduled entry
    new: list[Request] = field(default_factory=list)
    resumed: list[Request] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    failed: list[Request] = field(default_factory=list)  # ended by the scheduler (preemption none: no memory)
    sampling: list[Request] = field(default_factory=list)  # requests that produce a token in this step
    spec_drafts: list[int] = field(default_factory=list)  # speculative decoding: drafts of each sampling request
    padded: list[Request] = field(default_factory=list)  # admitted with placeholder drafts (never accepted)
    num_scheduled_tokens: int = 0
    num_prefill_tokens: int = 0
    free_blocks_after_schedule: int = 0
    num_running: int = 0
    num_waiting: int = 0
    swap_out_blocks: int = 0
    swap_in_blocks: int = 0
    # Filled by the replica when it runs the step.
    start_s: float = 0.0
    end_s: float = 0.0


@dataclass(slots=True)
class StepOutcome:
    """What a step's output changed: who got a token, who finished, and the free blocks afterwards."""

    step: int
    emitted: list[Request] = field(default_factory=list)
    finished: list[Request] = field(default_factory=list)  # completed, or failed by the scheduler (status says)
    free_blocks_after_update: int = 0


class BatchScheduler(Protocol):
    """The protocol the replica and the replay tool drive. See :class:`SchedulerBase` for shared plumbing."""

    name: str
    kv_cache: KVCacheManager
    now_s: float  # set by the replica before each schedule(); queue aging reads it

    def add_request(self, request: Request) -> None: ...
    def has_requests(self) -> bool: ...
    def has_unfinished_requests(self) -> bool: ...
    def schedule(self) -> StepPlan: ...
    def update_from_output(self, plan: StepPlan) -> StepOutcome: ...
    def abort(self, request: Request) -> None: ...
    @property
    def num_running(self) -> int: ...
    @property
    def num_waiting(self) -> int: ...
