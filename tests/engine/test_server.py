"""The API server in front of the engines: a FIFO queue of finite throughput, absent in offline runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.config import load_config
from llmsim.engine.server import Ingress, ServerConfig, egress_delays, solve_ingress
from llmsim.hardware.specs import APIServerCosts
from llmsim.errors import ConfigError
from llmsim.simulation import simulate
from llmsim.workload import Workload

CFG = ServerConfig().with_costs(APIServerCosts())
# the mechanism tests pin the server's costs (the bundled GPU profiles carry fitted ones)
PINNED = [f"server.request_overhead_s={CFG.request_overhead_s}", f"server.tokenize_s_per_token={CFG.tokenize_s_per_token}",
          f"server.stream_s_per_token={CFG.stream_s_per_token}"]


def _tiny(n: int, rate: float, prompt: int = 16, output: int = 4) -> Workload:
    return Workload(pd.DataFrame({"arrival_s": np.arange(n) / rate, "prompt_tokens": np.full(n, prompt),
                                  "output_tokens": np.full(n, output)}))


def test_idle_server_adds_only_the_ingress_work():
    arrival = np.array([0.0, 10.0, 20.0])
    prompt = np.array([100, 1000, 0])
    ingress = solve_ingress(CFG, arrival, prompt, np.array([5, 5, 5]), np.ones(3, bool), 1)
    expected = CFG.request_overhead_s + CFG.tokenize_s_per_token * prompt
    np.testing.assert_allclose(ingress.server_s, expected)


def test_server_queue_caps_intake_at_one_over_the_ingress_work():
    n, prompt, output = 2000, 16, 4
    work = CFG.request_overhead_s + CFG.tokenize_s_per_token * prompt
    arrival = np.arange(n) / 200.0  # five times what one process can take in
    ingress = solve_ingress(CFG, arrival, np.full(n, prompt), np.full(n, output), np.ones(n, bool), 1)
    handoff = ingress.handoff_s
    assert (np.diff(handoff) >= 0).all()
    rate = (n - 1) / (handoff[-1] - handoff[0])
    assert rate == pytest.approx(1.0 / work, rel=1e-6)
    two = solve_ingress(CFG, arrival, np.full(n, prompt), np.full(n, output), np.ones(n, bool), 2).handoff_s
    assert (n - 1) / (two[-1] - two[0]) == pytest.approx(2.0 / work, rel=0.01)


def _streaming(n: int, tokens: int, duration_s: float, cost_s: float) -> tuple[np.ndarray, np.ndarray]:
    first, last = np.zeros(n), np.full(n, duration_s)
    ingress = Ingress(np.zeros(n), np.zeros(n), cost_s, 1, np.zeros(n))
    return egress_delays(first, last, np.full(n, tokens), ingress, np.zeros(n))


def test_a_server_that_keeps_up_adds_one_token_of_streaming_work():
    # 10 requests x 100 tokens over 10 s at 25 us a token: 2.5 % busy
    first_delay, last_delay = _streaming(10, 100, 10.0, 25e-6)
    assert last_delay == pytest.approx(np.full(10, 25e-6), abs=3e-3)


def test_a_server_streaming_more_than_it_can_falls_behind_linearly():
    # 1000 requests x 1000 tokens over 10 s at 25 us a token: 25 s of work in 10 s; the last tokens reach the
    # clients about 15 s late, and the first tokens (a burst of 1000 at t = 0) 25 ms late
    first_delay, last_delay = _streaming(1000, 1000, 10.0, 25e-6)
    assert last_delay.mean() == pytest.approx(15.0, rel=0.02)
    assert first_delay.mean() == pytest.approx(0.0, abs=0.03)


def test_rows_the_engines_never_see_pass_untouched():
    served = np.array([True, False, True])
    ingress = solve_ingress(CFG, np.zeros(3), np.full(3, 10), np.array([3, 0, 3]), served, 1)
    assert ingress.server_s[1] == 0.0 and ingress.server_s[2] > ingress.server_s[0] > 0.0


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_online_run_pays_the_server_and_offline_does_not(mode):
    workload = _tiny(40, rate=2.0, prompt=200, output=20)  # light load: nobody waits for the server
    online = simulate(load_config(None, [f"engine.mode={mode}", "hardware.gpu=H100", "hardware.model=Llama-3-8B",
                                         *PINNED]),
                      workload=workload)
    offline = simulate(load_config(None, [f"engine.mode={mode}", "hardware.gpu=H100", "hardware.model=Llama-3-8B",
                                          "server.enabled=false"]), workload=workload)
    assert "server_s" in online.requests and "server_s" not in offline.requests
    ingress = CFG.request_overhead_s + 200 * CFG.tokenize_s_per_token
    np.testing.assert_allclose(online.requests["server_s"], ingress)
    extra = (online.requests["ttft_s"] - offline.requests["ttft_s"]).to_numpy()
    np.testing.assert_allclose(extra, ingress + CFG.stream_s_per_token, rtol=1e-6)
    np.testing.assert_allclose(online.requests["arrival_s"], workload.df["arrival_s"])
    np.testing.assert_allclose(online.requests["tpot_s"], offline.requests["tpot_s"], rtol=1e-9)


def test_many_tiny_requests_saturate_the_server_not_the_gpu():
    workload = _tiny(1500, rate=150.0)
    base = ["hardware.gpu=H100", "hardware.model=Llama-3-8B", "scheduler.max_num_seqs=1024", *PINNED]
    online = simulate(load_config(None, base), workload=workload)
    offline = simulate(load_config(None, [*base, "server.enabled=false"]), workload=workload)
    assert online.summary["request_throughput"] < 45 < 100 < offline.summary["request_throughput"]


def test_server_section_is_validated():
    with pytest.raises(ConfigError, match="server.request_overhead_s"):
        load_config(None, ["server.request_overhead_s=-1"])


def test_a_burst_is_taken_in_first_then_streamed_round_robin():
    """1,000 requests sent at once, 5 ms of ingress each; the engine emits each one's 4 tokens soon after its
    hand-off. The server takes the whole burst in before streaming (every first token reaches its client near
    the burst's end), then serves the open streams in turn: a request's next token is one round of all 1,000
    streams later, not one token's work."""
    n, ingress_s, stream_s = 1000, 5e-3, 150e-6
    handoff = (np.arange(n) + 1) * ingress_s
    first = handoff + 0.03
    last = first + 0.09
    ingress = Ingress(handoff, handoff, stream_s, 1, np.full(n, ingress_s))
    first_delay, last_delay = egress_delays(first, last, np.full(n, 4), ingress, np.zeros(n))
    ttft, e2e = first + first_delay, last + last_delay
    taken_in = n * ingress_s
    assert ttft.min() > taken_in and ttft.max() < taken_in + 1.25 * n * stream_s
    tpot = (e2e - ttft) / 3
    np.testing.assert_allclose(tpot, n * stream_s, rtol=0.1)
    assert e2e.max() == pytest.approx(taken_in + 4 * n * stream_s, rel=0.01)  # all the work, no idle time


def test_streams_share_a_server_behind_them_equally():
    """Two groups stream through a server that cannot keep up: a short response is not stuck behind the long
    ones' backlog (processor sharing), and a long one finishes when all the work is done."""
    n = 200
    first = np.zeros(n)
    last = np.ones(n)  # both groups' tokens come within a second; the long ones' are 10 s of streaming work
    tokens = np.where(np.arange(n) < 100, 10, 1000)
    ingress = Ingress(np.zeros(n), np.zeros(n), 100e-6, 1, np.zeros(n))
    first_delay, last_delay = egress_delays(first, last, tokens, ingress, np.zeros(n))
    work = float(tokens.sum()) * 100e-6
    assert (last + last_delay)[100:].max() == pytest.approx(work, rel=0.01)
    assert (last + last_delay)[:100].max() < 1.5  # 10 tokens each, served in turn with the long streams


def test_an_autoscaled_pool_gets_a_server_per_replica_it_may_run():
    """Each replica is its own `vllm serve`: a pool that scales out to 6 has 6 front ends at its peak, not the one
    it started with (the ingress queue is solved before the run, so it counts the pool at its largest)."""
    from llmsim.deployment import server_processes

    base = ["cluster.replicas=1", "cluster.autoscaler.max_replicas=6"]
    assert server_processes(load_config(None, base)) == 1  # no autoscaler: the replicas configured
    scaled = load_config(None, [*base, "cluster.autoscaler.policy=reactive"])
    assert server_processes(scaled) == 6
    assert server_processes(load_config(None, [*base, "cluster.autoscaler.policy=reactive", "server.processes=2"])) == 2


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400), st.floats(1e-5, 3e-3), st.floats(0.0, 0.02), st.floats(0.05, 3.0),
       st.integers(0, 2**31 - 1))
