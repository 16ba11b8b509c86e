"""Scenario files (the goldens' format: ``../shared/goldens/vllm_v1/README.md``): read, checked field by field,
and turned into the scheduler config a replay runs (:mod:`llmsim.engine.replay`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmsim.engine.config import SchedulerConfig
from llmsim.errors import UserError

_SCENARIO_CONFIG_KEYS = {
    "num_gpu_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill",
    "long_prefill_token_threshold", "enable_prefix_caching", "max_model_len", "scheduler_reserve_full_isl",
    "watermark",
}
_SCENARIO_ONLY_KEYS = {"policy", "vllm_version", "layer_types", "sliding_window"}
_POLICIES = {"fcfs": "fcfs", "priority": "priority"}  # scenario policy → scheduler.queue
# Speculative methods: vLLM's names (the oracle's) and llmsim's → llmsim's.
SPEC_METHODS = {"ngram": "ngram", "ngram_gpu": "ngram", "draft_model": "draft", "draft": "draft",
                "eagle": "eagle", "mtp": "mtp"}
_SPEC_KEYS = {"method", "num_speculative_tokens", "acceptance_pattern"}


#: Most ticks a replay runs: the goldens need hundreds; each tick keeps a step record (about 1 KB), so a
#: scenario that never finishes (a request larger than the KV cache) would otherwise grow for hours.
MAX_REPLAY_TICKS = 1_000_000


def load_scenario(path: str | Path) -> dict[str, Any]:
    """Read and check a scenario file (the goldens' format); every problem names the field and index."""
    from llmsim.inputs import read_json

    scenario = read_json(path, "scenario file")
    if not isinstance(scenario, dict):
        raise UserError(f"{path}: expected a JSON object with 'config' and 'requests', got {_kind(scenario)}")
    for key in ("config", "requests"):
        if key not in scenario:
            raise UserError(f"{path}: missing top-level field {key!r}")
    config, requests = scenario["config"], scenario["requests"]
    if not isinstance(config, dict):
        raise UserError(f"{path}: config: expected a JSON object of scheduler settings, got {_kind(config)}")
    if not isinstance(requests, list):
        raise UserError(f"{path}: requests: expected a JSON list of request objects, got {_kind(requests)}")
    blocks = config.get("num_gpu_blocks")
    if not is_int(blocks) or blocks < 2:
        raise UserError(f"{path}: config.num_gpu_blocks: expected an integer ≥ 2 (block 0 is reserved), got {blocks!r}")
    block_size = config.get("block_size", 16)
    if not is_int(block_size) or block_size < 1:
        raise UserError(f"{path}: config.block_size: expected an integer ≥ 1, got {block_size!r}")
    usable_tokens = (blocks - 1) * block_size
    k = _check_speculative(scenario, path)
    seen: dict[Any, int] = {}
    for i, req in enumerate(requests):
        if not isinstance(req, dict):
            raise UserError(f"{path}: requests[{i}]: expected a JSON object, got {_kind(req)}")
        for key in ("id", "arrival_step", "prompt_len", "output_len"):
            value = req.get(key)
            if value is None:
                raise UserError(f"{path}: requests[{i}] is missing field {key!r}")
            if key == "id":
                if not isinstance(value, (str, int)) or isinstance(value, bool):
                    raise UserError(f"{path}: requests[{i}].id: expected a string or integer, got {_kind(value)}")
                if value in seen:
                    raise UserError(f"{path}: requests[{i}].id {value!r} repeats requests[{seen[value]}].id; "
                                    "request ids must be unique")
                seen[value] = i
                continue
            low = 0 if key == "arrival_step" else 1
            if not is_int(value) or not low <= value <= MAX_REPLAY_TICKS:
                raise UserError(f"{path}: requests[{i}].{key}: expected an integer from {low} to "
                                f"{MAX_REPLAY_TICKS:,}, got {value!r}")
        if not is_int(req.get("priority", 0)):
            raise UserError(f"{path}: requests[{i}].priority: expected an integer, got {req['priority']!r}")
        if ("prefix_group" in req) != ("prefix_len" in req):
            raise UserError(f"{path}: requests[{i}]: prefix_group and prefix_len must be given together")
        if "prefix_group" in req:
            plen = req["prefix_len"]
            if not isinstance(req["prefix_group"], str):
                raise UserError(f"{path}: requests[{i}].prefix_group: expected a string, got {req['prefix_group']!r}")
            if not is_int(plen) or not 0 <= plen <= req["prompt_len"]:
                raise UserError(f"{path}: requests[{i}].prefix_len: expected an integer from 0 to prompt_len "
                                f"({req['prompt_len']}), got {plen!r}")
        if "accepted" in req:
            if k is None:
                raise UserError(f"{path}: requests[{i}].accepted: needs a top-level 'speculative' section")
            _check_pattern(req["accepted"], k, f"{path}: requests[{i}].accepted")
        if req["prompt_len"] + req["output_len"] > usable_tokens:
            raise UserError(f"{path}: requests[{i}]: prompt_len {req['prompt_len']} + output_len {req['output_len']} "
                            f"tokens cannot fit the KV cache ({blocks - 1} usable blocks × {block_size} = "
                            f"{usable_tokens} tokens; raise config.num_gpu_blocks)")
    return scenario


def _check_speculative(scenario: dict[str, Any], path) -> int | None:
    """Check the optional ``speculative`` section; return its k (None without one)."""
    spec = scenario.get("speculative")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise UserError(f"{path}: speculative: expected a JSON object, got {_kind(spec)}")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise UserError(f"{path}: speculative.{unknown[0]}: unknown key; valid: {', '.join(sorted(_SPEC_KEYS))}")
    if spec.get("method") not in SPEC_METHODS:
        raise UserError(f"{path}: speculative.method: expected one of {', '.join(SPEC_METHODS)}, "
                        f"got {spec.get('method')!r}")
    k = spec.get("num_speculative_tokens")
    if not is_int(k) or not 1 <= k <= 16:
        raise UserError(f"{path}: speculative.num_speculative_tokens: expected an integer from 1 to 16, got {k!r}")
    _check_pattern(spec.get("acceptance_pattern"), k, f"{path}: speculative.acceptance_pattern")
    return k


def _check_pattern(pattern: Any, k: int, where: str) -> None:
    if not isinstance(pattern, list) or not pattern or not all(is_int(a) and 0 <= a <= k for a in pattern):
        raise UserError(f"{where}: expected a non-empty list of accepted-draft counts, integers from 0 to {k}, "
                        f"got {pattern!r}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def scheduler_config_from_scenario(config: dict[str, Any], async_scheduling: bool, source: str,
                                   vllm_version: str | None = None) -> SchedulerConfig:
    unknown = sorted(set(config) - _SCENARIO_CONFIG_KEYS - _SCENARIO_ONLY_KEYS)
    if unknown:
        raise UserError(f"{source}: config.{unknown[0]}: not a scheduler option replay knows; valid: "
                        f"{', '.join(sorted(_SCENARIO_CONFIG_KEYS | _SCENARIO_ONLY_KEYS))}")
    fields = {k: v for k, v in config.items() if k in _SCENARIO_CONFIG_KEYS}
    policy = config.get("policy", "fcfs")
    if policy not in _POLICIES:
        raise UserError(f"{source}: config.policy: expected 'fcfs' or 'priority', got {policy!r}")
    version = vllm_version or config.get("vllm_version")
    if version is not None:
        fields["vllm_version"] = version
    try:
        return SchedulerConfig(policy="vllm-v1", async_scheduling=async_scheduling, queue=_POLICIES[policy], **fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(f"{source}: config.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
