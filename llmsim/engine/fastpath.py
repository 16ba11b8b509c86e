"""Event skipping: advance a replica through many pure-decode steps at once.

Between events that change a batch (an admission, a prefill chunk, a request that finishes, a block
allocation that would fail, an arrival that could be admitted), every engine step has the same shape: each
running request feeds one token and its context grows by one. Such a *decode run* is fully determined by the
state at its start, so the replica can compute k steps in one go — their durations (a vectorised sum from
the timing model), block allocations (closed form: a request needs a new block every ``block_size`` tokens),
token deliveries and step records — and wait once instead of k times.

A run starts only where it provably makes the same decisions as the per-step loop (``engine.mode:
reference``), which the equivalence tests check. This module checks what every policy shares:

* every running request is a steady one-token decode (its previous token was delivered at the last update;
  async: its next token is the only one in flight, in a step that decodes exactly the running requests),
  and the step's token budget holds them all;
* no request finishes past its output length, and the run's block allocations fit the free blocks (no
  preemption). A request allocates as its context grows past the blocks it holds, so the same closed form
  serves paged policies (a block every ``block_size`` tokens) and reserving ones (Orca, static, TGI,
  TensorRT-LLM no-evict: the whole output was reserved at admission, decodes never allocate).

The policy itself says whether its admission rule keeps refusing the waiting queue, and what cuts the run
(:meth:`llmsim.engine.decode_runs.DecodeRunRules.decode_run_rules`, overridden where its rules differ): the
first finish (freed blocks or a free slot could let a request in), an arrival (it could be admitted, or
sort to the head), a step count (TGI's prefill counter), the first tick at which a waiting request ages, the
first tick at which SGLang's memory estimate may admit the head. An aborted request (a queue timeout) cuts
the run at the next tick, where the per-step loop takes over. With prefix caching the blocks have
identities: :mod:`llmsim.engine.decode_run_cache` replays them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np

from llmsim.engine.core import EngineLoop
from llmsim.engine.decode_run import MAX_RUN_STEPS, MIN_RUN_STEPS, DecodeRun
from llmsim.engine.decode_run_build import build_run
from llmsim.engine.kv_cache import KVCacheManager
from llmsim.engine.prefix_cache import PrefixCachingKVCacheManager
from llmsim.engine.step import StepPlan


class Replica(Protocol):
    """The replica a decode run advances (:class:`llmsim.engine.replica.Replica`, which imports this module)."""

    replica_id: int
    env: Any
    scheduler: Any
    kv_cache: KVCacheManager
    loop: EngineLoop
    recorder: Any
    num_outstanding: int
    run_horizon: int
    _gpu_free_s: float
    _last_update_end_s: Optional[float]



def scheduler_blockers(cfg) -> list[str]:
    """Scheduler settings for which decode runs are not proven exact: the policy's own answer."""
    from llmsim.engine.schedulers import SCHEDULERS  # the registry imports every policy module

    policy = SCHEDULERS.get(cfg.policy)
    return policy.decode_run_blockers(cfg) if policy is not None else [f"policy {cfg.policy}"]


def fast_path_supported(scheduler) -> bool:
    return (type(scheduler.kv_cache) in (KVCacheManager, PrefixCachingKVCacheManager) and scheduler.speculator is None
            and not scheduler_blockers(scheduler.config))


@dataclass
class ScheduleSnapshot:
    """What the replica remembers of its last ``schedule()`` call, to decide whether a run may start."""

    steady: bool = False  # every running request decoded one token; nobody admitted, resumed or preempted
    heads: tuple = (None, None)  # the refused heads of the waiting and swapped queues (None: empty)
    submitted: int = 0  # the replica's arrivals so far

    def head_refused(self, scheduler, last_update_finished: int, submitted: int) -> bool:
        """The last schedule() refused the queue heads still waiting now, and no block was freed since."""
        if not self.steady or last_update_finished or self.heads != _heads(scheduler):
            return False
        order = scheduler.queue_order
        # A sorting order puts an arrival wherever its key says, possibly at the head.
        if not order.arrivals_keep_head and submitted != self.submitted:
            return False
        # Aging: a request that started to age since then goes first at the next schedule().
        waiting = scheduler.waiting
        if order.starvation_guard_s is None or not waiting:
            return True
        return order.order(waiting, scheduler.now_s)[0] is waiting[0]

    @classmethod
    def of(cls, plan: "StepPlan", scheduler, submitted: int) -> "ScheduleSnapshot":
        if plan.new or plan.resumed or plan.preempted or plan.num_scheduled_tokens == 0:
            return cls(False)
        if getattr(plan, "failed", None) or getattr(plan, "swap_in_blocks", 0) or getattr(plan, "swap_out_blocks", 0):
            return cls(False)
        running = scheduler.running
        if len(plan.scheduled) != len(running) or plan.num_scheduled_tokens != len(running):
            return cls(False)
        if len(plan.sampling) != len(running):
            return cls(False)
        return cls(True, _heads(scheduler), submitted)


