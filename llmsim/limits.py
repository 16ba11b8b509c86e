"""What a run will cost, estimated before it starts, and refusals of runs that could never finish.

A simulation's cost is dominated by three counts, each known (or bounded) before the first event:

- **requests**: ``workload.num_requests``, or rate × ``duration_s`` for a synthetic duration, or the rows of
  a trace. Every request costs about :data:`BYTES_PER_REQUEST` of memory over the run (its object, its
  row in the requests table, its latency samples: 1.46 GB for the README's 1M-request benchmark).
- **time-series samples**: the run's simulated span ÷ ``metrics.timeseries_interval_s``, per replica.
- **simulated span**: beyond :data:`MAX_SPAN_S` seconds a float64 clock can no longer add a millisecond
  step to the current time (at 1e300 s, ``t + 0.01 == t``): the loop would never advance, so such a span is
  refused instead of hanging.

:func:`check_run` compares the estimate with the memory this machine has available (``/proc/meminfo``'s
MemAvailable, the cgroup limit, or ``LLMSIM_MEMORY_LIMIT_BYTES`` when set) and raises a
:class:`~llmsim.errors.UserError` that gives the numbers and the knob to change. It is called twice by
:func:`llmsim.simulate`: from the config alone before the workload is built (a synthetic workload of 1e12
requests is refused before it is allocated), and with the loaded workload before the cluster starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

from llmsim.errors import UserError

#: Memory per simulated request over a whole run, bytes (1M requests on 16 replicas peak at 1.46 GB).
BYTES_PER_REQUEST = 1600
#: Memory per generated request in a trace frame (arrival, lengths, categories), bytes.
BYTES_PER_TRACE_ROW = 64
#: Memory per time-series sample per replica (several float64/int64 arrays), bytes.
BYTES_PER_SAMPLE = 64
#: Memory per replica (engine, scheduler, KV cache bookkeeping, recorder), bytes.
BYTES_PER_REPLICA = 200_000
#: Longest simulated span: float64 still resolves 1 µs at 1e9 s (31.7 years), and no study needs more.
MAX_SPAN_S = 1e9
#: Most time-series samples (all replicas together); each is a simulation event.
MAX_SAMPLES = 200_000_000


def available_memory_bytes() -> int:
    """Memory this process may still use: the smallest of MemAvailable, the cgroup limit and the override."""
    override = os.environ.get("LLMSIM_MEMORY_LIMIT_BYTES")
    if override:
        return int(float(override))
    candidates = []
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            candidates.append(int(text))
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 1 << 62
    return min(candidates)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:,.0f} B"
        n /= 1000
    return f"{n:.3g} EB"


@dataclass
class RunEstimate:
    """The counts a run's cost follows, and the knobs that set them (named in refusals)."""

    requests: float
    span_s: float
    replicas: int
    sample_interval_s: float
    requests_knob: str = "workload.num_requests"
    span_knob: str = "workload.duration_s"

    @property
    def samples(self) -> float:
        return self.span_s / self.sample_interval_s * self.replicas

    @property
    def memory_bytes(self) -> float:
        return (self.requests * BYTES_PER_REQUEST + self.samples * BYTES_PER_SAMPLE
                + self.replicas * BYTES_PER_REPLICA)


def estimate_from_config(config, workload=None) -> RunEstimate:
    """The estimate of a run: from its workload when given (exact), else from the config (synthetic)."""
    from llmsim.workload.synthetic import DEFAULT_NUM_REQUESTS, PRESETS

    replicas = _replica_count(config)
    interval = config.metrics.timeseries_interval_s
    if workload is not None:
        knob = "workload.trace (or workload.num_requests to keep its first N rows)" if config.workload.trace else \
            "workload.num_requests"
        return RunEstimate(len(workload), workload.duration_s, replicas, interval, knob,
                           "workload.end_s or workload.time_scale" if config.workload.trace else "workload.rate")
    wl = config.workload
    if wl.trace is not None or not wl.preset or wl.preset not in PRESETS:
        return RunEstimate(0, 0.0, replicas, interval)  # only known once the trace is read
    rate = wl.rate or PRESETS[wl.preset].rate_rps
    explicit_n = "num_requests" in wl.model_fields_set
    if wl.duration_s is not None:
        n = rate * wl.duration_s
        if explicit_n and wl.num_requests is not None:
            n = min(n, wl.num_requests)
        return RunEstimate(n, wl.duration_s, replicas, interval,
                           "workload.duration_s (or workload.rate)", "workload.duration_s")
    n = wl.num_requests or DEFAULT_NUM_REQUESTS
    return RunEstimate(n, n / rate, replicas, interval, "workload.num_requests",
                       "workload.num_requests or workload.rate")


