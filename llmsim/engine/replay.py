"""Replay a scheduler scenario tick by tick and write a trace in the vLLM golden format.

This is llmsim's conformance check against the real vLLM V1 scheduler: the scenario and trace formats are
those of ``../shared/goldens/vllm_v1`` and ``../shared/goldens/vllm_v1_prefix_priority`` (see their READMEs).
Ticks are abstract engine steps; no timing model is involved, only the scheduler, the KV cache and the engine
loop (sync or async).

Every scenario option is honoured or refused: ``enable_prefix_caching`` builds the hashed block pool, whose
block keys come from each request's ``prefix_group``/``prefix_len`` (the oracle's token scheme: two requests
hold the same tokens in block i iff they are in the same group and the block lies within both requests'
group stream); ``policy: priority`` is vLLM's priority heap and victim rule; ``layer_types`` and
``sliding_window`` (the format of ``tests/goldens/vllm_v1_hybrid``, written by
``experiments/oracle/drive_hybrid.py``) give a hybrid model's KV cache groups over one pool; a top-level
``speculative`` section (``method``, ``num_speculative_tokens``, ``acceptance_pattern``; per request an optional
``accepted`` list) turns on speculative decoding with that scripted acceptance, as ``experiments/oracle/
drive_speculative.py`` fabricates it for the real scheduler; an unknown key is an error.
"""

from __future__ import annotations

from typing import Any

from llmsim.engine.config import SchedulerConfig
from llmsim.engine.core import EngineLoop
from llmsim.engine.hybrid_kv import kv_cache_groups
from llmsim.engine.kv_cache import KVCacheManager, cdiv
from llmsim.engine.prefix_cache import PrefixCachingKVCacheManager
from llmsim.engine.request import Request
from llmsim.engine.scenario import MAX_REPLAY_TICKS, SPEC_METHODS, is_int, scheduler_config_from_scenario
from llmsim.engine.schedulers import make_kv_cache, make_scheduler
from llmsim.engine.speculative import SpeculativeConfig, Speculator
from llmsim.errors import ConfigError, UserError


def replay_scenario(scenario: dict[str, Any], engine: str = "sync", source: str = "scenario",
                    vllm_version: str | None = None) -> dict[str, Any]:
    """Run the scenario through llmsim's ``vllm-v1`` scheduler; return the golden-format trace.

    ``vllm_version`` (else the scenario's ``config.vllm_version``, else the newest) picks the release whose
    rules apply where vLLM releases differ.
    """
    if engine not in ("sync", "async"):
        raise UserError(f"--engine {engine!r}: expected 'sync' or 'async'")
    async_mode = engine == "async"
    cfg = scheduler_config_from_scenario(scenario["config"], async_mode, source, vllm_version)
    max_model_len = cfg.max_model_len or 1 << 30
    kv = _kv_cache(scenario["config"], cfg, source)
    scheduler = make_scheduler(cfg, kv, max_model_len)
    spec = scenario.get("speculative")
    if spec is not None:
        scheduler.enable_speculation(Speculator(SpeculativeConfig(
            method=SPEC_METHODS[spec["method"]], num_speculative_tokens=spec["num_speculative_tokens"],
            acceptance_pattern=spec["acceptance_pattern"])))
    loop = EngineLoop(scheduler, async_mode)

    specs = sorted(scenario["requests"], key=lambda r: r["arrival_step"])  # stable: list order within a tick
    requests = [Request(r["id"], r["arrival_step"], r["prompt_len"], r["output_len"], index=i,
                        priority=r.get("priority", 0)) for i, r in enumerate(specs)]
    for request, request_spec in zip(requests, specs):
        request.block_keys = block_keys_of(request_spec, cfg.block_size)
        request.acceptance_pattern = request_spec.get("accepted")
    admissions: dict[str, list[list[int]]] = {r.request_id: [] for r in requests}
    delivered_first: dict[str, int] = {}
    delivered_finish: dict[str, int] = {}
    steps: list[dict[str, Any]] = []
    next_arrival = 0
    num_finished = 0
    tick = 0
    while num_finished < len(requests):
        arrived = []
        while next_arrival < len(requests) and specs[next_arrival]["arrival_step"] == tick:
            scheduler.add_request(requests[next_arrival])
            arrived.append(requests[next_arrival].request_id)
            next_arrival += 1
        scheduler.step_index = tick
        plan = loop.schedule()
        if plan is not None and (plan.new or plan.resumed):
            admitted = set(map(id, plan.new + plan.resumed))
            for (request, _), context in zip(plan.scheduled, plan.context_lens):
                if id(request) in admitted:  # tokens in KV before its first chunk: what the prefix cache supplied
                    admissions[request.request_id].append([tick, context])
        to_update = loop.next_to_update(plan)
        verifying = []
        if spec is not None and to_update is not None:
            verifying = [(r, r.num_accepted_tokens) for r, d in zip(to_update.sampling, to_update.spec_drafts)
                         if d and not r.is_finished]  # the update ignores requests that finished meanwhile
        outcome = scheduler.update_from_output(to_update) if to_update is not None else None
        if outcome is not None:
            num_finished += len(outcome.finished)
            for r in outcome.emitted:
                if r.num_output_tokens == 1:
                    delivered_first[r.request_id] = tick
            for r in outcome.finished:
                delivered_finish[r.request_id] = tick
        steps.append(_step_record(tick, arrived, plan, to_update, outcome, kv, scheduler, async_mode))
        if spec is not None:
            steps[-1].update(_spec_record(plan, outcome, verifying))
        tick += 1
        if tick > MAX_REPLAY_TICKS:
            raise UserError(f"{source}: the replay did not finish within {MAX_REPLAY_TICKS:,} ticks "
                            f"({num_finished} of {len(requests)} requests finished)")
    return _trace(scenario, cfg, kv, steps, requests, specs, async_mode, delivered_first, delivered_finish, admissions)


