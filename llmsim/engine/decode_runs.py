"""What a batching policy says about skipping decode runs (:mod:`llmsim.engine.fastpath`): one protocol.

A *decode run* is a stretch of engine ticks in which ``schedule()`` runs every running request as a
one-token decode and admits, resumes and preempts nobody. fastpath checks what every policy shares — the
running requests are steady decodes, the step's token budget holds them, their block allocations fit
(paged, or reserved at admission) — and asks the policy, through :class:`DecodeRunRules` (a base of
:class:`~llmsim.engine.scheduler.SchedulerBase`), whether its own admission rule provably keeps refusing
the waiting queue and what would change that. The default is derived from the rules most policies share;
a policy overrides it only where its rules differ (static batching, TGI, SGLang).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Optional

UNLIMITED_TOKENS = sys.maxsize  # for engines whose steps have no token budget (Orca, FasterTransformer, TGI)


@dataclass(frozen=True, slots=True)
class RunRules:
    """What a policy says about a pure-decode run starting at this tick (see :meth:`DecodeRunRules.decode_run_rules`).

    The run lasts until a request would finish (the caller's limit), ``max_steps`` ticks, or — where set — the
    first finish, the first arrival or the first tick at which a waiting request starts to age, whichever
    comes first.
    """

    max_steps: int = 1 << 30
    stop_before_finish: bool = False  # a finish frees blocks or a slot that could let a waiting request in
    truncate_on_arrival: bool = True  # an arrival could be admitted, or become the waiting queue's head
    # (submitted_s, guard_s): a tick at time t with t − submitted_s > guard_s re-sorts the waiting queue (aging).
    aging: Optional[tuple[float, float]] = None
    # For an admission test that loosens as the run goes on: given the planned run
    # (:class:`llmsim.engine.decode_run.DecodeRun`), how many of its first ticks surely refuse the head.
    refused_ticks: Optional[Callable[..., int]] = None


class DecodeRunRules:
    """The decode-run protocol with the shared rule (mixed into :class:`~llmsim.engine.scheduler.SchedulerBase`,
    whose queues, config and queue order it reads)."""

    @classmethod
    def decode_run_blockers(cls, config) -> list[str]:
        """Settings under which this policy's decode runs are not modelled (empty: they may be skipped)."""
        return []

    #: Whether ``max_num_batched_tokens`` bounds a step; a policy without a budget (Orca, static batching, TGI) says
    #: False, and the aggregate engine reads the same attribute.
    token_budget = True

    def decode_token_budget(self) -> int:
        """Tokens one step may schedule (a run needs one per running request)."""
        return self.config.max_num_batched_tokens if self.token_budget else UNLIMITED_TOKENS

    def decode_run_rules(self, head_refused: bool) -> Optional[RunRules]:
        """Whether the next ticks may be a decode run as far as the queues go, and what cuts it (None: the
        per-step loop takes this tick). Called only when every running request is a steady decode.

        ``head_refused``: the last schedule() ran exactly the running decodes, refused the heads of the
        waiting and swapped queues that are still there, and no block was freed since (for a sorting queue
        order: and nobody arrived since). The shared rule: with nobody waiting, only an arrival can change
        the batch; with a refused head, blocks only get scarcer and the running count and token budget stay
        fixed while nobody finishes, so the head stays refused. Arrivals join the tail of a FCFS queue, so
        they cut the run only where the order sorts them (they may become the head).
        """
        if not self.waiting and not self.swapped:
            return RunRules(truncate_on_arrival=True)
        if not head_refused or self.prefix_caching:
            # (prefix caching: a block a decode fills may be the next hit of a waiting request — a
            # conversation's next turn — and make it admissible)
            return None
        order = self.queue_order
        return RunRules(stop_before_finish=True, truncate_on_arrival=not order.arrivals_keep_head,
                        aging=order.next_aging(self.waiting, self.now_s))

    def advance_decode_run(self, ticks: int) -> None:
        """Apply what ``ticks`` decode-only schedule() calls change in the policy's own state (its counters)."""