def _replica_count(config) -> int:
    """The most replicas the run can hold at once: the configured groups, or the autoscaler's ceiling."""
    cluster = config.cluster
    replicas = cluster.replicas
    count = replicas if isinstance(replicas, int) else sum(group.count for group in replicas)
    autoscaler = getattr(cluster, "autoscaler", None)
    if autoscaler is not None and getattr(autoscaler, "policy", "none") != "none":
        count = max(count, autoscaler.max_replicas)
    return max(int(count), 1)


def check_estimate(est: RunEstimate, memory_bytes: Optional[int] = None) -> None:
    """Refuse a run that cannot finish: a span a float clock cannot step through, more time-series samples
    than :data:`MAX_SAMPLES`, or more memory than is available. Each refusal gives the numbers and the knob."""
    if not math.isfinite(est.span_s) or est.span_s > MAX_SPAN_S:
        raise UserError(f"the workload would span {est.span_s:.3g} s of simulated time; llmsim simulates at most "
                        f"{MAX_SPAN_S:.0e} s (31 years: beyond it a float clock cannot advance by one step); "
                        f"change {est.span_knob}")
    if est.samples > MAX_SAMPLES:
        raise UserError(f"the run would record {est.samples:.3g} time-series samples ({est.span_s:.3g} s ÷ "
                        f"metrics.timeseries_interval_s={est.sample_interval_s:g} × {est.replicas} replicas), "
                        f"more than the {MAX_SAMPLES:.0e} llmsim allows; raise metrics.timeseries_interval_s, "
                        f"or lower cluster.replicas or {est.span_knob}")
    memory = available_memory_bytes() if memory_bytes is None else memory_bytes
    if est.memory_bytes > memory:
        parts = [f"{est.requests:.3g} requests × {human_bytes(BYTES_PER_REQUEST)}"]
        if est.samples * BYTES_PER_SAMPLE > 0.1 * est.memory_bytes:
            parts.append(f"{est.samples:.3g} time-series samples")
        if est.replicas * BYTES_PER_REPLICA > 0.1 * est.memory_bytes:
            parts.append(f"{est.replicas:,} replicas")
        knob = est.requests_knob if est.requests * BYTES_PER_REQUEST >= 0.5 * est.memory_bytes else (
            "cluster.replicas" if est.replicas * BYTES_PER_REPLICA >= 0.5 * est.memory_bytes
            else "metrics.timeseries_interval_s")
        raise UserError(f"the run needs about {human_bytes(est.memory_bytes)} of memory ({', '.join(parts)}) but "
                        f"this machine has {human_bytes(memory)} available; lower {knob}")


def check_run(config, workload=None) -> RunEstimate:
    """Estimate the run (see the module docstring) and refuse it if it cannot finish; returns the estimate."""
    est = estimate_from_config(config, workload)
    check_estimate(est)
    return est


def check_generated_size(expected_rows: float, what: str, knobs: str) -> None:
    """Refuse to generate a workload frame that cannot fit in memory (``generate --duration 1e12``)."""
    if not math.isfinite(expected_rows):
        raise UserError(f"{what} would hold infinitely many requests; change {knobs}")
    need = expected_rows * BYTES_PER_TRACE_ROW
    memory = available_memory_bytes()
    if need > memory:
        raise UserError(f"{what} would hold about {expected_rows:.3g} requests ({human_bytes(need)}) but this "
                        f"machine has {human_bytes(memory)} available; change {knobs}")
