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

from llmsim.engine.core import EngineLoop
from llmsim.engine.kv_cache import cdiv
from llmsim.engine.request import Request, RequestStatus
from llmsim.engine.scheduler import BatchScheduler, StepOutcome, StepPlan
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
    ) -> None:
        self.replica_id = replica_id
        self.env = env
        self.scheduler = scheduler
        self.kv_cache = scheduler.kv_cache
        self.step_time = step_time
        self.recorder = recorder
        self.loop = EngineLoop(scheduler, async_scheduling)
        self.max_model_len = max_model_len
        self._wakeup: Optional[simpy.Event] = None
        self._gpu_free_s = 0.0
        self._last_update_end_s: Optional[float] = None
        self.num_outstanding = 0
        self.process = env.process(self.run())

    # -- admission ---------------------------------------------------------------------------------
    def rejection_reason(self, request: Request) -> Optional[str]:
        """Why this replica can never serve ``request`` (as a real engine refuses it), or None."""
        if request.max_total_tokens > self.max_model_len:
            return "exceeds_max_model_len"
        # The last output token is never fed back, so a request needs slots for prompt + output − 1 tokens.
        if cdiv(request.max_total_tokens - 1, self.kv_cache.block_size) > self.kv_cache.num_usable_blocks:
            return "exceeds_kv_capacity"
        return None

    def submit(self, request: Request) -> bool:
        request.replica = self.replica_id
        reason = self.rejection_reason(request)
        if reason is not None:
            request.status = RequestStatus.REJECTED
            request.reason = reason
            self.recorder.request_ended(request)
            return False
        self.scheduler.add_request(request)
        self.num_outstanding += 1
        if self._wakeup is not None and not self._wakeup.triggered:
            self._wakeup.succeed()
        return True

    # -- the engine loop ---------------------------------------------------------------------------
    def run(self):
        env = self.env
        loop = self.loop
        while True:
            plan = loop.schedule()
            if plan is not None:
                self._cost(plan)
            to_update = loop.next_to_update(plan)
            if to_update is None:
                if plan is None:
                    yield from self._sleep()
                continue
            if to_update.end_s > env.now:
                yield env.timeout(to_update.end_s - env.now)
            outcome = self.scheduler.update_from_output(to_update)
            self._deliver(to_update, outcome)
            if to_update.num_scheduled_tokens == 0 and not loop.busy and self.scheduler.has_unfinished_requests():
                # Nothing could run and nothing is in flight: only a new arrival can change that.
                yield from self._sleep()

    def _sleep(self):
        self._wakeup = self.env.event()
        yield self._wakeup
        self._wakeup = None

    def _cost(self, plan: StepPlan) -> None:
        now = self.env.now
        if plan.num_scheduled_tokens == 0:
            plan.start_s = plan.end_s = now
            return
        new_tokens = [n for _, n in plan.scheduled]
        duration = self.step_time(new_tokens, plan.context_lens, len(plan.sampling))
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

    def fail_unfinished(self, reason: str) -> list[Request]:
        """End every request still held (e.g. the simulation stopped); each is recorded once as failed."""
        left = list(self.scheduler.running) + list(self.scheduler.waiting)
        for request in left:
            self.scheduler.abort(request)
            request.status = RequestStatus.FAILED
            request.reason = reason
            self.num_outstanding -= 1
            self.recorder.request_ended(request)
        return left
