"""SGLang's scheduler (SGLang 0.5, ``srt/managers/scheduler.py``, ``schedule_policy.py``, ``schedule_batch.py``).

Prefill and decode run as separate steps, prefill first: whenever waiting requests can be admitted, the step
is a prefill batch (the partially prefilled "chunked" request first, then newcomers FCFS in chunks of the
prefill budget ``scheduler.max_num_batched_tokens``); otherwise every running request decodes one token.

Admission estimates future memory. Each running request is expected to need
``min(max_new_tokens − produced, 4096) × new_token_ratio`` more tokens; a newcomer is admitted only if its
prompt plus ``min(max_new_tokens, 4096)`` fits the free tokens left after those reservations. The ratio
starts at ``0.7 × schedule_conservativeness`` and decays linearly, per decode step, to 0.14 of that over 600
steps — admission grows bolder while memory holds. When a decode step does not fit, requests are
*retracted* (their KV freed by ``scheduler.preemption``, recompute by default; SGLang retracts the one with
the fewest output tokens, then the longest input; at least one keeps running) and the ratio is reset to
``(tokens decoded + 20 × running) / Σ max_new_tokens`` (at most 1). Retracted requests go back to the head
of the waiting queue (our choice; SGLang re-queues them and its FCFS order is not documented for them).
Constants from ``schedule_batch.py`` / ``global_config.py`` (SGLang 0.5): see below.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from llmsim.engine.kv_cache import KVCacheManager
from llmsim.engine.request import Request
from llmsim.engine.decode_runs import RunRules
from llmsim.engine.step import StepPlan
from llmsim.engine.scheduler import SchedulerBase

INIT_NEW_TOKEN_RATIO = 0.7  # SGLang default_init_new_token_ratio
MIN_NEW_TOKEN_RATIO_FACTOR = 0.14  # default_min_new_token_ratio_factor
NEW_TOKEN_RATIO_DECAY_STEPS = 600  # default_new_token_ratio_decay_steps
CLIP_MAX_NEW_TOKENS = 4096  # CLIP_MAX_NEW_TOKENS_ESTIMATION
RETRACT_DECODE_STEPS = 20  # retract_decode_steps


def fewest_outputs_longest_input(candidates: Sequence[Request], kv: KVCacheManager) -> Request:
    """SGLang's retraction order: the request with the fewest output tokens, then the longest prompt."""
    return min(candidates, key=lambda r: (r.num_output_tokens, -r.prompt_tokens, -r.admitted_seq))


