"""``llmsim bench speed``: its options become config overrides and the matrix becomes a Markdown table."""

from __future__ import annotations

from llmsim.bench import matrix_markdown, settings_for


def test_router_policy_and_set_become_overrides_with_set_last() -> None:
    assert settings_for("least-kv", "sarathi", ["scheduler.policy=orca"]) == [
        "cluster.router=least-kv", "scheduler.policy=sarathi", "scheduler.policy=orca"]
    assert settings_for() == []


def test_matrix_table_marks_which_engine_ran_each_cell() -> None:
    rows = [
        {"policy": "vllm-v1", "router": "least-kv", "prefix_caching": False, "requests": 1000, "wall_s": 0.5,
         "requests_per_s": 2000.0, "engine_mode": "fast"},
        {"policy": "sarathi", "router": "round-robin", "prefix_caching": True, "requests": 1000, "wall_s": 0.5,
         "requests_per_s": 1500.0, "engine_mode": "fast (event-skipping loop: policy sarathi)"},
        {"policy": "orca", "router": "least-kv", "prefix_caching": True, "requests": 1000, "wall_s": 2.0,
         "requests_per_s": 500.0, "engine_mode": "reference (fast path off: policy orca)"},
        {"policy": "static", "router": "least-kv", "prefix_caching": True, "error": "config field x: bad"},
    ]
    table = matrix_markdown(rows, 4).splitlines()
    assert "1,000 requests on 4 replicas" in table[0]
    assert table[2].startswith("| policy |")
    assert table[4:] == [
        "| vllm-v1 | off | least-kv | 2,000 | * |",
        "| sarathi | on | round-robin | 1,500 | e |",
        "| orca | on | least-kv | 500 | r |",
        "| static | on | least-kv | – | config field x: bad |",
    ]
