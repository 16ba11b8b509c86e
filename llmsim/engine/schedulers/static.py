"""Static batching, as in NVIDIA FasterTransformer: a batch is formed, then runs until ALL its requests finish.

When the engine is empty it takes up to ``scheduler.max_num_seqs`` waiting requests (FCFS, each with KV space
for its full length, as FasterTransformer allocates for the maximum sequence length), prefills all their
prompts in one step, then decodes. A request that finishes early leaves, but nobody joins until the batch is
empty, so short requests wait for long ones (the inefficiency Orca's iteration-level scheduling removes).
FasterTransformer has no per-step token budget, so ``max_num_batched_tokens`` does not apply; it never
preempts.
"""

from __future__ import annotations

from typing import Optional

from llmsim.engine.decode_runs import RunRules
from llmsim.engine.step import StepPlan
from llmsim.engine.scheduler import UNLIMITED_TOKENS
from llmsim.engine.schedulers.reserving import ReservingScheduler


class StaticBatchScheduler(ReservingScheduler):
    name = "static"

    def schedule(self) -> StepPlan:
        plan = self._begin_step()
        if self.running:
            self._schedule_reserved_running(plan, UNLIMITED_TOKENS)
        else:
            self._admit_reserved(plan, UNLIMITED_TOKENS)
        return self._finish_plan(plan)

    def decode_token_budget(self) -> int:
        return UNLIMITED_TOKENS

    def decode_run_rules(self, head_refused: bool) -> Optional[RunRules]:
        # While the batch runs nobody joins: neither a finish nor an arrival changes a decode step, so a run
        # goes on until the batch's last request is done (the caller stops there), whoever waits.
        if self.running:
            return RunRules(truncate_on_arrival=False)
        return None
