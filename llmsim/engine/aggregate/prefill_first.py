"""Policies whose steps prefill newcomers alone, on the aggregate engine: their own admission methods, run over the
engine's arrays.

vLLM V0 (chunked prefill off; :mod:`llmsim.engine.schedulers.vllm_v0`) and TGI (:mod:`llmsim.engine.schedulers.tgi`)
first try to admit newcomers, whole prompts only; if they admit anyone the step is theirs alone, otherwise every
running request decodes under the running pass the engine states for every policy (:mod:`.rules`: vLLM's rules 1 and
5, with the pool in aggregate; TGI's is the reserving, unbudgeted one). The admission rules are not restated here:
the engine binds the policy class's own methods (:data:`.policies.PREFILL_FIRST`: ``admit_prefills`` and what it
calls) to itself and answers the questions they ask (its queues, ``config``, ``kv_cache``, ``prefill_budget``,
``_tokens_to_feed``, ``_prefix_hit``, ``_allocate``, ``_reserve``, ``_admit``) from its arrays. A change to either
policy's admission rule is therefore made once, in its class.

A prefill-only step leaves the decode pool as it was: the pool's clock (``pool_step``, :mod:`llmsim.engine.pool`)
does not advance, so its members' contexts, block needs and finishing steps keep their places.

Quiet steps with requests waiting need to know how long a refused head stays refused. vLLM V0's pass has a fixed
budget, so the head fails again while free blocks do not grow and nobody finishes. TGI's refusal also ends with an
arrival or when its count of decode steps since the last prefill reaches ``max_waiting_tokens``: the engine asks the
policy's own ``decode_run_rules`` (the event-skipping loop's protocol, :mod:`llmsim.engine.decode_runs`) and turns
its answer into the range the quiet loop checks.
"""

from __future__ import annotations

import types

from llmsim.engine.aggregate.plan import ANY, AggregatePlan
from llmsim.engine.aggregate.policies import PREFILL_FIRST, prefill_first_kind
from llmsim.engine.schedulers.tgi import TGIScheduler

_NO_LIMIT = 1 << 30  # RunRules.max_steps' default: no step limit


class _KVView:
    """What the policies' admission methods read of their KV cache, answered by the engine."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.block_size = engine.bs

    @property
    def num_free_blocks(self) -> int:
        return self._engine.free

    def blocks_for_tokens(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)


class PrefillFirstSteps:
    """A mixin of :class:`~llmsim.engine.aggregate.engine.AggregateReplica` (the engine's state is ``self``)."""

    def _init_prefill_first(self, policy: type, sched_cfg, num_gpu_blocks: int, max_model_len: int) -> None:
        """Bind ``policy``'s admission methods to this engine when it is of a prefill-first kind (else
        ``_prefill_pass`` is None)."""
        self._prefill_pass = None
        kind = prefill_first_kind(policy)
        if kind is None:
            return
        # What the methods read of their scheduler. (Swap preemption, V0's swapped queue, and every queue order
        # but FCFS keep the event-skipping loop.)
        self.config = sched_cfg
        self.kv_cache = _KVView(self)
        self.swapped = ()
        self.queue_order = types.SimpleNamespace(arrivals_keep_head=True)
        self.prefill_budget = policy.prefill_budget_for(sched_cfg, max_model_len)
        if hasattr(policy, "watermark_blocks_for"):
            self.watermark_blocks = policy.watermark_blocks_for(sched_cfg, num_gpu_blocks)
        for name in PREFILL_FIRST[kind]:
            setattr(self, name, types.MethodType(getattr(policy, name), self))
        self.decode_steps_since_prefill = 0  # (TGI's counter, which its methods keep)
        self._prefill_pass = self.admit_prefills
        self._note_steps = self.note_steps if kind is TGIScheduler else None
        self._admitted: list[tuple[int, int]] = []
        self._head_hits = 0

    def _prefill_step(self, plan: AggregatePlan, s: int) -> bool:
        """Run the policy's admission pass; if it admits anyone, make this step theirs alone (pool step ``s`` is not
        used) and return True. Otherwise return False (vLLM V0: leaving the range under which the head keeps
        failing)."""
        admitted = self._admitted = []
        self._head_hits = 0
        free, num_running = self.free, len(self.running)
        self._prefill_pass(plan)
        if not admitted:
            # vLLM V0's budget is fixed, so while the head is the same, the free blocks do not grow and the running
            # count does not fall, its pass fails again (the watermark applies while anyone runs, as it does through
            # quiet steps). Not with hits: evictions may take them away while it waits.
            if self._note_steps is None and not self._head_hits:
                self.admission_blocked = (self.waiting[0], -ANY, ANY, free, num_running, ANY, ANY)
            return False
        if self._note_steps is not None:
            self._note_steps(prefill=True)
        plan.pool_step = s - 1  # the last pool step at or before this one (its update delivers no pool token)
        plan.pool_decodes = self.pool_decoded_last = False
        self.pool_step = s
        self._finish_plan(plan, admitted, 0, 0, s)
        return True

    def _after_decode_step(self, s: int, built_fast: bool) -> None:
        """After a decode step at pool step ``s``: TGI counts it, and says how long its refused head stays refused."""
        if self._note_steps is None:
            return
        self._note_steps(prefill=False, decodes=1)
        if not (built_fast and self.waiting):
            return
        rules = self.decode_run_rules(True)
        if rules is None or rules.aging is not None or rules.refused_ticks is not None:
            return
        self.admission_blocked = (
            self.waiting[0], -ANY, ANY, ANY, len(self.running) if rules.stop_before_finish else 0,
            len(self.waiting) if rules.truncate_on_arrival else ANY,
            s + 1 + rules.max_steps if rules.max_steps < _NO_LIMIT else ANY)

    def _quiet_decodes_done(self, count: int) -> None:
        """``count`` quiet steps decoded the pool (TGI counts them)."""
        self.pool_decoded_last = True
        if self._note_steps is not None:
            self._note_steps(prefill=False, decodes=count)

    # The questions the policies' methods ask, answered from the arrays.

    def _tokens_to_feed(self, i: int) -> int:
        return self.P[i] + self.out[i] + self.ph[i] - self.comp[i]

    def _max_total_tokens(self, i: int) -> int:
        return self.P[i] + self.O[i]

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

    def _reserve(self, i: int, plan: AggregatePlan, hit_blocks: int = 0) -> bool:
        """``SchedulerBase._reserve``: the whole request (prompt and every output token but the last) now."""
        tokens = self.P[i] + self.O[i] - 1 - self.comp[i] - hit_blocks * self.bs
        return self._allocate(i, max(tokens, 0), plan, 0, hit_blocks)

    def _admit(self, queue, plan: AggregatePlan, num_new: int) -> None:
        self._start_running(queue, plan, self._admitted, num_new)
