"""vLLM's engine loop around the scheduler: synchronous, or asynchronous with a batch queue.

The synchronous loop (``EngineCore.step``) schedules a step, runs it and applies its output before the next
schedule. vLLM's default loop (``EngineCore.step_with_batch_queue`` with ``AsyncScheduler``, 2 batches deep)
schedules step s+1 *before* applying the output of step s, so the GPU never waits for the CPU; the price is
that tokens reach the scheduler one step late. :class:`EngineLoop` holds that batch queue; the caller (the
replay tool, or a replica in simulated time) decides when a step's output is ready.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from llmsim.engine.step import BatchScheduler, StepPlan


class EngineLoop:
    """The batch queue of vLLM's EngineCore: which scheduled step's output to apply, and when."""

    def __init__(self, scheduler: BatchScheduler, async_scheduling: bool) -> None:
        self.scheduler = scheduler
        self.depth = 2 if async_scheduling else 1
        self.in_flight: deque[StepPlan] = deque()

    def schedule(self) -> Optional[StepPlan]:
        """Call ``schedule()`` if the scheduler holds anything (else the tick schedules nothing)."""
        if self.scheduler.has_requests():
            return self.scheduler.schedule()
        return None

    def next_to_update(self, plan: Optional[StepPlan]) -> Optional[StepPlan]:
        """Queue ``plan`` and return the step whose output must be applied now, or None.

        Async: while fewer than two batches are in flight and this one runs tokens, the engine returns at
        once and schedules again without waiting for any output. A step that runs nothing never makes
        the engine wait: the oldest in-flight step's output is taken straight away.
        """
        if plan is not None:
            self.in_flight.appendleft(plan)
            if plan.num_scheduled_tokens > 0 and len(self.in_flight) < self.depth:
                return None
        elif not self.in_flight:
            return None
        return self.in_flight.pop()

    @property
    def busy(self) -> bool:
        return bool(self.in_flight)
