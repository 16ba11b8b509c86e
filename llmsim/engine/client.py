"""Client behaviour: requests abandoned after a timeout, and retried with exponential backoff.

Real clients do not wait forever. With ``client.timeout_s`` set, a request that has not finished that long
after it was sent is abandoned: the replica holding it drops it (its KV blocks are freed at once) and it
ends as failed with reason ``client_timeout``. A request that failed for a reason listed in
``client.retry_on`` (by default ``queue_full`` and ``queue_timeout`` — the engine's admission control — and
``client_timeout``) is sent again after ``retry_backoff_s × 2^k`` seconds (k = retries so far), up to
``client.max_retries`` times, through the router like a new arrival. Its progress is lost but its arrival
time is kept, so TTFT and E2EL include the failed attempts. Under a burst, queues fill, requests time out
or are refused, and their retries add load exactly when the system is busiest: the failure rates the
BurstGPT study reports rising with burstiness come from this loop.

Every request still ends exactly once in the requests table, with its final status and its ``retries``.
A timeout applies while a replica holds the request (not while the cluster parks it for lack of replicas).
"""

from __future__ import annotations

from typing import Optional

import simpy

from llmsim.engine.config import ClientConfig
from llmsim.engine.request import Request, RequestStatus


class Client:
    """The clients of one simulation: watch each request's deadline, decide and schedule retries."""

    def __init__(self, config: ClientConfig, env: simpy.Environment, cluster) -> None:
        self.config = config
        self.env = env
        self.cluster = cluster

    def submit(self, request: Request) -> None:
        """Send a request (first attempt or retry) and start its timeout."""
        request.submitted_s = self.env.now
        timeout_s = self.config.timeout_s
        if timeout_s is not None:
            attempt = request.retries
            self.env.timeout(timeout_s).callbacks.append(lambda _: self._timed_out(request, attempt))

    def _timed_out(self, request: Request, attempt: int) -> None:
        if request.retries != attempt or request.is_finished:
            return
        replicas = self.cluster.replicas
        if not 0 <= request.replica < len(replicas):
            return
        engine = replicas[request.replica].engine
        if engine is not None and engine.holds(request):
            engine.abort(request, RequestStatus.FAILED, "client_timeout")

    def retry_delay_s(self, request: Request) -> Optional[float]:
        """Backoff before resending ``request``, or None when the client gives up (or it succeeded)."""
        cfg = self.config
        if request.status == RequestStatus.FINISHED or request.retries >= cfg.max_retries:
            return None
        if request.reason not in cfg.retry_on:
            return None
        return cfg.retry_backoff_s * 2.0 ** request.retries

    def maybe_retry(self, request: Request) -> bool:
        """If ``request``'s failure is retried, schedule the resend and return True (it has not ended)."""
        delay = self.retry_delay_s(request)
        if delay is None:
            return False
        request.reset_for_retry(self.env.now)
        cluster = self.cluster
        cluster.retries[request.request_id] = request.retries
        cluster.timers += 1  # a pending retry keeps the run from being judged stalled

        def resend(_event) -> None:
            cluster.timers -= 1
            self.submit(request)
            cluster.submit_retry(request)

        self.env.timeout(delay).callbacks.append(resend)
        return True


class ConcurrencyLimit:
    """A closed loop of clients, as ``vllm bench serve --max-concurrency N`` runs one: at most ``N`` requests
    outstanding; a request due while all slots are taken is sent the moment one ends (and that moment is its
    arrival: like the benchmark, latencies count from the send, not from when the request was due).

    The cluster calls :meth:`on_request_end` for every request that ends (finished, rejected or failed)."""

    def __init__(self, env: simpy.Environment, limit: int, response_delay_s: float = 0.0) -> None:
        self.env = env
        self.limit = limit
        self.response_delay_s = response_delay_s  # the client hears of the end this much later (streaming)
        self.outstanding = 0
        self._slot_freed: Optional[simpy.Event] = None

    def acquire(self):
        """A simpy process step: wait (if needed) for a free slot and take it."""
        while self.outstanding >= self.limit:
            if self._slot_freed is None:
                self._slot_freed = self.env.event()
            yield self._slot_freed
        self.outstanding += 1

    def on_request_end(self, request: Request, now_s: float) -> None:
        if self.response_delay_s > 0:
            self.env.timeout(self.response_delay_s).callbacks.append(lambda _: self._release())
        else:
            self._release()

    def _release(self) -> None:
        self.outstanding -= 1
        if self._slot_freed is not None:
            event, self._slot_freed = self._slot_freed, None
            event.succeed()
