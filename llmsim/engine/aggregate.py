"""The aggregate engine: vLLM V1 on one replica with its steadily decoding requests held in aggregate.

The reference engine (``engine.mode: reference``) visits every running request in every step. But in most
steps most of the batch is *steady*: each request decodes one token, its context grows by one and it needs
a new KV block exactly when its context crosses a multiple of the block size. Such a request's state is a
linear function of the step index from the step it became steady until the step it samples its last token,
so this engine keeps those requests in a *pool* (:class:`~llmsim.engine.pool.DecodePool`) described by a
few totals: how many members decode this step and the sum of their contexts, which price the step through
:meth:`~llmsim.hardware.timing.RooflineTimingModel.time_from_totals` with the same integer totals and float
operations as the per-step loop; how many of them need a block (members bucketed by their context's phase
modulo the block size: one lookup); and when each samples its last token.

Every step still runs vLLM V1's rules — the running pass, the waiting pass with its full-prompt and
watermark checks, chunked prefill and the per-request cap, the async loop's one-step lag, vLLM's empty
bookkeeping steps — but only requests that are *not* steady (a prefill chunk, an admission, a first token,
a finish) are visited one by one. Three kinds of step, cheapest first:

* a *quiet* step (the pool alone: nobody waits, blocks suffice) is a few arithmetic operations
  (:meth:`AggregateReplica._quiet_steps`); new decodes join and finished ones leave the pool inline;
* a step with admissions or a prefill going on prices the pool by its totals and the few others one by one
  (:meth:`AggregateReplica._schedule_fast`);
* a step whose blocks do not suffice for the whole batch (a preemption is coming, and the victim depends on
  the running order), or whose running pass is not the simple shape (several prefills under a per-request
  cap), walks the running list in order as the reference scheduler does, pool members in place; a victim,
  or a member the token budget does not reach, leaves the pool (:meth:`AggregateReplica._schedule_explicit`).

The engine runs one replica alone on its own arrivals (a router that reads no replica state — round-robin
or random — can route the whole workload up front), without simpy: its clock moves from one tick of the
engine loop to the next. :func:`aggregate_engine_blockers` says which configurations it serves; the
equivalence tests check that it gives the reference engine's per-request results, step table and summary.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from llmsim.engine.pool import DecodePool
from llmsim.metrics.recorder import STEP_COLUMNS

WAITING, RUNNING, PREEMPTED, FINISHED, REJECTED = range(5)
STATUS_NAMES = ("waiting", "running", "preempted", "finished", "rejected")


def aggregate_engine_blockers(sched_cfg, pp: int) -> list[str]:
    """Scheduler and hardware settings the aggregate engine does not model (empty: it may run)."""
    reasons = []
    if sched_cfg.policy != "vllm-v1":
        reasons.append(f"policy {sched_cfg.policy}")
    if (sched_cfg.queue != "fcfs" or sched_cfg.preemption != "recompute" or sched_cfg.enable_prefix_caching
            or sched_cfg.victim not in ("auto", "most-recent")):
        reasons.append("queue order, preemption mode, victim rule or prefix caching other than vLLM V1's defaults")
    if sched_cfg.max_queue_time_s is not None:
        reasons.append("queue timeouts")
    if pp > 1:
        reasons.append("pipeline parallelism")
    return reasons


class _Plan:
    """One scheduled step: who samples in it (explicitly listed, plus ``pool_n`` pool members) and its figures."""

    __slots__ = ("step", "start", "end", "tokens", "prefill", "batch", "sampling", "pool_n", "preempted",
                 "free_after", "num_running", "num_waiting", "new")

    def __init__(self, step: int) -> None:
        self.step = step
        self.start = self.end = 0.0
        self.tokens = self.prefill = self.batch = self.pool_n = self.preempted = 0
        self.sampling: list[int] = []
        self.new: list[int] = []
        self.free_after = self.num_running = self.num_waiting = 0


@dataclass
class ReplicaOutcome:
    """What one replica's run produced: per-request results (local order), steps, gaps and counters (its
    heartbeat samples stay with :class:`ReplicaTail`)."""

    first_scheduled_s: list
    first_token_s: list
    last_token_s: list
    finish_s: list
    num_output_tokens: list
    num_preemptions: list
    scheduled_tokens: list
    recomputed_tokens: list
    status: list
    reason: list
    steps: dict = field(default_factory=dict)  # step-table columns (typed arrays), when kept
    itl_values: array = field(default_factory=lambda: array("d"))
    itl_weights: array = field(default_factory=lambda: array("q"))
    num_steps: int = 0
    busy_s: float = 0.0
    kv_usage_s: float = 0.0  # Σ duration × used / total (the cluster's per-replica figure)
    kv_usage_time_s: float = 0.0  # Σ usage × duration (the recorder's figure)
    peak_kv_usage: float = 0.0
    max_num_waiting: int = 0
    max_batch_size: int = 0
    num_finished: int = 0
    last_end_s: float = 0.0


class AggregateReplica:
    """Runs vLLM V1 on one replica over its arrivals (``arrival_s`` sorted), as described in the module docstring."""

    def __init__(self, replica_id: int, sched_cfg, num_gpu_blocks: int, max_model_len: int, timing,
                 arrival_s, prompt_tokens, output_tokens, *, keep_steps: bool = True, step_sample_every: int = 1,
                 sample_interval_s: float = 1.0, on_progress=None, step_sink=None,
                 step_sink_rows: int = 1_000_000) -> None:
        self.replica_id = replica_id
        self.cfg = sched_cfg
        self.timing = timing
        self.depth = 2 if sched_cfg.async_scheduling else 1
        self.bs = sched_cfg.block_size
        self.usable = num_gpu_blocks - 1  # block 0 is vLLM's reserved null block
        self.free = self.usable
        self.watermark_blocks = int(sched_cfg.watermark * num_gpu_blocks)
        self.max_model_len = max_model_len
        self.keep_steps = keep_steps
        self.step_sample_every = step_sample_every
        self.sample_interval_s = sample_interval_s
        self.arr = [float(x) for x in arrival_s]
        self.P = [int(x) for x in prompt_tokens]
        self.O = [int(x) for x in output_tokens]
        n = len(self.arr)
        self.comp = [0] * n
        self.out = [0] * n
        self.ph = [0] * n
        self.status = [WAITING] * n
        self.reason = [""] * n
        self.npre = [0] * n
        self.sched_total = [0] * n
        self.recomputed = [0] * n
        self.first_sched: list = [None] * n
        self.first_tok: list = [None] * n
        self.last_tok: list = [None] * n
        self.finish_s: list = [None] * n
        self.was_preempted = [False] * n
        self.pool = DecodePool(n, self.bs)
        self.completers: list[int] = []  # sampled for the first time after a prefill in the last step
        self.partial: Optional[int] = None  # the one request part-way through its prefill (last in running)
        self.dirty = False  # a step ran request by request: classify everyone before the next one
        self.loose = False  # some running request fits neither the pool nor the simple shape
        self.running: list[int] = []
        self.waiting: deque[int] = deque()
        self.in_flight: deque[_Plan] = deque()
        self.step_index = 0
        self.finished_pending = False
        self.last_update_step = -1
        self.last_update_end: Optional[float] = None
        self.gpu_free = 0.0
        self.outstanding = 0
        self.pending_prefill = 0
        self.next_arrival = 0
        self.next_sample_s = 0.0
        self.samples = {"time_s": [], "kv_usage": [], "num_outstanding": [], "num_waiting": [],
                        "pending_prefill_tokens": []}
        # Typed arrays: 8 bytes a value, so a replica's gaps and steps stay compact however long the run.
        self.itl_values = array("d")
        self.itl_weights = array("q")
        self.steps = {name: array("d" if name in ("start_s", "duration_s") else "q")
                      for name in STEP_COLUMNS if name != "replica"}
        self.num_steps = 0
        self.busy_s = 0.0
        self.kv_usage_s = 0.0
        self.kv_usage_time_s = 0.0
        self.peak_kv_usage = 0.0
        self.max_num_waiting = 0
        self.max_batch_size = 0
        self.num_finished = 0
        self.last_end_s = 0.0
        self.on_progress = on_progress  # called with the requests finished so far, every few thousand
        # Streaming (metrics.stream_steps): kept steps are handed to ``step_sink`` in chunks of this many.
        self.step_sink = step_sink
        self.step_sink_rows = step_sink_rows if step_sink is not None else None
        # Lockstep with other replicas (llmsim.cluster.lockstep): the engine pauses before any instant at or
        # after ``horizon`` (the next routing instant) and says which instant it waits to process in ``wake_s``
        # (infinite while it sleeps with nothing to do). ``open_ended``: more arrivals may be routed here.
        self.horizon = float("inf")
        self.wake_s = 0.0
        self.sleeping = False
        self.open_ended = False

    def add_request(self, arrival_s: float, prompt_tokens: int, output_tokens: int) -> int:
        """Append a request routed here during the run (lockstep); returns its local index."""
        for values, value in ((self.arr, arrival_s), (self.P, prompt_tokens), (self.O, output_tokens)):
            values.append(value)
        for values in (self.comp, self.out, self.ph, self.npre, self.sched_total, self.recomputed):
            values.append(0)
        for values in (self.first_sched, self.first_tok, self.last_tok, self.finish_s):
            values.append(None)
        self.status.append(WAITING)
        self.reason.append("")
        self.was_preempted.append(False)
        self.pool.grow()
        return len(self.arr) - 1

    # -- arrivals and the heartbeat's samples ---------------------------------------------------------
    def _advance(self, time_s: float) -> None:
        """Submit arrivals up to ``time_s`` and take the time-series samples due by then, in time order.

        A sample at the same instant as an event comes first: the heartbeat's timer was set an interval
        earlier, so simpy fires it before events scheduled later for the same time."""
        arr = self.arr
        while True:
            a = arr[self.next_arrival] if self.next_arrival < len(arr) else None
            if self.next_sample_s <= time_s and (a is None or self.next_sample_s <= a):
                self._sample()
                continue
            if a is None or a > time_s:
                return
            self._submit(self.next_arrival)
            self.next_arrival += 1

    def advance_to(self, time_s: float) -> None:
        """Lockstep: take the samples and arrivals due by ``time_s`` while paused at or after it (nothing else
        happens on this replica before its next instant, so taking them now changes nothing but who sees them)."""
        self._advance(time_s)

    def _sample(self) -> None:
        s = self.samples
        s["time_s"].append(self.next_sample_s)
        s["kv_usage"].append((self.usable - self.free) / self.usable)
        s["num_outstanding"].append(self.outstanding)
        s["num_waiting"].append(len(self.waiting))
        s["pending_prefill_tokens"].append(self.pending_prefill)
        self.next_sample_s += self.sample_interval_s

    def _submit(self, i: int) -> bool:
        total = self.P[i] + self.O[i]
        cap = self.cfg.max_waiting_requests
        if total > self.max_model_len:
            reason = "exceeds_max_model_len"
        elif -(-(total - 1) // self.bs) > self.usable:
            reason = "exceeds_kv_capacity"
        elif cap is not None and len(self.waiting) >= cap:
            reason = "queue_full"
        else:
            self.waiting.append(i)
            self.outstanding += 1
            self.pending_prefill += self.P[i]
            return True
        self.status[i] = REJECTED
        self.reason[i] = reason
        self.last_end_s = max(self.last_end_s, self.arr[i])
        return False

    def _sleep(self):
        """Wait for the next accepted arrival (a rejected one does not wake the engine); returns its time, or
        None when none is left. A generator: in lockstep it pauses while no arrival is known yet."""
        arr = self.arr
        while True:
            while self.next_arrival < len(arr):
                t = arr[self.next_arrival]
                while self.next_sample_s <= t:
                    self._sample()
                i = self.next_arrival
                self.next_arrival += 1
                if self._submit(i):
                    return t
            if not self.open_ended:
                return None
            self.sleeping, self.wake_s = True, float("inf")
            yield
            self.sleeping = False

    def _next_due(self) -> float:
        """The earliest instant at which the quiet loop must hand over: a sample, an arrival, the horizon."""
        arr = self.arr
        due = arr[self.next_arrival] if self.next_arrival < len(arr) else self.horizon
        return min(self.next_sample_s, due, self.horizon)

    # -- the engine loop (llmsim.engine.replica.Replica.run, with EngineLoop's batch queue) ---------------
    def run(self) -> ReplicaOutcome:
        """Run alone over arrivals known up front (the horizon never comes: nothing pauses)."""
        for _ in self.process():
            raise RuntimeError("an engine with every arrival known up front paused")
        return self._outcome()

    def process(self):
        """The engine loop as a generator: it yields only where lockstep makes it wait for the router."""
        now = 0.0
        in_flight = self.in_flight
        depth = self.depth
        while True:
            while now >= self.horizon:  # lockstep: wait for the router at or before instant `now`
                self.wake_s = now
                yield
            self._advance(now)
            if (self.pool.n or self.completers) and not (self.waiting or self.dirty or self.loose
                                                         or self.partial is not None):
                now = yield from self._quiet_steps(now)
            plan = None
            if self.running or self.waiting or self.finished_pending:
                plan = self._schedule()
                self._cost(plan, now)
                in_flight.appendleft(plan)
                if plan.tokens > 0 and len(in_flight) < depth:
                    continue
                to_update = in_flight.pop()
            elif in_flight:
                to_update = in_flight.pop()
            else:
                woke = yield from self._sleep()
                if woke is None:
                    break
                now = woke
                continue
            if to_update.end > now:
                now = to_update.end
                while now >= self.horizon:
                    self.wake_s = now
                    yield
                self._advance(now)
            self._update(to_update)
            if (to_update.tokens == 0 and not to_update.preempted and not in_flight
                    and (self.running or self.waiting)):
                woke = yield from self._sleep()
                if woke is None:
                    break
                now = woke
        self.wake_s = float("inf")

    def _quiet_steps(self, now: float) -> float:
        """Run *quiet* steps inline: the batch is the pool alone, nobody waits, no block shortage, nobody to
        add or finish. Each costs a few arithmetic operations on local variables instead of a plan object
        and two calls; the first step that is not quiet is left to the general loop. Returns the new time."""
        in_flight = self.in_flight
        async_mode = self.depth == 2
        if len(in_flight) != (1 if async_mode else 0):
            return now
        budget = self.cfg.max_num_batched_tokens
        bs = self.bs
        pool = self.pool
        phase, finish_at, retire_at = pool.phase, pool.finish_at, pool.retire_at
        step_time = self.timing.decode_step_time
        arr = self.arr
        usable = self.usable
        running, waiting = self.running, self.waiting
        itl_value, itl_weight = self.itl_values.append, self.itl_weights.append
        keep, every = self.keep_steps, self.step_sample_every
        pending = in_flight[0] if async_mode else None  # the step in flight (async): a _Plan or a quiet tuple
        # Hot state in locals; written back before any call that reads it, and at the end.
        s, free, gpu_free = self.step_index, self.free, self.gpu_free
        pool_n, pool_a = pool.n, pool.a
        last_step, last_end = self.last_update_step, self.last_update_end
        num_steps, busy, kv_s, kv_t = self.num_steps, self.busy_s, self.kv_usage_s, self.kv_usage_time_s
        peak, max_batch = self.peak_kv_usage, self.max_batch_size
        next_due = self._next_due()
        while True:
            if s in retire_at or self.completers:
                pool.n, pool.a = pool_n, pool_a
                pool.retire(s)
                for i in self.completers:  # requests whose prefill ended in the last step join the pool
                    if not self._enter_pool(i, s) and not self._final_in_flight(i):
                        self.loose = True
                self.completers = []
                pool_n, pool_a = pool.n, pool.a
            need = phase[-s % bs]
            if not pool_n or pool_n > budget or need > free or waiting or self.loose:
                break
            free -= need
            duration = step_time(pool_n, pool_a + pool_n * s)
            start = now if now > gpu_free else gpu_free
            gpu_free = start + duration
            step = (s, start, gpu_free, pool_n, free, len(running))
            s += 1
            self.finished_pending = False
            if async_mode:
                to_update, pending = pending, step
            else:
                to_update = step
            if type(to_update) is tuple:
                u_step, u_start, u_end, u_n, u_free, u_running = to_update
                if u_end > now:
                    now = u_end
                if next_due <= now:
                    self.free = free
                    if now >= self.horizon:  # lockstep: the router reads this replica before instant `now`
                        self.wake_s = now
                        while now >= self.horizon:
                            yield
                    if self.next_sample_s <= now or self.next_arrival < len(arr) and arr[self.next_arrival] <= now:
                        self._advance(now)
                    next_due = self._next_due()
                # Quiet update: every pool member gets its token, same gap; those at their last one finish.
                itl_value(u_end - last_end)
                itl_weight(u_n)
                last_step, last_end = u_step, u_end
                finished = 0
                if u_step in finish_at:
                    self.free = free
                    finished = self._finish_pool_members(u_step, u_end)
                    free = self.free
                duration = u_end - u_start
                used = usable - u_free
                num_steps += 1
                busy += duration
                kv_s += duration * used / usable
                usage = used / usable
                if usage > peak:
                    peak = usage
                kv_t += usage * duration
                if u_n > max_batch:
                    max_batch = u_n
                if keep and not u_step % every:
                    self._keep_quiet_step(to_update, usable, finished)
            else:
                self.step_index, self.free, self.gpu_free, pool.n, pool.a = s, free, gpu_free, pool_n, pool_a
                self.last_update_step, self.last_update_end = last_step, last_end
                self.num_steps, self.busy_s, self.kv_usage_s, self.kv_usage_time_s = num_steps, busy, kv_s, kv_t
                self.peak_kv_usage, self.max_batch_size = peak, max_batch
                if to_update.end > now:
                    now = to_update.end
                    while now >= self.horizon:
                        self.wake_s = now
                        yield
                    self._advance(now)
                self._update(to_update)
                free, last_step, last_end = self.free, self.last_update_step, self.last_update_end
                num_steps, busy, kv_s, kv_t = self.num_steps, self.busy_s, self.kv_usage_s, self.kv_usage_time_s
                peak, max_batch = self.peak_kv_usage, self.max_batch_size
                next_due = self._next_due()
        self.step_index, self.free, self.gpu_free, pool.n, pool.a = s, free, gpu_free, pool_n, pool_a
        self.last_update_step, self.last_update_end = last_step, last_end
        self.num_steps, self.busy_s, self.kv_usage_s, self.kv_usage_time_s = num_steps, busy, kv_s, kv_t
        self.peak_kv_usage, self.max_batch_size = peak, max_batch
        if async_mode and type(pending) is tuple:
            in_flight[0] = self._quiet_plan(pending)
        return now

    def _quiet_plan(self, step: tuple) -> _Plan:
        s, start, end, n, free, num_running = step
        plan = _Plan(s)
        plan.start, plan.end = start, end
        plan.tokens = plan.batch = plan.pool_n = n
        plan.free_after, plan.num_running = free, num_running
        return plan

    def _keep_quiet_step(self, step: tuple, usable: int, finished: int) -> None:
        s, start, end, n, free, num_running = step
        self._keep_step(s, start, end - start, n, 0, n, free, usable - free, num_running, 0, 0, finished)

    def _keep_step(self, *values) -> None:
        """One row of the step table, in STEP_COLUMNS order without ``replica``."""
        steps = self.steps
        for column, value in zip(steps.values(), values):
            column.append(value)
        if self.step_sink_rows is not None and len(steps["step"]) >= self.step_sink_rows:
            self.flush_steps()

    def flush_steps(self) -> None:
        """Hand the kept steps to the sink and start new buffers."""
        steps = self.steps
        self.steps = {name: array(values.typecode) for name, values in steps.items()}
        self.step_sink(steps)

    def _cost(self, plan: _Plan, now: float) -> None:
        if plan.tokens == 0:
            plan.start = plan.end = now
            return
        start = now if now > self.gpu_free else self.gpu_free
        plan.start = start
        plan.end = self.gpu_free = start + plan.end  # plan.end held the duration until now
        for i in plan.new:
            self.first_sched[i] = start

    # -- scheduling ------------------------------------------------------------------------------------
    def _schedule(self) -> _Plan:
        s = self.step_index
        self.step_index = s + 1
        self.finished_pending = False
        plan = _Plan(s)
        self.pool.retire(s)
        if self.dirty:
            self._classify(s)
        elif self.completers:
            for i in self.completers:
                if not self._enter_pool(i, s) and not self._final_in_flight(i):
                    self.loose = True
            self.completers = []
        if self.loose or not self._schedule_fast(plan, s):
            self._schedule_explicit(plan, s)
            self.dirty = True
        return plan

    def _final_in_flight(self, i: int) -> bool:
        """Async loop: its last token is being sampled, so the running pass skips it (vLLM 0.32)."""
        p = self.ph[i]
        return p > 0 and self.comp[i] + 2 - p >= self.P[i] + self.O[i]

    def _enter_pool(self, i: int, s: int) -> bool:
        """Make running request ``i`` a pool member from step ``s`` if it is a steady decode; else False."""
        out, p, c = self.out[i], self.ph[i], self.comp[i]
        if self.depth == 2:
            # Its token of step s−1 is in flight (delivered, same gap, by the explicit update of s−1).
            steady = p == 1 and c == self.P[i] + out
        else:
            steady = (p == 0 and out >= 1 and c == self.P[i] + out - 1
                      and self.last_tok[i] is not None and self.last_tok[i] == self.last_update_end)
        remaining = self.O[i] - out - p  # tokens still to sample, from step s on
        if not steady or remaining < 1:
            return False
        self.pool.add(i, s, c, remaining)
        return True

    def _classify(self, s: int) -> None:
        """After a step run request by request: pool every steady decode, find the partial prefill."""
        self.dirty = False
        self.loose = False
        self.partial = None
        self.completers = []
        running = self.running
        last = running[-1] if running else None
        for i in running:
            if self.pool.member[i] or self._enter_pool(i, s) or self._final_in_flight(i):
                continue
            if i == last:
                self.partial = i
            else:
                self.loose = True

    def _schedule_fast(self, plan: _Plan, s: int) -> bool:
        """The step with the pool in aggregate; False (nothing changed) when it must run request by request."""
        cfg = self.cfg
        pool = self.pool
        n = pool.n
        budget = cfg.max_num_batched_tokens - n
        if budget < 0:
            return False
        bs = self.bs
        need = pool.phase[-s % bs]
        scheduled: list[tuple[int, int]] = []
        threshold = self._threshold()
        partial = self.partial
        if partial is not None and budget > 0:
            c = self.comp[partial]
            num_new = self.P[partial] + self.out[partial] + self.ph[partial] - c
            if threshold and num_new > threshold:
                num_new = threshold
            if num_new > budget:
                num_new = budget
            if num_new > self.max_model_len - 1 - c:
                num_new = self.max_model_len - 1 - c
            if num_new > 0:
                need += -(-(c + num_new) // bs) - (-(-c // bs))
                scheduled.append((partial, num_new))
                budget -= num_new
        if need > self.free:
            return False
        self.free -= need
        if self.waiting and budget > 0:
            self._schedule_waiting(plan, budget, scheduled, threshold)
        self._finish_plan(plan, scheduled, n, pool.a + n * s, s)
        return True

    def _threshold(self) -> int:
        """The per-request token cap of this step; vLLM waives it when the system holds one request (rule 2)."""
        if len(self.running) + len(self.waiting) == 1:
            return 0
        return self.cfg.long_prefill_token_threshold

    def _schedule_waiting(self, plan: _Plan, budget: int, scheduled: list, threshold: int) -> None:
        """vLLM V1's waiting pass: admit FCFS while the budget, max_num_seqs and the free blocks allow."""
        cfg = self.cfg
        waiting, running = self.waiting, self.running
        bs = self.bs
        P, out, ph, comp = self.P, self.out, self.ph, self.comp
        while waiting and budget > 0:
            if len(running) >= cfg.max_num_seqs:
                break
            i = waiting[0]
            c = comp[i]
            num_new = P[i] + out[i] + ph[i] - c
            if threshold and num_new > threshold:
                num_new = threshold
            if not cfg.enable_chunked_prefill and num_new > budget:
                break
            if num_new > budget:
                num_new = budget
            watermark = self.watermark_blocks if running else 0
            held = -(-c // bs)
            if cfg.scheduler_reserve_full_isl and -(-(P[i] + out[i]) // bs) - held + watermark > self.free:
                break
            need = -(-(c + num_new) // bs) - held
            if need + watermark > self.free:
                break
            self.free -= need
            waiting.popleft()
            self.status[i] = RUNNING
            running.append(i)
            if not self.was_preempted[i]:
                plan.new.append(i)
            scheduled.append((i, num_new))
            budget -= num_new

    def _finish_plan(self, plan: _Plan, scheduled: list, pool_n: int, pool_ctx: int, s: int) -> None:
        """Advance the scheduled requests, decide who samples, and price the step. ``pool_n`` pool members
        with contexts summing to ``pool_ctx`` come first; pool members listed in ``scheduled`` (the request-
        by-request pass) are priced in their place in the batch."""
        batch = pool_n + len(scheduled)
        tokens = pool_n
        flop_units = 2 * pool_ctx + 2 * pool_n
        ctx_tokens = pool_ctx + pool_n
        prefill = 0
        sampling = plan.sampling
        async_mode = self.depth == 2
        P, out, ph, comp = self.P, self.out, self.ph, self.comp
        pooled, p_base = self.pool.member, self.pool.base
        timing = self.timing
        partial = None  # a request scheduled in this step whose prefill goes on
        for i, num_new in scheduled:
            if pooled[i]:
                c = p_base[i] + s
                tokens += 1
                flop_units += 2 * c + 2
                ctx_tokens += c + 1
                pool_n += 1
                continue
            c = comp[i]
            tokens += num_new
            flop_units += 2 * c + 2 if num_new == 1 else timing.chunk_flop_units(num_new, c)
            ctx_tokens += c + num_new
            target = P[i] + out[i] + ph[i]
            comp[i] = c + num_new
            self.sched_total[i] += num_new
            if c + num_new >= target:
                sampling.append(i)
                self.completers.append(i)
                if async_mode:
                    ph[i] += 1
                if num_new > 1:
                    prefill += num_new
                if i == self.partial:
                    self.partial = None
            else:
                prefill += num_new
                if partial is not None:
                    self.loose = True  # two prefills going on (a per-request cap left budget for another)
                partial = i
        if partial is not None:
            if self.partial is not None and self.partial != partial or self.running[-1] != partial:
                self.loose = True  # the prefill going on is not the last running request
            self.partial = partial
        num_sampled = pool_n + len(sampling)
        plan.tokens = tokens
        plan.prefill = prefill
        plan.batch = batch
        plan.pool_n = pool_n
        plan.free_after = self.free
        plan.num_running = len(self.running)
        plan.num_waiting = len(self.waiting)
        plan.end = (timing.time_from_totals(tokens, flop_units, ctx_tokens, num_sampled, plan.batch)
                    if tokens else 0.0)

    def _unpool(self, i: int, s: int) -> None:
        """Write pool member ``i`` back into per-request state as it stands before step ``s`` (a victim, or a
        decode the running pass does not reach); the plans in flight list it explicitly from now on."""
        pool = self.pool
        entry, final = pool.entry[i], pool.final[i]
        scheduled = pool.steps_between(i, entry, s - 1)
        delivered = pool.steps_between(i, entry, self.last_update_step)
        self.comp[i] += scheduled
        self.sched_total[i] += scheduled
        self.out[i] += delivered
        self.ph[i] += scheduled - delivered
        if delivered:
            self.last_tok[i] = self.last_update_end
        pool.remove(i, s)
        for plan in self.in_flight:
            if plan.pool_n and entry <= plan.step <= final:
                plan.pool_n -= 1
                plan.sampling.append(i)

    def _schedule_explicit(self, plan: _Plan, s: int) -> None:
        """vLLM V1's running pass request by request (rules 1 and 5), then the waiting pass unless it preempted.

        Pool members keep their aggregate form: each is a one-token decode at context ``p_base + s``. Only a
        victim, or a member the pass does not reach, leaves the pool."""
        cfg = self.cfg
        budget = cfg.max_num_batched_tokens
        threshold = self._threshold()
        running = self.running
        bs = self.bs
        P, O, out, ph, comp = self.P, self.O, self.out, self.ph, self.comp
        pooled, p_base, p_final = self.pool.member, self.pool.base, self.pool.final
        last_slot = self.max_model_len - 1
        scheduled: list[tuple[int, int]] = []
        index = 0
        while index < len(running) and budget > 0:
            i = running[index]
            if pooled[i]:
                if p_final[i] < s:
                    index += 1  # async: its final token is already being sampled
                    continue
                c = p_base[i] + s
                num_new = 1
                need = 1 if c % bs == 0 else 0
            else:
                # SchedulerBase._schedule_running's rule on this engine's arrays (the equivalence suite keeps
                # the two in step).
                c, p = comp[i], ph[i]
                if p and c + 2 - p >= P[i] + O[i]:
                    index += 1
                    continue
                num_new = P[i] + out[i] + p - c
                if threshold and num_new > threshold:
                    num_new = threshold
                if num_new > budget:
                    num_new = budget
                if num_new > last_slot - c:
                    num_new = last_slot - c
                if num_new <= 0:
                    index += 1
                    continue
                need = -(-(c + num_new) // bs) - (-(-c // bs))
            preempted_self = False
            while need > self.free:
                victim = running.pop()  # the most recently admitted among those not yet scheduled
                if pooled[victim]:
                    self._unpool(victim, s)
                self._preempt(victim, plan)
                if victim == i:
                    preempted_self = True
                    break
            if preempted_self:
                break
            self.free -= need
            scheduled.append((i, num_new))
            budget -= num_new
            index += 1
        for i in running[index:]:
            if pooled[i] and p_final[i] >= s:
                self._unpool(i, s)  # the budget ran out before it: it does not decode this step
        if not plan.preempted and self.waiting and budget > 0:
            self._schedule_waiting(plan, budget, scheduled, threshold)
        self._finish_plan(plan, scheduled, 0, 0, s)

    def _preempt(self, i: int, plan: _Plan) -> None:
        """Recompute preemption: drop the victim's blocks and put it at the head of the waiting queue."""
        self.npre[i] += 1
        self.was_preempted[i] = True
        plan.preempted += 1
        c = self.comp[i]
        self.free += -(-c // self.bs)
        self.recomputed[i] += c
        self.comp[i] = 0
        self.status[i] = PREEMPTED
        self.waiting.appendleft(i)

    # -- output ----------------------------------------------------------------------------------------
    def _update(self, plan: _Plan) -> None:
        """Deliver the step's tokens (pool members in aggregate), finish who is done, record the step."""
        end = plan.end
        previous = self.last_update_end
        same = plan.pool_n
        finished = 0
        out, ph, last_tok = self.out, self.ph, self.last_tok
        self.last_update_step = plan.step
        if plan.pool_n and plan.step in self.pool.finish_at:
            finished = self._finish_pool_members(plan.step, end)
        for i in plan.sampling:
            if self.status[i] >= FINISHED:
                continue
            out[i] += 1
            if ph[i]:
                ph[i] -= 1
            last = last_tok[i]
            if last is None:
                self.first_tok[i] = end
                self.pending_prefill -= self.P[i]
            elif last == previous:
                same += 1
            else:
                self.itl_values.append(end - last)
                self.itl_weights.append(1)
            last_tok[i] = end
            if out[i] >= self.O[i]:
                ph[i] = 0
                self._finish(i, end)
                finished += 1
        if same:
            self.itl_values.append(end - previous)
            self.itl_weights.append(same)
        if plan.tokens:
            self.last_update_end = end
            self._record_step(plan, finished)

    def _finish_pool_members(self, step: int, end: float) -> int:
        """Pool members whose last token step ``step`` delivered: write their totals back and finish them."""
        pool = self.pool
        done = pool.pop_finishing(step)
        for i in done:
            span = step - pool.entry[i] + 1
            self.comp[i] += span
            self.sched_total[i] += span
            self.out[i] += span
            self.last_tok[i] = end
            self._finish(i, end)
        return len(done)

    def _finish(self, i: int, end: float) -> None:
        if self.status[i] == RUNNING:
            self.running.remove(i)
        else:  # async: preempted while its last token was in flight, it finishes from the queue
            self.waiting.remove(i)
        self.status[i] = FINISHED
        self.reason[i] = "length"
        self.finish_s[i] = end
        self.free += -(-self.comp[i] // self.bs)
        self.finished_pending = True
        self.outstanding -= 1
        self.num_finished += 1
        if end > self.last_end_s:
            self.last_end_s = end
        if not self.num_finished & 4095 and self.on_progress is not None:
            self.on_progress(self.num_finished)

    def _record_step(self, plan: _Plan, finished: int) -> None:
        duration = plan.end - plan.start
        free = plan.free_after
        used = self.usable - free
        self.num_steps += 1
        self.busy_s += duration
        self.kv_usage_s += duration * used / max(used + free, 1)
        usage = used / (used + free)
        if usage > self.peak_kv_usage:
            self.peak_kv_usage = usage
        self.kv_usage_time_s += usage * duration
        if plan.num_waiting > self.max_num_waiting:
            self.max_num_waiting = plan.num_waiting
        if plan.batch > self.max_batch_size:
            self.max_batch_size = plan.batch
        if not self.keep_steps or plan.step % self.step_sample_every:
            return
        self._keep_step(plan.step, plan.start, duration, plan.batch, plan.prefill, plan.tokens - plan.prefill, free,
                        used, plan.num_running, plan.num_waiting, plan.preempted, finished)

    def _outcome(self) -> ReplicaOutcome:
        return ReplicaOutcome(
            first_scheduled_s=self.first_sched, first_token_s=self.first_tok, last_token_s=self.last_tok,
            finish_s=self.finish_s, num_output_tokens=self.out, num_preemptions=self.npre,
            scheduled_tokens=self.sched_total, recomputed_tokens=self.recomputed,
            status=[STATUS_NAMES[x] for x in self.status], reason=self.reason, steps=self.steps,
            itl_values=self.itl_values, itl_weights=self.itl_weights,
            num_steps=self.num_steps, busy_s=self.busy_s, kv_usage_s=self.kv_usage_s,
            kv_usage_time_s=self.kv_usage_time_s, peak_kv_usage=self.peak_kv_usage,
            max_num_waiting=self.max_num_waiting, max_batch_size=self.max_batch_size,
            num_finished=self.num_finished, last_end_s=self.last_end_s)



class ReplicaTail:
    """What a finished replica still needs for the heartbeat samples after its last event: its final state
    (it no longer changes) and the samples so far. Keeps the run's memory to one replica's state at a time."""

    def __init__(self, engine: AggregateReplica) -> None:
        self.samples = engine.samples
        self.next_sample_s = engine.next_sample_s
        self.interval = engine.sample_interval_s
        self.state = ((engine.usable - engine.free) / engine.usable, engine.outstanding, len(engine.waiting),
                      engine.pending_prefill)

    def sample_until(self, end_s: float) -> dict:
        """Heartbeat samples up to the end of the whole run."""
        s = self.samples
        usage, outstanding, waiting, pending = self.state
        while self.next_sample_s <= end_s:
            s["time_s"].append(self.next_sample_s)
            s["kv_usage"].append(usage)
            s["num_outstanding"].append(outstanding)
            s["num_waiting"].append(waiting)
            s["pending_prefill_tokens"].append(pending)
            self.next_sample_s += self.interval
        return s
