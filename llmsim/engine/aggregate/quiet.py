"""Quiet steps: the batch is the decode pool alone, run a few arithmetic operations a step.

A mixin of :class:`~llmsim.engine.aggregate.engine.AggregateReplica`. Most steps of a loaded replica are quiet:
nobody waits, the blocks suffice, nobody is added or finished except pool members whose last token comes.
The loop keeps the hot state in locals and writes it back before any call that reads it.
"""

from __future__ import annotations

from llmsim.engine.aggregate.plan import AggregatePlan


class QuietSteps:
    """The quiet-step loop of the aggregate engine."""

    def _quiet_steps(self, now: float) -> float:
        """Run *quiet* steps inline: the batch is the pool alone, nobody waits, no block shortage, nobody to
        add or finish. Each costs a few arithmetic operations on local variables instead of a plan object
        and two calls; the first step that is not quiet is left to the general loop. A generator: it yields
        where lockstep makes it wait for the router (:mod:`llmsim.cluster.lockstep`); returns the new time."""
        in_flight = self.in_flight
        async_mode = self.depth == 2
        if len(in_flight) != (1 if async_mode else 0):
            return now
        invariants = self._quiet_invariants
        if invariants is None:
            invariants = self._quiet_invariants = self._invariants()
        (budget, bs, pool, phase, finish_at, retire_at, decode_consts, per_unit, flops_rate, kv_bytes,
         bytes_rate, layers, overhead, kv_bound, arr, usable, running, waiting, itl_value, itl_weight, keep,
         every) = invariants
        consts_n, base, qo_bytes, floor, add = -1, 0.0, 0.0, 0.0, 0.0
        pending = in_flight[0] if async_mode else None  # the step in flight (async): an AggregatePlan or a quiet tuple
        plan = pending  # the general step's plan still to update (async: it is, until the first quiet step is out)
        # Hot state in locals; written back before any call that reads it, and at the end. ``s`` is the pool's clock
        # (every quiet step decodes the pool); the step table's index is ``s + offset`` throughout the loop.
        s, free, gpu_free = self.pool_step, self.free, self.gpu_free
        offset = self.step_index - s
        prefix = self.prefix_caching
        pool_n, pool_a = pool.n, pool.a
        # ``last_end``: when the pool's members got their last token (engine.py: pool_last_end); once a quiet step is
        # updated it is also the last update's end.
        last_step, last_end = self.last_update_pool_step, self.pool_last_end
        first_step = s
        num_steps, busy, kv_s, kv_t = self.num_steps, self.busy_s, self.kv_usage_s, self.kv_usage_time_s
        peak, max_batch, max_waiting = self.peak_kv_usage, self.max_batch_size, self.max_num_waiting
        next_due = self._next_due()
        finished_pending = self.finished_pending
        # Only a general step adds completers or makes the running list loose (the caller enters with it tight):
        # both are settled at the first quiet step, so the loop checks neither again.
        completers = self.completers
        # The queues' lengths, for the step records: taken again after any call that may change them.
        num_running, num_waiting = len(running), len(waiting)
        while True:
            if s in retire_at or completers:
                pool.n, pool.a = pool_n, pool_a
                pool.retire(s)
                if completers:
                    for i in completers:  # requests whose prefill ended in the last step join the pool
                        if not self._enter_pool(i, s) and not self._final_in_flight(i):
                            self.loose = True
                    completers = self.completers = []
                pool_n, pool_a = pool.n, pool.a
                if self.loose:
                    break
            need = phase[-s % bs]
            if not pool_n or pool_n > budget or need > free:
                break
            if waiting:
                # Requests wait: the step is still quiet if vLLM's waiting pass would stop at the same head again
                # (VLLMV1Rules._schedule_waiting says under which budget, free blocks and running count).
                blocked = self.admission_blocked
                if blocked is None or blocked[0] != waiting[0]:
                    break
                _, lowest, highest, most_free, fewest_running, most_waiting, until = blocked
                if (not lowest <= budget - pool_n <= highest or free - need > most_free
                        or num_running < fewest_running or num_waiting > most_waiting or s >= until):
                    break
            if need and prefix:
                self._cache_take(need, free)
            free -= need
            if pool_n != consts_n:
                consts_n = pool_n
                base, qo_bytes, floor, add = decode_consts(pool_n)
            ctx = pool_a + pool_n * s
            memory = ((ctx + pool_n) * kv_bytes + qo_bytes) / bytes_rate
            if kv_bound:
                gpu = base + layers * (memory + overhead)
            else:
                compute = (2 * ctx + 2 * pool_n) * per_unit / flops_rate
                gpu = base + layers * ((compute if compute > memory else memory) + overhead)
            duration = (gpu if gpu > floor else floor) + add
            start = now if now > gpu_free else gpu_free
            gpu_free = start + duration
            step = (s, start, gpu_free, pool_n, free, num_running, num_waiting)
            s += 1
            if finished_pending:
                self.finished_pending = finished_pending = False
            if async_mode:
                to_update, pending = pending, step
            else:
                to_update = step
            if plan is None:
                u_step, u_start, u_end, u_n, u_free, u_running, u_waiting = to_update
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
                    num_running, num_waiting = len(running), len(waiting)
                # Quiet update: every pool member gets its token, same gap; those at their last one finish.
                itl_value(u_end - last_end)
                itl_weight(u_n)
                last_step, last_end = u_step, u_end
                finished = 0
                if u_step in finish_at:
                    self.free = free
                    finished = self._finish_pool_members(u_step, u_end)
                    free = self.free
                    num_running, num_waiting = len(running), len(waiting)
                    finished_pending = True
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
                if u_waiting > max_waiting:
                    max_waiting = u_waiting
                if keep and not (u_step + offset) % every:
                    self._keep_quiet_step(to_update, offset, usable, finished)
            else:
                plan = None
                self.pool_step, self.free, self.gpu_free, pool.n, pool.a = s, free, gpu_free, pool_n, pool_a
                self.step_index = s + offset
                if last_step != self.last_update_pool_step:
                    self.last_update_pool_step = last_step
                    self.last_update_end = self.pool_last_end = last_end
                if self._prefill_pass is not None and s != first_step:
                    self._quiet_decodes_done(s - first_step)
                first_step = s
                self.num_steps, self.busy_s, self.kv_usage_s, self.kv_usage_time_s = num_steps, busy, kv_s, kv_t
                self.peak_kv_usage, self.max_batch_size, self.max_num_waiting = peak, max_batch, max_waiting
                if to_update.end > now:
                    now = to_update.end
                    while now >= self.horizon:
                        self.wake_s = now
                        yield
                    self._advance(now)
                self._update(to_update)
                finished_pending = self.finished_pending
                free, last_step, last_end = self.free, self.last_update_pool_step, self.pool_last_end
                num_steps, busy, kv_s, kv_t = self.num_steps, self.busy_s, self.kv_usage_s, self.kv_usage_time_s
                peak, max_batch, max_waiting = self.peak_kv_usage, self.max_batch_size, self.max_num_waiting
                next_due = self._next_due()
                num_running, num_waiting = len(running), len(waiting)
        self.pool_step, self.free, self.gpu_free, pool.n, pool.a = s, free, gpu_free, pool_n, pool_a
        self.step_index = s + offset
        if last_step != self.last_update_pool_step:  # (quiet updates came: the last one's pool step and end)
            self.last_update_pool_step = last_step
            self.last_update_end = self.pool_last_end = last_end
        if self._prefill_pass is not None and s != first_step:
            self._quiet_decodes_done(s - first_step)
        self.num_steps, self.busy_s, self.kv_usage_s, self.kv_usage_time_s = num_steps, busy, kv_s, kv_t
        self.peak_kv_usage, self.max_batch_size, self.max_num_waiting = peak, max_batch, max_waiting
        if async_mode and plan is None:  # a quiet step is in flight
            in_flight[0] = self._quiet_plan(pending, offset)
        return now

    def _invariants(self) -> tuple:
        """What the quiet loop reads of the engine that never changes (the same objects all run long): fetched
        once per engine instead of at each of the loop's tens of thousands of entries."""
        pool = self.pool
        # decode_step_time's arithmetic inlined (same operations, same order: bit-identical durations), with
        # its per-batch constants fetched only when the pool's size changes: one call fewer a quiet step (13 M of them
        # for 1 M requests).
        per_unit, flops_rate, kv_bytes, bytes_rate, layers, overhead = self.timing.decode_arith()
        # Decode attention's time is max(its FLOPs, its KV reads), both proportional to the batch's context. When a
        # context token's bytes outweigh its FLOPs by more than rounding can blur (real GPUs, by orders of magnitude),
        # the reads win at every context, and the max is the memory term: same float, without computing the other.
        kv_bound = kv_bytes / bytes_rate > 2 * per_unit / flops_rate * (1 + 1e-9)
        return (self.step_budget, self.bs, pool, pool.phase, pool.finish_at,
                pool.retire_at, self.timing.decode_consts, per_unit, flops_rate, kv_bytes, bytes_rate, layers, overhead,
                kv_bound, self.arr, self.usable, self.running, self.waiting, self.itl_values.append,
                self.itl_weights.append, self.keep_steps, self.step_sample_every)

    def _quiet_plan(self, step: tuple, offset: int) -> AggregatePlan:
        s, start, end, n, free, num_running, num_waiting = step
        plan = AggregatePlan(s + offset, s)
        plan.start, plan.end = start, end
        plan.tokens = plan.batch = plan.pool_n = n
        plan.free_after, plan.num_running, plan.num_waiting = free, num_running, num_waiting
        return plan
