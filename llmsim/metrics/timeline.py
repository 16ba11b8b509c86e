"""A run as a timeline in the Chrome trace-event format (open it in https://ui.perfetto.dev or chrome://tracing).

What you see, per replica (one process track each, ``pid`` = replica + 1):

- **engine steps** (thread track 1): each step is a complete slice (``"ph": "X"``) from its start to its
  end, named by its batch composition (``3P+61D`` = 3 requests prefilling, 61 decoding); its args list the
  request ids and the new tokens each got, the prefill/decode counts and the KV blocks in use.
  A preemption is an instant event (``"ph": "i"``) on the same track.
- **requests**: each request is an async slice (``"ph": "b"`` / ``"e"``) from arrival to its end, with
  nested phases ``queued`` → ``prefill`` → ``decode`` (after a preemption: ``queued (preempted)`` →
  ``prefill (recompute)`` → ``decode``). A rejected request is an instant event.
- **counters** (``"ph": "C"``): KV-cache usage in percent and the running / waiting queue lengths.

Times are microseconds of simulated time. Phases are read from the recorder's step records (through a
:class:`~llmsim.metrics.listeners.RecorderListener`), never computed inside a scheduler, so they are exact
to the step: a request leaves the queue when a step that includes it starts and enters decode when its
first token is delivered at a step's end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from llmsim.fileio import atomic_write_text

US = 1e6  # trace-event timestamps are in microseconds
STEP_TID = 1


class TimelineRecorder:
    """Collects trace events from a run; attach with ``recorder_listeners(timeline)`` around ``simulate``.

    ``start_s`` / ``end_s`` keep only what overlaps that window of simulated time (a long run's full
    timeline can be hundreds of megabytes).
    """

    def __init__(self, start_s: Optional[float] = None, end_s: Optional[float] = None) -> None:
        self.start_s = start_s
        self.end_s = end_s
        self.events: list[dict[str, Any]] = []
        self._phase: dict[str, tuple[str, float, int]] = {}  # request id -> (phase, since_s, replica)
        self._replicas: set[int] = set()
        self._last_time_s = 0.0

    # -- listener hooks ----------------------------------------------------------------------------
    def on_step(self, replica: int, plan, outcome, used_blocks: int, free_blocks: int) -> None:
        self._replicas.add(replica)
        start, end = plan.start_s, plan.end_s
        self._last_time_s = max(self._last_time_s, end)
        for request in plan.preempted:
            self._enter(request, "queued (preempted)", start)
            self._emit({"ph": "i", "s": "t", "name": "preempt", "cat": "preemption", "pid": replica + 1,
                        "tid": STEP_TID, "ts": start * US, "args": {"request_id": request.request_id}}, start, start)
        ids, tokens, prefill, decode = [], [], 0, 0
        for (request, num_new), context in zip(plan.scheduled, plan.context_lens):
            ids.append(request.request_id)
            tokens.append(num_new)
            is_prefill = num_new > 1 or context < request.prompt_tokens
            prefill += is_prefill
            decode += not is_prefill
            phase = self._phase.get(request.request_id)
            if phase is None:
                self._begin_request(request, replica)
                self._enter(request, "prefill", start)
            elif phase[0].startswith("queued"):
                self._enter(request, "prefill (recompute)", start)
        if outcome is not None:
            for request in outcome.emitted:
                phase = self._phase.get(request.request_id)
                if phase is not None and phase[0].startswith("prefill"):
                    self._enter(request, "decode", end)
        args = {"step": plan.step, "request_ids": ids, "new_tokens": tokens, "prefill_requests": prefill,
                "decode_requests": decode, "prefill_tokens": plan.num_prefill_tokens,
                "decode_tokens": plan.num_scheduled_tokens - plan.num_prefill_tokens,
                "preempted": [r.request_id for r in plan.preempted], "kv_used_blocks": used_blocks}
        self._emit({"ph": "X", "name": f"{prefill}P+{decode}D", "cat": "step", "pid": replica + 1, "tid": STEP_TID,
                    "ts": start * US, "dur": (end - start) * US, "args": args}, start, end)
        total = used_blocks + free_blocks
        self._emit({"ph": "C", "name": "KV cache usage (%)", "pid": replica + 1, "ts": start * US,
                    "args": {"used": round(100.0 * used_blocks / total, 3) if total else 0.0}}, start, start)
        self._emit({"ph": "C", "name": "requests", "pid": replica + 1, "ts": start * US,
                    "args": {"running": plan.num_running, "waiting": plan.num_waiting}}, start, start)

    def on_request_ended(self, request) -> None:
        replica = request.replica if request.replica is not None else 0
        rid = request.request_id
        if rid not in self._phase:
            if request.first_scheduled_s is None:  # rejected, or failed before it ever ran
                self._replicas.add(replica)
                self._emit({"ph": "i", "s": "p", "name": f"{request.status.value}: {request.reason}",
                            "cat": "request", "pid": replica + 1, "tid": STEP_TID, "ts": request.arrival_s * US,
                            "args": {"request_id": rid, "prompt_tokens": request.prompt_tokens}},
                           request.arrival_s, request.arrival_s)
                return
            self._begin_request(request, replica)
        end = request.finish_s if request.finish_s is not None else max(self._last_time_s, request.arrival_s)
        phase, since, replica = self._phase.pop(rid)
        self._async(replica, rid, phase, "e", end, since, end)
        self._async(replica, rid, f"request {rid}", "e", end, request.arrival_s, end,
                    {"status": request.status.value, "reason": request.reason,
                     "output_tokens": request.num_output_tokens, "preemptions": request.num_preemptions})

    # -- event helpers -------------------------------------------------------------------------------
    def _begin_request(self, request, replica: int) -> None:
        rid, arrival = request.request_id, request.arrival_s
        self._async(replica, rid, f"request {rid}", "b", arrival, arrival, arrival,
                    {"prompt_tokens": request.prompt_tokens, "max_output_tokens": request.max_output_tokens})
        self._async(replica, rid, "queued", "b", arrival, arrival, arrival)
        self._phase[rid] = ("queued", arrival, replica)

    def _enter(self, request, phase: str, time_s: float) -> None:
        rid = request.request_id
        current = self._phase.get(rid)
        if current is None:
            return
        old, since, replica = current
        self._async(replica, rid, old, "e", time_s, since, time_s)
        self._async(replica, rid, phase, "b", time_s, time_s, time_s)
        self._phase[rid] = (phase, time_s, replica)

    def _async(self, replica: int, rid: str, name: str, ph: str, ts_s: float, span_start_s: float,
               span_end_s: float, args: Optional[dict] = None) -> None:
        event = {"ph": ph, "name": name, "cat": "request", "id": f"r{rid}", "pid": replica + 1, "tid": STEP_TID,
                 "ts": ts_s * US}
        if args:
            event["args"] = args
        self._emit(event, span_start_s, span_end_s, keep_if_async=True)

    def _emit(self, event: dict[str, Any], span_start_s: float, span_end_s: float, keep_if_async: bool = False) -> None:
        # An async begin/end pair must be kept or dropped together, so request events are always kept.
        if not keep_if_async:
            if self.start_s is not None and span_end_s < self.start_s:
                return
            if self.end_s is not None and span_start_s > self.end_s:
                return
        self.events.append(event)

    # -- output --------------------------------------------------------------------------------------
    def trace(self) -> dict[str, Any]:
        """The whole trace: metadata naming each replica's tracks, then the events in time order."""
        meta: list[dict[str, Any]] = []
        for replica in sorted(self._replicas):
            meta.append({"ph": "M", "name": "process_name", "pid": replica + 1, "args": {"name": f"replica {replica}"}})
            meta.append({"ph": "M", "name": "process_sort_index", "pid": replica + 1, "args": {"sort_index": replica}})
            meta.append({"ph": "M", "name": "thread_name", "pid": replica + 1, "tid": STEP_TID,
                         "args": {"name": "engine steps"}})
        events = sorted(self.events, key=lambda e: e["ts"])  # stable: a b/e pair at one instant keeps its order
        return {"traceEvents": meta + events, "displayTimeUnit": "ms",
                "otherData": {"producer": "llmsim", "time_unit": "simulated microseconds"}}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.trace(), separators=(",", ":"), allow_nan=False))
        return path


def simulate_with_timeline(config, path: str | Path, *, start_s: Optional[float] = None,
                           end_s: Optional[float] = None, **simulate_kwargs):
    """Run :func:`llmsim.simulation.simulate` with a :class:`TimelineRecorder` attached; write the trace."""
    from llmsim.metrics.listeners import recorder_listeners
    from llmsim.simulation import simulate

    timeline = TimelineRecorder(start_s, end_s)
    with recorder_listeners(timeline):
        result = simulate(config, **simulate_kwargs)
    timeline.write(path)
    return result
