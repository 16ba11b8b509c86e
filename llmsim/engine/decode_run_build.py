"""Building a decode run's plan (:class:`~llmsim.engine.decode_run.DecodeRun`) once
:func:`llmsim.engine.fastpath.plan_decode_run` has found that one may start: durations, block allocations and
frees, finishes. A short run of a small batch — most runs, since an arrival cuts them after a dozen steps — is
planned in plain Python; a longer one as request × step arrays. Both give the same integers and the same floats.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from llmsim.engine.decode_run import MIN_RUN_STEPS, DecodeRun
from llmsim.engine.prefix_cache import PrefixCachingKVCacheManager

#: Runs of at most this many request-steps are planned in plain Python (:func:`_build_small_run`).
SMALL_RUN_CELLS = 1024


def build_run(replica, async_mode, k, contexts, last_step, finish_tick, timing) -> Optional[DecodeRun]:
    """The run of ``k`` ticks from the replica's current state (None when fewer than MIN_RUN_STEPS fit)."""
    if len(contexts) * k <= SMALL_RUN_CELLS and getattr(timing, "decode_steps_from_totals", False):
        return _build_small_run(replica, async_mode, k, contexts, last_step, finish_tick, timing)
    kv = replica.kv_cache
    bs = kv.block_size
    blocks = kv._blocks
    held = np.array([blocks.get(r.request_id, 0) for r in replica.scheduler.running], dtype=np.int64)
    steps = np.arange(1, k + 1)
    # alive[i, m-1]: request i is scheduled in step m. After step m it needs the blocks of c + m tokens: it
    # allocates when that exceeds what it holds (paged: every block_size tokens; reserved: never).
    alive = steps[None, :] <= last_step[:, None]
    batch = alive.sum(axis=0)
    need = np.maximum(held[:, None], -(-(contexts[:, None] + np.arange(0, k + 1)[None, :]) // bs))
    alloc = (np.diff(need, axis=1) * alive).sum(axis=0)
    alloc_cum = np.concatenate([[0], np.cumsum(alloc)])
    final_blocks = np.maximum(held, -(-(contexts + last_step) // bs))  # blocks held when it finishes
    finishing = np.bincount(finish_tick, minlength=k + 2)[: k + 2]
    if type(kv) is PrefixCachingKVCacheManager:
        # A finish frees only the blocks nobody else holds: plan as if it freed none (the fit check can only
        # cut the run earlier); the commit records what the pool actually frees.
        freed_by_tick = np.zeros(k + 1, dtype=np.int64)
    else:
        freed = np.bincount(finish_tick, weights=final_blocks, minlength=k + 2)[: k + 2].astype(np.int64)
        freed_by_tick = np.cumsum(freed)[: k + 1]
    # Free blocks after each step's schedule must stay >= 0 (else the per-step loop preempts).
    free_after = kv.num_free_blocks - alloc_cum[1:] + freed_by_tick[:k]
    bad = np.flatnonzero(free_after < 0)
    if bad.size:
        k = int(bad[0])
        if k < MIN_RUN_STEPS:
            return None
    durations = _durations(timing, contexts, last_step, alive[:, :k], batch[:k], k)
    start = replica.env.now
    first_end = replica.loop.in_flight[0].end_s if async_mode else start
    # Sequential float sums (np.cumsum accumulates left to right), exactly as the per-step loop adds them.
    ends = np.cumsum(np.concatenate([[first_end], durations]))
    n = len(contexts)
    ended_before = np.concatenate([[0], np.cumsum(finishing)])[: k + 1]  # requests finished at ticks < m
    return DecodeRun(
        requests=list(replica.scheduler.running), async_mode=async_mode, k=k, step_ends=ends, last_step=last_step,
        finish_tick=finish_tick, alloc_cum=alloc_cum[: k + 1], freed_by_tick=freed_by_tick[: k + 1],
        free_blocks_start=kv.num_free_blocks, held_start=held, contexts=contexts, known_start=np.array(
            [r.prompt_tokens + r.num_output_tokens for r in replica.scheduler.running], dtype=np.int64),
        prefix_cache=type(kv) is PrefixCachingKVCacheManager, first_step_index=replica.scheduler.step_index,
        waiting_start=len(replica.scheduler.waiting), truncate_on_arrival=False, start_s=start,
        batch_by_step=[n] + batch[:k].tolist(), running_by_step=(n - ended_before).tolist(),
        finishing_by_tick=finishing[: k + 1].tolist(),
    )


def _build_small_run(replica, async_mode, k, contexts, last_step, finish_tick, timing) -> Optional[DecodeRun]:
    """:func:`build_run` for a short run of a small batch, in plain Python: the same integers and the same
    float operations in the same order (each step priced by ``decode_step_time``, the ends summed left to
    right as ``np.cumsum`` does), without the request × step arrays whose numpy set-up costs more than the
    arithmetic at this size (most runs: an arrival cuts them after a dozen steps of a dozen requests)."""
    kv = replica.kv_cache
    bs = kv.block_size
    blocks = kv._blocks
    running = replica.scheduler.running
    held = [blocks.get(r.request_id, 0) for r in running]
    ctx = contexts.tolist()
    last = last_step.tolist()
    fin = finish_tick.tolist()
    # Request i needs the blocks of c + m tokens after step m: a new one at the step its context first
    # outgrows what it holds (step held·bs − c + 1), then every block_size steps, while it is scheduled.
    alloc = [0] * (k + 1)
    for c, h, m_last in zip(ctx, held, last):
        end = m_last if m_last < k else k
        first = h * bs - c + 1 if h * bs >= c else (1 - c) % bs or bs  # (the second: holds less than c needs)
        for m in range(first, end + 1, bs):
            alloc[m] += 1
    alloc_cum = [0] * (k + 1)
    total = 0
    for m in range(1, k + 1):
        total += alloc[m]
        alloc_cum[m] = total
    finishing = [0] * (k + 2)
    for f in fin:
        if f <= k + 1:
            finishing[f] += 1
    freed_by_tick = [0] * (k + 1)
    if type(kv) is not PrefixCachingKVCacheManager:  # with prefix caching: planned as freeing nothing
        freed = [0] * (k + 2)
        for c, h, m_last, f in zip(ctx, held, last, fin):
            if f <= k + 1:
                need = -(-(c + m_last) // bs)
                freed[f] += h if h > need else need
        total = 0
        for m in range(k + 1):
            total += freed[m]
            freed_by_tick[m] = total
    free_start = kv.num_free_blocks
    for m in range(1, k + 1):
        if free_start - alloc_cum[m] + freed_by_tick[m - 1] < 0:
            k = m - 1
            if k < MIN_RUN_STEPS:
                return None
            break
    # Batch size and Σ context (before the step) of steps 1..k: requests leave after their last step.
    order = sorted(range(len(ctx)), key=last.__getitem__)
    n = alive = len(ctx)
    ctx_alive = sum(ctx)
    position = 0
    batch = [0] * (k + 1)
    ends = [0.0] * (k + 1)
    ends[0] = end_s = replica.loop.in_flight[0].end_s if async_mode else replica.env.now
    # timing.decode_step_time inlined (its constants, its operations in its order): this loop prices every
    # planned step of every short run.
    per_unit, flops_rate, kv_bytes, bytes_rate, layers, overhead = timing.decode_arith()
    consts = timing.decode_consts
    base, qo_bytes, floor, add = consts(alive)
    for m in range(1, k + 1):
        if position < n and last[order[position]] < m:
            while position < n and last[order[position]] < m:
                alive -= 1
                ctx_alive -= ctx[order[position]]
                position += 1
            base, qo_bytes, floor, add = consts(alive)
        batch[m] = alive
        summed = ctx_alive + (m - 1) * alive
        compute = (2 * summed + 2 * alive) * per_unit / flops_rate
        memory = ((summed + alive) * kv_bytes + qo_bytes) / bytes_rate
        gpu = base + layers * ((compute if compute > memory else memory) + overhead)
        end_s += (gpu if gpu > floor else floor) + add
        ends[m] = end_s
    ended_before = [0] * (k + 1)  # requests finished at ticks < m
    total = 0
    for m in range(1, k + 1):
        total += finishing[m - 1]
        ended_before[m] = total
    batch[0] = n
    return DecodeRun(
        requests=list(running), async_mode=async_mode, k=k, step_ends=np.array(ends), last_step=last_step,
        finish_tick=finish_tick, alloc_cum=np.array(alloc_cum[: k + 1], dtype=np.int64),
        freed_by_tick=np.array(freed_by_tick[: k + 1], dtype=np.int64), free_blocks_start=free_start,
        held_start=np.array(held, dtype=np.int64), contexts=contexts, known_start=np.array(
            [r.prompt_tokens + r.num_output_tokens for r in running], dtype=np.int64),
        prefix_cache=type(kv) is PrefixCachingKVCacheManager, first_step_index=replica.scheduler.step_index,
        waiting_start=len(replica.scheduler.waiting), truncate_on_arrival=False, start_s=replica.env.now,
        batch_by_step=batch, running_by_step=[n - x for x in ended_before], finishing_by_tick=finishing[: k + 1],
    )


def _durations(timing, contexts: np.ndarray, last_step: np.ndarray, alive: np.ndarray, batch: np.ndarray,
               k: int) -> np.ndarray:
    """Step times of steps 1..k; the batch shrinks as requests produce their last token."""
    sum_ctx = (contexts @ alive) + np.arange(k) * batch  # Σ over the batch of (context at the start + m − 1)
    times = None
    if hasattr(timing, "decode_times_from_totals"):
        seen = timing.window_decode_sums(contexts, k, alive) if getattr(timing, "sliding_window", None) else None
        times = timing.decode_times_from_totals(batch, sum_ctx, seen)
    if times is not None:
        return times
    out = np.empty(k)  # pipeline-parallel timing needs the contexts of each fixed batch
    step = 1
    for boundary in sorted(set(int(x) for x in last_step if 1 <= x < k)) + [k]:
        if boundary < step:
            continue
        members = last_step >= step
        out[step - 1: boundary] = timing.decode_step_times(contexts[members] + (step - 1), boundary - step + 1)
        step = boundary + 1
    return out
