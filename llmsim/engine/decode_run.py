"""One skipped decode run as :mod:`llmsim.engine.fastpath` plans it: its ticks, step ends, block counts and
deliveries (built by :mod:`llmsim.engine.decode_run_build`, committed by :mod:`llmsim.engine.decode_run_commit`,
read mid-run by :mod:`llmsim.engine.decode_run_state`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from llmsim.engine.request import Request

if TYPE_CHECKING:
    from llmsim.engine.step import StepPlan

#: Longest run computed at once (bounds the arrays; a longer stretch simply becomes several runs).
MAX_RUN_STEPS = 4096
#: Shorter runs are not worth the set-up cost; the per-step loop takes them.
MIN_RUN_STEPS = 3


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
