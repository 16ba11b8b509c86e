"""The aggregate engine's replica: its state, its engine loop, arrivals, heartbeat samples and deliveries."""

from __future__ import annotations

from array import array
from collections import deque
from typing import Optional

import numpy as np

from llmsim.engine.admission import rejection_reason
from llmsim.engine.aggregate.outcome import ReplicaOutcome, StepRecording
from llmsim.engine.aggregate.plan import ANY, FINISHED, REJECTED, RUNNING, WAITING, AggregatePlan
from llmsim.engine.aggregate.prefill_first import PrefillFirstSteps
from llmsim.engine.aggregate.prefix import OwnBlockCache
from llmsim.engine.aggregate.quiet import QuietSteps
from llmsim.engine.aggregate.rules import VLLMV1Rules
from llmsim.engine.pool import DecodePool
from llmsim.engine.schedulers import SCHEDULERS
from llmsim.engine.schedulers.vllm_v1 import V1CoreScheduler, VLLMV1Scheduler
from llmsim.metrics.recorder import ITL_WEIGHT_CODE
from llmsim.metrics.step_records import STEP_COLUMNS


class AggregateReplica(QuietSteps, VLLMV1Rules, PrefillFirstSteps, OwnBlockCache, StepRecording):
    """Runs a batching policy on one replica over its arrivals (``arrival_s`` sorted), as the package docstring
    describes: vLLM V1's rules with the policy's switches (:mod:`.rules`), or a prefill-first policy's own admission
    (:mod:`.prefill_first`)."""

    def __init__(self, replica_id: int, sched_cfg, num_gpu_blocks: int, max_model_len: int, timing,
                 arrival_s, prompt_tokens, output_tokens, *, keep_steps: bool = True, step_sample_every: int = 1,
                 sample_interval_s: float = 1.0, on_progress=None, step_sink=None,
                 step_sink_rows: int = 1_000_000) -> None:
        self.replica_id = replica_id
        self.cfg = sched_cfg
        # The policy's own switches on vLLM V1's rules (aggregate.policies.POLICY_SWITCHES), read from its class; a
        # policy of a prefill-first kind (.prefill_first) has vLLM V1's running pass without its extras, unless its
        # class says otherwise (TGI's reserves each request's whole length and has no token budget).
        policy = SCHEDULERS[sched_cfg.policy]
        switches = policy if issubclass(policy, VLLMV1Scheduler) else V1CoreScheduler
        self.full_prompt_check = switches.full_prompt_check
        self.prefill_cap_tokens = sched_cfg.long_prefill_token_threshold if switches.prefill_cap else 0
        self.whole_prompts = switches.chunked_prefill_switch and not sched_cfg.enable_chunked_prefill
        # Prefix caching on a workload that shares no block (llmsim.engine_modes, .prefix).
        self._init_own_block_cache(sched_cfg.enable_prefix_caching)
        self.joins_running = switches.joins_running_batch  # False: only an empty engine admits (static batching)
        # Admission takes the whole request's blocks; nothing else does.
        self.reserves = getattr(policy, "reserve_whole_length", switches.reserve_whole_length)
        # A step's token budget; without one (Orca) a bound no step reaches, below ANY (the blocked ranges' "no bound").
        self.step_budget = sched_cfg.max_num_batched_tokens if policy.token_budget else ANY >> 1
        self.timing = timing
        self.depth = 2 if sched_cfg.async_scheduling else 1
        self.bs = sched_cfg.block_size
        self.usable = num_gpu_blocks - 1  # block 0 is vLLM's reserved null block
        self.free = self.usable
        self.watermark_blocks = int(sched_cfg.watermark * num_gpu_blocks) if switches.admission_watermark else 0
        self.max_model_len = max_model_len
        self._init_prefill_first(policy, sched_cfg, num_gpu_blocks, max_model_len)
        self.keep_steps = keep_steps
        self.step_sample_every = step_sample_every
        self.sample_interval_s = sample_interval_s
        # Python lists (the loops index them one by one), converted by numpy in one call each
        self.arr = np.asarray(arrival_s, dtype=np.float64).tolist()
        self.P = np.asarray(prompt_tokens, dtype=np.int64).tolist()
        self.O = np.asarray(output_tokens, dtype=np.int64).tolist()
        n = len(self.arr)
        self.comp = [0] * n
        self.out = [0] * n
        self.ph = [0] * n
        self.status = [WAITING] * n
        self.reason = [""] * n
        self.npre = [0] * n
        self.sched_total = [0] * n
        self.recomputed = [0] * n
        self.cached_tok = [0] * n
        self.first_sched: list = [None] * n
        self.first_tok: list = [None] * n
        self.last_tok: list = [None] * n
        self.finish_s: list = [None] * n
        self.was_preempted = [False] * n
        self.pool = DecodePool(n, self.bs, allocates=not self.reserves)
        self.completers: list[int] = []  # sampled for the first time after a prefill in the last step
        self.partial: Optional[int] = None  # the one request part-way through its prefill (last in running)
        self.dirty = False  # a step ran request by request: classify everyone before the next one
        self.loose = False  # some running request fits neither the pool nor the simple shape
        # Where the last waiting pass stopped at its head, the range under which it stops there again
        # (VLLMV1Rules._schedule_waiting); None when it did not, or when the step was built request by request.
        self.admission_blocked: Optional[tuple[int, int, int, int, int, int, int]] = None
        self.running: list[int] = []
        self.waiting: deque[int] = deque()
        self.in_flight: deque[AggregatePlan] = deque()
        self._quiet_invariants: Optional[tuple] = None  # QuietSteps._invariants, once the quiet loop first runs
        self.step_index = 0
        # The decode pool's clock (llmsim.engine.pool): the steps in which its members decode. Every step of the rules
        # stated here decodes them, so it equals step_index; it is kept apart so that the pool's arithmetic never
        # reads the step table's index.
        self.pool_step = 0
        self.finished_pending = False
        self.last_update_pool_step = -1
        self.last_update_end: Optional[float] = None
        # When the pool's members got their last token: the last update's end, except after a step in which the pool
        # waited (vLLM V0's prefill-only steps), so their gaps run from here. In a step that follows a prefill-only
        # one, a request whose first token that step sampled joins the pool only once its tokens come with the pool's.
        self.pool_last_end: Optional[float] = None
        self.pool_decoded_last = True  # whether the last step scheduled decoded the pool
        self.gpu_free = 0.0
        self.outstanding = 0
        self.pending_prefill = 0
        self.next_arrival = 0
        self.next_sample_s = 0.0
        self.samples = {"time_s": [], "kv_usage": [], "num_outstanding": [], "num_waiting": [],
                        "pending_prefill_tokens": []}
        # Typed arrays: 8 bytes a value, so a replica's gaps and steps stay compact however long the run.
        self.itl_values = array("d")
        self.itl_weights = array(ITL_WEIGHT_CODE)
        self.steps = {name: array("d" if name in ("start_s", "duration_s") else "q")
                      for name in STEP_COLUMNS if name != "replica"}
        self._bind_step_columns()
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
        for values in (self.comp, self.out, self.ph, self.npre, self.sched_total, self.recomputed, self.cached_tok):
            values.append(0)
        for values in (self.first_sched, self.first_tok, self.last_tok, self.finish_s):
            values.append(None)
        self.status.append(WAITING)
        self.reason.append("")
        self.was_preempted.append(False)
        self.pool.grow()
        return len(self.arr) - 1

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
        reason = rejection_reason(self.P[i] + self.O[i], max_model_len=self.max_model_len, block_size=self.bs,
                                  num_usable_blocks=self.usable, num_waiting=len(self.waiting),
                                  max_waiting_requests=self.cfg.max_waiting_requests)
        if reason is None:
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
        # min() spelt as comparisons: the quiet loop asks at every entry and hand-over (equal floats: either wins)
        due = self.next_sample_s
        if self.horizon < due:
            due = self.horizon
        arr, i = self.arr, self.next_arrival
        if i < len(arr) and arr[i] < due:
            due = arr[i]
        return due

    def run(self) -> ReplicaOutcome:
        """Run alone over arrivals known up front (the horizon never comes: nothing pauses)."""
        for _ in self.process():
            raise RuntimeError("an engine with every arrival known up front paused")
        return self.outcome()

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
            if ((self.pool.n or self.completers) and not (self.dirty or self.loose or self.partial is not None)
                    and (not self.waiting or self.admission_blocked is not None)):
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

    def _cost(self, plan: AggregatePlan, now: float) -> None:
        if plan.tokens == 0:
            plan.start = plan.end = now
            return
        start = now if now > self.gpu_free else self.gpu_free
        plan.start = start
        plan.end = self.gpu_free = start + plan.end  # plan.end held the duration until now
        for i in plan.new:
            self.first_sched[i] = start

    def _update(self, plan: AggregatePlan) -> None:
        """Deliver the step's tokens (pool members in aggregate), finish who is done, record the step."""
        end = plan.end
        previous = self.last_update_end
        pool_previous = self.pool_last_end
        same = plan.pool_n if pool_previous == previous else 0
        finished = 0
        out, ph, last_tok = self.out, self.ph, self.last_tok
        self.last_update_pool_step = plan.pool_step
        if plan.pool_n and plan.pool_step in self.pool.finish_at:
            finished = self._finish_pool_members(plan.pool_step, end)
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
        if plan.pool_n and pool_previous != previous:  # the pool waited through the last update: its own gap
            self.itl_values.append(end - pool_previous)
            self.itl_weights.append(plan.pool_n)
        if plan.tokens:
            self.last_update_end = end
            if plan.pool_decodes:
                self.pool_last_end = end
            self._record_step(plan, finished)

    def _finish_pool_members(self, step: int, end: float) -> int:
        """Pool members whose last token the pool's step ``step`` delivered: write their totals back and finish them."""
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
        # Its blocks: those of what it computed (P + O − 1 tokens by now: a reserving policy's whole reservation).
        if self.prefix_caching:
            self._cache_release(i, -1)
        self.free += -(-self.comp[i] // self.bs)
        self.finished_pending = True
        self.outstanding -= 1
        self.num_finished += 1
        if end > self.last_end_s:
            self.last_end_s = end
        if not self.num_finished & 4095 and self.on_progress is not None:
            self.on_progress(self.num_finished)