def _heads(scheduler) -> tuple:
    return (scheduler.waiting[0] if scheduler.waiting else None, scheduler.swapped[0] if scheduler.swapped else None)


def _steady(replica: "Replica", async_mode: bool) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Contexts and final-step indices of the running requests if every one is a steady decode, else None."""
    last_delivery = replica._last_update_end_s
    placeholders = 1 if async_mode else 0
    lag = 1 - placeholders  # sync: the last sampled token is not yet in the KV cache
    contexts, last_steps = [], []
    # Hot path (once per run): plain attribute reads into lists, converted to arrays once.
    for r in replica.scheduler.running:
        c = r.num_computed_tokens
        produced = r.num_output_tokens
        if r.num_output_placeholders != placeholders or c != r.prompt_tokens + produced - lag:
            return None
        # Its previous token came at the last update (or it has none yet: its first is due in this run).
        if r.last_token_s != last_delivery and not (produced == 0 and r.last_token_s is None):
            return None
        contexts.append(c)
        last_steps.append(r.max_output_tokens - produced - placeholders)
    return np.array(contexts, dtype=np.int64), np.array(last_steps, dtype=np.int64)


def plan_decode_run(replica: "Replica", snapshot: ScheduleSnapshot, last_update_finished: int,
                    timing) -> Optional[DecodeRun]:
    """A run starting at the replica's current tick, or None when the per-step loop must take this tick."""
    scheduler = replica.scheduler
    running = scheduler.running
    if not running or len(running) > scheduler.decode_token_budget():
        return None
    scheduler.now_s = replica.env.now  # as the tick's schedule() would see it (queue aging)
    rules = scheduler.decode_run_rules(snapshot.head_refused(scheduler, last_update_finished, replica.num_submitted))
    if rules is None:
        return None
    loop = replica.loop
    async_mode = loop.depth == 2
    if async_mode:
        # The step in flight must sample a token for each running request and schedule nobody else (it may
        # hold a final prefill chunk: that request's first token is then delivered in the run's first tick).
        if len(loop.in_flight) != 1:
            return None
        in_flight = loop.in_flight[0]
        if len(in_flight.sampling) != len(running) or len(in_flight.scheduled) != len(running):
            return None
    elif loop.in_flight:
        return None
    steady = _steady(replica, async_mode)
    if steady is None:
        return None
    contexts, last_step = steady
    finish_tick = last_step + 1 if async_mode else last_step
    k = min(MAX_RUN_STEPS, int(last_step.max()), rules.max_steps)
    if rules.truncate_on_arrival:
        # An arrival will likely cut this run: plan about as far as recent runs got (any length is exact).
        k = min(k, replica.run_horizon)
    if rules.stop_before_finish:
        # The first finish frees blocks in its tick's update: that tick's schedule() came before it, the next
        # one may admit, so the run ends with that tick.
        k = min(k, int(finish_tick.min()))
    if k < MIN_RUN_STEPS:
        return None
    run = build_run(replica, async_mode, k, contexts, last_step, finish_tick, timing)
    if run is None:
        return None
    if rules.aging is not None:
        submitted_s, guard = rules.aging
        # The first tick after the start whose schedule() would see a request start to age ends the run.
        aged = np.flatnonzero(run.tick_times(np.arange(2, run.k + 1)) - submitted_s > guard)
        if aged.size:
            run.k = int(aged[0]) + 1
    if rules.refused_ticks is not None:
        run.k = min(run.k, rules.refused_ticks(run))
    if run.k < MIN_RUN_STEPS:
        return None
    run.truncate_on_arrival = rules.truncate_on_arrival
    run.in_flight_plan = loop.in_flight[0] if async_mode else None
    return run
