"""Records what happened, as it happens; metrics are computed afterwards from these records.

Per-request records are appended to column buffers when a request ends (finished, rejected or failed), so a
run keeps no per-request objects for requests that are done. Inter-token latencies are stored exactly but
compactly: in a step where many requests emit a token whose previous token came from the step just before,
all of those gaps are the same number, so the step stores it once with a count (a weighted sample).
"""

from __future__ import annotations

from array import array
from typing import Optional

import numpy as np
import pandas as pd

from llmsim.engine.request import Request
from llmsim.metrics.listeners import RecorderListener, active_listeners
from llmsim.metrics.step_records import StepRecords, empty_step_buffers

REQUEST_COLUMNS = (
    "request_id", "replica", "arrival_s", "first_scheduled_s", "first_token_s", "finish_s", "ttft_s", "tpot_s",
    "e2el_s", "queue_s", "prompt_tokens", "output_tokens", "num_output_tokens", "num_preemptions",
    "scheduled_tokens", "recomputed_tokens", "cached_tokens", "status", "reason", "served_by",
)

#: Typecode of the ITL weights' arrays (C int, 32 bits): here and in the aggregate engine, whose arrays extend ours.
ITL_WEIGHT_CODE = "i"
_TEXT_COLUMNS = frozenset(("request_id", "served_by", "status", "reason"))
_INT_COLUMNS = frozenset(("replica", "prompt_tokens", "output_tokens", "num_output_tokens", "num_preemptions",
                          "scheduled_tokens", "recomputed_tokens", "cached_tokens"))


def _nan(value: Optional[float]) -> float:
    return float("nan") if value is None else value


