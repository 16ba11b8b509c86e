"""vLLM V0's step on the aggregate engine, with the policy's own admission pass run over the engine's arrays.

vLLM V0 (chunked prefill off; :mod:`llmsim.engine.schedulers.vllm_v0`) first tries to admit newcomers, whole
prompts only; if it admits anyone the step is theirs alone, otherwise every running request decodes under the
running pass all of llmsim's vLLM-like schedulers share (``SchedulerBase._schedule_running``, which
:class:`~llmsim.engine.aggregate.rules.VLLMV1Rules` runs with the pool in aggregate). The admission pass itself is
not restated here: the engine calls the policy class's own ``_schedule_prefills`` and ``_watermark`` with the
engine as ``self``, and answers the questions that pass asks (its queues, ``config``, ``kv_cache.block_size``,
``prefill_budget``, ``_tokens_to_feed``, ``_prefix_hit``, ``_allocate``, ``_admit``) from its arrays. A change to
V0's admission rule is therefore made once, in its class.

A prefill-only step leaves the decode pool as it was: the pool's clock (``pool_step``, :mod:`llmsim.engine.pool`)
does not advance, so its members' contexts, block needs and finishing steps keep their places.
"""

from __future__ import annotations

import types

from llmsim.engine.aggregate.plan import ANY, AggregatePlan
from llmsim.engine.aggregate.policies import asks_prefill_pass

class PrefillFirstSteps:
    """A mixin of :class:`~llmsim.engine.aggregate.engine.AggregateReplica` (the engine's state is ``self``)."""

    def _init_prefill_first(self, policy: type, sched_cfg, num_gpu_blocks: int, max_model_len: int) -> None:
        """Bind ``policy``'s admission pass to this engine when it is vLLM V0's kind (else ``_prefill_pass`` is None)."""
        self._prefill_pass = None
        if not asks_prefill_pass(policy):
            return
        # What the pass reads of its scheduler. (Swap preemption, V0's swapped queue, keeps the event-skipping loop.)
        self.config = sched_cfg
        self.kv_cache = types.SimpleNamespace(block_size=sched_cfg.block_size)
        self.swapped = ()
        self.prefill_budget = policy.prefill_budget_for(sched_cfg, max_model_len)
        self.watermark_blocks = policy.watermark_blocks_for(sched_cfg, num_gpu_blocks)
        self._watermark = types.MethodType(policy._watermark, self)
        self._prefill_pass = types.MethodType(policy._schedule_prefills, self)
        self._admitted: list[tuple[int, int]] = []
        self._head_hits = 0

    def _prefill_step(self, plan: AggregatePlan, s: int) -> bool:
        """Run the policy's admission pass; if it admits anyone, make this step theirs alone (pool step ``s`` is not
        used) and return True. Otherwise leave the range under which the head keeps failing and return False."""
        admitted = self._admitted = []
        self._head_hits = 0
        free, num_running = self.free, len(self.running)
        self._prefill_pass(plan)
        if not admitted:
            # Nobody got in. Its budget is fixed, so while the head is the same, the free blocks do not grow and the
            # running count does not fall, the pass fails again (the watermark applies while anyone runs, as it
            # does through quiet steps). Not with hits: evictions may take them away while it waits.
            if not self._head_hits:
                self.admission_blocked = (self.waiting[0], -ANY, ANY, free, num_running)
            return False
        plan.pool_step = s - 1  # the last pool step at or before this one (its update delivers no pool token)
        plan.pool_decodes = self.pool_decoded_last = False
        self.pool_step = s
        self._finish_plan(plan, admitted, 0, 0, s)
        return True

    # The questions the policy's pass asks, answered from the arrays.

    def _tokens_to_feed(self, i: int) -> int:
        return self.P[i] + self.out[i] + self.ph[i] - self.comp[i]

    def _prefix_hit(self, i: int) -> int:
        """Only a request resuming after a recompute preemption can hit (its own blocks; see .prefix)."""
        hits = self._own_hits(i) if self._resuming(i) else 0
        self._head_hits = hits
        return hits

    def _resuming(self, i: int) -> bool:
        return self.prefix_caching and not self.comp[i] and self.was_preempted[i]

    def _allocate(self, i: int, num_new: int, plan: AggregatePlan, reserve_blocks: int = 0,
                  num_cached_blocks: int = 0) -> bool:
        """``SchedulerBase._allocate`` for a waiting request: blocks for its hits and ``num_new`` tokens, keeping
        ``reserve_blocks`` free."""
        bs = self.bs
        c = self.comp[i]
        need = -(-(c + num_cached_blocks * bs + num_new) // bs) - (-(-c // bs))
        if need + reserve_blocks > self.free:
            return False
        self._take_blocks(i, need, num_cached_blocks if self._resuming(i) else None)
        return True

    def _admit(self, queue, plan: AggregatePlan, num_new: int) -> None:
        self._start_running(queue, plan, self._admitted, num_new)
