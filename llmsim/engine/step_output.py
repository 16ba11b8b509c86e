"""What a step's output does to a scheduler's queues: tokens delivered, requests finished and freed, aborts.

A mixin of :class:`~llmsim.engine.scheduler.SchedulerBase` (its queues, KV cache and speculator are ``self``),
shared by every batching policy: vLLM applies a step's sampled tokens the same way whatever scheduled them.
"""

from __future__ import annotations

from llmsim.engine.request import Request, RequestStatus
from llmsim.engine.step import StepOutcome, StepPlan

_ENDED = frozenset((RequestStatus.FINISHED, RequestStatus.REJECTED, RequestStatus.FAILED))


class OutputProcessing:
    """``update_from_output``, finishing and aborting (see the module docstring)."""

    def update_from_output(self, plan: StepPlan) -> StepOutcome:
        """Deliver one token to every request that sampled in ``plan``; finish and free those done."""
        outcome = StepOutcome(step=plan.step)
        outcome.finished.extend(plan.failed)
        ended = _ENDED
        cache_blocks = self.kv_cache.cache_full_blocks if self.prefix_caching and self.async_scheduling else None
        if self.async_scheduling:
            for request, num_new in plan.scheduled:
                request.num_in_flight_tokens -= num_new  # preempted ones too (vLLM does not reset the count)
        speculator = self.speculator
        padded = plan.padded
        for i, request in enumerate(plan.sampling):
            if request.status in ended:
                continue
            running = request.status == RequestStatus.RUNNING
            gained = 1
            drafts = plan.spec_drafts[i] if speculator is not None else 0
            if drafts:
                accepted = speculator.verify(request, drafts, request in padded)
                gained += accepted
                if running:
                    # vLLM rolls back the rejected slots (and, async, their placeholders); a request preempted
                    # while its step was in flight has nothing to roll back.
                    request.num_computed_tokens -= drafts - accepted
                    if request.num_output_placeholders:
                        request.num_output_placeholders -= drafts - accepted
            # Accepted tokens past max_tokens are trimmed (vLLM's check_stop).
            gained = min(gained, request.max_output_tokens - request.num_output_tokens)
            request.num_output_tokens += gained
            if request.num_output_placeholders:
                # vLLM zeroes a preempted request's placeholders; its late output still delivers the tokens.
                request.num_output_placeholders = request.num_output_placeholders - gained if running else 0
            if cache_blocks is not None and request.status == RequestStatus.RUNNING:
                # vLLM's AsyncScheduler registers the blocks the delivered token completes (before a
                # finished request frees them); the sync loop registers only at allocation.
                cache_blocks(request, request.num_computed_tokens - request.num_output_placeholders)
            outcome.emitted.append(request)
            if request.num_output_tokens == gained:
                request.first_token_step = plan.step
            if request.num_output_tokens >= request.max_output_tokens:
                self._finish(request, plan.step)
                outcome.finished.append(request)
            elif speculator is not None and not self.async_scheduling:
                speculator.propose(request, self.max_model_len)
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
            self._remove_from_queues(request)
        self._finished_pending = True

    def _remove_from_queues(self, request: Request) -> None:
        for queue in (self.running, self.waiting, self.swapped):
            if request in queue:
                queue.remove(request)
                return

    def abort(self, request: Request) -> None:
        """Remove a request wherever it is (client timeout, replica fault), freeing its blocks."""
        self.kv_cache.free(request)
        self._remove_from_queues(request)
