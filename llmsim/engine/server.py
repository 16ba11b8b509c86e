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
    """The `server:` section. Defaults: [I] sized so that a server of many tiny requests saturates near
    40 req/s and adds ~25-30 ms to the TTFT of a short prompt at low load (published vLLM runs, issue 13);
    fit them per deployment with end-to-end points."""

    enabled: bool = Field(True, description="model the API server; false for offline / engine-only studies")
    request_overhead_s: float = Field(0.025, ge=0, le=1.0, description="per request: HTTP, validation, chat template, "
                                                                        "hand-off to the engine (server CPU seconds)")
    tokenize_s_per_token: float = Field(2e-6, ge=0, le=1e-3, description="per prompt token: tokenisation")
    stream_s_per_token: float = Field(25e-6, ge=0, le=1e-2, description="per output token: detokenisation and one "
                                                                        "streamed chunk")
    processes: Optional[int] = Field(None, ge=1, description="server processes; default one per replica taking arrivals")


@dataclass
class Ingress:
    """The server's effect on each request (rows of the workload, in its order)."""

    handoff_s: np.ndarray  # when the engines see the request
    server_s: np.ndarray  # handoff − arrival: waiting for the server + ingress work
    stream_s: float  # extra delay of every delivered token
    processes: int = 1


def solve_ingress(cfg: ServerConfig, arrival_s: np.ndarray, prompt_tokens: np.ndarray, output_tokens: np.ndarray,
                  served: np.ndarray, processes: int) -> Ingress:
    """Hand-off times of the FIFO server queue (module docstring); rows not ``served`` pass untouched."""
    arrival = np.asarray(arrival_s, dtype=np.float64)
    handoff = arrival.copy()
    rows = np.flatnonzero(served)
    if len(rows):
        a = arrival[rows]
        work_in = cfg.request_overhead_s + cfg.tokenize_s_per_token * np.asarray(prompt_tokens, dtype=np.float64)[rows]
        work = work_in + cfg.stream_s_per_token * np.asarray(output_tokens, dtype=np.float64)[rows]
        if processes == 1:
            # Lindley: free_i = W_i + max_{j<=i}(a_j − W_{j−1}), W the cumulative work (no Python loop)
            total = np.cumsum(work)
            start = np.maximum.accumulate(a - (total - work)) + (total - work)
        else:
            start = _multi_server_starts(a, work, processes)
        done = start + work_in
        handoff[rows] = np.maximum.accumulate(done)  # the engines receive requests in arrival order
    return Ingress(handoff, handoff - arrival, cfg.stream_s_per_token, processes)


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


def client_view(requests: pd.DataFrame, ingress: Ingress, arrival_s: np.ndarray) -> pd.DataFrame:
    """The requests table as the client sees it: arrivals as sent, the server's time in ``server_s``, TTFT and
    E2E from the client's send to the client's receipt (``stream_s`` after the engine emitted the token).
    ``first_token_s`` and ``finish_s`` stay the engine's instants (replica accounting uses them).
    ``requests`` rows are named by their row in the workload (``request_id``)."""
    rows = requests["request_id"].to_numpy().astype(np.int64)
    server = ingress.server_s[rows]
    requests["arrival_s"] = np.asarray(arrival_s, dtype=np.float64)[rows]
    requests["server_s"] = server
    delivered = ~np.isnan(requests["first_token_s"].to_numpy())
    stream = np.where(delivered, ingress.stream_s, 0.0)
    for name in ("ttft_s", "e2el_s"):
        requests[name] = requests[name].to_numpy() + server + stream
    return requests
