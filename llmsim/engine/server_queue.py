"""The ingress queue of several API server processes (:mod:`llmsim.engine.server`): each request takes the first
process to free up, first come first served. Start times, solved up front over the whole workload."""

from __future__ import annotations

import heapq
import math
from typing import Optional

import numpy as np


def multi_server_starts(arrival: np.ndarray, work: np.ndarray, processes: int) -> np.ndarray:
    """Start times when each request takes the first server to free up. The queue loop (O(log processes) a
    request) runs only over stretches around the requests that might find every server busy (:func:`_crowded`);
    the others start at their arrival (the argument in :func:`_crowded`). A stretch begins at a request
    every earlier one has ended by, and ends at the first such request after its crowded ones: there the servers
    are as good as new (their free times, all before it, only ever compare as earlier than later arrivals)."""
    crowded = _crowded(arrival, work, processes)
    if crowded is None or len(arrival) and arrival[0] < 0:  # unsorted, or an arrival the idle servers (at 0) delay
        return _multi_server_loop(arrival, work, processes)
    start = arrival.copy()
    crowded_at = np.flatnonzero(crowded)
    if len(crowded_at):
        # Where every earlier request has ended (those outside the stretches start at their arrival; inside one,
        # later than that, but all end before its last request, so the test stays true where it says so).
        ended = np.maximum.accumulate(arrival + work)
        fresh_at = np.flatnonzero(np.concatenate([[True], ended[:-1] <= arrival[1:]]))
        k = 0
        while k < len(crowded_at):
            crowded_one = int(crowded_at[k])
            first = int(fresh_at[np.searchsorted(fresh_at, crowded_one, side="right") - 1])
            k = int(np.searchsorted(crowded_at, _queue_stretch(arrival, work, processes, first, crowded_one, start)))
    return start


def _queue_stretch(arrival: np.ndarray, work: np.ndarray, processes: int, first: int, crowded: int,
                   start: np.ndarray) -> int:
    """The queue loop from request ``first`` (every earlier one has ended by its arrival) past ``crowded`` until a
    request every earlier one has ended by; writes ``start`` and returns that request's index (or the count)."""
    free, latest = [0.0] * processes, -math.inf
    replace = heapq.heapreplace
    j, n = first, len(arrival)
    while j < n:
        chunk = slice(j, min(n, j + 4096))
        for a, w in zip(arrival[chunk].tolist(), work[chunk].tolist()):
            if j > crowded and latest <= a:
                return j
            earliest = free[0]
            begin = a if a > earliest else earliest
            start[j] = begin
            end = begin + w
            replace(free, end)
            if end > latest:
                latest = end
            j += 1
    return n


def _multi_server_loop(arrival: np.ndarray, work: np.ndarray, processes: int) -> np.ndarray:
    """The queue loop over every request (the reference for :func:`multi_server_starts`)."""
    free = [0.0] * processes
    start = np.empty(len(arrival))
    for i, (a, w) in enumerate(zip(arrival.tolist(), work.tolist())):
        earliest = heapq.heappop(free)
        begin = a if a > earliest else earliest
        start[i] = begin
        heapq.heappush(free, begin + w)
    return start


def _crowded(arrival: np.ndarray, work: np.ndarray, processes: int) -> Optional[np.ndarray]:
    """Per request: at least ``processes`` earlier requests arrived within the longest ingress before it (so it
    might find every server busy); None when the arrivals are not sorted.

    A request that is not crowded, and all of whose earlier requests are not, starts at its arrival (induction
    over the arrival order): the servers busy at arrival i hold requests that started at their own arrivals
    a_j > a_i − max work, fewer than ``processes`` of them, so one is free (a server freeing exactly at a_i is
    free: the loop starts at max(a_i, its free time) = a_i), and the loop gives the same floats."""
    n = len(arrival)
    if n <= processes:
        return np.zeros(n, dtype=bool)
    if np.any(np.diff(arrival) < 0):
        return None
    # A little wider than the longest work, so that rounding in a_j + w_j > a_i cannot hide a busy server.
    window = float(work.max()) * (1 + 1e-9) + 1e-12
    earliest_overlapping = np.searchsorted(arrival, arrival - window, side="right")
    return np.arange(n) - earliest_overlapping >= processes
