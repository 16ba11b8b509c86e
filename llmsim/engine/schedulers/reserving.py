"""Shared plumbing of the reserving policies whose steps are not vLLM V1's: FasterTransformer's static batching and TGI.

Those, like Orca and TensorRT-LLM's ``GUARANTEED_NO_EVICT`` (vLLM V1's class with ``reserve_whole_length``), give a
request KV space for its prompt plus all the tokens it may generate at admission (``SchedulerBase._reserve``). A running request therefore never
needs memory that is not already its own, so these policies never preempt: ``scheduler.preemption`` has no
effect on them, and they admit fewer requests than the paged policies that reserve only the current need.

llmsim's requests ask for exactly their output length (``max_tokens`` = output length, as with
``ignore_eos``), so a reservation here is exactly what the request will use; real clients often ask for more.
"""

from __future__ import annotations


from llmsim.engine.step import StepPlan
from llmsim.engine.scheduler import SchedulerBase



class ReservingScheduler(SchedulerBase):
    """A :class:`SchedulerBase` whose admissions reserve slots for the request's whole length."""

    def _schedule_reserved_running(self, plan: StepPlan, budget: int) -> int:
        """Every running request gets its next tokens (decode, or the next prefill chunk) within ``budget``.

        Its blocks were reserved at admission, so the allocation cannot fail.
        """
        kv = self.kv_cache
        for request in self.running:
            if budget <= 0:
                break
            if self._last_token_in_flight(request):
                continue
            num_new = min(self._tokens_to_feed(request), budget)
            if num_new <= 0:
                continue
            if not kv.allocate_slots(request, num_new):
                raise AssertionError(f"{self.name}: request {request.request_id} outgrew its reservation")
            plan.scheduled.append((request, num_new))
            budget -= num_new
        return budget

    def _admit_reserved(self, plan: StepPlan, budget: int) -> int:
        """Admit waiting requests FCFS, each with its whole prompt, while their whole length fits; stop at the first
        that does not (or whose prompt exceeds what is left of ``budget``)."""
        cfg = self.config
        waiting = self.waiting
        while waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
            request = waiting[0]
            hit = self._prefix_hit(request)
            num_new = self._tokens_to_feed(request) - hit * self.kv_cache.block_size
            if num_new > budget:
                break
            if not self._reserve(request, plan, hit):
                break
            self._admit(waiting, plan, num_new)
            budget -= num_new
        return budget
