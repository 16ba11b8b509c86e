"""Pipeline parallelism: one engine step priced stage by stage over micro-batches.

**Pipeline parallelism** (``hardware.pp`` > 1) is modelled as vLLM runs it: one *virtual engine* per stage,
each with its own batch in flight, so up to ``pp`` micro-batches occupy the pipeline at once. The engine
still sees one step = every scheduled request advances once; :meth:`PipelineStages.pipeline_times`
splits that step's requests round-robin into ``m = min(pp, requests)`` micro-batches and returns

* ``latency_s``: the slowest micro-batch's trip through all stages (stage times + send/recv), and
* ``occupancy_s``: how long the replica is busy before those requests can go again, the steady-state cycle
  ``max(latency, max over stages of the stage's time summed over micro-batches)``, combined with the CPU
  time as the engine loop does (max with async scheduling, sum without).

``step_time`` returns the occupancy. With enough micro-batches the slowest stage sets the pace; with fewer
micro-batches than stages (a single request, a big prefill alone) the stages wait on each other: the
*bubble* (``bubble_fraction`` = idle share of the stages over the cycle). Approximations: the cycle bound
ignores cycles that mix micro-batches and stages (exact for equal micro-batches), CPU time is paid once per
step, and each micro-batch re-reads its stage's weights (as a real pipeline does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class PipelineTiming:
    """One step through a pipeline of stages (see the module docstring)."""

    occupancy_s: float  # what step_time returns: steady-state cycle + CPU time
    latency_s: float  # slowest micro-batch through every stage, with send/recv (no CPU time)
    stage_busy_s: tuple[float, ...]  # each stage's time summed over the micro-batches
    num_microbatches: int

    @property
    def bubble_fraction(self) -> float:
        """Idle share of the stages during one cycle (0 without bubbles)."""
        cycle = max(self.latency_s, max(self.stage_busy_s))
        return 1.0 - sum(self.stage_busy_s) / (len(self.stage_busy_s) * cycle)


class PipelineStages:
    """A mixin of :class:`~llmsim.hardware.timing.RooflineTimingModel`: its stage layout (``_stages``,
    ``_stage_sliding``), per-stage shapes (``_stage_shape``), attention and CPU pricing come from the model."""

    def pipeline_times(self, new_tokens: Sequence[int], context_lens: Sequence[int], num_sampled: int) -> PipelineTiming:
        """Latency, occupancy and per-stage busy time of one step split into micro-batches (module docstring)."""
        count = len(new_tokens)
        micro = max(1, min(self._pp, count))
        sums = [[0, 0, 0, 0] for _ in range(micro)]  # tokens, flop units, context tokens, requests per micro-batch
        total = 0
        for i, (c, k) in enumerate(zip(new_tokens, context_lens)):
            s = sums[i % micro]
            s[0] += c
            s[1] += 2 * k + 2 if c == 1 else self.chunk_flop_units(c, k)
            s[2] += k + c
            s[3] += 1
            total += c
        per_stage = [[] for _ in self._stages]
        for g, (tokens, flop_units, ctx_tokens, requests) in enumerate(sums):
            if tokens == 0:
                continue
            sampled = num_sampled // micro + (1 if g < num_sampled % micro else 0)
            stages, hosts = self._stage_shape(tokens, sampled, tokens == requests)
            attention = self.attention_time(flop_units, ctx_tokens, tokens)
            windowed = None
            if self._window:
                # micro-batch g holds requests g, g + micro, ... (the round-robin split above)
                units, ctx = self.window_totals(new_tokens[g::micro], context_lens[g::micro])
                windowed = self.attention_time(units, ctx, tokens)
            for index, (base, host) in enumerate(zip(stages, hosts)):
                per_stage[index].append(max(base + self._stage_attention(index, attention, windowed), host))
        return self._assemble(per_stage, micro, self.cpu_time(total, count, num_sampled))

    def _stage_attention(self, index: int, attention, windowed=None):
        """Stage ``index``'s attention time from one layer's (floats or arrays): its sliding-window layers at
        ``windowed`` when given, every other layer at ``attention``."""
        dense, moe, _ = self._stages[index]
        if windowed is None:
            return (dense + moe) * attention
        sliding = self._stage_sliding[index]
        return (dense + moe - sliding) * attention + sliding * windowed

    def _assemble(self, per_stage, micro: int, cpu) -> PipelineTiming:
        """Combine stage × micro-batch times (floats, or numpy arrays over steps) into the step's timing."""
        if not per_stage[0]:
            return PipelineTiming(0.0, 0.0, tuple(0.0 for _ in per_stage), micro)
        latency = per_stage[0][0] * 0.0
        for g in range(len(per_stage[0])):
            trip = per_stage[0][g]
            for stage in per_stage[1:]:
                trip = trip + stage[g]
            latency = np.maximum(latency, trip)
        busy = []
        for stage in per_stage:
            total = stage[0]
            for value in stage[1:]:
                total = total + value
            busy.append(total)
        cycle = latency
        for total in busy:
            cycle = np.maximum(cycle, total)
        occupancy = self.period(cycle, cpu)
        if not isinstance(occupancy, np.ndarray):
            occupancy, latency, busy = float(occupancy), float(latency), [float(b) for b in busy]
        return PipelineTiming(occupancy, latency, tuple(busy), micro)

    def pipeline_decode_times(self, ctx: np.ndarray, num_steps: int, cpu) -> np.ndarray:
        """:meth:`decode_step_times` through the stages: the fixed batch split round-robin into micro-batches,
        each step's occupancy as :meth:`pipeline_times` gives it (numpy arrays over the steps)."""
        step = np.arange(num_steps, dtype=np.int64)
        micro = min(self._pp, int(ctx.size))
        per_stage = [[] for _ in self._stages]
        for g in range(micro):
            group = ctx[g::micro]
            size = int(group.size)
            summed = int(group.sum()) + step * size
            stages, hosts = self._stage_shape(size, size, True)
            attention = self.attention_time(2 * summed + 2 * size, summed + size, size)
            windowed = None
            if self._window:
                seen = self.window_decode_sums(group, num_steps)
                windowed = self.attention_time(2 * seen, seen, size)
            for index, (base, host) in enumerate(zip(stages, hosts)):
                per_stage[index].append(np.maximum(base + self._stage_attention(index, attention, windowed), host))
        return self._assemble(per_stage, micro, cpu).occupancy_s

