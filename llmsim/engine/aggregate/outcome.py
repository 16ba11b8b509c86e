"""What the aggregate engine records while it runs, and what a finished run hands back.

:class:`StepRecording` is the engine's step log (a mixin of :class:`~llmsim.engine.aggregate.engine.AggregateReplica`:
its counters live on the engine, where the quiet loop keeps them in locals): per-replica totals every step and
the kept rows of the step table, in typed arrays so a long run stays compact.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from llmsim.engine.aggregate.plan import STATUS_NAMES, AggregatePlan
from llmsim.metrics.recorder import ITL_WEIGHT_CODE


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
    cached_tokens: list
    status: list
    reason: list
    steps: dict = field(default_factory=dict)  # step-table columns (typed arrays), when kept
    itl_values: array = field(default_factory=lambda: array("d"))
    itl_weights: array = field(default_factory=lambda: array(ITL_WEIGHT_CODE))
    num_steps: int = 0
    busy_s: float = 0.0
    kv_usage_s: float = 0.0  # Σ duration × used / total (the cluster's per-replica figure)
    kv_usage_time_s: float = 0.0  # Σ usage × duration (the recorder's figure)
    peak_kv_usage: float = 0.0
    max_num_waiting: int = 0
    max_batch_size: int = 0
    num_finished: int = 0
    last_end_s: float = 0.0


class StepRecording:
    """The step log of an aggregate engine (counters and kept rows live on the engine itself)."""

    def _keep_quiet_step(self, step: tuple, offset: int, usable: int, finished: int) -> None:
        s, start, end, n, free, num_running, num_waiting = step  # (s: the pool's clock; the table's index is s + offset)
        self._keep_step(s + offset, start, end - start, n, 0, n, free, usable - free, num_running, num_waiting, 0,
                        finished)

    def _keep_step(self, step, start, duration, batch, prefill, decode, free, used, running, waiting, preempted,
                   finished) -> None:
        """One row of the step table, in STEP_COLUMNS order without ``replica`` (a call per column: a default run
        keeps every step, hundreds of thousands of rows)."""
        (a_step, a_start, a_duration, a_batch, a_prefill, a_decode, a_free, a_used, a_running, a_waiting,
         a_preempted, a_finished) = self._step_appends
        a_step(step)
        a_start(start)
        a_duration(duration)
        a_batch(batch)
        a_prefill(prefill)
        a_decode(decode)
        a_free(free)
        a_used(used)
        a_running(running)
        a_waiting(waiting)
        a_preempted(preempted)
        a_finished(finished)
        if self.step_sink_rows is not None and len(self.steps["step"]) >= self.step_sink_rows:
            self.flush_steps()

    def _bind_step_columns(self) -> None:
        self._step_appends = tuple(column.append for column in self.steps.values())

    def flush_steps(self) -> None:
        """Hand the kept steps to the sink and start new buffers."""
        steps = self.steps
        self.steps = {name: array(values.typecode) for name, values in steps.items()}
        self._bind_step_columns()
        self.step_sink(steps)

    def _record_step(self, plan: AggregatePlan, finished: int) -> None:
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

    def outcome(self) -> ReplicaOutcome:
        return ReplicaOutcome(
            first_scheduled_s=self.first_sched, first_token_s=self.first_tok, last_token_s=self.last_tok,
            finish_s=self.finish_s, num_output_tokens=self.out, num_preemptions=self.npre,
            scheduled_tokens=self.sched_total, recomputed_tokens=self.recomputed, cached_tokens=self.cached_tok,
            status=[STATUS_NAMES[x] for x in self.status], reason=self.reason, steps=self.steps,
            itl_values=self.itl_values, itl_weights=self.itl_weights,
            num_steps=self.num_steps, busy_s=self.busy_s, kv_usage_s=self.kv_usage_s,
            kv_usage_time_s=self.kv_usage_time_s, peak_kv_usage=self.peak_kv_usage,
            max_num_waiting=self.max_num_waiting, max_batch_size=self.max_batch_size,
            num_finished=self.num_finished, last_end_s=self.last_end_s)


class ReplicaTail:
    """What a finished replica still needs for the heartbeat samples after its last event: its final state
    (it no longer changes) and the samples so far. Keeps the run's memory to one replica's state at a time."""

    def __init__(self, engine) -> None:
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
