"""The API server in front of the engines: vLLM's OpenAI-compatible HTTP frontend, as a FIFO queue.

A request reaches the engine only after the server process has parsed the HTTP request, validated it,
applied the chat template and tokenised the prompt; each token the engine produces is detokenised and
streamed back as a server-sent-events chunk by the same process. That process is single-threaded Python, so
it has a finite throughput: with many tiny requests a vLLM server tops out at a few dozen requests per
second whatever the GPU (issue 13), and at low load it adds tens of milliseconds to every TTFT.

Model (per server process, first come first served):

* a request's **ingress work** is ``request_overhead_s + tokenize_s_per_token × prompt tokens``; it starts
  when the request arrives and the process is free, and the engine sees the request when it ends;
* its **streaming work** is ``stream_s_per_token × output tokens``. The process spends it while the request
  decodes, interleaved with other requests' ingress; the queue charges it right after the request's own
  ingress (a Lindley recursion on the total work), so the server's throughput is exactly 1 / (ingress +
  streaming work per request) and a busy server delays the requests behind it;
* each delivered token reaches the client ``stream_s_per_token`` after the engine emits it (first and last
  tokens alike, so ITL is unchanged; TTFT and E2E grow by it).

Everything depends on arrivals only, so the whole queue is solved up front, before routing, for both
engines: the engines see arrivals at the server's hand-off times, and the requests table is shifted back to
the client's clock afterwards (``server_s`` = queueing + ingress work). ``processes`` servers (default: one
per replica that takes arrivals, as each ``vllm serve`` has its own) take the next request as each frees; the
hand-off order is kept (a request is never handed to the engines before an earlier arrival). Approximations:
streaming work is charged at ingress rather than when the tokens come; client retries re-enter the engines
without passing the server again.

Offline benchmarks (``vllm bench throughput``, ``LLM.generate``) have no server: set ``server.enabled: false``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
from pydantic import Field

from llmsim.configbase import StrictModel


class ServerConfig(StrictModel):
    """The `server:` section. A cost left unset comes from the GPU profile's ``api_server:`` block (the machine
    the server runs on; fitted end to end by ``llmsim calibrate fit-e2e``), else ``APIServerCosts``' defaults."""

    enabled: bool = Field(True, description="model the API server; false for offline / engine-only studies")
    request_overhead_s: Optional[float] = Field(None, ge=0, le=1.0, description="per request: HTTP, validation, chat "
                                                "template, hand-off to the engine (server CPU seconds); unset = the "
                                                "GPU profile's")
    tokenize_s_per_token: Optional[float] = Field(None, ge=0, le=1e-3, description="per prompt token: tokenisation; "
                                                  "unset = the GPU profile's")
    stream_s_per_token: Optional[float] = Field(None, ge=0, le=1e-2, description="per output token: detokenisation "
                                                "and one streamed chunk; unset = the GPU profile's")
    processes: Optional[int] = Field(None, ge=1, description="server processes; default one per replica taking arrivals")

    def with_costs(self, costs) -> "ServerConfig":
        """This section with every unset cost taken from ``costs`` (an ``APIServerCosts``)."""
        return self.model_copy(update={name: getattr(costs, name) for name in
                                       ("request_overhead_s", "tokenize_s_per_token", "stream_s_per_token")
                                       if getattr(self, name) is None})


@dataclass
class Ingress:
    """The server's effect on each request (rows of the workload, in its order)."""

    handoff_s: np.ndarray  # when the engines see the request
    server_s: np.ndarray  # handoff − arrival: waiting for the server + ingress work
    stream_s: float  # server CPU seconds per streamed token
    processes: int = 1
    work_s: Optional[np.ndarray] = None  # each request's ingress work (server CPU seconds)


def solve_ingress(cfg: ServerConfig, arrival_s: np.ndarray, prompt_tokens: np.ndarray, output_tokens: np.ndarray,
                  served: np.ndarray, processes: int) -> Ingress:
    """Hand-off times of the FIFO server queue (module docstring); rows not ``served`` pass untouched."""
    arrival = np.asarray(arrival_s, dtype=np.float64)
    handoff = arrival.copy()
    ingress_work = np.zeros(len(arrival))
    rows = np.flatnonzero(served)
    if len(rows):
        a = arrival[rows]
        work_in = cfg.request_overhead_s + cfg.tokenize_s_per_token * np.asarray(prompt_tokens, dtype=np.float64)[rows]
        work = work_in  # streaming work is charged when the tokens come (egress_delays), not here
        ingress_work[rows] = work_in
        if processes == 1:
            # Lindley: free_i = W_i + max_{j<=i}(a_j − W_{j−1}), W the cumulative work (no Python loop)
            total = np.cumsum(work)
            start = np.maximum.accumulate(a - (total - work)) + (total - work)
        else:
            start = _multi_server_starts(a, work, processes)
        done = start + work_in
        handoff[rows] = np.maximum.accumulate(done)  # the engines receive requests in arrival order
    return Ingress(handoff, handoff - arrival, cfg.stream_s_per_token, processes, ingress_work)


def _multi_server_starts(arrival: np.ndarray, work: np.ndarray, processes: int) -> np.ndarray:
    """Start times when each request takes the first server to free up (a loop: O(n log processes))."""
    free = [0.0] * processes
    start = np.empty(len(arrival))
    for i, (a, w) in enumerate(zip(arrival.tolist(), work.tolist())):
        earliest = heapq.heappop(free)
        begin = a if a > earliest else earliest
        start[i] = begin
        heapq.heappush(free, begin + w)
    return start


