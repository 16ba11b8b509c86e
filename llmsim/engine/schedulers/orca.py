"""Orca (Yu et al., "Orca: A Distributed Serving System for Transformer-Based Generative Models", OSDI 2022).

Iteration-level scheduling: the batch is re-formed at every iteration, so a finished request leaves and a
new one joins at the next iteration instead of waiting for the whole batch (contrast ``static``). Selective
batching runs a newcomer's WHOLE prompt in the same iteration as the running requests' decodes: there is no
chunking. Orca's scheduler reserves ``max_tokens`` KV slots for a request when it first schedules it (paper
§4.5), so it never preempts. Its only cap is the batch size (``scheduler.max_num_seqs``); the paper has no
per-iteration token budget, so ``max_num_batched_tokens`` does not apply.
"""

from __future__ import annotations

from llmsim.engine.step import StepPlan
from llmsim.engine.schedulers.reserving import UNLIMITED_TOKENS, ReservingScheduler


class OrcaScheduler(ReservingScheduler):
    name = "orca"

    def schedule(self) -> StepPlan:
        plan = self._begin_step()
        self._schedule_reserved_running(plan, UNLIMITED_TOKENS)
        self._admit_reserved(plan, UNLIMITED_TOKENS, chunked=False)
        return self._finish_plan(plan)

    def decode_token_budget(self) -> int:
        return UNLIMITED_TOKENS  # no per-iteration token budget; the shared decode-run rule applies as is