class SGLangScheduler(SchedulerBase):
    name = "sglang"
    default_victim = staticmethod(fewest_outputs_longest_input)

    def __init__(self, config, kv_cache, max_model_len: int) -> None:
        super().__init__(config, kv_cache, max_model_len)
        self.init_ratio = min(INIT_NEW_TOKEN_RATIO * config.schedule_conservativeness, 1.0)
        self.min_ratio = self.init_ratio * MIN_NEW_TOKEN_RATIO_FACTOR
        self.ratio_decay = (self.init_ratio - self.min_ratio) / NEW_TOKEN_RATIO_DECAY_STEPS
        self.new_token_ratio = self.init_ratio

    def schedule(self) -> StepPlan:
        plan = self._begin_step()
        self._schedule_prefill(plan)
        if not plan.scheduled:
            stalled: list[Request] = []
            self._schedule_decode(plan, stalled)
            self._fail_if_deadlocked(plan, stalled)
        return self._finish_plan(plan)

    def decode_run_rules(self, head_refused: bool) -> Optional[RunRules]:
        if not self.waiting:
            return RunRules(truncate_on_arrival=True)
        if not head_refused or self.prefix_caching:  # (a decode's filled block may be a waiting hit)
            return None
        # Admission compares the head with the free tokens left after the running requests' expected growth,
        # which shrinks every decode step (fewer tokens to go, a decaying ratio): the head stays refused only
        # as long as _refused_ticks shows; a finish changes the running set, so it ends the run.
        order = self.queue_order
        return RunRules(stop_before_finish=True, truncate_on_arrival=not order.arrivals_keep_head,
                        aging=order.next_aging(self.waiting, self.now_s), refused_ticks=self._refused_ticks)

    def _refused_ticks(self, run) -> int:
        """Leading ticks of ``run`` at which _schedule_prefill surely refuses the waiting head (its estimate
        test, with a margin for float summation order: at the margin the per-step loop decides)."""
        k = run.k
        head = self.waiting[0]
        if len(self.running) >= self.config.max_num_seqs:
            return k  # no slot, whatever the memory: holds until someone finishes
        bs = self.kv_cache.block_size
        need = self._tokens_to_feed(head) + self._future_tokens(head)
        ratios = np.empty(k)
        ratio = self.new_token_ratio
        for m in range(k):  # the ratio tick m's prefill sees: decayed by the m decode steps before it
            ratios[m] = ratio
            ratio = max(self.min_ratio, ratio - self.ratio_decay)
        remaining = np.array([r.max_output_tokens - r.num_output_tokens for r in self.running], dtype=np.int64)
        future = np.minimum(remaining[:, None] - np.arange(k)[None, :], CLIP_MAX_NEW_TOKENS).sum(axis=0)
        available = run.free_before_ticks() * bs - future * ratios
        margin = 1e-9 * (np.abs(available) + need + future * ratios) + 1e-6
        fits = np.flatnonzero(need - available <= margin)
        return int(fits[0]) if fits.size else k

    def advance_decode_run(self, ticks: int) -> None:
        for _ in range(ticks):  # one decay per decode step, as _schedule_decode applies it (same float steps)
            self.new_token_ratio = max(self.min_ratio, self.new_token_ratio - self.ratio_decay)

    @staticmethod
    def _future_tokens(request: Request) -> int:
        return min(request.max_output_tokens - request.num_output_tokens, CLIP_MAX_NEW_TOKENS)

    def _schedule_prefill(self, plan: StepPlan) -> None:
        kv = self.kv_cache
        budget = self.config.max_num_batched_tokens
        available = kv.num_free_blocks * kv.block_size - sum(
            self._future_tokens(r) * self.new_token_ratio for r in self.running)
        # The chunked request (a prompt longer than one step's budget) continues first.
        for request in self.running:
            num_new = min(self._tokens_to_feed(request), budget)
            if num_new > 1 and not self._last_token_in_flight(request):
                if not kv.allocate_slots(request, num_new):
                    return
                plan.scheduled.append((request, num_new))
                budget -= num_new
                available -= num_new
        waiting = self.waiting
        while waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = waiting[0]
            hit = self._prefix_hit(request)
            extend = self._tokens_to_feed(request) - hit * kv.block_size
            if extend + self._future_tokens(request) > available:
                break
            num_new = min(extend, budget)
            if not self._allocate(request, num_new, plan, 0, hit):
                break
            self._admit(waiting, plan, num_new)
            budget -= num_new
            available -= extend + self._future_tokens(request)
            if num_new < extend:
                break  # SGLang chunks one request at a time

    def _schedule_decode(self, plan: StepPlan, stalled: list[Request]) -> None:
        kv = self.kv_cache
        decoding = [r for r in self.running if not self._last_token_in_flight(r) and self._tokens_to_feed(r) == 1]
        needed = sum(kv.num_new_blocks_needed(r, self._tokens_to_feed(r)) for r in decoding)
        retracted = False
        while needed > kv.num_free_blocks and len(self.running) > 1 and self.preemption != "none":
            victim = self.victim_rule(self.running, kv)
            self._remove_running(victim)
            self._preempt(victim, plan)
            self._requeue(victim)
            retracted = True
            if victim in decoding:
                decoding.remove(victim)
            needed = sum(kv.num_new_blocks_needed(r, self._tokens_to_feed(r)) for r in decoding)
        if not decoding:
            return
        if retracted:
            decoded = sum(r.num_output_tokens for r in self.running)
            total_max = sum(r.max_output_tokens for r in self.running)
            self.new_token_ratio = min(1.0, (decoded + RETRACT_DECODE_STEPS * len(self.running)) / (total_max + 1))
        else:
            self.new_token_ratio = max(self.min_ratio, self.new_token_ratio - self.ratio_decay)
        for request in decoding:
            num_new = self._tokens_to_feed(request)
            if kv.allocate_slots(request, num_new):
                plan.scheduled.append((request, num_new))
            else:
                stalled.append(request)  # preemption none, or the last request alone does not fit
