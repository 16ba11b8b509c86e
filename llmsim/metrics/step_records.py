"""The step half of :class:`llmsim.metrics.recorder.Recorder`: per-step records and their exact aggregates.

Every engine step updates the aggregates (busy time, preemptions, peak and time-weighted KV usage, the largest
queue and batch); the kept steps (``keep_steps``, thinned to every ``step_sample_every``-th) go to typed column
buffers, or in chunks to a Parquet file when the run streams its step table (``metrics.stream_steps``). A mixin:
the buffers and aggregates are initialised by ``Recorder.__init__``.
"""

from __future__ import annotations

import shutil
from array import array
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

STEP_COLUMNS = (
    "replica", "step", "start_s", "duration_s", "batch_size", "prefill_tokens", "decode_tokens", "free_blocks",
    "used_blocks", "num_running", "num_waiting", "num_preempted", "num_finished",
)
_FLOAT_STEP_COLUMNS = frozenset(("start_s", "duration_s"))


def empty_step_buffers() -> dict[str, array]:
    """One typed buffer per step column (8 bytes a value)."""
    return {name: array("d") if name in _FLOAT_STEP_COLUMNS else array("q") for name in STEP_COLUMNS}


class StepRecords:
    """Step records and aggregates of one run (mixed into ``Recorder``)."""

    def step(self, replica: int, plan, outcome, used_blocks: int, free_blocks: int) -> None:
        self.step_values(
            replica, plan.step, plan.start_s, plan.end_s - plan.start_s, len(plan.scheduled), plan.num_prefill_tokens,
            plan.num_scheduled_tokens - plan.num_prefill_tokens, free_blocks, used_blocks, plan.num_running,
            plan.num_waiting, len(plan.preempted), len(outcome.finished) if outcome is not None else 0,
        )
        for listener in self._step_listeners:
            listener(replica, plan, outcome, used_blocks, free_blocks)

    @property
    def wants_step_plans(self) -> bool:
        """True when a listener needs every step's plan (the fast path then steps one by one)."""
        return bool(self._step_listeners)

    def step_values(self, replica: int, step: int, start_s: float, duration: float, batch_size: int,
                    prefill_tokens: int, decode_tokens: int, free_blocks: int, used_blocks: int, num_running: int,
                    num_waiting: int, num_preempted: int, num_finished: int) -> None:
        """One engine step's record (the fast path calls this directly for steps it never materialises)."""
        self.num_steps += 1
        self.busy_time_s += duration
        self.total_preemptions += num_preempted
        usage = used_blocks / (used_blocks + free_blocks)
        if usage > self.peak_kv_usage:
            self.peak_kv_usage = usage
        self.kv_usage_time_s += usage * duration
        if num_waiting > self.max_num_waiting:
            self.max_num_waiting = num_waiting
        if batch_size > self.max_batch_size:
            self.max_batch_size = batch_size
        if not self.keep_steps or step % self.step_sample_every:
            return
        s = self._step
        # Unrolled on purpose (moved as it was from recorder.py): this runs once per step of the per-step loop,
        # where a loop over the column names costs a few percent of the step.
        s["replica"].append(replica)
        s["step"].append(step)
        s["start_s"].append(start_s)
        s["duration_s"].append(duration)
        s["batch_size"].append(batch_size)
        s["prefill_tokens"].append(prefill_tokens)
        s["decode_tokens"].append(decode_tokens)
        s["free_blocks"].append(free_blocks)
        s["used_blocks"].append(used_blocks)
        s["num_running"].append(num_running)
        s["num_waiting"].append(num_waiting)
        s["num_preempted"].append(num_preempted)
        s["num_finished"].append(num_finished)
        self._flush_if_full()

    def extend_steps(self, replica: int, columns: dict) -> None:
        """Many kept steps of one replica (typed arrays of every STEP_COLUMNS name but ``replica``, in step
        order; already thinned by ``step_sample_every``). The aggregate engine's per-replica step table."""
        count = len(columns["step"])
        if not self.keep_steps or not count:
            return
        s = self._step
        s["replica"].frombytes(np.full(count, replica, dtype=np.int64).tobytes())
        for name, values in columns.items():
            s[name].extend(values)
        self._flush_if_full()

    def _flush_if_full(self) -> None:
        if self.stream_path is not None and len(self._step["step"]) >= self._stream_chunk_rows:
            self._flush_steps()

    def _flush_steps(self) -> None:
        """Write the buffered step records as one Parquet row group and empty the buffers."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({name: np.frombuffer(values, dtype=np.float64 if name in _FLOAT_STEP_COLUMNS else np.int64)
                          if len(values) else np.array([], dtype=np.float64 if name in _FLOAT_STEP_COLUMNS else np.int64)
                          for name, values in self._step.items()})
        if self._stream_writer is None:
            self._stream_writer = pq.ParquetWriter(self.stream_path, table.schema)
        if table.num_rows:
            self._stream_writer.write_table(table)
        self._step = empty_step_buffers()

    def finish_stream(self) -> Optional[str]:
        """Write what is left and close the streamed step file; its path (None when not streaming)."""
        if self.stream_path is None:
            return None
        self._flush_steps()
        self._stream_writer.close()
        self._stream_writer = None
        return self.stream_path

    def discard_stream(self) -> None:
        """Close and delete the streamed step file and its private folder (a run given up part-way)."""
        if self.stream_path is None:
            return
        if self._stream_writer is not None:
            self._stream_writer.close()
            self._stream_writer = None
        shutil.rmtree(Path(self.stream_path).parent, ignore_errors=True)

    def step_rows(self, replica: int, rows) -> None:
        """A few steps' records as tuples of :meth:`step_values`'s arguments after ``replica`` (a short decode
        run: below a few dozen steps this loop costs less than :meth:`step_records`' numpy set-up)."""
        for row in rows:
            self.step_values(replica, *row)

    def step_records(self, replica: int, steps, starts, durations, batch_sizes, prefill_tokens, decode_tokens,
                     free_blocks, used_blocks, num_running, num_waiting, num_preempted, num_finished) -> None:
        """Many steps' records at once (numpy arrays, in step order): what the fast path skipped through.

        Aggregates are accumulated left to right exactly as :meth:`step_values` would, so both paths give
        identical figures.
        """
        n = len(steps)
        if n == 0:
            return
        durations = np.asarray(durations, dtype=np.float64)
        used = np.asarray(used_blocks, dtype=np.int64)
        usage = used / (used + np.asarray(free_blocks, dtype=np.int64))
        self.num_steps += n
        self.busy_time_s = float(np.cumsum(np.concatenate([[self.busy_time_s], durations]))[-1])
        self.total_preemptions += int(np.sum(num_preempted))
        self.peak_kv_usage = max(self.peak_kv_usage, float(usage.max()))
        self.kv_usage_time_s = float(np.cumsum(np.concatenate([[self.kv_usage_time_s], usage * durations]))[-1])
        self.max_num_waiting = max(self.max_num_waiting, int(np.max(num_waiting)))
        self.max_batch_size = max(self.max_batch_size, int(np.max(batch_sizes)))
        if not self.keep_steps:
            return
        if self.step_sample_every > 1:
            keep = np.asarray(steps) % self.step_sample_every == 0
            (steps, starts, durations, batch_sizes, prefill_tokens, decode_tokens, free_blocks, used, num_running,
             num_waiting, num_preempted, num_finished) = (
                np.asarray(a)[keep] for a in (steps, starts, durations, batch_sizes, prefill_tokens, decode_tokens,
                                              free_blocks, used, num_running, num_waiting, num_preempted, num_finished))
            n = len(steps)
        s = self._step
        for name, values in (("replica", np.full(n, replica)), ("step", steps), ("start_s", starts),
                             ("duration_s", durations), ("batch_size", batch_sizes), ("prefill_tokens", prefill_tokens),
                             ("decode_tokens", decode_tokens), ("free_blocks", free_blocks), ("used_blocks", used),
                             ("num_running", num_running), ("num_waiting", num_waiting),
                             ("num_preempted", num_preempted), ("num_finished", num_finished)):
            dtype = np.float64 if name in _FLOAT_STEP_COLUMNS else np.int64
            s[name].frombytes(np.ascontiguousarray(values, dtype=dtype).tobytes())
        self._flush_if_full()

    def steps_frame(self) -> pd.DataFrame:
        """One row per engine step, ordered by replica then step (records of a skipped stretch arrive late)."""
        columns = {}
        for name in STEP_COLUMNS:
            dtype = np.float64 if name in _FLOAT_STEP_COLUMNS else np.int64
            columns[name] = np.frombuffer(self._step[name], dtype=dtype) if len(self._step[name]) else np.array([], dtype=dtype)
        frame = pd.DataFrame(columns)
        return frame.sort_values(["replica", "step"], kind="stable").reset_index(drop=True)

    def step_stats(self) -> dict:
        """Exact aggregates over every step, kept even when per-step detail is off."""
        return {
            "num_steps": self.num_steps,
            "busy_time_s": self.busy_time_s,
            "peak_kv_usage": self.peak_kv_usage,
            "mean_kv_usage_busy": self.kv_usage_time_s / self.busy_time_s if self.busy_time_s else 0.0,
            "max_num_waiting": self.max_num_waiting,
            "max_batch_size": self.max_batch_size,
        }
