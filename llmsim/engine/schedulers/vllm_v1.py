"""vLLM V1's scheduler (vLLM 0.32, ``vllm/v1/core/sched/scheduler.py``), rule for rule.

There are no prefill or decode phases. Each step spends one token budget (``max_num_batched_tokens``) in two
passes: first over the RUNNING list in admission order (decodes and unfinished prefill chunks alike), then
over the WAITING queue, admitting FCFS until the first request that does not fit. When a running request
cannot get its KV blocks, the most recently admitted running request is preempted (recompute: its blocks
are dropped and it is prepended to the waiting queue); a step that preempted admits nobody. The rules and
the traces that pin them are in ``../shared/goldens/vllm_v1/README.md``; the numbered comments below refer
to that README's list.
"""

from __future__ import annotations

from llmsim.engine.request import Request
from llmsim.engine.scheduler import SchedulerBase, StepPlan


class VLLMV1Scheduler(SchedulerBase):
    name = "vllm-v1"

    def schedule(self) -> StepPlan:
        plan = self._begin_step()
        cfg = self.config
        budget = cfg.max_num_batched_tokens
        # Rule 2: the per-request cap is waived when the system holds exactly one request.
        threshold = cfg.long_prefill_token_threshold
        if len(self.running) + len(self.waiting) == 1:
            threshold = 0
        budget = self._schedule_running(plan, budget, threshold)
        # Rule 6: a step that preempted admits nobody, not even the victims.
        if not plan.preempted:
            self._schedule_waiting(plan, budget, threshold)
        return self._finish_plan(plan)

    # Rule 1 and rule 5.
    def _schedule_running(self, plan: StepPlan, budget: int, threshold: int) -> int:
        running = self.running
        kv = self.kv_cache
        index = 0
        while index < len(running) and budget > 0:
            request = running[index]
            if self._last_token_in_flight(request):
                index += 1
                continue
            num_new = request.num_tokens + request.num_output_placeholders - request.num_computed_tokens
            if threshold:
                num_new = min(num_new, threshold)
            num_new = min(num_new, budget, self.max_model_len - 1 - request.num_computed_tokens)
            if num_new <= 0:
                index += 1
                continue
            scheduled = True
            while not kv.allocate_slots(request, num_new):
                victim = self._pick_victim()
                self._remove_running(victim)
                self._preempt(victim, plan)
                self.waiting.appendleft(victim)
                if victim is request:
                    scheduled = False
                    break
            if not scheduled:
                break
            plan.scheduled.append((request, num_new))
            budget -= num_new
            index += 1
        return budget

    def _pick_victim(self) -> Request:
        """vLLM (FCFS) pops the tail of the running list: the most recently admitted or resumed request."""
        return self.running[-1]

    def _last_token_in_flight(self, request: Request) -> bool:
        """Async loop: skip a request whose final token is already being sampled (vLLM 0.32)."""
        return (
            request.num_output_placeholders > 0
            and request.num_computed_tokens + 2 - request.num_output_placeholders >= request.max_total_tokens
        )

    # Rule 3 and rule 4.
    def _schedule_waiting(self, plan: StepPlan, budget: int, threshold: int) -> None:
        cfg = self.config
        kv = self.kv_cache
        waiting = self.waiting
        while waiting and budget > 0:
            if len(self.running) >= cfg.max_num_seqs:
                break
            request = waiting[0]
            num_new = request.num_tokens + request.num_output_placeholders - request.num_computed_tokens
            if threshold:
                num_new = min(num_new, threshold)
            if not cfg.enable_chunked_prefill and num_new > budget:
                break
            num_new = min(num_new, budget)
            # The watermark counts only while some request is running.
            watermark = kv.watermark_blocks if self.running else 0
            if cfg.scheduler_reserve_full_isl:
                if kv.blocks_for_tokens(request.num_tokens) + watermark > kv.num_free_blocks:
                    break
            if not kv.allocate_slots(request, num_new, reserve_blocks=watermark):
                break
            waiting.popleft()
            self._admit(request, plan)
            plan.scheduled.append((request, num_new))
            budget -= num_new


