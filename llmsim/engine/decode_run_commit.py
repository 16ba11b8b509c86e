"""Committing a decode run (:mod:`llmsim.engine.fastpath` plans it): the ticks up to where it ends or was cut,
applied to the replica as the per-step loop would have left it — step records, token deliveries, the requests'
counters and blocks, and the plan still in flight with the async loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from llmsim.engine.decode_run_cache import replay_prefix_cache
from llmsim.engine.request import Request, RequestStatus
from llmsim.engine.step import StepPlan

if TYPE_CHECKING:
    from llmsim.engine.decode_run import DecodeRun
    from llmsim.engine.fastpath import Replica


def commit_run(replica: "Replica", run: DecodeRun, upto: int) -> None:
    """Apply ticks ``run.committed+1 .. upto`` to the requests, the KV cache, the loop and the recorder."""
    j0, j = run.committed, upto
    if j <= j0:
        return
    scheduler, kv, recorder = replica.scheduler, replica.kv_cache, replica.recorder
    ends = run.step_ends
    usable = kv.num_usable_blocks
    # Tick m delivers step d = m (sync) or m - 1 (async); steps d_lo..d_hi are recorded in bulk, the step
    # that was in flight when an async run started (d = 0) from its own plan.
    d_lo, d_hi = run.delivered_step(j0 + 1), run.delivered_step(j)
    if run.prefix_cache:
        replay_prefix_cache(replica, run, j0, j)  # first: it settles what the finishes free
    if d_lo == 0:
        plan = run.in_flight_plan
        free_after = plan.free_blocks_after_schedule
        recorder.step_values(replica.replica_id, plan.step, plan.start_s, plan.end_s - plan.start_s,
                             len(plan.scheduled), plan.num_prefill_tokens,
                             plan.num_scheduled_tokens - plan.num_prefill_tokens, free_after, usable - free_after,
                             plan.num_running, plan.num_waiting, len(plan.preempted), run.finishing_by_tick[1])
        _deliver_first_tick(replica, run)
        d_lo = 1
    elif j0 == 0:
        _deliver_first_tick(replica, run)
    if d_hi >= d_lo:
        _record_steps(replica, run, d_lo, d_hi)
    replica._last_update_end_s = float(ends[d_hi])
    _advance_requests(replica, run, j0, j)
    kv.num_free_blocks = run.free_blocks_start - int(run.alloc_cum[j]) + int(run.freed_by_tick[j])
    scheduler.step_index = run.first_step_index + j
    scheduler._finished_pending = bool(run.finishing_by_tick[j])
    scheduler.advance_decode_run(j - j0)
    replica._gpu_free_s = float(ends[j])
    if run.async_mode:
        _replace_in_flight(replica, run, j)
    run.committed = j


#: Up to this many steps are recorded row by row (:func:`_record_few_steps`), more as whole arrays.
FEW_STEPS = 64


def _record_steps(replica: "Replica", run: DecodeRun, d_lo: int, d_hi: int) -> None:
    """Step records and inter-token gaps of steps d_lo..d_hi, as whole arrays."""
    if d_hi - d_lo < FEW_STEPS:
        _record_few_steps(replica, run, d_lo, d_hi)
        return
    ends = run.step_ends
    steps = np.arange(d_lo, d_hi + 1)
    batch = np.asarray(run.batch_by_step, dtype=np.int64)[steps]
    free_after = run.free_blocks_start - run.alloc_cum[steps] + run.freed_by_tick[steps - 1]
    usable = replica.kv_cache.num_usable_blocks
    ticks = steps + 1 if run.async_mode else steps  # the tick that delivers each step
    if run.arrival_times:
        waiting = run.waiting_start + _arrived_by(run, run.tick_times(steps))
    else:
        waiting = np.full(len(steps), run.waiting_start, dtype=np.int64)
    replica.recorder.step_records(
        replica.replica_id, run.first_step_index + steps - 1, ends[steps - 1], ends[steps] - ends[steps - 1], batch,
        np.zeros_like(batch), batch, free_after, usable - free_after, np.asarray(run.running_by_step, dtype=np.int64)[steps],
        waiting, np.zeros_like(batch), np.asarray(run.finishing_by_tick, dtype=np.int64)[ticks],
    )
    # Every receiver's previous token came with the previous delivery (first tokens were recorded apart).
    previous = np.empty(len(steps))
    previous[0] = replica._last_update_end_s
    previous[1:] = ends[steps[:-1]]
    counts = batch.copy()
    if not run.async_mode and d_lo == 1:
        counts[0] -= run.num_newcomers
    replica.recorder.same_gap_tokens_bulk(ends[steps] - previous, counts)


def _record_few_steps(replica: "Replica", run: DecodeRun, d_lo: int, d_hi: int) -> None:
    """:func:`_record_steps` row by row: the same values (integers, and float differences of the same ends)."""
    ends = run.step_ends[d_lo - 1: d_hi + 1].tolist()  # ends[x] is step_ends[d_lo - 1 + x]
    alloc_cum, freed_by_tick = run.alloc_cum.tolist(), run.freed_by_tick.tolist()
    batch_by_step, running_by_step, finishing = run.batch_by_step, run.running_by_step, run.finishing_by_tick
    usable = replica.kv_cache.num_usable_blocks
    free_start, first_step = run.free_blocks_start, run.first_step_index
    shift = 1 if run.async_mode else 0  # the tick that delivers step d is d + shift
    arrivals = run.arrival_times
    recorder = replica.recorder
    rows = []
    previous = replica._last_update_end_s
    for x, d in enumerate(range(d_lo, d_hi + 1)):
        batch = batch_by_step[d]
        free_after = free_start - alloc_cum[d] + freed_by_tick[d - 1]
        waiting = run.waiting_start
        if arrivals:
            tick_time = run.tick_time(d)
            waiting += sum(1 for t in arrivals if t <= tick_time)
        start, end = ends[x], ends[x + 1]
        rows.append((first_step + d - 1, start, end - start, batch, 0, batch, free_after, usable - free_after,
                     running_by_step[d], waiting, 0, finishing[d + shift]))
        # Every receiver's previous token came with the previous delivery (first tokens were recorded apart).
        count = batch - run.num_newcomers if d == 1 and not run.async_mode else batch
        if count > 0:
            recorder.same_gap_tokens(end, previous, count)
        previous = end
    recorder.step_rows(replica.replica_id, rows)


def _deliver_first_tick(replica: "Replica", run: DecodeRun) -> None:
    """Tick 1 delivers the first token of requests that had none yet: TTFT, through the recorder."""
    newcomers = [r for r in run.requests if r.last_token_s is None]
    run.num_newcomers = len(newcomers)
    d = run.delivered_step(1)
    time_s = float(run.step_ends[d])
    previous = replica._last_update_end_s
    if newcomers:
        for r in newcomers:
            r.num_output_tokens += 1
            r.first_token_step = run.in_flight_plan.step if run.async_mode else run.first_step_index
            if r.num_output_placeholders:
                r.num_output_placeholders -= 1
        replica.recorder.tokens_emitted(newcomers, time_s, previous)
        for r in newcomers:
            r.num_output_tokens -= 1  # counted again with the rest in _advance_requests
            if run.async_mode:
                r.num_output_placeholders += 1
    if run.async_mode:
        # The step in flight at the start (d = 0) is recorded from its plan; its other receivers' gaps:
        same = run.batch_by_step[0] - len(newcomers)
        if same:
            replica.recorder.same_gap_tokens(time_s, previous, same)
        replica._last_update_end_s = time_s


def _advance_requests(replica: "Replica", run: DecodeRun, j0: int, j: int) -> None:
    scheduler, kv = replica.scheduler, replica.kv_cache
    bs = kv.block_size
    blocks = kv._blocks
    ends = run.step_ends
    d_first, d_last = run.delivered_step(j0 + 1), run.delivered_step(j)
    last_steps = run.last_step.tolist()
    finish_ticks = run.finish_tick.tolist()
    # When each request last received a token in these ticks: the later of its last step and d_last.
    last_token_time = ends[np.minimum(run.last_step, d_last)].tolist()
    held = run.held_start.tolist()
    finished: list[tuple[int, int, Request]] = []
    for r, last, finish, token_time, h in zip(run.requests, last_steps, finish_ticks, last_token_time, held):
        if finish <= j0:
            continue
        scheduled = min(j, last) - j0
        if scheduled > 0:
            r.num_computed_tokens += scheduled
            r.num_scheduled_tokens_total += scheduled
        # Deliveries in ticks j0+1..j reach a request while the delivered step is <= its last step.
        delivered = min(d_last, last) - d_first + 1
        if delivered > 0:
            r.num_output_tokens += delivered
            r.last_token_s = token_time
        if finish <= j:
            finished.append((finish, last, r))
        else:
            if not run.prefix_cache:  # (replayed block by block there)
                blocks[r.request_id] = max(h, -(-r.num_computed_tokens // bs))
    if finished:
        finished.sort(key=lambda item: item[0])  # by finishing tick; stable: running order within a tick
        for _, last, r in finished:
            r.num_output_placeholders = 0
            r.status = RequestStatus.FINISHED
            r.reason = "length"
            r.finish_step = (run.in_flight_plan.step if last == 0 else run.first_step_index + last - 1)
            r.finish_s = float(ends[last])
            blocks.pop(r.request_id, None)
            scheduler.running.remove(r)
            replica.num_outstanding -= 1
            replica.recorder.request_ended(r)


def _replace_in_flight(replica: "Replica", run: DecodeRun, j: int) -> None:
    plan = StepPlan(step=run.first_step_index + j - 1)
    batch = [r for r, last in zip(run.requests, run.last_step.tolist()) if last >= j]
    plan.scheduled = [(r, 1) for r in batch]
    plan.sampling = batch
    plan.num_scheduled_tokens = len(batch)
    plan.free_blocks_after_schedule = run.free_after_schedule(j)
    plan.num_running = run.running_by_step[j]
    plan.num_waiting = run.waiting_start + _arrived_by(run, run.tick_time(j))
    plan.start_s = float(run.step_ends[j - 1])
    plan.end_s = float(run.step_ends[j])
    replica.loop.in_flight.clear()
    replica.loop.in_flight.append(plan)


def _arrived_by(run: DecodeRun, times):
    """Arrivals during the run up to ``times`` (a time or an array of times)."""
    if np.isscalar(times):
        return sum(1 for t in run.arrival_times if t <= times)
    return np.searchsorted(np.asarray(run.arrival_times), times, side="right").astype(np.int64)