def test_every_token_reaches_its_client_after_the_engine_emits_it_and_in_order(n, stream_s, ingress_s, spread_s,
                                                                               seed):
    """Whatever the load (bursts whose tokens all come while the server is behind included): each token's delay is
    at least its own streaming work, and a request's last token never reaches the client before its first (TPOT
    is never negative)."""
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, spread_s, n))
    first = arrival + rng.uniform(0.0, 0.5, n)
    last = first + rng.uniform(0.0, spread_s, n) * rng.integers(0, 2, n)
    tokens = np.where(last > first, rng.integers(2, 400, n), 1)
    ingress = Ingress(arrival, np.zeros(n), stream_s, int(rng.integers(1, 3)), np.full(n, ingress_s))
    first_delay, last_delay = egress_delays(first, last, tokens, ingress, arrival)
    assert (first_delay >= stream_s - 1e-12).all() and (last_delay >= stream_s - 1e-12).all()
    assert (last + last_delay >= first + first_delay - 1e-9).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 2.0, allow_nan=False), min_size=1, max_size=60),
       st.lists(st.floats(0, 0.5, allow_nan=False), min_size=60, max_size=60), st.integers(1, 6))
def test_several_processes_start_requests_as_the_queue_does(arrivals, works, processes):
    """The shortcut that starts every request at its arrival (no request can find every process busy) gives
    exactly the loop's start times, and is taken only when it may be."""
    from llmsim.engine import server_queue

    arrival = np.sort(np.asarray(arrivals))
    work = np.asarray(works[:len(arrival)])
    loop = server_queue._multi_server_loop(arrival, work, processes)
    assert np.array_equal(server_queue.multi_server_starts(arrival, work, processes), loop)
    if not server_queue._crowded(arrival, work, processes).any():
        assert np.array_equal(loop, arrival)


def test_a_lightly_loaded_set_of_processes_skips_the_queue_loop():
    from llmsim.engine import server_queue

    arrival = np.arange(1000) * 0.01  # 100 req/s on 4 processes taking 15 ms each: never all busy
    assert not server_queue._crowded(arrival, np.full(1000, 0.015), 4).any()
    assert server_queue._crowded(arrival, np.full(1000, 0.045), 4).any()  # five overlap: the loop decides
