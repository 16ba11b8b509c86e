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

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import numpy as np

from llmsim.engine.core import EngineLoop
from llmsim.engine.kv_cache import KVCacheManager
from llmsim.engine.prefix_cache import PrefixCachingKVCacheManager
from llmsim.engine.request import Request
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

#: Longest run computed at once (bounds the arrays; a longer stretch simply becomes several runs).
MAX_RUN_STEPS = 4096
#: Shorter runs are not worth the set-up cost; the per-step loop takes them.
MIN_RUN_STEPS = 3
#: Runs of at most this many request-steps are planned in plain Python (:func:`_build_small_run`).
SMALL_RUN_CELLS = 1024


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


@dataclass
class DecodeRun:
    """Up to ``k`` engine ticks of pure decoding, planned at ``start_s`` and committed lazily.

    Request i (in running order) is scheduled, one token a step, in run steps 1..``last_step[i]``: the step
    that produces its final token (async: 0 means that token is already in flight). Tick m (1-based) schedules
    step m and delivers step ``m`` (sync) or ``m - 1`` (async; step 0 is the step in flight at the start), so
    request i finishes at tick ``finish_tick[i]`` = last_step (sync) or last_step + 1 (async).
    """

    requests: list[Request]
    async_mode: bool
    k: int
    step_ends: np.ndarray  # step_ends[0]: end of the step before the run (async: the one in flight)
    last_step: np.ndarray
    finish_tick: np.ndarray
    alloc_cum: np.ndarray  # blocks allocated by steps 1..m (index m; index 0 = 0)
    freed_by_tick: np.ndarray  # blocks freed by the updates of ticks 1..m (index m; index 0 = 0)
    free_blocks_start: int
    held_start: np.ndarray  # blocks each request held at the start (reserving policies: its whole length)
    contexts: np.ndarray  # computed tokens at the start
    known_start: np.ndarray  # prompt + delivered outputs at the start
    prefix_cache: bool  # blocks have identities (llmsim.engine.decode_run_cache replays them)
    first_step_index: int
    waiting_start: int
    truncate_on_arrival: bool
    start_s: float
    in_flight_plan: Optional["StepPlan"] = None
    arrival_times: list[float] = field(default_factory=list)
    committed: int = 0
    # Per-step counts, index = step (0..k): requests scheduled in the step, still running at its schedule.
    num_newcomers: int = 0  # requests whose first token the run delivers (tick 1)
    batch_by_step: list[int] = field(default_factory=list)
    running_by_step: list[int] = field(default_factory=list)
    finishing_by_tick: list[int] = field(default_factory=list)
    observer: Any = field(default=None, repr=False)  # its state as seen mid-run (llmsim.engine.decode_run_state)

    def delivered_step(self, m: int) -> int:
        return m - 1 if self.async_mode else m

    def tick_time(self, m: int) -> float:
        """When tick m (1-based) of the run calls ``schedule()``."""
        if m == 1:
            return self.start_s
        return float(self.step_ends[m - 2] if self.async_mode else self.step_ends[m - 1])

    def tick_times(self, ticks: np.ndarray) -> np.ndarray:
        """:meth:`tick_time` of every tick in ``ticks`` (an array of ticks >= 1), as one array."""
        times = self.step_ends[ticks - (2 if self.async_mode else 1)]
        times[ticks == 1] = self.start_s
        return times

    def resume_time(self, j: int) -> float:
        """When the per-step loop takes over after j ticks of the run."""
        return float(self.step_ends[self.delivered_step(j)])

    def ticks_before(self, time_s: float) -> int:
        """Ticks of the run that call ``schedule()`` strictly before ``time_s`` (at least 1)."""
        times = self.tick_times(np.arange(1, self.k + 1))  # non-decreasing
        return max(1, int(np.searchsorted(times, time_s, side="left")))

    def free_before_ticks(self) -> np.ndarray:
        """Free blocks when ticks 1..k call ``schedule()`` (earlier steps' allocations and finishes done)."""
        return self.free_blocks_start - self.alloc_cum[: self.k] + self.freed_by_tick[: self.k]

    def free_after_schedule(self, step: int) -> int:
        """Free blocks right after step ``step``'s schedule: its allocations done, earlier finishes freed."""
        return self.free_blocks_start - int(self.alloc_cum[step]) + int(self.freed_by_tick[step - 1])


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
    run = _build_run(replica, async_mode, k, contexts, last_step, finish_tick, timing)
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


