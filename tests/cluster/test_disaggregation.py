"""Prefill/decode disaggregation: the KV transfer is visible in TTFT exactly as the topology prices it."""

from __future__ import annotations

import pytest

from llmsim.hardware.profiles import load_gpu, load_model
from tests.cluster.helpers import run, workload

PROMPT = 1000
DISAGG = [{"count": 1, "role": "prefill"}, {"count": 1, "role": "decode"}]


def one_request(first_token: str, **cluster):
    return run({"replicas": DISAGG, "disaggregation": {"first_token": first_token}, **cluster},
               workload([1.0], prompt=PROMPT, output=8))


def kv_bytes() -> float:
    return load_model("Llama-2-7B").kv_bytes_per_token() * PROMPT


def test_ttft_includes_exactly_the_nvlink_transfer_time():
    after = one_request("after_transfer")
    before = one_request("prefill")
    nvlink = load_gpu("A100-80GB").interconnect_bandwidth
    expected = kv_bytes() / nvlink + 2 * 1.0e-6  # GPU → NVSwitch → GPU, default 1 µs per NVLink hop
    ttft_after = after.requests["ttft_s"].iloc[0]
    ttft_before = before.requests["ttft_s"].iloc[0]
    assert ttft_after - ttft_before == pytest.approx(expected, rel=1e-9)
    transfer = after.tables["transfers"].iloc[0]
    assert transfer["transfer_s"] == pytest.approx(expected, rel=1e-9)
    assert transfer["wait_s"] == 0.0 and transfer["bytes"] == pytest.approx(kv_bytes())
    assert after.requests["kv_transfer_s"].iloc[0] == pytest.approx(expected, rel=1e-9)
    # token 1 leaves the prefill replica at the end of the prompt's step, then rides with the KV cache
    assert ttft_after == pytest.approx(transfer["ready_s"] - 1.0 + expected, rel=1e-9)


def test_across_nodes_the_transfer_is_priced_on_the_network_path():
    cluster = {"nodes": [{"name": "n", "count": 2, "gpus_per_node": 1}],
               "topology": {"network_bandwidth_gb_per_s": 25.0, "network_latency_us": 3.0}}
    after = one_request("after_transfer", **cluster)
    before = one_request("prefill", **cluster)
    expected = kv_bytes() / 25e9 + 2 * 3e-6  # GPU NIC → leaf → GPU NIC
    diff = after.requests["ttft_s"].iloc[0] - before.requests["ttft_s"].iloc[0]
    assert diff == pytest.approx(expected, rel=1e-9)


def test_with_first_token_at_prefill_the_transfer_shows_between_tokens_one_and_two():
    before = one_request("prefill")
    after = one_request("after_transfer")
    # Same decode work: the finish time is the same, only token 1's stamp moves.
    assert before.requests["finish_s"].iloc[0] == pytest.approx(after.requests["finish_s"].iloc[0])
    assert before.requests["tpot_s"].iloc[0] > after.requests["tpot_s"].iloc[0]


def test_requests_table_names_both_replicas_and_every_request_ends_once():
    result = run({"replicas": [{"count": 2, "role": "prefill"}, {"count": 3, "role": "decode"}],
                  "router": "round-robin", "disaggregation": {"decode_router": "least-kv"}},
                 workload([0.05 * i for i in range(200)], prompt=600, output=30))
    req = result.requests
    assert len(req) == 200 and req["request_id"].is_unique and (req["status"] == "finished").all()
    assert set(req["prefill_replica"]) == {0, 1} and set(req["decode_replica"]) <= {2, 3, 4}
    assert (req["replica"] == req["decode_replica"]).all()
    assert (req["served_by"] == req["prefill_replica"].astype(str) + "," + req["decode_replica"].astype(str)).all()
    assert len(result.tables["transfers"]) == 200
    assert result.summary["cluster"]["accounting"]["ok"]
    replicas = result.tables["replicas"].set_index("replica")
    assert replicas.loc[[2, 3, 4], "finished"].sum() == 200


def test_decode_waits_for_blocks_before_the_transfer_starts():
    # A decode replica with room for about one request at a time: later transfers must wait for blocks.
    result = run({"replicas": [{"count": 1, "role": "prefill"}, {"count": 1, "role": "decode"}]},
                 workload([0.0, 0.0, 0.0], prompt=1500, output=200),
                 scheduler={"max_num_batched_tokens": 2048, "num_gpu_blocks": 120})
    transfers = result.tables["transfers"].sort_values("start_s")
    assert (result.requests["status"] == "finished").all()
    assert transfers["wait_s"].max() > 0
    assert (transfers["end_s"] >= transfers["start_s"]).all()