def _kv_cache(config: dict[str, Any], cfg: SchedulerConfig, source: str) -> KVCacheManager:
    """The scenario's KV cache: hybrid (vLLM's KV cache groups over one pool) when ``config.layer_types`` lists
    sliding-window layers, else the plain or prefix-caching one."""
    layer_types = config.get("layer_types")
    if layer_types is not None:
        if not isinstance(layer_types, list) or not all(isinstance(t, str) for t in layer_types) or not layer_types:
            raise UserError(f"{source}: config.layer_types: expected a non-empty list of attention type names "
                            f"(e.g. 'full_attention', 'sliding_attention'), got {layer_types!r}")
        window = config.get("sliding_window")
        if window is not None and (not is_int(window) or window < 1):
            raise UserError(f"{source}: config.sliding_window: expected a positive integer, got {window!r}")
        try:
            groups, _ = kv_cache_groups(layer_types, window)
        except ConfigError as exc:
            raise UserError(f"{source}: config: {exc}") from None
        if any(w is not None for w in groups):
            try:
                return make_kv_cache(cfg, cfg.num_gpu_blocks or 0, kv_groups=groups)
            except ConfigError as exc:
                raise UserError(f"{source}: {str(exc).replace('config field scheduler.', 'config.')}") from None
    if cfg.enable_prefix_caching:
        return PrefixCachingKVCacheManager(cfg.num_gpu_blocks or 0, cfg.block_size, cfg.watermark)
    return KVCacheManager(cfg.num_gpu_blocks or 0, cfg.block_size, cfg.watermark)


def block_keys_of(spec: dict[str, Any], block_size: int) -> list:
    """The prefix-cache key of each KV block of a scenario request (see the module docstring).

    A group's stream extent is ``prompt_len + output_len`` when the whole prompt is the group's stream (the
    request continues the stream with its outputs, as a chat turn does), else ``prefix_len``.
    """
    total = spec["prompt_len"] + spec["output_len"]
    group = spec.get("prefix_group")
    extent = 0
    if group is not None:
        extent = total if spec["prefix_len"] == spec["prompt_len"] else spec["prefix_len"]
    rid = spec["id"]
    return [("group", group, k) if (k + 1) * block_size <= extent else ("own", rid, k)
            for k in range(cdiv(total, block_size))]


def _ids(requests) -> list[str]:
    return [r.request_id for r in requests]


def _step_record(tick, arrived, plan, updated, outcome, kv, scheduler, async_mode) -> dict[str, Any]:
    record: dict[str, Any] = {
        "step": tick,
        "arrived": arrived,
        "idle": plan is None and updated is None,
        "scheduled": [[r.request_id, n] for r, n in plan.scheduled] if plan else [],
        "new": _ids(plan.new) if plan else [],
        "resumed": _ids(plan.resumed) if plan else [],
        "preempted": _ids(plan.preempted) if plan else [],
        "num_scheduled_tokens": plan.num_scheduled_tokens if plan else 0,
        "free_blocks_after_schedule": plan.free_blocks_after_schedule if plan else kv.num_free_blocks,
        "num_running": plan.num_running if plan else scheduler.num_running,
        "num_waiting": plan.num_waiting if plan else scheduler.num_waiting,
        "emitted": _ids(outcome.emitted) if outcome else [],
        "finished": _ids(outcome.finished) if outcome else [],
    }
    if async_mode:
        record["update_of_step"] = updated.step if updated is not None else None
    record["free_blocks_after_update"] = kv.num_free_blocks
    return record


def _spec_record(plan, outcome, verifying) -> dict[str, Any]:
    """The oracle's speculative fields: drafts scheduled per request, padded admissions, accepted drafts."""
    drafts = {id(r): d for r, d in zip(plan.sampling, plan.spec_drafts) if d} if plan else {}
    return {
        "spec": [[r.request_id, drafts[id(r)]] for r, _ in plan.scheduled if id(r) in drafts] if plan else [],
        "padded": _ids(plan.padded) if plan else [],
        "accepted": [[r.request_id, r.num_accepted_tokens - before] for r, before in verifying]
        if outcome is not None else [],
    }