def egress_delays(first_s: np.ndarray, last_s: np.ndarray, num_tokens: np.ndarray, ingress: Ingress,
                  arrival_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How much later than the engine emits them the client receives each request's first and last token.

    The server process(es) stream every token (``stream_s`` of CPU each) and also take in new requests (their
    ingress work, at arrival): one FIFO of work. Its backlog over time is a reflected random walk on a grid of
    time bins (work arriving in a bin minus what the processes clear in it), with each request's tokens spread
    evenly between its first and last token. A token emitted at t reaches the client after the backlog at t
    and its own streaming work. A lightly loaded server adds ``stream_s``; a server streaming for a thousand
    running requests falls behind, and the clients see longer gaps than the engine's steps (ITL and TPOT grow
    while the GPU is idle waiting on nothing)."""
    cost, processes = ingress.stream_s, max(ingress.processes, 1)
    delivered = ~np.isnan(first_s)
    first_delay = np.full(len(first_s), cost)
    last_delay = np.full(len(first_s), cost)
    if not delivered.any() or cost <= 0:
        return first_delay, last_delay
    f, l, n = first_s[delivered], last_s[delivered], num_tokens[delivered].astype(np.float64)
    l = np.where(np.isnan(l), f, l)  # a request that failed after its first token streamed no more
    end = float(max(l.max(), np.nanmax(arrival_s) if len(arrival_s) else 0.0)) * 1.001 + 1e-3
    bins = int(min(2_000_000, max(1_000, end / 2e-3)))
    dt = end / bins

    def index(t):
        return np.clip((np.asarray(t) / dt).astype(np.int64), 0, bins - 1)

    work = np.zeros(bins)
    np.add.at(work, index(f), cost)  # each first token
    rest = np.maximum(n - 1, 0)
    span = l - f
    point = (span <= dt) & (rest > 0)
    np.add.at(work, index(l[point]), cost * rest[point])  # a burst of tokens within one bin
    spread = (span > dt) & (rest > 0)
    rate = np.zeros(bins + 1)  # work per bin, as a difference array over [first, last)
    per_bin = cost * rest[spread] / span[spread] * dt
    np.add.at(rate, index(f[spread]), per_bin)
    np.add.at(rate, index(l[spread]) + 1, -per_bin)
    work += np.cumsum(rate)[:bins]
    if ingress.work_s is not None:
        np.add.at(work, index(arrival_s), ingress.work_s)
    walk = np.cumsum(work - processes * dt)
    backlog = walk - np.minimum(np.minimum.accumulate(walk), 0.0)  # Lindley, without a loop
    # a token waits for the work queued before its bin (work of the same bin may have come after it)
    wait = np.concatenate([[0.0], backlog[:-1]]) / processes
    first_delay[delivered] = wait[index(f)] + cost
    last_delay[delivered] = wait[index(l)] + cost
    return first_delay, last_delay


def client_view(requests: pd.DataFrame, ingress: Ingress, arrival_s: np.ndarray) -> pd.DataFrame:
    """The requests table as the client sees it: arrivals as sent, the server's time in ``server_s``, TTFT and
    E2E from the client's send to the client's receipt (later than the engine emitted the token by the server's
    streaming, :func:`egress_delays`), TPOT from them. ``first_token_s`` and ``finish_s`` stay the engine's
    instants (replica accounting uses them).
    ``requests`` rows are named by their row in the workload (``request_id``)."""
    rows = requests["request_id"].to_numpy().astype(np.int64)
    server = ingress.server_s[rows]
    sent = np.asarray(arrival_s, dtype=np.float64)
    requests["arrival_s"] = sent[rows]
    requests["server_s"] = server
    last = requests["last_token_s"].to_numpy() if "last_token_s" in requests else requests["finish_s"].to_numpy()
    first_delay, last_delay = egress_delays(requests["first_token_s"].to_numpy(), last,
                                            requests["num_output_tokens"].to_numpy(), ingress,
                                            ingress.handoff_s[rows] - server)
    delivered = ~np.isnan(requests["first_token_s"].to_numpy())
    first_delay = np.where(delivered, first_delay, 0.0)
    last_delay = np.where(delivered, last_delay, 0.0)
    requests["ttft_s"] = requests["ttft_s"].to_numpy() + server + first_delay
    requests["e2el_s"] = requests["e2el_s"].to_numpy() + server + last_delay
    produced = requests["num_output_tokens"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        requests["tpot_s"] = np.where(produced > 1, (requests["e2el_s"] - requests["ttft_s"]) / (produced - 1), np.nan)
    return requests


class ServerQueue:
    """The same FIFO server fed one request at a time, for clients whose sends depend on completions (a closed
    loop: the next send waits for a response, so the queue cannot be solved up front). Same work per request,
    same process choice and hand-off order as :func:`solve_ingress`."""

    def __init__(self, cfg: ServerConfig, processes: int) -> None:
        self.cfg = cfg
        self.free = [0.0] * processes
        self.processes = processes
        self.last_handoff = 0.0
        self.work_in: list[float] = []

    def admit(self, now_s: float, prompt_tokens: int, output_tokens: int) -> float:
        """When the engines see a request sent at ``now_s``."""
        cfg = self.cfg
        work_in = cfg.request_overhead_s + cfg.tokenize_s_per_token * prompt_tokens
        work = work_in  # streaming work is charged when the tokens come (egress_delays)
        self.work_in.append(work_in)
        earliest = heapq.heappop(self.free)
        begin = now_s if now_s > earliest else earliest
        heapq.heappush(self.free, begin + work)
        self.last_handoff = max(begin + work_in, self.last_handoff)
        return self.last_handoff