class Recorder(StepRecords):
    """Collects request outcomes, per-step records (:class:`StepRecords`) and inter-token gaps for one
    simulation run."""

    def __init__(self, keep_steps: bool = True, listeners: tuple[RecorderListener, ...] = (),
                 step_sample_every: int = 1, stream_steps_to: Optional[str] = None,
                 stream_chunk_rows: int = 1_000_000) -> None:
        self.keep_steps = keep_steps
        # Streaming (metrics.stream_steps): kept step records go to a Parquet file in chunks of
        # ``stream_chunk_rows`` rows, so memory holds at most one chunk of them.
        self.stream_path = stream_steps_to if keep_steps else None
        self._stream_chunk_rows = stream_chunk_rows
        self._stream_writer = None
        # Per-step detail of long runs can be thinned (every Nth step index of each replica is kept); the
        # aggregates below always see every step.
        self.step_sample_every = step_sample_every
        listeners = tuple(listeners) + active_listeners()
        self._step_listeners = [x.on_step for x in listeners if hasattr(x, "on_step")]
        self._end_listeners = [x.on_request_ended for x in listeners if hasattr(x, "on_request_ended")]
        # Numbers in typed arrays (8 bytes a value), strings in lists: a million requests stay ~200 MB.
        self._req: dict[str, list | array] = {
            name: [] if name in _TEXT_COLUMNS else array("q" if name in _INT_COLUMNS else "d") for name in REQUEST_COLUMNS
        }
        self._bulk: Optional[dict] = None  # a whole run's records handed over at once (add_requests), kept as is
        self._step = empty_step_buffers()
        self.itl_values = array("d")
        self._spec = [0, 0, 0]  # speculative decoding: drafts scheduled, drafts accepted, verification steps
        self.loaded_tokens = 0  # KV offloading: tokens reloaded from the CPU tier
        # Weights are tokens of one step (a batch): 4 bytes suffice, and a long run holds tens of millions.
        self.itl_weights = array(ITL_WEIGHT_CODE)
        self.num_steps = 0
        self.busy_time_s = 0.0
        self.total_preemptions = 0
        self.peak_kv_usage = 0.0
        self.kv_usage_time_s = 0.0  # ∫ usage dt over busy steps, for the time-weighted mean
        self.max_num_waiting = 0
        self.max_batch_size = 0

    @property
    def num_ended(self) -> int:
        """Requests recorded so far (each exactly once, when it ends)."""
        return len(self._req["request_id"]) + (len(self._bulk["request_id"]) if self._bulk is not None else 0)

    # -- request lifecycle -----------------------------------------------------------------------
    def request_ended(self, request: Request) -> None:
        """Called exactly once per request, when it finishes, is rejected or fails."""
        if self._bulk is not None:
            self._spill()
        col = self._req
        first_token = request.first_token_s
        ttft = None if first_token is None else first_token - request.arrival_s
        e2el = None if request.finish_s is None or first_token is None else request.last_token_s - request.arrival_s
        tpot = None
        if e2el is not None and request.num_output_tokens > 1:
            tpot = (e2el - ttft) / (request.num_output_tokens - 1)
        queue = None if request.first_scheduled_s is None else request.first_scheduled_s - request.arrival_s
        self.loaded_tokens += request.num_loaded_tokens
        if request.num_verify_steps:
            spec = self._spec
            spec[0] += request.num_draft_tokens
            spec[1] += request.num_accepted_tokens
            spec[2] += request.num_verify_steps
        col["request_id"].append(request.request_id)
        col["replica"].append(request.replica)
        col["served_by"].append(",".join(map(str, request.served_by)))
        col["arrival_s"].append(request.arrival_s)
        col["first_scheduled_s"].append(_nan(request.first_scheduled_s))
        col["first_token_s"].append(_nan(first_token))
        col["finish_s"].append(_nan(request.finish_s))
        col["ttft_s"].append(_nan(ttft))
        col["tpot_s"].append(_nan(tpot))
        col["e2el_s"].append(_nan(e2el))
        col["queue_s"].append(_nan(queue))
        col["prompt_tokens"].append(request.prompt_tokens)
        col["output_tokens"].append(request.max_output_tokens)
        col["num_output_tokens"].append(request.num_output_tokens)
        col["num_preemptions"].append(request.num_preemptions)
        col["scheduled_tokens"].append(request.num_scheduled_tokens_total)
        col["recomputed_tokens"].append(request.num_recomputed_tokens)
        col["cached_tokens"].append(request.num_cached_tokens)
        col["status"].append(request.status.value)
        col["reason"].append(request.reason)
        for listener in self._end_listeners:
            listener(request)

    def speculation_summary(self) -> dict:
        """Speculative decoding: drafts, acceptance rate, and mean acceptance length (tokens per verification
        step, the target's own token included), over every ended request."""
        drafts, accepted, steps = self._spec
        return {"draft_tokens": drafts, "accepted_tokens": accepted, "verify_steps": steps,
                "acceptance_rate": accepted / drafts if drafts else None,
                "mean_acceptance_length": (accepted + steps) / steps if steps else None}

    def add_requests(self, columns: dict) -> None:
        """Many requests' records at once (``columns``: one array or list per name of REQUEST_COLUMNS, in the
        same units as :meth:`request_ended` writes; NaN where a time is unknown). Used by the aggregate engine,
        which keeps per-request results in arrays instead of request objects; listeners are not called.

        Into an empty recorder the arrays are kept as they are: copying a million requests' columns into the
        buffers, then out again for the table, held two extra copies of them at the run's peak. On the records'
        last use (``requests_frame(release=True)``) the table takes over those that own their memory: hand over
        no array something else holds (a view of another's memory is copied then)."""
        bulk = {name: np.asarray(columns[name], dtype=object) if name in _TEXT_COLUMNS else
                np.ascontiguousarray(columns[name], dtype=np.int64 if name in _INT_COLUMNS else np.float64)
                for name in REQUEST_COLUMNS}
        if not self.num_ended:
            self._bulk = bulk
            return
        self._spill()
        self._append_columns(bulk)

    def _spill(self) -> None:
        """Move records kept as handed over into the append buffers (more records are coming)."""
        bulk, self._bulk = self._bulk, None
        if bulk is not None:
            self._append_columns(bulk)

    def _append_columns(self, columns: dict) -> None:
        col = self._req
        for name in REQUEST_COLUMNS:
            if name in _TEXT_COLUMNS:
                col[name].extend(columns[name])
            else:
                col[name].frombytes(columns[name].tobytes())

    def add_replica_run(self, replica: int, outcome) -> None:
        """A whole replica's run from the aggregate engine (an ``llmsim.engine.aggregate.ReplicaOutcome``): its
        gaps, kept steps and step aggregates. Float aggregates are summed per replica, then across replicas,
        so they match the per-step sums to rounding."""
        self.itl_values.extend(outcome.itl_values)
        self.itl_weights.extend(outcome.itl_weights)
        self.extend_steps(replica, outcome.steps)
        self.num_steps += outcome.num_steps
        self.total_preemptions += sum(outcome.num_preemptions)  # one per preemption, as the steps count them
        self.busy_time_s += outcome.busy_s
        self.kv_usage_time_s += outcome.kv_usage_time_s
        self.peak_kv_usage = max(self.peak_kv_usage, outcome.peak_kv_usage)
        self.max_num_waiting = max(self.max_num_waiting, outcome.max_num_waiting)
        self.max_batch_size = max(self.max_batch_size, outcome.max_batch_size)

    def same_gap_tokens_bulk(self, gaps, counts) -> None:
        """Weighted inter-token gaps of many steps (zero counts are dropped)."""
        gaps = np.asarray(gaps, dtype=np.float64)
        counts = np.asarray(counts, dtype=np.int64)
        keep = counts > 0
        self.itl_values.frombytes(gaps[keep].tobytes())
        self.itl_weights.frombytes(counts[keep].astype(np.intc).tobytes())

    def same_gap_tokens(self, time_s: float, previous_step_end_s: float, count: int) -> None:
        """``count`` tokens at ``time_s`` whose previous tokens all came at ``previous_step_end_s``."""
        self.itl_values.append(time_s - previous_step_end_s)
        self.itl_weights.append(count)

    def tokens_emitted(self, emitted: list[Request], time_s: float, previous_step_end_s: Optional[float]) -> None:
        """Stamp each emitted token; store its gap to the request's previous token (ITL)."""
        same_gap = 0
        for request in emitted:
            last = request.last_token_s
            if last is None:
                request.first_token_s = time_s
            elif last == previous_step_end_s:
                same_gap += 1
            else:
                self.itl_values.append(time_s - last)
                self.itl_weights.append(1)
            request.last_token_s = time_s
        if same_gap:
            self.itl_values.append(time_s - previous_step_end_s)
            self.itl_weights.append(same_gap)

    # -- results ---------------------------------------------------------------------------------
    def requests_frame(self, release: bool = False) -> pd.DataFrame:
        """One row per request, ordered by arrival then request id. Each column is copied once, already in
        that order (a million requests: no second full copy for a sort). ``release``: the run's last use of
        the records, which are let go of once copied (they are not at hand while its summary is computed)."""
        if self._bulk is not None and len(self._req["request_id"]):
            self._spill()
        bulk = self._bulk
        arrival = (bulk["arrival_s"] if bulk is not None else np.frombuffer(self._req["arrival_s"], dtype=np.float64)
                   if self.num_ended else np.array([]))
        ids = bulk["request_id"] if bulk is not None else np.asarray(self._req["request_id"], dtype=object)
        order = None
        if len(arrival) > 1:
            ordered = arrival[1:] > arrival[:-1]
            tied = np.flatnonzero(arrival[1:] == arrival[:-1])  # only ties compare ids (strings: slow by the million)
            ordered[tied] = ids[tied + 1] >= ids[tied]
            if not ordered.all():
                order = np.lexsort((ids.astype(str), arrival))
        columns = {}
        for name in REQUEST_COLUMNS:
            values = bulk[name] if bulk is not None else self._req[name]
            if name in _TEXT_COLUMNS:
                column = np.asarray(values, dtype=object) if len(values) else np.array([], dtype=object)
            else:
                dtype = np.int64 if name in _INT_COLUMNS else np.float64
                if isinstance(values, np.ndarray):  # handed over whole, already of its dtype (add_requests)
                    column = values
                else:
                    column = np.frombuffer(values, dtype=dtype) if len(values) else np.array([], dtype=dtype)
            columns[name] = column[order] if order is not None else column
        # The frame's own columns, nothing shared with ours: copies, except where the columns already are the
        # frame's alone (handed over whole and released now, or gathered in order just above): copying a million
        # rows again cost more than the rest of the table (the copy's fresh pages). A view of other memory (the
        # workload's columns) is copied all the same.
        own = order is not None or (release and bulk is not None)
        if own:
            columns = {name: column if column.base is None else column.copy() for name, column in columns.items()}
        frame = pd.DataFrame(columns, copy=not own)
        if release:
            del columns, ids, arrival, values, column
            self._bulk = None
            self._req = {name: type(values)() if isinstance(values, list) else array(values.typecode)
                         for name, values in self._req.items()}
        for name in _TEXT_COLUMNS:
            frame[name] = frame[name].astype(str)
        return frame

    def clear_itl(self) -> None:
        """Let go of the gaps once summarised (a million requests leave 16 M of them)."""
        self.itl_values, self.itl_weights = array("d"), array(ITL_WEIGHT_CODE)

    def itl_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """Read-only views of the weighted inter-token gaps (no copy: a long run holds tens of millions)."""
        values = np.frombuffer(self.itl_values, dtype=np.float64) if len(self.itl_values) else np.array([], dtype=np.float64)
        weights = np.frombuffer(self.itl_weights, dtype=np.intc) if len(self.itl_weights) else np.array([], dtype=np.intc)
        return values, weights
