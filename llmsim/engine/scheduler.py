"""The batch-scheduler protocol every policy implements, and the state they share.

An engine step is: the scheduler plans a batch (:meth:`BatchScheduler.schedule` → :class:`StepPlan`), the
replica costs it with the timing model and advances time, then the scheduler applies the step's sampled
tokens (:meth:`BatchScheduler.update_from_output` → :class:`StepOutcome`). Schedulers never touch simpy or
time: given their queues and the KV cache they return a plan, which is why they can be replayed tick by tick
against the golden traces of the real vLLM scheduler.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Protocol

from llmsim.engine.config import SchedulerConfig
from llmsim.engine.kv_cache import KVCacheManager
from llmsim.engine.request import Request, RequestStatus


@dataclass(slots=True)
class StepPlan:
    """What one engine step runs. ``scheduled`` is in vLLM's order: running requests, then admissions."""

    step: int
    scheduled: list[tuple[Request, int]] = field(default_factory=list)
    context_lens: list[int] = field(default_factory=list)  # tokens in KV before this step, per scheduled entry
    new: list[Request] = field(default_factory=list)
    resumed: list[Request] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    sampling: list[Request] = field(default_factory=list)  # requests that produce a token in this step
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
    finished: list[Request] = field(default_factory=list)
    free_blocks_after_update: int = 0


class BatchScheduler(Protocol):
    """The protocol the replica and the replay tool drive. See :class:`SchedulerBase` for shared plumbing."""

    name: str
    kv_cache: KVCacheManager

    def add_request(self, request: Request) -> None: ...
    def has_requests(self) -> bool: ...
    def has_unfinished_requests(self) -> bool: ...
    def schedule(self) -> StepPlan: ...
    def update_from_output(self, plan: StepPlan) -> StepOutcome: ...
    @property
    def num_running(self) -> int: ...
    @property
    def num_waiting(self) -> int: ...


class SchedulerBase:
    """Queues, admission bookkeeping and output processing shared by the concrete policies.

    Subclasses implement :meth:`schedule`. ``async_scheduling`` reproduces vLLM's AsyncScheduler: a token
    sampled in step s is delivered in the update that follows step s+1's schedule, so until then the request
    carries an *output placeholder* that the scheduler counts as part of its length.
    """

    name = "base"

    def __init__(self, config: SchedulerConfig, kv_cache: KVCacheManager, max_model_len: int) -> None:
        self.config = config
        self.kv_cache = kv_cache
        self.max_model_len = max_model_len
        self.async_scheduling = config.async_scheduling
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.step_index = 0
        self._admission_counter = 0
        # vLLM keeps the ids finished in the last update until the next schedule() reports them to the
        # workers; while any are pending the engine still calls schedule() (a "bookkeeping" step).
        self._finished_pending = False

    # -- queue state -----------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def add_request(self, request: Request) -> None:
        request.status = RequestStatus.WAITING
        self.waiting.append(request)

    def has_unfinished_requests(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    def has_requests(self) -> bool:
        return bool(self.running) or bool(self.waiting) or self._finished_pending

    # -- helpers for subclasses ------------------------------------------------------------------
    def _begin_step(self) -> StepPlan:
        plan = StepPlan(step=self.step_index)
        self.step_index += 1
        self._finished_pending = False
        return plan

    def _admit(self, request: Request, plan: StepPlan) -> None:
        """Move ``request`` to the tail of the running list (it becomes the most recently admitted)."""
        request.status = RequestStatus.RUNNING
        request.admitted_seq = self._admission_counter
        self._admission_counter += 1
        self.running.append(request)
        if request.was_preempted:
            plan.resumed.append(request)
            request.resumed_at_steps.append(plan.step)
        else:
            plan.new.append(request)
            request.first_scheduled_step = plan.step

    def _remove_running(self, request: Request) -> None:
        if self.running and self.running[-1] is request:
            self.running.pop()
        else:
            self.running.remove(request)

    def _preempt(self, request: Request, plan: StepPlan) -> None:
        """Recompute preemption: drop the request's KV blocks; it re-prefills everything when resumed."""
        self.kv_cache.free(request)
        request.num_recomputed_tokens += request.num_computed_tokens
        request.num_computed_tokens = 0
        request.status = RequestStatus.PREEMPTED
        request.num_preemptions += 1
        request.was_preempted = True
        request.preempted_at_steps.append(plan.step)
        plan.preempted.append(request)

    def _finish_plan(self, plan: StepPlan) -> StepPlan:
        """Advance computed tokens of every scheduled request and decide who samples (vLLM's
        ``_update_after_schedule``); record the queue sizes the goldens report."""
        sampling = plan.sampling
        context_lens = plan.context_lens
        total = prefill = 0
        for request, num_new in plan.scheduled:
            context_lens.append(request.num_computed_tokens)
            target = request.num_tokens + request.num_output_placeholders
            request.num_computed_tokens += num_new
            request.num_scheduled_tokens_total += num_new
            total += num_new
            if request.num_computed_tokens >= target:
                sampling.append(request)
                if self.async_scheduling:
                    request.num_output_placeholders += 1
                if num_new > 1:
                    prefill += num_new
            else:
                prefill += num_new
        plan.num_scheduled_tokens = total
        plan.num_prefill_tokens = prefill
        plan.free_blocks_after_schedule = self.kv_cache.num_free_blocks
        plan.num_running = len(self.running)
        plan.num_waiting = len(self.waiting)
        return plan

    # -- output processing -----------------------------------------------------------------------
    def update_from_output(self, plan: StepPlan) -> StepOutcome:
        """Deliver one token to every request that sampled in ``plan``; finish and free those done."""
        outcome = StepOutcome(step=plan.step)
        for request in plan.sampling:
            if request.is_finished:
                continue
            request.num_output_tokens += 1
            if request.num_output_placeholders:
                request.num_output_placeholders -= 1
            outcome.emitted.append(request)
            if request.num_output_tokens == 1:
                request.first_token_step = plan.step
            if request.num_output_tokens >= request.max_output_tokens:
                self._finish(request, plan.step)
                outcome.finished.append(request)
        outcome.free_blocks_after_update = self.kv_cache.num_free_blocks
        return outcome

    def _finish(self, request: Request, step: int) -> None:
        was_running = request.status == RequestStatus.RUNNING
        request.status = RequestStatus.FINISHED
        request.finish_step = step
        request.reason = "length"
        self.kv_cache.free(request)
        if was_running:
            self.running.remove(request)
        else:
            # Async loop: a request preempted while its last token was in flight finishes from the queue.
            self.waiting.remove(request)
        self._finished_pending = True

    def abort(self, request: Request) -> None:
        """Remove a request wherever it is (client timeout, replica fault), freeing its blocks."""
        self.kv_cache.free(request)
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
