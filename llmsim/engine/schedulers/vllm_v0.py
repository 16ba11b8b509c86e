"""vLLM V0's default scheduler (vLLM 0.8.5, ``vllm/core/scheduler.py``, chunked prefill off).

Steps are either prefill-only or decode-only, and prefills go first:

1. If no request is swapped out, admit waiting requests FCFS with their WHOLE prompt (no chunking) while the
   step's token budget and ``max_num_seqs`` allow and the blocks fit above the watermark; stop at the first
   that does not fit.
2. Only if no prefill was scheduled: decode every running request, one token each. A request that needs a
   new block and finds none preempts the most recently admitted running request (``running.pop()``) —
   recompute, or swap its blocks to CPU memory with ``scheduler.preemption: swap``.
3. If nothing was preempted in 2: swap swapped-out requests back in (FCFS) and decode them in this step.

The watermark is vLLM 0.8.5's default, 1 % of the GPU blocks, unless ``scheduler.watermark`` is set above 0;
like V1 (and unlike V0, which would ignore a request that can never fit above it) it applies only while
something runs. With chunked prefill off V0 raises the token budget to ``max_model_len``
(``max(max_model_len, 2048)``), so ``max_num_batched_tokens`` below ``max_model_len`` is raised here too.
V0 preempts single-sequence requests by recompute and swaps only multi-sequence groups (beam search, n > 1);
llmsim's requests have one sequence, so ``swap`` models V0 with ``--preemption-mode swap``.
V0's chunked-prefill mode is the ``sarathi`` policy.
"""

from __future__ import annotations

from llmsim.engine.request import Request, RequestStatus
from llmsim.engine.step import StepPlan
from llmsim.engine.scheduler import SchedulerBase

V0_DEFAULT_WATERMARK = 0.01  # vLLM 0.8.5 CacheConfig / BlockSpaceManager default


class VLLMV0Scheduler(SchedulerBase):
    name = "vllm-v0"

    def __init__(self, config, kv_cache, max_model_len: int) -> None:
        super().__init__(config, kv_cache, max_model_len)
        self.watermark_blocks = self.watermark_blocks_for(config, kv_cache.num_gpu_blocks)
        self.prefill_budget = self.prefill_budget_for(config, max_model_len)

    # The two settings V0 derives from the config, as functions: the aggregate engine, which runs this class's own
    # admission pass over its arrays (llmsim.engine.aggregate.prefill_first), sets itself up from them.
    @staticmethod
    def watermark_blocks_for(config, num_gpu_blocks: int) -> int:
        fraction = config.watermark if config.watermark > 0 else V0_DEFAULT_WATERMARK
        return int(fraction * num_gpu_blocks)

    @staticmethod
    def prefill_budget_for(config, max_model_len: int) -> int:
        return max(config.max_num_batched_tokens, max_model_len)

    def _requeue(self, victim: Request) -> None:
        if victim.status == RequestStatus.SWAPPED:
            self.swapped.append(victim)  # V0 extends its swapped queue
        else:
            self.waiting.appendleft(victim)

    def schedule(self) -> StepPlan:
        plan = self._begin_step()
        self.admit_prefills(plan)
        if not plan.scheduled:
            stalled: list[Request] = []
            budget = self._schedule_running(plan, self.config.max_num_batched_tokens, stalled)
            if not plan.preempted:
                self._schedule_swapped(plan, budget)
            self._fail_if_deadlocked(plan, stalled)
        return self._finish_plan(plan)

    def admit_prefills(self, plan: StepPlan) -> None:
        """Newcomers' whole prompts, run alone in this step if anyone joins (not while a request is swapped out)."""
        if not self.swapped:
            self._schedule_prefills(plan)

    def _watermark(self) -> int:
        return self.watermark_blocks if (self.running or self.swapped) else 0

    def _schedule_prefills(self, plan: StepPlan) -> None:
        budget = self.prefill_budget
        waiting = self.waiting
        while waiting and len(self.running) < self.config.max_num_seqs:
            request = waiting[0]
            hit = self._prefix_hit(request)
            num_new = self._tokens_to_feed(request) - hit * self.kv_cache.block_size
            if num_new > budget:
                break
            if not self._allocate(request, num_new, plan, self._watermark(), hit):
                break
            self._admit(waiting, plan, num_new)
            budget -= num_new

    def _schedule_swapped(self, plan: StepPlan, budget: int) -> None:
        swapped = self.swapped
        while swapped and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = swapped[0]
            num_new = min(self._tokens_to_feed(request), budget)
            if num_new <= 0 or not self._allocate(request, num_new, plan, self._watermark()):
                break
            self._admit(swapped, plan, num_new)
            budget -= num_new