def _build_run(replica, async_mode, k, contexts, last_step, finish_tick, timing) -> Optional[DecodeRun]:
    if len(contexts) * k <= SMALL_RUN_CELLS and getattr(timing, "decode_step_time", None) is not None \
            and not getattr(timing, "sliding_window", None) and getattr(timing, "_pp", 1) == 1:
        return _build_small_run(replica, async_mode, k, contexts, last_step, finish_tick, timing)
    kv = replica.kv_cache
    bs = kv.block_size
    blocks = kv._blocks
    held = np.array([blocks.get(r.request_id, 0) for r in replica.scheduler.running], dtype=np.int64)
    steps = np.arange(1, k + 1)
    # alive[i, m-1]: request i is scheduled in step m. After step m it needs the blocks of c + m tokens: it
    # allocates when that exceeds what it holds (paged: every block_size tokens; reserved: never).
    alive = steps[None, :] <= last_step[:, None]
    batch = alive.sum(axis=0)
    need = np.maximum(held[:, None], -(-(contexts[:, None] + np.arange(0, k + 1)[None, :]) // bs))
    alloc = (np.diff(need, axis=1) * alive).sum(axis=0)
    alloc_cum = np.concatenate([[0], np.cumsum(alloc)])
    final_blocks = np.maximum(held, -(-(contexts + last_step) // bs))  # blocks held when it finishes
    finishing = np.bincount(finish_tick, minlength=k + 2)[: k + 2]
    if type(kv) is PrefixCachingKVCacheManager:
        # A finish frees only the blocks nobody else holds: plan as if it freed none (the fit check can only
        # cut the run earlier); the commit records what the pool actually frees.
        freed_by_tick = np.zeros(k + 1, dtype=np.int64)
    else:
        freed = np.bincount(finish_tick, weights=final_blocks, minlength=k + 2)[: k + 2].astype(np.int64)
        freed_by_tick = np.cumsum(freed)[: k + 1]
    # Free blocks after each step's schedule must stay >= 0 (else the per-step loop preempts).
    free_after = kv.num_free_blocks - alloc_cum[1:] + freed_by_tick[:k]
    bad = np.flatnonzero(free_after < 0)
    if bad.size:
        k = int(bad[0])
        if k < MIN_RUN_STEPS:
            return None
    durations = _durations(timing, contexts, last_step, alive[:, :k], batch[:k], k)
    start = replica.env.now
    first_end = replica.loop.in_flight[0].end_s if async_mode else start
    # Sequential float sums (np.cumsum accumulates left to right), exactly as the per-step loop adds them.
    ends = np.cumsum(np.concatenate([[first_end], durations]))
    n = len(contexts)
    ended_before = np.concatenate([[0], np.cumsum(finishing)])[: k + 1]  # requests finished at ticks < m
    return DecodeRun(
        requests=list(replica.scheduler.running), async_mode=async_mode, k=k, step_ends=ends, last_step=last_step,
        finish_tick=finish_tick, alloc_cum=alloc_cum[: k + 1], freed_by_tick=freed_by_tick[: k + 1],
        free_blocks_start=kv.num_free_blocks, held_start=held, contexts=contexts, known_start=np.array(
            [r.prompt_tokens + r.num_output_tokens for r in replica.scheduler.running], dtype=np.int64),
        prefix_cache=type(kv) is PrefixCachingKVCacheManager, first_step_index=replica.scheduler.step_index,
        waiting_start=len(replica.scheduler.waiting), truncate_on_arrival=False, start_s=start,
        batch_by_step=[n] + batch[:k].tolist(), running_by_step=(n - ended_before).tolist(),
        finishing_by_tick=finishing[: k + 1].tolist(),
    )


def _build_small_run(replica, async_mode, k, contexts, last_step, finish_tick, timing) -> Optional[DecodeRun]:
    """:func:`_build_run` for a short run of a small batch, in plain Python: the same integers and the same
    float operations in the same order (each step priced by ``decode_step_time``, the ends summed left to
    right as ``np.cumsum`` does), without the request × step arrays whose numpy set-up costs more than the
    arithmetic at this size (most runs: an arrival cuts them after a dozen steps of a dozen requests)."""
    kv = replica.kv_cache
    bs = kv.block_size
    blocks = kv._blocks
    running = replica.scheduler.running
    held = [blocks.get(r.request_id, 0) for r in running]
    ctx = contexts.tolist()
    last = last_step.tolist()
    fin = finish_tick.tolist()
    # Request i needs the blocks of c + m tokens after step m: a new one at the step its context first
    # outgrows what it holds (step held·bs − c + 1), then every block_size steps, while it is scheduled.
    alloc = [0] * (k + 1)
    for c, h, m_last in zip(ctx, held, last):
        end = m_last if m_last < k else k
        first = h * bs - c + 1 if h * bs >= c else (1 - c) % bs or bs  # (the second: holds less than c needs)
        for m in range(first, end + 1, bs):
            alloc[m] += 1
    alloc_cum = [0] * (k + 1)
    total = 0
    for m in range(1, k + 1):
        total += alloc[m]
        alloc_cum[m] = total
    finishing = [0] * (k + 2)
    for f in fin:
        if f <= k + 1:
            finishing[f] += 1
    freed_by_tick = [0] * (k + 1)
    if type(kv) is not PrefixCachingKVCacheManager:  # with prefix caching: planned as freeing nothing
        freed = [0] * (k + 2)
        for c, h, m_last, f in zip(ctx, held, last, fin):
            if f <= k + 1:
                need = -(-(c + m_last) // bs)
                freed[f] += h if h > need else need
        total = 0
        for m in range(k + 1):
            total += freed[m]
            freed_by_tick[m] = total
    free_start = kv.num_free_blocks
    for m in range(1, k + 1):
        if free_start - alloc_cum[m] + freed_by_tick[m - 1] < 0:
            k = m - 1
            if k < MIN_RUN_STEPS:
                return None
            break
    # Batch size and Σ context (before the step) of steps 1..k: requests leave after their last step.
    order = sorted(range(len(ctx)), key=last.__getitem__)
    n = alive = len(ctx)
    ctx_alive = sum(ctx)
    position = 0
    batch = [0] * (k + 1)
    ends = [0.0] * (k + 1)
    ends[0] = end_s = replica.loop.in_flight[0].end_s if async_mode else replica.env.now
    # timing.decode_step_time inlined (its constants, its operations in its order): this loop prices every
    # planned step of every short run.
    per_unit, flops_rate, kv_bytes, bytes_rate, layers, overhead = timing.decode_arith()
    consts = timing.decode_consts
    base, qo_bytes, floor, add = consts(alive)
    for m in range(1, k + 1):
        if position < n and last[order[position]] < m:
            while position < n and last[order[position]] < m:
                alive -= 1
                ctx_alive -= ctx[order[position]]
                position += 1
            base, qo_bytes, floor, add = consts(alive)
        batch[m] = alive
        summed = ctx_alive + (m - 1) * alive
        compute = (2 * summed + 2 * alive) * per_unit / flops_rate
        memory = ((summed + alive) * kv_bytes + qo_bytes) / bytes_rate
        gpu = base + layers * ((compute if compute > memory else memory) + overhead)
        end_s += (gpu if gpu > floor else floor) + add
        ends[m] = end_s
    ended_before = [0] * (k + 1)  # requests finished at ticks < m
    total = 0
    for m in range(1, k + 1):
        total += finishing[m - 1]
        ended_before[m] = total
    batch[0] = n
    return DecodeRun(
        requests=list(running), async_mode=async_mode, k=k, step_ends=np.array(ends), last_step=last_step,
        finish_tick=finish_tick, alloc_cum=np.array(alloc_cum[: k + 1], dtype=np.int64),
        freed_by_tick=np.array(freed_by_tick[: k + 1], dtype=np.int64), free_blocks_start=free_start,
        held_start=np.array(held, dtype=np.int64), contexts=contexts, known_start=np.array(
            [r.prompt_tokens + r.num_output_tokens for r in running], dtype=np.int64),
        prefix_cache=type(kv) is PrefixCachingKVCacheManager, first_step_index=replica.scheduler.step_index,
        waiting_start=len(replica.scheduler.waiting), truncate_on_arrival=False, start_s=replica.env.now,
        batch_by_step=batch, running_by_step=[n - x for x in ended_before], finishing_by_tick=finishing[: k + 1],
    )


def _durations(timing, contexts: np.ndarray, last_step: np.ndarray, alive: np.ndarray, batch: np.ndarray,
               k: int) -> np.ndarray:
    """Step times of steps 1..k; the batch shrinks as requests produce their last token."""
    sum_ctx = (contexts @ alive) + np.arange(k) * batch  # Σ over the batch of (context at the start + m − 1)
    times = None
    if hasattr(timing, "decode_times_from_totals"):
        seen = timing.window_decode_sums(contexts, k, alive) if getattr(timing, "sliding_window", None) else None
        times = timing.decode_times_from_totals(batch, sum_ctx, seen)
    if times is not None:
        return times
    out = np.empty(k)  # pipeline-parallel timing needs the contexts of each fixed batch
    step = 1
    for boundary in sorted(set(int(x) for x in last_step if 1 <= x < k)) + [k]:
        if boundary < step:
            continue
        members = last_step >= step
        out[step - 1: boundary] = timing.decode_step_times(contexts[members] + (step - 1), boundary - step + 1)
        step = boundary + 1
    return out
