"""One serving replica in simulated time: scheduler + KV cache + timing model, driven by simpy.

The replica process repeats vLLM's engine loop. Each tick asks the scheduler for a :class:`StepPlan`, costs
it with the timing model (the batch shape: new tokens and cached context per request), and applies the
step's output when the step's forward pass ends. With the async loop (vLLM's default) the next step is
planned while the current one runs, so tokens reach the scheduler a step late but the GPU never idles
between steps.
"""

from __future__ import annotations

from typing import Callable, Optional

import simpy

from llmsim.engine.admission import rejection_reason
from llmsim.engine.core import EngineLoop
from llmsim.engine.decode_run_commit import commit_run
from llmsim.engine.decode_run_state import MidRun
from llmsim.engine.fastpath import ScheduleSnapshot, fast_path_supported, plan_decode_run
from llmsim.engine.request import Request, RequestStatus
from llmsim.engine.step import BatchScheduler, StepOutcome, StepPlan
from llmsim.metrics.recorder import Recorder


class Replica:
    """A vLLM-like engine instance. ``submit`` accepts or rejects a request; ``run`` is its simpy process."""

    def __init__(
        self,
        replica_id: int,
        env: simpy.Environment,
        scheduler: BatchScheduler,
        step_time: Callable[[list[int], list[int], int], float],
        recorder: Recorder,
        *,
        async_scheduling: bool,
        max_model_len: int,
        swap_s_per_block: float = 0.0,
        timing=None,
    ) -> None:
        self.replica_id = replica_id
        self.env = env
        self.scheduler = scheduler
        self.kv_cache = scheduler.kv_cache
        self.step_time = step_time
        self.recorder = recorder
        self.loop = EngineLoop(scheduler, async_scheduling)
        self.max_model_len = max_model_len
        self.swap_s_per_block = swap_s_per_block  # PCIe time to move one KV block to or from CPU memory
        self._wakeup: Optional[simpy.Event] = None
        self._gpu_free_s = 0.0
        self._last_update_end_s: Optional[float] = None
        self.num_outstanding = 0
        self.num_submitted = 0  # requests accepted so far (a decode run's snapshot tells arrivals by it)
        # Event skipping (engine.mode: fast): needs the timing model's vectorised decode steps, a KV cache whose
        # runs are modelled (paged or prefix-caching, not hybrid), no speculative decoding, and no observer that
        # wants every step's plan; each policy then says when a run may start (llmsim.engine.decode_runs).
        # Owners may switch it off (faults, timeouts).
        self.timing = timing
        self.fast_path = (timing is not None and fast_path_supported(scheduler) and not recorder.wants_step_plans)
        self._snapshot = ScheduleSnapshot()
        self._last_update_finished = 0
        self.run_horizon = 64  # steps planned ahead when an arrival may cut the run (adapts to the load)
        self._run = None
        self._deferred_aborts: list = []  # aborts that arrived during a skipped decode run
        self._run_cut: Optional[simpy.Event] = None
        self.process = env.process(self.run())

    # -- admission ---------------------------------------------------------------------------------
    def rejection_reason(self, request: Request) -> Optional[str]:
        """Why this replica can never serve ``request`` (as a real engine refuses it), or None."""
        return rejection_reason(request.max_total_tokens, max_model_len=self.max_model_len,
                                block_size=self.kv_cache.block_size, num_usable_blocks=self.kv_cache.num_usable_blocks,
                                num_waiting=self.num_waiting_now(),
                                max_waiting_requests=self.scheduler.config.max_waiting_requests)

    def submit(self, request: Request) -> bool:
        request.replica = self.replica_id
        request.served_by.append(self.replica_id)
        reason = self.rejection_reason(request)
        if reason is not None:
            request.status = RequestStatus.REJECTED
            request.reason = reason
            self.recorder.request_ended(request)
            return False
        self.scheduler.add_request(request)
        self.num_outstanding += 1
        self.num_submitted += 1
        if self._run is not None:
            self._note_arrival_during_run()
        max_queue_s = self.scheduler.config.max_queue_time_s
        if max_queue_s is not None:
            self.env.timeout(max_queue_s).callbacks.append(lambda _, r=request, a=request.retries: self._queue_timeout(r, a))
        if self._wakeup is not None and not self._wakeup.triggered:
            self._wakeup.succeed()
        return True

    # -- what an observer sees now (routers, the heartbeat) -----------------------------------------
    # During a skipped decode run the counters and the KV cache still describe the run's start; these answer as
    # the per-step loop would at this instant (llmsim.engine.decode_run_state), without cutting the run.
    def num_outstanding_now(self) -> int:
        if self._run is None:
            return self.num_outstanding
        return self.num_outstanding - self._mid_run().num_ended(self.env.now) - self._num_deferred_aborts()

    def num_waiting_now(self) -> int:
        waiting = self.scheduler.num_waiting
        return waiting if self._run is None else waiting - self._num_deferred_aborts()

    def kv_usage_now(self) -> float:
        kv = self.kv_cache
        if self._run is None:
            return kv.usage
        return (kv.num_usable_blocks - self._mid_run().num_free_blocks(self.env.now)) / kv.num_usable_blocks

    def unreported_prefill_ends(self) -> list[Request]:
        """Requests whose prefill the per-step loop would have settled by now — first token delivered, or aborted
        while waiting — that a decode run in flight has not reported yet."""
        if self._run is None:
            return []
        delivered = self._mid_run().first_tokens_delivered(self.env.now)  # one list per run: callers may memoise
        if not self._deferred_aborts:
            return delivered
        return delivered + [request for request, _, _ in self._deferred_aborts if self.holds(request)]

    def _mid_run(self) -> MidRun:
        run = self._run
        if run.observer is None:
            run.observer = MidRun(run, self.kv_cache)
        return run.observer

    def _num_deferred_aborts(self) -> int:
        # Aborted in the per-step loop at once (queue timeouts: waiting requests), here when the run ends.
        if not self._deferred_aborts:
            return 0
        return sum(1 for request, _, _ in self._deferred_aborts if self.holds(request))

    # -- the engine loop ---------------------------------------------------------------------------
    def run(self):
        env = self.env
        loop = self.loop
        while True:
            if self.fast_path:
                run = plan_decode_run(self, self._snapshot, self._last_update_finished, self.timing)
                if run is not None:
                    yield from self._decode_run(run)
                    continue
            self.scheduler.now_s = env.now
            plan = loop.schedule()
            if plan is not None:
                self._cost(plan)
                if self.fast_path:
                    self._snapshot = ScheduleSnapshot.of(plan, self.scheduler, self.num_submitted)
            to_update = loop.next_to_update(plan)
            if to_update is None:
                if plan is None:
                    yield from self._sleep()
                continue
            if to_update.end_s > env.now:
                yield env.timeout(to_update.end_s - env.now)
            outcome = self.scheduler.update_from_output(to_update)
            self._last_update_finished = len(outcome.finished)
            self._deliver(to_update, outcome)
            if (to_update.num_scheduled_tokens == 0 and not to_update.preempted and not to_update.failed
                    and not loop.busy and self.scheduler.has_unfinished_requests()):
                # Nothing could run and nothing is in flight: only a new arrival can change that.
                yield from self._sleep()

    # -- event skipping (see llmsim.engine.fastpath) ------------------------------------------------
    def _decode_run(self, run):
        """Wait out a decode run in one go; an admissible arrival cuts it at the tick that would see it."""
        env = self.env
        self._run = run
        self._run_cut = env.event()
        yield env.timeout(run.resume_time(run.k) - env.now) | self._run_cut
        ticks = run.k
        if self._run_cut.triggered:
            ticks = run.ticks_before(env.now)
            resume = run.resume_time(ticks)
            if resume > env.now:
                yield env.timeout(resume - env.now)
        self._run = self._run_cut = None
        if run.truncate_on_arrival:
            # Plan about twice as far as runs have been getting: cheaper planning, same result.
            self.run_horizon = max(16, min(4096, 2 * ticks if ticks < run.k else 2 * run.k))
        commit_run(self, run, ticks)
        self._snapshot = ScheduleSnapshot()  # the tick after a run always takes the per-step loop
        deferred, self._deferred_aborts = self._deferred_aborts, []
        for request, status, reason in deferred:
            if self.holds(request):
                self.abort(request, status, reason)

    def _note_arrival_during_run(self) -> None:
        run = self._run
        if run.truncate_on_arrival:
            if not self._run_cut.triggered:
                self._run_cut.succeed()
        else:
            run.arrival_times.append(self.env.now)

    def _sleep(self):
        self._wakeup = self.env.event()
        yield self._wakeup
        self._wakeup = None

    def _cost(self, plan: StepPlan) -> None:
        now = self.env.now
        swapped_blocks = plan.swap_out_blocks + plan.swap_in_blocks
        if plan.num_scheduled_tokens == 0 and not swapped_blocks:
            plan.start_s = plan.end_s = now
            return
        duration = 0.0
        if plan.num_scheduled_tokens:
            duration = self.step_time([n for _, n in plan.scheduled], plan.context_lens, len(plan.sampling))
            speculator = self.scheduler.speculator
            if speculator is not None:  # the proposer drafts for every request that sampled (a separate term)
                duration += speculator.draft_time(self.step_time, plan.sampling,
                                                  [r.num_computed_tokens for r in plan.sampling])
        # Swap preemption: the KV copies over PCIe precede the forward pass (vLLM V0's cache engine).
        duration += swapped_blocks * self.swap_s_per_block
        # Async: the step was planned while the previous one ran; it starts when the GPU is free.
        plan.start_s = max(now, self._gpu_free_s)
        plan.end_s = plan.start_s + duration
        self._gpu_free_s = plan.end_s
        for request in plan.new:
            request.first_scheduled_s = plan.start_s

    def _deliver(self, plan: StepPlan, outcome: StepOutcome) -> None:
        end = plan.end_s
        self.recorder.tokens_emitted(outcome.emitted, end, self._last_update_end_s)
        if plan.num_scheduled_tokens:
            self._last_update_end_s = end
            self.recorder.step(self.replica_id, plan, outcome, self.kv_cache.num_usable_blocks - plan.free_blocks_after_schedule,
                               plan.free_blocks_after_schedule)
        for request in outcome.finished:
            request.finish_s = end
            self.num_outstanding -= 1
            self.recorder.request_ended(request)

    def abort(self, request: Request, status: RequestStatus, reason: str) -> None:
        """End a request this replica holds before it finishes (timeout, admission control); it is recorded
        once with ``status`` and ``reason``, and its KV blocks are freed. During a skipped decode run the
        run is cut at the next engine tick and the request ends there."""
        if self._run is not None:
            self._deferred_aborts.append((request, status, reason))
            if not self._run_cut.triggered:
                self._run_cut.succeed()
            return
        self.scheduler.abort(request)
        request.status = status
        request.reason = reason
        self.num_outstanding -= 1
        self.recorder.request_ended(request)

    def holds(self, request: Request) -> bool:
        return request.replica == self.replica_id and not request.is_finished and request.status != RequestStatus.REJECTED

    def _queue_timeout(self, request: Request, attempt: int) -> None:
        if request.retries == attempt and self.holds(request) and request.first_scheduled_s is None:
            self.abort(request, RequestStatus.REJECTED, "queue_timeout")

    def fail_unfinished(self, reason: str) -> list[Request]:
        """End every request still held (e.g. the simulation stopped); each is recorded once as failed."""
        left = list(self.scheduler.running) + list(self.scheduler.waiting) + list(self.scheduler.swapped)
        for request in left:
            self.scheduler.abort(request)
            request.status = RequestStatus.FAILED
            request.reason = reason
            self.num_outstanding -= 1
            self.recorder.request_ended(request)
        return left