def _trace(scenario, cfg, kv, steps, requests, specs, async_mode, delivered_first, delivered_finish,
           admissions) -> dict[str, Any]:
    busy = [s for s in steps if s["num_scheduled_tokens"] > 0]
    per_request: dict[str, Any] = {}
    # The goldens carry the prefix-cache and priority fields only for scenarios that use them.
    extended = scenario["config"].get("policy") == "priority" or any(
        "prefix_group" in r or "priority" in r for r in specs)
    for r, spec in zip(requests, specs):
        entry = {
            "arrival_step": spec["arrival_step"],
            "prompt_len": r.prompt_tokens,
            "output_len": r.max_output_tokens,
            "first_scheduled_step": r.first_scheduled_step,
            "first_token_step": r.first_token_step,
            "finish_step": r.finish_step,
            "num_preemptions": r.num_preemptions,
            "preempted_at_steps": r.preempted_at_steps,
            "resumed_at_steps": r.resumed_at_steps,
            "num_output_tokens": r.num_output_tokens,
            "finish_reason": r.reason,
            "total_scheduled_tokens": r.num_scheduled_tokens_total,
        }
        if async_mode:
            entry["first_token_delivered_step"] = delivered_first.get(r.request_id)
            entry["finish_delivered_step"] = delivered_finish.get(r.request_id)
        if extended:
            entry.update(priority=spec.get("priority", 0), prefix_group=spec.get("prefix_group"),
                         prefix_len=spec.get("prefix_len", 0), cached_tokens_at_admission=admissions[r.request_id],
                         num_cached_tokens=admissions[r.request_id][0][1] if admissions[r.request_id] else 0)
        per_request[r.request_id] = entry
    config = dict(scenario["config"])
    config.update(
        usable_kv_blocks=kv.num_usable_blocks,
        max_num_scheduled_tokens=cfg.max_num_batched_tokens,
        long_prefill_token_threshold_adaptive=False,
        watermark=cfg.watermark,
        watermark_blocks=kv.watermark_blocks,
        scheduler_reserve_full_isl=cfg.scheduler_reserve_full_isl,
        async_scheduling=async_mode,
        num_speculative_tokens=scenario["speculative"]["num_speculative_tokens"] if "speculative" in scenario else 0,
        num_lookahead_tokens=kv_lookahead(scenario),
    )
    return {
        "format_version": 1,
        "scenario": scenario.get("name", ""),
        "description": scenario.get("description", ""),
        "generator": {"simulator": "llmsim", "scheduler_class": "llmsim.engine.schedulers.vllm_v1.VLLMV1Scheduler",
                      "engine_loop": "async" if async_mode else "sync", "vllm_version": cfg.vllm_version},
        "config": config,
        "summary": {
            "num_requests": len(requests),
            "num_steps": len(steps),
            "num_busy_steps": len(busy),
            "num_schedule_calls": sum(1 for s in steps if not s["idle"]),
            "last_step": len(steps) - 1,
            "total_preemptions": sum(r.num_preemptions for r in requests),
            "num_requests_preempted": sum(1 for r in requests if r.num_preemptions),
            "max_preemptions_of_one_request": max((r.num_preemptions for r in requests), default=0),
            "total_scheduled_tokens": sum(r.num_scheduled_tokens_total for r in requests),
            "total_prompt_tokens": sum(r.prompt_tokens for r in requests),
            "total_output_tokens": sum(r.num_output_tokens for r in requests),
            "min_free_blocks_after_schedule": min((s["free_blocks_after_schedule"] for s in busy), default=kv.num_usable_blocks),
            "max_running": max((s["num_running"] for s in steps), default=0),
            **(_cache_summary(admissions) if extended else {}),
        },
        "steps": steps,
        "requests": per_request,
    }


def kv_lookahead(scenario: dict[str, Any]) -> int:
    spec = scenario.get("speculative")
    if spec is None:
        return 0
    return Speculator(SpeculativeConfig(method=SPEC_METHODS[spec["method"]],
                                        num_speculative_tokens=spec["num_speculative_tokens"])).lookahead


def _cache_summary(admissions: dict[str, list[list[int]]]) -> dict[str, int]:
    firsts = [a[0][1] for a in admissions.values() if a]
    resumes = [tokens for a in admissions.values() for _, tokens in a[1:]]
    return {
        "num_requests_with_prefix_hit": sum(1 for t in firsts if t > 0),
        "total_cached_tokens_first_admission": sum(firsts),
        "num_resume_admissions": len(resumes),
        "num_resume_admissions_with_hit": sum(1 for t in resumes if t > 0),
        "total_cached_tokens_on_resume": sum(resumes),
    }
