"""vLLM V1's scheduling decisions on the aggregate engine's per-request arrays and decode pool.

A mixin of :class:`~llmsim.engine.aggregate.engine.AggregateReplica` (the engine's state is ``self``). These
are the rules of :mod:`llmsim.engine.schedulers.vllm_v1` and :class:`~llmsim.engine.scheduler.SchedulerBase`
restated on arrays; the equivalence suite (tests/engine/test_fast_path_equivalence.py) holds the two together.
The switches a policy class may flip on top of vLLM V1's rules (:data:`.policies.POLICY_SWITCHES`) are read from the
class.
"""

from __future__ import annotations

from llmsim.engine.aggregate.plan import ANY, PREEMPTED, RUNNING, AggregatePlan


class BlockContentsNeeded(Exception):
    """Prefix caching in a state where the aggregate engine's block counts do not say what is cached
    (:mod:`.prefix`): the run is made again on the event-skipping loop
    (:func:`llmsim.engine_modes._prefix_cache_blockers`)."""


class VLLMV1Rules:
    """The running pass, the waiting pass, pricing and preemption of one step (see the package docstring)."""

    def _schedule(self) -> AggregatePlan:
        plan = AggregatePlan(self.step_index)
        self.step_index += 1
        # The pool's own clock (engine.py: pool_step) counts the steps in which its members decode: every step here.
        s = plan.pool_step = self.pool_step
        self.pool_step = s + 1
        self.finished_pending = False
        self.admission_blocked = None
        self.pool.retire(s)
        if self.dirty:
            self._classify(s)
        elif self.completers:
            for i in self.completers:
                if not self._enter_pool(i, s) and not self._final_in_flight(i):
                    self.loose = True
            self.completers = []
        if self._prefill_pass is None:
            if self.loose or not self._schedule_fast(plan, s):
                self._schedule_explicit(plan, s)
                self.dirty = True
                self.admission_blocked = None  # the next step classifies the running list first
            return plan
        # vLLM V0 or TGI: newcomers' prompts alone, or else a decode step.
        self.pool_decoded_last = True
        if self.waiting and self._prefill_step(plan, s):
            return plan
        built_fast = not self.loose and self._schedule_fast(plan, s)
        if not built_fast:
            self._schedule_explicit(plan, s)
            self.dirty = True
            self.admission_blocked = None
        self._after_decode_step(s, built_fast)
        return plan

    def _final_in_flight(self, i: int) -> bool:
        """Async loop: its last token is being sampled, so the running pass skips it (vLLM 0.32)."""
        p = self.ph[i]
        return p > 0 and self.comp[i] + 2 - p >= self.P[i] + self.O[i]

    def _enter_pool(self, i: int, s: int) -> bool:
        """Make running request ``i`` a pool member from step ``s`` if it is a steady decode; else False."""
        out, p, c = self.out[i], self.ph[i], self.comp[i]
        if self.depth == 2:
            # Its token of step s−1 is in flight (delivered, same gap, by the explicit update of s−1, if the pool decoded
            # in s−1 too).
            steady = p == 1 and c == self.P[i] + out and self.pool_decoded_last
        else:
            steady = (p == 0 and out >= 1 and c == self.P[i] + out - 1
                      and self.last_tok[i] is not None and self.last_tok[i] == self.pool_last_end)
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

    def _schedule_fast(self, plan: AggregatePlan, s: int) -> bool:
        """The step with the pool in aggregate; False (nothing changed) when it must run request by request."""
        pool = self.pool
        n = pool.n
        budget = self.step_budget - n
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
                if not self.reserves:
                    need += -(-(c + num_new) // bs) - (-(-c // bs))
                scheduled.append((partial, num_new))
                budget -= num_new
        if need > self.free:
            return False
        if self.prefix_caching and need:
            self._cache_take(need, self.free)
        self.free -= need
        if self.waiting and self._prefill_pass is None:  # (a prefill-first policy tried its admission first)
            if budget > 0:
                self._schedule_waiting(plan, budget, scheduled, threshold)
            else:
                self.admission_blocked = (self.waiting[0], -ANY, 0, ANY, 0, ANY, ANY)
            if threshold != self.prefill_cap_tokens:
                self.admission_blocked = None  # a quiet step (someone running, someone waiting) applies the cap
        self._finish_plan(plan, scheduled, n, pool.a + n * s, s)
        return True

    def _threshold(self) -> int:
        """The per-request token cap of this step; vLLM waives it when the system holds one request (rule 2)."""
        if len(self.running) + len(self.waiting) == 1:
            return 0
        return self.prefill_cap_tokens

    def _schedule_waiting(self, plan: AggregatePlan, budget: int, scheduled: list, threshold: int) -> None:
        """vLLM V1's waiting pass: admit FCFS while the budget, max_num_seqs and the free blocks allow.

        Where it stops at a head it leaves ``admission_blocked`` = (head, lowest budget, highest budget, most
        free blocks, fewest running requests, most waiting requests, first pool step it may pass) under which the head
        fails again: the quiet loop runs steps
        with requests waiting while that holds (free blocks only shrink and nobody is admitted while nobody
        finishes), without the pass."""
        cfg = self.cfg
        waiting, running = self.waiting, self.running
        bs = self.bs
        P, O, out, ph, comp = self.P, self.O, self.out, self.ph, self.comp
        self.admission_blocked = None
        if running and not self.joins_running:
            # Static batching: nobody joins a running batch. Blocked under any budget and free blocks; the quiet loop
            # stops once the pool is empty, and a general step then asks again.
            self.admission_blocked = (waiting[0], -ANY, ANY, ANY, 0, ANY, ANY)
            return
        while waiting:
            i = waiting[0]
            if budget <= 0:
                self.admission_blocked = (i, -ANY, 0, ANY, 0, ANY, ANY)
                break
            if len(running) >= cfg.max_num_seqs:
                self.admission_blocked = (i, -ANY, ANY, ANY, cfg.max_num_seqs, ANY, ANY)
                break
            c = comp[i]
            hits = 0
            resuming = self.prefix_caching and not c and self.was_preempted[i]
            if resuming:
                hits = self._own_hits(i)  # its own blocks still cached: they count as computed
                c = hits * bs
            num_new = P[i] + out[i] + ph[i] - c
            if threshold and num_new > threshold:
                num_new = threshold
            if self.whole_prompts and num_new > budget:
                self.admission_blocked = (i, -ANY, num_new - 1, ANY, 0, ANY, ANY)
                break
            if num_new > budget:
                num_new = budget
            watermark = self.watermark_blocks if running else 0
            held = -(-comp[i] // bs)  # (hit blocks are not held yet: taking them off the queue uses free ones)
            if (self.full_prompt_check and cfg.scheduler_reserve_full_isl
                    and -(-(P[i] + out[i]) // bs) - held + watermark > self.free):
                self.admission_blocked = (i, -ANY, ANY, self.free, 0, ANY, ANY)
                break
            # A reserving policy takes the whole request now (prompt and every output token but the last).
            need = -(-((P[i] + O[i] - 1) if self.reserves else (c + num_new)) // bs) - held
            if need + watermark > self.free:
                # A budget of at least num_new gives it at least as many tokens, so at least as many blocks.
                # (Not with hits: evictions may take them away while it waits.)
                self.admission_blocked = None if hits else (i, num_new, ANY, self.free, 0, ANY, ANY)
                break
            self._take_blocks(i, need, hits if resuming else None)
            self._start_running(waiting, plan, scheduled, num_new)
            budget -= num_new

    def _take_blocks(self, i: int, need: int, hits) -> None:
        """Admission of waiting request ``i``: ``need`` blocks off the free count, ``hits`` of them (None: it is not
        resuming with prefix caching) its own blocks still cached, which count as computed."""
        if hits is not None:
            c = hits * self.bs
            self._take_hits(i, hits)
            self.comp[i] = c
            self.cached_tok[i] += c
            self._cache_take(need - hits, self.free - hits)
        elif self.prefix_caching and need:
            self._cache_take(need, self.free)
        self.free -= need

    def _start_running(self, queue, plan: AggregatePlan, scheduled: list, num_new: int) -> None:
        """The head of ``queue`` joins the running list with ``num_new`` tokens in this step."""
        i = queue.popleft()
        self.status[i] = RUNNING
        self.running.append(i)
        if not self.was_preempted[i]:
            plan.new.append(i)
        scheduled.append((i, num_new))

    def _finish_plan(self, plan: AggregatePlan, scheduled: list, pool_n: int, pool_ctx: int, s: int) -> None:
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
        delivered = pool.steps_between(i, entry, self.last_update_pool_step)
        self.comp[i] += scheduled
        self.sched_total[i] += scheduled
        self.out[i] += delivered
        self.ph[i] += scheduled - delivered
        if delivered:
            self.last_tok[i] = self.pool_last_end
        pool.remove(i, s)
        for plan in self.in_flight:
            if plan.pool_n and entry <= plan.pool_step <= final:
                plan.pool_n -= 1
                plan.sampling.append(i)

    def _schedule_explicit(self, plan: AggregatePlan, s: int) -> None:
        """vLLM V1's running pass request by request (rules 1 and 5), then the waiting pass unless it preempted.

        Pool members keep their aggregate form: each is a one-token decode at context ``p_base + s``. Only a
        victim, or a member the pass does not reach, leaves the pool."""
        budget = self.step_budget
        threshold = self._threshold()
        running = self.running
        bs = self.bs
        P, O, out, ph, comp = self.P, self.O, self.out, self.ph, self.comp
        pooled, p_base, p_final = self.pool.member, self.pool.base, self.pool.final
        last_slot = self.max_model_len - 1
        reserves = self.reserves  # (a local: read for every running request)
        scheduled: list[tuple[int, int]] = []
        schedule = scheduled.append
        # Pool members scheduled before anyone outside the pool go to _finish_plan as a count and a context sum
        # (its leading pool members), not one entry each: same integer totals, and most of a preempting step's
        # batch is pool members.
        lead_n = lead_ctx = 0
        leading = True
        index = 0
        free = self.free  # a local through the pass over every running request; self.free around preemptions
        while index < len(running) and budget > 0:
            i = running[index]
            if pooled[i]:
                if p_final[i] < s:
                    index += 1  # async: its final token is already being sampled
                    continue
                c = p_base[i] + s
                num_new = 1
                need = 1 if c % bs == 0 and not reserves else 0
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
                need = 0 if reserves else -(-(c + num_new) // bs) - (-(-c // bs))
            if need > free:
                self.free = free
                preempted_self = False
                while need > self.free:
                    victim = running.pop()  # the most recently admitted among those not yet scheduled
                    if pooled[victim]:
                        self._unpool(victim, s)
                    self._preempt(victim, plan)
                    if victim == i:
                        preempted_self = True
                        break
                free = self.free
                if preempted_self:
                    break
            if need and self.prefix_caching:
                self._cache_take(need, free)
            free -= need
            if leading and pooled[i]:
                lead_n += 1
                lead_ctx += c
            else:
                leading = False
                schedule((i, num_new))
            budget -= num_new
            index += 1
        self.free = free
        for i in running[index:]:
            if pooled[i] and p_final[i] >= s:
                self._unpool(i, s)  # the budget ran out before it: it does not decode this step
        if not plan.preempted and self.waiting and budget > 0 and self._prefill_pass is None:
            self._schedule_waiting(plan, budget, scheduled, threshold)
        self._finish_plan(plan, scheduled, lead_n, lead_ctx, s)

    def _preempt(self, i: int, plan: AggregatePlan) -> None:
        """Recompute preemption: drop the victim's blocks and put it at the head of the waiting queue."""
        self.npre[i] += 1
        self.was_preempted[i] = True
        plan.preempted += 1
        c = self.comp[i]
        if self.prefix_caching:
            self._cache_release(i, i)
        self.free += -(-c // self.bs)
        self.recomputed[i] += c
        self.comp[i] = 0
        self.status[i] = PREEMPTED
        self.waiting.appendleft(i)
