"""llmsim.aggregate_run: the fast mode's run of a cluster's replicas in the aggregate engine."""

from __future__ import annotations

import numpy as np

from llmsim.aggregate_run import arrival_clock


def _walked(arrival: np.ndarray) -> np.ndarray:
    """The simpy arrival process's clock, one timeout at a time."""
    out, now = [], 0.0
    for a in arrival.tolist():
        if a - now > 0:
            now = now + (a - now)
        out.append(now)
    return np.array(out)


def test_arrival_clock_is_the_simpy_clock_to_the_last_bit() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 8))
        # Gaps spread over decades: a − now can be inexact only when the clock is below half the next arrival.
        gaps = np.where(rng.random(n) < 0.3, 0.0, 10.0 ** rng.uniform(-3, 1, n))
        arrival = np.cumsum(gaps)
        clock = arrival_clock(arrival)
        assert np.array_equal(clock, _walked(arrival))


def test_arrival_clock_can_sit_one_bit_below_the_trace_time() -> None:
    """Two arrivals of the bundled bursty workload: the clock reaches the second one bit early (the case that
    made a queue time of −0.0 in the per-step engine, and the reason the fast engine uses this clock)."""
    arrival = np.array([0.0, float.fromhex("0x1.734a62cc2ed74p-6"), float.fromhex("0x1.c556b2883aac9p-3")])
    clock = arrival_clock(arrival)
    assert clock[2] == float.fromhex("0x1.c556b2883aac8p-3") != arrival[2]
    assert np.array_equal(clock, _walked(arrival))
