"""Replay the project's own goldens of the real vLLM V1 scheduler and compare exactly.

``tests/goldens/vllm_v1_hybrid`` holds hybrid-KV goldens (full-attention + sliding-window layers, made with
``experiments/oracle/drive_hybrid.py``); ``tests/goldens/vllm_v1_prefix`` holds prefix-caching goldens under
preemption and the priority policy (made with ``../shared/vllm_oracle/drive.py``). Both were recorded with vLLM
0.32.0; their READMEs say how. Unlike the shared goldens they ship with the project, so these tests never skip.
The fields compared are those of ``test_vllm_v1_goldens.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmsim.engine.hybrid_kv import kv_cache_groups
from llmsim.engine.replay import replay_scenario
from llmsim.engine.scenario import load_scenario
from tests.engine.test_vllm_v1_goldens import assert_replay_matches, load_golden

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"
FOLDERS = ("vllm_v1_hybrid", "vllm_v1_prefix")


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for folder in FOLDERS:
        for scenario in sorted((GOLDENS / folder).glob("*.scenario.json")):
            name = scenario.name[: -len(".scenario.json")]
            cases.append((folder, name, "sync"))
            cases.append((folder, name, "async"))
    return cases


def _golden_path(folder: str, name: str, engine: str) -> Path:
    return GOLDENS / folder / ("async_engine" if engine == "async" else "") / f"{name}.golden.json.gz"


def test_every_project_scenario_has_both_goldens() -> None:
    cases = _cases()
    assert {folder for folder, _, _ in cases} == set(FOLDERS)
    for folder, name, engine in cases:
        assert _golden_path(folder, name, engine).is_file(), (folder, name, engine)


@pytest.mark.parametrize("folder,name,engine", _cases())
def test_project_golden_replays_exactly(folder: str, name: str, engine: str) -> None:
    golden = load_golden(_golden_path(folder, name, engine))
    scenario = load_scenario(GOLDENS / folder / f"{name}.scenario.json")
    assert golden["generator"]["vllm_version"] == "0.32.0" and golden["generator"]["engine_loop"] == engine
    trace = replay_scenario(scenario, engine, vllm_version=golden["generator"]["vllm_version"])

    assert_replay_matches(trace, golden, engine)


@pytest.mark.parametrize("scenario", sorted((GOLDENS / "vllm_v1_hybrid").glob("*.scenario.json")),
                         ids=lambda p: p.name.split(".")[0])
def test_hybrid_groups_are_vllms(scenario: Path) -> None:
    """llmsim splits the layers into the KV cache groups vLLM formed (kind, window and order)."""
    golden = load_golden(_golden_path("vllm_v1_hybrid", scenario.name[: -len(".scenario.json")], "sync"))
    config = json.loads(scenario.read_text())["config"]
    groups, _ = kv_cache_groups(config["layer_types"], config["sliding_window"])
    assert groups == [g["sliding_window"] for g in golden["config"]["kv_cache_groups"]]
    assert all((g["kind"] == "sliding_attention") == (g["sliding_window"] is not None)
               for g in golden["config"]["kv_cache_groups"])


def test_prefix_caching_is_honoured_with_sliding_window_layers(monkeypatch) -> None:
    """The hybrid prefix-caching goldens (hp*) are not met by accident: without prefix caching, or with the
    sliding groups caching every block up to the prompt's end (not vLLM's default retention), the replay
    differs."""
    import llmsim.engine.schedulers as schedulers
    from llmsim.engine.hybrid_prefix_cache import HybridPrefixCachingKVCacheManager

    name = "hp01_gptoss_prefix_priority_bs16_chunk"
    golden = load_golden(_golden_path("vllm_v1_hybrid", name, "sync"))
    scenario = load_scenario(GOLDENS / "vllm_v1_hybrid" / f"{name}.scenario.json")
    assert golden["summary"]["num_requests_with_prefix_hit"] > 0
    off = dict(scenario, config=dict(scenario["config"], enable_prefix_caching=False))
    assert replay_scenario(off, "sync")["steps"] != golden["steps"]

    class Dense(HybridPrefixCachingKVCacheManager):
        def cache_full_blocks(self, request, num_tokens=None):
            need, self.need = self.need, 1 << 30  # every block before a boundary counts as reachable
            try:
                super().cache_full_blocks(request, num_tokens)
            finally:
                self.need = need

    monkeypatch.setattr(schedulers, "HybridPrefixCachingKVCacheManager", Dense)
    dense = replay_scenario(scenario, "sync")
    assert [s["scheduled"] for s in dense["steps"]] != [s["scheduled"] for s in golden["steps"]]
