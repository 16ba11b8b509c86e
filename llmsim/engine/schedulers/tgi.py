"""Hugging Face Text Generation Inference v3 (``backends/v3/src/backend.rs``, ``queue.rs``).

TGI reserves KV blocks for a request's prompt plus ``max_new_tokens`` when it admits it, so it never
preempts. New requests join through a prefill that runs as its own forward pass while the running batch's
decodes pause. While a batch runs, a prefill is tried only when at least ``floor(running ×
waiting_served_ratio)`` waiting requests (TGI default 0.3) could join, or when ``max_waiting_tokens`` (20)
decode steps have passed since the last prefill; an empty engine prefills at once. Admission is FIFO and stops
at the first request that exceeds the remaining ``max_batch_prefill_tokens`` (llmsim:
``scheduler.max_num_batched_tokens``, raised to ``max_model_len`` as TGI requires it to cover the longest
input) or the remaining ``max_batch_total_tokens`` (llmsim: the replica's KV blocks). TGI's
``max_concurrent_requests`` (128) is llmsim's ``scheduler.max_waiting_requests``.

Like Orca and static batching (vLLM V1's class with ``reserve_whole_length``), an admission reserves the request's
prompt plus all the tokens it may generate (``SchedulerBase._reserve``), so a running request never needs memory that
is not already its own: ``scheduler.preemption`` has no effect. llmsim's requests ask for exactly their output
length (``max_tokens`` = output length, as with ``ignore_eos``), so a reservation is exactly what the request will
use; real clients often ask for more.
"""

from __future__ import annotations

from typing import Optional

from llmsim.engine.decode_runs import UNLIMITED_TOKENS, RunRules
from llmsim.engine.step import StepPlan
from llmsim.engine.scheduler import SchedulerBase


class TGIScheduler(SchedulerBase):
    name = "tgi"

    # Its running pass reserves nothing new and has no token budget (Orca's, in vLLM V1's switches); the aggregate
    # engine, which runs that pass itself and calls the admission methods below, reads both.
    reserve_whole_length = True
    token_budget = False

    def __init__(self, config, kv_cache, max_model_len: int) -> None:
        super().__init__(config, kv_cache, max_model_len)
        self.prefill_budget = self.prefill_budget_for(config, max_model_len)
        self.decode_steps_since_prefill = 0

    @staticmethod
    def prefill_budget_for(config, max_model_len: int) -> int:
        return max(config.max_num_batched_tokens, max_model_len)

    def schedule(self) -> StepPlan:
        plan = self._begin_step()
        self.admit_prefills(plan)
        if plan.scheduled:
            self.note_steps(prefill=True)
        else:
            self._schedule_reserved_running(plan, UNLIMITED_TOKENS)
            self.note_steps(prefill=False, decodes=1)
        return self._finish_plan(plan)

    def admit_prefills(self, plan: StepPlan) -> None:
        """A prefill of newcomers, run alone, when enough of them can join (the step is theirs if anyone joins)."""
        if self.waiting and self._admissible_count() >= self._min_prefill_size():
            self._admit_reserved(plan, self.prefill_budget)

    def note_steps(self, prefill: bool, decodes: int = 0) -> None:
        """The counter TGI's admission reads: a prefill resets it, each decode step adds one."""
        self.decode_steps_since_prefill = 0 if prefill else self.decode_steps_since_prefill + decodes

    def decode_run_rules(self, head_refused: bool) -> Optional[RunRules]:
        """TGI decides afresh each step whether to prefill, from the free blocks and a decode-step counter, so
        the rule is evaluated here rather than inferred from the last step. During a decode run its blocks
        (reserved at admission) stay put and the running count is fixed until someone finishes."""
        if not self.waiting:
            return RunRules(truncate_on_arrival=True)
        if (not self.queue_order.arrivals_keep_head or self.config.starvation_guard_s is not None
                or self.prefix_caching):
            return None
        admissible = self._admissible_count()
        if admissible == 0:
            # The head does not fit: it keeps not fitting, and arrivals queue behind it (FIFO count stops).
            return RunRules(stop_before_finish=True, truncate_on_arrival=False)
        # Too few would join: that holds until the counter reaches max_waiting_tokens or an arrival adds one.
        steps_left = self.config.max_waiting_tokens - self.decode_steps_since_prefill
        if admissible >= self._min_prefill_size() or steps_left <= 0:
            return None
        return RunRules(max_steps=steps_left, stop_before_finish=True, truncate_on_arrival=True)

    def advance_decode_run(self, ticks: int) -> None:
        self.note_steps(prefill=False, decodes=ticks)  # every tick of a run is a decode step

    def _min_prefill_size(self) -> int:
        if not self.running or self.decode_steps_since_prefill >= self.config.max_waiting_tokens:
            return 1
        return max(1, int(len(self.running) * self.config.waiting_served_ratio))

    def _admissible_count(self) -> int:
        """How many waiting requests the next prefill would take (FIFO, stopping at the first misfit)."""
        kv = self.kv_cache
        free, budget, count = kv.num_free_blocks, self.prefill_budget, 0
        slots = self.config.max_num_seqs - len(self.running)
        for request in self.waiting:
            need = kv.blocks_for_tokens(self._max_total_tokens(request) - 1)
            prompt = self._tokens_to_feed(request)
            if count >= slots or need > free or prompt > budget:
                break
            free, budget, count = free - need, budget - prompt, count + 1
        return count

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
