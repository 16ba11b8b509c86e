"""Sarathi-Serve (Agrawal et al., "Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve",
OSDI 2024): stall-free batching with chunked prefills.

Every step has a token budget (``scheduler.max_num_batched_tokens``, the paper's "token budget" chosen from
the TBT SLO). The step first takes ONE decode token from every running request that has finished its
prefill, then continues the running requests' partial prefills, then admits new requests FCFS with prefill
chunks that fill what is left of the budget. Decodes therefore never stall behind a long prefill, and a
prompt is spread over several steps. Admission checks only the blocks of this step's chunk (vLLM V0's
chunked-prefill mode, on which Sarathi-Serve was built). When a decode cannot get a block, the most recently
admitted running request is preempted (recompute or swap); as in vLLM V1, a step that preempted admits
nobody (our choice: it avoids re-admitting a victim's freed blocks to a newcomer in the same step).
"""

from __future__ import annotations

from llmsim.engine.request import Request
from llmsim.engine.step import StepPlan
from llmsim.engine.scheduler import SchedulerBase


class SarathiScheduler(SchedulerBase):
    name = "sarathi"

    def schedule(self) -> StepPlan:
        plan = self._begin_step()
        # Decodes first, then partial prefills; each group keeps its admission order.
        running = self.running
        if running:
            # In decode: every token but the newest is computed (placeholders: async tokens in flight).
            decoding = [r.num_computed_tokens >= r.prompt_tokens + r.num_output_tokens - 1 + r.num_output_placeholders
                        for r in running]
            if False in decoding and True in decoding[decoding.index(False):]:  # (usually in order already)
                running[:] = ([r for r, d in zip(running, decoding) if d]
                              + [r for r, d in zip(running, decoding) if not d])
        stalled: list[Request] = []
        budget = self._schedule_running(plan, self.config.max_num_batched_tokens, stalled)
        if not plan.preempted:
            self._schedule_waiting(plan, budget)
        self._fail_if_deadlocked(plan, stalled)
        return self._finish_plan(plan)

    def _schedule_waiting(self, plan: StepPlan, budget: int) -> None:
        waiting = self.waiting
        while waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = waiting[0]
            hit = self._prefix_hit(request)
            num_new = min(self._tokens_to_feed(request) - hit * self.kv_cache.block_size, budget)
            if not self._allocate(request, num_new, plan, 0, hit):
                break
            self._admit(waiting, plan, num_new)
            budget -= num_new
