"""The fast mode (engine.mode: fast) makes exactly the decisions of the per-step reference.

Fast mode is the aggregate engine (llmsim.engine.aggregate) where it applies and the event-skipping loop
(llmsim.engine.fastpath) elsewhere; the scenarios cover both, and every batching policy with its own
decode-run rules (llmsim.engine.decode_runs) under memory pressure, sync and async, with priority and
sorting queue orders, aging, swap and no preemption, queue timeouts and queue caps, behind round-robin and
behind state-reading routers (which read replicas in the middle of decode runs). Each runs in both modes;
per-request results must be identical (times equal to 1e-9 relative), and so must the per-step table, the
per-replica table, the heartbeat's time series and the summary's step statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmsim.config import load_config
from llmsim.engine.schedulers import SCHEDULERS
from llmsim.engine_modes import aggregate_blockers
from llmsim.simulation import simulate

SCENARIOS = {
    "light_load": ["workload.num_requests=300", "workload.rate=0.8"],
    "bursts_default": ["workload.num_requests=600"],
    "bursts_sync": ["workload.num_requests=600", "scheduler.async_scheduling=false"],
    "memory_pressure": ["workload.num_requests=400", "workload.rate=4", "scheduler.num_gpu_blocks=900"],
    "memory_pressure_sync": ["workload.num_requests=400", "workload.rate=4", "scheduler.num_gpu_blocks=900",
                             "scheduler.async_scheduling=false"],
    "chunked_long_prompts": ["workload.num_requests=300", "scheduler.max_num_batched_tokens=512",
                             "scheduler.long_prefill_token_threshold=256"],
    "no_chunked_prefill": ["workload.num_requests=300", "scheduler.enable_chunked_prefill=false",
                           "scheduler.max_num_batched_tokens=4096"],
    "max_num_seqs_cap": ["workload.num_requests=300", "workload.rate=3", "scheduler.max_num_seqs=16"],
    "several_replicas": ["workload.num_requests=800", "workload.rate=6", "cluster.replicas=3"],
    "sampled_step_table": ["workload.num_requests=400", "metrics.step_sample_every=5"],
    "poisson_tp2_llama13b": ["workload.num_requests=300", "workload.preset=poisson", "hardware.model=Llama-2-13B",
                             "hardware.tp=2"],
    "pipeline_parallel": ["workload.num_requests=200", "hardware.pp=2"],
    "policy_sarathi": ["workload.num_requests=200", "scheduler.policy=sarathi"],
    "policy_vllm_v0_swap": ["workload.num_requests=200", "scheduler.policy=vllm-v0", "scheduler.preemption=swap",
                            "scheduler.num_gpu_blocks=900"],
    "random_router_queue_cap": ["workload.num_requests=600", "workload.rate=8", "cluster.replicas=3",
                                "cluster.router=random", "scheduler.max_waiting_requests=4",
                                "scheduler.num_gpu_blocks=1500"],
    "eager_sync_no_server": ["workload.num_requests=300", "engine.cuda_graphs=none", "scheduler.async_scheduling=false",
                             "server.enabled=false"],
    "saturated_two_servers_small_graphs": ["workload.num_requests=600", "workload.rate=30", "cluster.replicas=2",
                                           "server.processes=2", "engine.cudagraph_capture_sizes=[1,2,4,8]"],
    "least_kv_router": ["workload.num_requests=600", "workload.rate=8", "cluster.replicas=4",
                        "cluster.router=least-kv"],
    "least_outstanding_sync_pressure": ["workload.num_requests=500", "workload.rate=8", "cluster.replicas=3",
                                        "cluster.router=least-outstanding", "scheduler.async_scheduling=false",
                                        "scheduler.num_gpu_blocks=900"],
    "shortest_queue_time_queue_cap": ["workload.num_requests=500", "workload.rate=10", "cluster.replicas=3",
                                      "cluster.router=shortest-queue-time", "scheduler.max_waiting_requests=4",
                                      "scheduler.num_gpu_blocks=1500"],
    "power_of_two_chunked": ["workload.num_requests=400", "workload.rate=8", "cluster.replicas=4",
                             "cluster.router=power-of-two", "scheduler.max_num_batched_tokens=512",
                             "scheduler.long_prefill_token_threshold=256"],
    "heavy_pressure_small_budget": ["workload.num_requests=300", "workload.rate=6", "scheduler.num_gpu_blocks=400",
                                    "scheduler.max_num_batched_tokens=256", "scheduler.watermark=0.01"],
    "queue_timeouts_pressure": ["workload.num_requests=300", "workload.rate=6", "scheduler.num_gpu_blocks=900",
                                "scheduler.max_queue_time_s=2"],
    "shortest_first_aging": ["workload.num_requests=300", "workload.rate=6", "scheduler.num_gpu_blocks=900",
                             "scheduler.queue=shortest-first", "scheduler.starvation_guard_s=3"],
    "sarathi_aging_pressure_sync": ["workload.num_requests=300", "workload.rate=8", "scheduler.policy=sarathi",
                                    "scheduler.num_gpu_blocks=700", "scheduler.starvation_guard_s=0.3",
                                    "scheduler.async_scheduling=false"],
    "vllm_v1_swap_sync": ["workload.num_requests=300", "workload.rate=6", "scheduler.num_gpu_blocks=700",
                          "scheduler.preemption=swap", "scheduler.async_scheduling=false"],
}
# Every policy on its own: default load, then memory pressure with the synchronous loop (long decode runs
# with someone waiting), then the policy's own knobs where it has them. The last two per policy run in the slow
# suite (CI runs both): the quick suite keeps each policy's default and the random-workload properties below.
SLOW_SCENARIOS: set[str] = set()
for _policy in SCHEDULERS:
    _name = _policy.replace("-", "_")
    SCENARIOS[f"policy_{_name}"] = ["workload.num_requests=200", f"scheduler.policy={_policy}", "workload.rate=3"]
    SCENARIOS[f"policy_{_name}_pressure_sync"] = [
        "workload.num_requests=250", f"scheduler.policy={_policy}", "workload.rate=5", "scheduler.num_gpu_blocks=700",
        "scheduler.async_scheduling=false", "cluster.replicas=2", "cluster.router=random"]
    SCENARIOS[f"policy_{_name}_timeouts_longest_first"] = [
        "workload.num_requests=250", f"scheduler.policy={_policy}", "workload.rate=6", "scheduler.num_gpu_blocks=800",
        "scheduler.max_queue_time_s=3", "scheduler.queue=longest-first"]
    SLOW_SCENARIOS |= {f"policy_{_name}_pressure_sync", f"policy_{_name}_timeouts_longest_first"}
SCENARIOS["policy_tgi_eager_prefills"] = ["workload.num_requests=250", "scheduler.policy=tgi", "workload.rate=5",
                                         "scheduler.waiting_served_ratio=0.05", "scheduler.max_waiting_tokens=5"]
SCENARIOS["policy_sglang_pressure_no_preemption"] = ["workload.num_requests=250", "scheduler.policy=sglang",
                                                    "workload.rate=5", "scheduler.num_gpu_blocks=700",
                                                    "scheduler.preemption=none"]
SCENARIOS["policy_vllm_v0_swap_sync"] = SCENARIOS["policy_vllm_v0_swap"] + ["scheduler.async_scheduling=false"]
# TensorRT-LLM's max-utilization is vLLM V1 without the full-prompt check: the aggregate engine runs it, reading
# that switch from the policy's class; under memory pressure the check decides many admissions.
SCENARIOS["trtllm_max_utilization_memory_pressure"] = SCENARIOS["memory_pressure"] + [
    "scheduler.policy=trtllm-max-utilization"]
SCENARIOS["trtllm_max_utilization_memory_pressure_sync"] = SCENARIOS["memory_pressure_sync"] + [
    "scheduler.policy=trtllm-max-utilization"]
# TensorRT-LLM's guaranteed-no-evict reserves each request's whole length at admission (never preempts).
SCENARIOS["trtllm_no_evict_memory_pressure"] = SCENARIOS["memory_pressure"] + [
    "scheduler.policy=trtllm-guaranteed-no-evict"]
SCENARIOS["trtllm_no_evict_memory_pressure_sync_whole_prompts"] = SCENARIOS["memory_pressure_sync"] + [
    "scheduler.policy=trtllm-guaranteed-no-evict", "scheduler.enable_chunked_prefill=false",
    "scheduler.max_num_batched_tokens=4096"]
# Orca: no token budget, whole lengths reserved, whole prompts in one iteration.
SCENARIOS["orca_memory_pressure"] = SCENARIOS["memory_pressure"] + ["scheduler.policy=orca"]
# vLLM V0 on the aggregate engine (its own admission pass; prefill-only steps leave the pool's clock): memory pressure
# with preemptions, async and sync, behind a state-reading router, and prefix caching with resumes that hit.
SCENARIOS["vllm_v0_memory_pressure"] = SCENARIOS["memory_pressure"] + ["scheduler.policy=vllm-v0"]
SCENARIOS["vllm_v0_memory_pressure_sync_least_kv"] = SCENARIOS["memory_pressure_sync"] + [
    "scheduler.policy=vllm-v0", "cluster.replicas=3", "cluster.router=least-kv", "workload.rate=10"]
SCENARIOS["vllm_v0_prefix_caching_pressure_watermark"] = SCENARIOS["memory_pressure"] + [
    "scheduler.policy=vllm-v0", "scheduler.enable_prefix_caching=true", "scheduler.watermark=0.05",
    "scheduler.max_num_seqs=24"]
# TGI on the aggregate engine (its own admission methods; its refused head stays refused until an arrival, a finish or
# max_waiting_tokens decode steps): reservations under memory pressure, sync behind a state-reading router, eager and
# patient prefills, and prefix caching.
SCENARIOS["tgi_memory_pressure_patient"] = SCENARIOS["memory_pressure"] + [
    "scheduler.policy=tgi", "scheduler.waiting_served_ratio=1.0", "scheduler.max_waiting_tokens=50"]
SCENARIOS["tgi_memory_pressure_sync_least_kv"] = SCENARIOS["memory_pressure_sync"] + [
    "scheduler.policy=tgi", "cluster.replicas=3", "cluster.router=least-kv", "workload.rate=10",
    "scheduler.max_waiting_tokens=5"]
SCENARIOS["tgi_prefix_caching_pressure"] = SCENARIOS["memory_pressure"] + [
    "scheduler.policy=tgi", "scheduler.enable_prefix_caching=true"]
# Static batching: Orca's rules, joining only an empty engine; small batches under memory pressure, sync and async.
SCENARIOS["static_small_batches_pressure"] = SCENARIOS["memory_pressure"] + ["scheduler.policy=static",
                                                                            "scheduler.max_num_seqs=8"]
SCENARIOS["static_small_batches_pressure_sync_least_kv"] = SCENARIOS["memory_pressure_sync"] + [
    "scheduler.policy=static", "scheduler.max_num_seqs=8", "cluster.replicas=3", "cluster.router=least-kv"]
SCENARIOS["orca_memory_pressure_sync_small_budget"] = SCENARIOS["memory_pressure_sync"] + [
    "scheduler.policy=orca", "scheduler.max_num_batched_tokens=256", "scheduler.max_num_seqs=32"]
# Sarathi is vLLM V1 with every switch flipped: settings vLLM honours and Sarathi ignores (a watermark, a per-request
# cap, chunking off) under memory pressure, so that each switch decides admissions.
SCENARIOS["sarathi_ignores_vllm_knobs_pressure"] = SCENARIOS["memory_pressure"] + [
    "scheduler.policy=sarathi", "scheduler.watermark=0.05", "scheduler.long_prefill_token_threshold=128",
    "scheduler.max_num_batched_tokens=512"]
SCENARIOS["sarathi_ignores_vllm_knobs_pressure_sync"] = SCENARIOS["memory_pressure_sync"] + [
    "scheduler.policy=sarathi", "scheduler.watermark=0.05", "scheduler.enable_chunked_prefill=false",
    "scheduler.max_num_batched_tokens=4096"]
# Decode runs behind state-reading routers: what the router reads in the middle of a run is computed from the
# run's plan (llmsim.engine.decode_run_state). Each policy behind a different router, with memory pressure,
# prefix caching, queue timeouts (aborts deferred to the run's end) and a queue cap mixed in, sync and async.
_ROUTED = ["workload.num_requests=240", "workload.rate=7", "cluster.replicas=3"]
SCENARIOS.update({
    "routed_sarathi_least_kv_pressure": _ROUTED + ["scheduler.policy=sarathi", "cluster.router=least-kv",
                                                   "scheduler.num_gpu_blocks=700"],
    "routed_vllm_v0_least_outstanding_sync_pressure": _ROUTED + [
        "scheduler.policy=vllm-v0", "cluster.router=least-outstanding", "scheduler.async_scheduling=false",
        "scheduler.num_gpu_blocks=700"],
    "routed_vllm_v0_swap_power_of_two_pressure": _ROUTED + [
        "scheduler.policy=vllm-v0", "cluster.router=power-of-two", "scheduler.preemption=swap",
        "scheduler.num_gpu_blocks=700"],
    "routed_orca_shortest_queue_time_prefix_caching": _ROUTED + [
        "scheduler.policy=orca", "cluster.router=shortest-queue-time", "scheduler.enable_prefix_caching=true"],
    "routed_static_power_of_two_sync": _ROUTED + ["scheduler.policy=static", "cluster.router=power-of-two",
                                                  "scheduler.async_scheduling=false"],
    "routed_sglang_session_affinity_prefix_pressure": _ROUTED + [
        "scheduler.policy=sglang", "cluster.router=session-affinity", "scheduler.enable_prefix_caching=true",
        "scheduler.num_gpu_blocks=700"],
    "routed_tgi_least_outstanding_timeouts": [  # many queue timeouts while other replicas' runs go on
        "workload.num_requests=240", "workload.rate=12", "cluster.replicas=3", "scheduler.policy=tgi",
        "cluster.router=least-outstanding", "scheduler.num_gpu_blocks=500", "scheduler.max_queue_time_s=1"],
    "routed_trtllm_max_utilization_shortest_queue_time_pressure_sync": _ROUTED + [
        "scheduler.policy=trtllm-max-utilization", "cluster.router=shortest-queue-time",
        "scheduler.num_gpu_blocks=700", "scheduler.async_scheduling=false"],
    "routed_trtllm_no_evict_least_outstanding_queue_cap": _ROUTED + [
        "scheduler.policy=trtllm-guaranteed-no-evict", "cluster.router=least-outstanding",
        "scheduler.max_waiting_requests=4", "scheduler.num_gpu_blocks=900"],
    "routed_vllm_v1_prefix_caching_least_kv_timeouts": _ROUTED + [
        "cluster.router=least-kv", "scheduler.enable_prefix_caching=true", "scheduler.num_gpu_blocks=700",
        "scheduler.max_queue_time_s=2"],
})


def _run(mode: str, overrides: list[str]):
    return simulate(load_config(None, [f"engine.mode={mode}", *overrides]))


def _assert_frames_equal(a, b, what: str) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b), what
    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype.kind == "f":
            assert np.allclose(x, y, rtol=1e-9, atol=0.0, equal_nan=True), f"{what}.{col}"
        else:
            assert (x == y).all(), f"{what}.{col}"


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_SCENARIOS else name
                                  for name in sorted(SCENARIOS)])
def test_fast_and_reference_modes_agree(name: str) -> None:
    reference = _run("reference", SCENARIOS[name])
    fast = _run("fast", SCENARIOS[name])
    _assert_frames_equal(reference.requests, fast.requests, "requests")
    _assert_frames_equal(reference.steps, fast.steps, "steps")
    _assert_frames_equal(reference.tables["replicas"], fast.tables["replicas"], "replicas")
    # The heartbeat's samples read what routers read: inside a skipped decode run too, they see the state the
    # per-step loop shows at that instant.
    _assert_frames_equal(reference.tables["replica_timeseries"], fast.tables["replica_timeseries"], "timeseries")
    for key in ("num_steps", "max_num_waiting", "max_batch_size", "preemptions", "completed", "rejected"):
        assert reference.summary[key] == fast.summary[key], key
    for key in ("busy_time_s", "peak_kv_usage", "mean_kv_usage_busy", "duration_s"):
        assert fast.summary[key] == pytest.approx(reference.summary[key], rel=1e-9), key
    for metric in ("ttft_s", "tpot_s", "itl_s", "e2el_s"):
        for stat, value in reference.summary[metric].items():
            if value is not None:
                assert fast.summary[metric][stat] == pytest.approx(value, rel=1e-9), f"{metric}.{stat}"


def _run_counting_general_steps(overrides: list[str]):
    """A fast run, and how many steps the aggregate engine built request by request (its ``_schedule`` calls)."""
    from llmsim.engine import aggregate

    calls = {"general": 0}
    original = aggregate.AggregateReplica._schedule

    def counting(self):
        calls["general"] += 1
        return original(self)

    aggregate.AggregateReplica._schedule = counting
    try:
        result = _run("fast", overrides)
    finally:
        aggregate.AggregateReplica._schedule = original
    return result, calls["general"]


def test_aggregate_engine_actually_aggregates() -> None:
    """Guard against an equivalence suite that passes because the aggregate engine never engages: most steps
    of a 16-replica run must be quiet steps (the pool alone), not plans built request by request."""
    result, general = _run_counting_general_steps(["workload.num_requests=3000", "workload.rate=40",
                                                   "cluster.replicas=16"])
    calls = {"general": general}
    assert result.summary["engine_mode"] == "fast"
    assert 0 < calls["general"] < result.summary["num_steps"] / 3


def _count_runs(overrides: list[str], workload=None):
    """Run in fast mode counting committed decode runs and the engine ticks they covered."""
    from llmsim.engine import replica as replica_module

    calls = {"runs": 0, "ticks": 0}
    original = replica_module.commit_run

    def counting(replica, run, upto):
        calls["runs"] += 1
        calls["ticks"] += upto - run.committed
        return original(replica, run, upto)

    replica_module.commit_run = counting
    try:
        result = simulate(load_config(None, ["engine.mode=fast", *overrides]), workload=workload)
    finally:
        replica_module.commit_run = original
    return result, calls


def test_a_policy_that_is_vllm_v1_with_a_switch_runs_on_the_aggregate_engine() -> None:
    """trtllm-max-utilization (and sarathi, trtllm-guaranteed-no-evict, orca) run in the aggregate engine and decide
    differently from vLLM V1 there
    (so the switches are read, not ignored; the scenarios above hold them to the reference); a subclass that
    overrides a method states a rule the aggregate engine does not, and is kept off it."""
    from llmsim.engine.aggregate.policies import states_rules_of
    from llmsim.engine.schedulers.vllm_v1 import VLLMV1Scheduler

    runs = {policy: _run("fast", SCENARIOS["memory_pressure"] + [f"scheduler.policy={policy}"])
            for policy in ("vllm-v1", "trtllm-max-utilization")}
    assert {r.summary["engine_mode"] for r in runs.values()} == {"fast"}
    assert runs["vllm-v1"].summary["preemptions"] != runs["trtllm-max-utilization"].summary["preemptions"]

    class OnlyASwitch(VLLMV1Scheduler):
        name = "switch"
        full_prompt_check = False

    class ANewRule(VLLMV1Scheduler):
        name = "rule"

        def _schedule_waiting(self, plan, budget, threshold):  # noqa: D401 - a stand-in for any changed rule
            return super()._schedule_waiting(plan, budget, threshold)

    assert states_rules_of(OnlyASwitch) and not states_rules_of(ANewRule)
    assert [name for name, cls in SCHEDULERS.items() if states_rules_of(cls)] == [
        "vllm-v1", "orca", "sarathi", "static", "trtllm-guaranteed-no-evict", "trtllm-max-utilization"]


def test_static_batching_runs_on_the_aggregate_engine_and_no_one_joins_a_running_batch() -> None:
    """Static batching is Orca's rules plus one switch (``joins_running_batch``): the aggregate engine reads it, so a
    request waits for the whole batch to finish there as in the reference (the scenarios above compare every table);
    ignoring the switch would be Orca, which admits into a running batch."""
    overrides = SCENARIOS["memory_pressure"] + ["scheduler.max_num_seqs=8"]
    static, orca = (_run("fast", overrides + [f"scheduler.policy={policy}"]) for policy in ("static", "orca"))
    assert static.summary["engine_mode"] == orca.summary["engine_mode"] == "fast"
    # A step that prefills decodes nobody (the batch it starts is all there is); Orca mixes them.
    mixed = {name: int(((r.steps["prefill_tokens"] > 0) & (r.steps["decode_tokens"] > 0)).sum())
             for name, r in (("static", static), ("orca", orca))}
    assert mixed["static"] == 0 < mixed["orca"]
    assert (static.steps["prefill_tokens"] > 0).sum() > 10
    assert not np.allclose(static.requests["first_scheduled_s"], orca.requests["first_scheduled_s"], equal_nan=True)


def test_vllm_v0_runs_on_the_aggregate_engine_which_asks_its_class_who_to_admit(monkeypatch) -> None:
    """The aggregate engine runs vLLM V0's step and calls the policy class's own admission pass: a subclass whose pass
    admits one request per prefill step runs there too, decides differently from V0, and still matches the reference
    exactly. A subclass that overrides any other method keeps the event-skipping loop."""
    from llmsim.engine.aggregate.policies import prefill_first_kind, serves_policy
    from llmsim.engine.schedulers.vllm_v0 import VLLMV0Scheduler

    class OneAtATimeV0(VLLMV0Scheduler):
        name = "v0-one-at-a-time"

        def _schedule_prefills(self, plan) -> None:
            waiting = self.waiting
            if waiting and len(self.running) < self.config.max_num_seqs:
                request = waiting[0]
                hit = self._prefix_hit(request)
                num_new = self._tokens_to_feed(request) - hit * self.kv_cache.block_size
                if num_new <= self.prefill_budget and self._allocate(request, num_new, plan, self._watermark(), hit):
                    self._admit(waiting, plan, num_new)

    class OwnStep(VLLMV0Scheduler):
        name = "v0-own-step"

        def schedule(self):
            return super().schedule()

    assert serves_policy(VLLMV0Scheduler) and prefill_first_kind(OneAtATimeV0) is VLLMV0Scheduler and not serves_policy(OwnStep)
    monkeypatch.setitem(SCHEDULERS, "v0-one-at-a-time", OneAtATimeV0)
    monkeypatch.setitem(SCHEDULERS, "v0-own-step", OwnStep)
    overrides = SCENARIOS["memory_pressure"] + ["workload.rate=6"]
    v0 = _run("fast", overrides + ["scheduler.policy=vllm-v0"])
    reference, fast = (_run(mode, overrides + ["scheduler.policy=v0-one-at-a-time"]) for mode in ("reference", "fast"))
    assert v0.summary["engine_mode"] == fast.summary["engine_mode"] == "fast"
    _assert_frames_equal(reference.requests, fast.requests, "requests")
    _assert_frames_equal(reference.steps, fast.steps, "steps")
    assert (fast.steps["prefill_tokens"] > 0).sum() > (v0.steps["prefill_tokens"] > 0).sum()
    # V0's steps prefill alone: no step both prefills and decodes.
    assert not ((v0.steps["prefill_tokens"] > 0) & (v0.steps["decode_tokens"] > 0)).any()
    own = _run("fast", overrides + ["scheduler.policy=v0-own-step", "workload.num_requests=50"])
    assert own.summary["engine_mode"] == "fast (event-skipping loop: policy v0-own-step)"


def test_tgi_runs_on_the_aggregate_engine_which_asks_its_class_who_to_admit_and_for_how_long(monkeypatch) -> None:
    """TGI's admission methods are called from its class: a subclass that prefills as soon as anyone fits runs on the
    aggregate engine too, decides differently, and matches the reference exactly; the quiet steps with requests
    waiting end where TGI's own decode_run_rules says its refusal may end (an arrival, a finish, the step count)."""
    from llmsim.engine.aggregate.policies import prefill_first_kind
    from llmsim.engine.schedulers.tgi import TGIScheduler

    class EagerTGI(TGIScheduler):
        name = "tgi-eager"

        def _min_prefill_size(self) -> int:
            return 1

    assert prefill_first_kind(EagerTGI) is TGIScheduler
    monkeypatch.setitem(SCHEDULERS, "tgi-eager", EagerTGI)
    overrides = SCENARIOS["memory_pressure"] + ["workload.rate=6", "scheduler.waiting_served_ratio=1.0"]
    tgi, general = _run_counting_general_steps(overrides + ["scheduler.policy=tgi"])
    reference, fast = (_run(mode, overrides + ["scheduler.policy=tgi-eager"]) for mode in ("reference", "fast"))
    assert tgi.summary["engine_mode"] == fast.summary["engine_mode"] == "fast"
    _assert_frames_equal(reference.requests, fast.requests, "requests")
    _assert_frames_equal(reference.steps, fast.steps, "steps")
    assert (fast.steps["prefill_tokens"] > 0).sum() > (tgi.steps["prefill_tokens"] > 0).sum()
    # TGI waits for enough queued requests through quiet steps: most steps are not built request by request.
    assert (tgi.steps["num_waiting"] > 0).sum() > tgi.summary["num_steps"] / 10
    assert general < tgi.summary["num_steps"] / 2, (general, tgi.summary["num_steps"])


def test_decodes_first_with_a_per_request_cap_keeps_the_event_skipping_loop(monkeypatch) -> None:
    """Sarathi's decodes-first order is moot in the aggregate engine only because it has no per-request cap (one
    prefill at a time, last); a policy that is vLLM V1 with decodes first and the cap has several prefills going
    on, a running order the aggregate engine does not restate: it keeps the event-skipping loop, exactly."""
    from llmsim.engine.aggregate.policies import states_rules_of
    from llmsim.engine.schedulers.vllm_v1 import VLLMV1Scheduler

    class DecodesFirstV1(VLLMV1Scheduler):
        name = "v1-decodes-first"
        decodes_first = True

    monkeypatch.setitem(SCHEDULERS, "v1-decodes-first", DecodesFirstV1)
    assert not states_rules_of(DecodesFirstV1)
    overrides = SCENARIOS["chunked_long_prompts"] + ["scheduler.policy=v1-decodes-first", "scheduler.num_gpu_blocks=900",
                                                     "workload.rate=4"]
    reference, fast = _run("reference", overrides), _run("fast", overrides)
    assert fast.summary["engine_mode"].startswith("fast (event-skipping loop: policy v1-decodes-first")
    _assert_frames_equal(reference.requests, fast.requests, "requests")
    _assert_frames_equal(reference.steps, fast.steps, "steps")
    plain = _run("fast", [o for o in overrides if "policy" not in o])  # the order does change decisions here
    assert not np.allclose(plain.requests["first_scheduled_s"], fast.requests["first_scheduled_s"], equal_nan=True)


def test_event_skipping_loop_engages_where_the_aggregate_engine_does_not() -> None:
    """Configurations outside the aggregate engine (here pipeline parallelism) still skip decode runs."""
    result, calls = _count_runs(SCENARIOS["pipeline_parallel"])
    assert calls["runs"] > 0
    assert result.summary["num_steps"] > 10 * calls["runs"] / 2


@pytest.mark.parametrize("policy", sorted(SCHEDULERS))
def test_every_policy_skips_most_decode_steps(policy: str) -> None:
    """Guard against an equivalence suite that passes because a policy never skips: with FCFS, timeouts and
    the sync loop under memory pressure, most of each policy's steps are covered by decode runs."""
    result, calls = _count_runs(["workload.num_requests=300", "workload.rate=4", f"scheduler.policy={policy}",
                                 "scheduler.num_gpu_blocks=900", "scheduler.max_queue_time_s=5",
                                 "scheduler.async_scheduling=false"])
    assert result.summary["engine_mode"].startswith("fast"), result.summary["engine_mode"]
    assert calls["ticks"] > result.summary["num_steps"] / 2, (calls, result.summary["num_steps"])


STATE_READING_ROUTERS = ["least-kv", "least-outstanding", "power-of-two", "session-affinity", "shortest-queue-time"]


@pytest.mark.parametrize("router", STATE_READING_ROUTERS)
def test_decode_runs_engage_behind_state_reading_routers(router: str) -> None:
    """Guard against router scenarios that pass because nothing is skipped, or because every read cuts the run:
    behind a router that reads every replica at every arrival, decode runs still cover most steps, and the
    router reads replicas in the middle of runs (their state computed from the plan, llmsim.engine.decode_run_state)."""
    from llmsim.engine import decode_run_state

    built = {"mid_run_views": 0}
    original = decode_run_state.MidRun.__init__

    def counting(self, run, kv):
        built["mid_run_views"] += 1
        original(self, run, kv)

    decode_run_state.MidRun.__init__ = counting
    try:
        result, calls = _count_runs(["workload.num_requests=400", "workload.rate=8", "cluster.replicas=4",
                                     f"cluster.router={router}", "scheduler.policy=sglang"])
    finally:
        decode_run_state.MidRun.__init__ = original
    assert result.summary["engine_mode"] == "fast (event-skipping loop: policy sglang)"
    assert calls["ticks"] > result.summary["num_steps"] / 2, (calls, result.summary["num_steps"])
    assert built["mid_run_views"] > calls["runs"] / 4, (built, calls)


@pytest.mark.parametrize("policy", ["sarathi", "vllm-v1", "tgi"])
def test_session_affinity_decode_runs_agree_on_conversations(policy: str) -> None:
    """Session-affinity over conversations with prefix caching: each new conversation goes to the least loaded
    replica as the per-step loop shows it mid-run, later turns hit the prefix cached there."""
    workload = _shared_prefix_workload(5, n=240)
    knobs = {"policy": policy, "enable_prefix_caching": True, "num_gpu_blocks": 200, "block_size": 16}
    reference, fast = _prefix_cached_runs_agree(knobs, workload, {"replicas": 3, "router": "session-affinity"})
    _assert_frames_equal(reference.tables["replica_timeseries"], fast.tables["replica_timeseries"], "timeseries")


def _prefix_cached_runs_agree(knobs: dict, workload, cluster: dict):
    """Run ``workload`` in both modes; the event-skipping loop must engage, hit the cache and agree per request and
    per step. Returns (reference, fast)."""
    reference, fast = (simulate(SimConfig.model_validate({"scheduler": knobs, "engine": {"mode": mode},
                                                          "cluster": cluster}), workload=workload)
                       for mode in ("reference", "fast"))
    assert fast.summary["engine_mode"].startswith("fast (event-skipping loop:"), fast.summary["engine_mode"]
    assert reference.requests["cached_tokens"].sum() > 0
    _assert_frames_equal(reference.requests, fast.requests, "requests")
    _assert_frames_equal(reference.steps, fast.steps, "steps")
    return reference, fast


def _shared_prefix_workload(seed: int, n: int = 300):
    """Conversations (a turn may arrive while the previous one still decodes) and Mooncake-style hashes."""
    rng = np.random.default_rng(seed)
    rows = [(float(g), int(p), int(o)) for g, p, o in zip(rng.exponential(0.15, n), rng.integers(20, 600, n),
                                                             rng.integers(5, 200, n))]
    workload = make_workload(rows)
    workload.df["session_id"] = rng.integers(0, 30, n)
    workload.df["prefix_hashes"] = pd.Series([tuple(rng.integers(0, 3, 2).tolist()) if rng.random() < 0.5 else ()
                                              for _ in range(n)], dtype=object)
    return workload


@pytest.mark.parametrize("policy", sorted(SCHEDULERS))
@pytest.mark.parametrize("async_scheduling", [False, True])
def test_prefix_caching_decode_runs_agree(policy: str, async_scheduling: bool) -> None:
    """Decode runs replay the block pool (which block a decode takes, which cached content it evicts, which
    blocks it registers) exactly: hits, evictions and preemptions under a small pool stay identical."""
    workload = _shared_prefix_workload(2)
    knobs = {"policy": policy, "enable_prefix_caching": True, "async_scheduling": async_scheduling,
             "num_gpu_blocks": 150, "block_size": 16}
    reference, fast = _prefix_cached_runs_agree(knobs, workload, {"replicas": 2})
    for key in ("num_steps", "preemptions", "completed", "rejected", "max_num_waiting"):
        assert reference.summary[key] == fast.summary[key], key


def test_prefix_caching_skips_decode_steps() -> None:
    """Over shared prefixes (which keep the aggregate engine off) the event-skipping loop still skips decodes."""
    result, calls = _count_runs(["scheduler.enable_prefix_caching=true"], workload=_shared_prefix_workload(4))
    assert result.summary["engine_mode"] == "fast (event-skipping loop: prefix caching)"
    assert calls["ticks"] > result.summary["num_steps"] / 2, (calls, result.summary["num_steps"])


# -- random scenarios: the fast path must agree with the reference on any workload and knobs ------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from llmsim.cluster.routers import ROUTERS  # noqa: E402
from llmsim.config import SimConfig  # noqa: E402
from tests.engine.test_invariants import engine_settings, make_workload  # noqa: E402


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(st.floats(0.0, 1.5), st.integers(1, 400), st.integers(1, 120)), min_size=1, max_size=40),
    knobs=engine_settings(),
    replicas=st.sampled_from([1, 1, 2]),
)
def test_fast_and_reference_agree_on_random_workloads(rows, knobs, replicas) -> None:
    workload = make_workload(rows)
    results = []
    for mode in ("reference", "fast"):
        config = SimConfig.model_validate({"scheduler": knobs, "engine": {"mode": mode},
                                           "cluster": {"replicas": replicas}})
        results.append(simulate(config, workload=workload))
    reference, fast = results
    _assert_frames_equal(reference.requests, fast.requests, "requests")
    _assert_frames_equal(reference.steps, fast.steps, "steps")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(st.floats(0.0, 1.5), st.integers(1, 400), st.integers(1, 120)), min_size=1, max_size=40),
    knobs=engine_settings(),
    policy=st.sampled_from(sorted(SCHEDULERS)),
    queue=st.sampled_from(["fcfs", "fcfs", "priority", "shortest-first", "longest-first"]),
    preemption=st.sampled_from(["recompute", "recompute", "swap", "none"]),
    guard=st.sampled_from([None, None, 0.5]),
    timeout=st.sampled_from([None, None, 0.3, 2.0]),
    priorities=st.lists(st.integers(0, 3), min_size=50, max_size=50),
    sessions=st.sampled_from([None, 3, 10]),
    caching=st.booleans(),
    replicas_router=st.sampled_from([(1, "round-robin"), (2, "round-robin"), (2, "random")]
                                    + [(n, router) for router in STATE_READING_ROUTERS for n in (2, 3)]),
)
def test_every_policy_agrees_on_random_workloads(rows, knobs, policy, queue, preemption, guard, timeout, priorities,
                                                 sessions, caching, replicas_router) -> None:
    """Every policy's decode runs against its per-step loop, with sorting queue orders (arrivals may take the
    head), aging, swap/none preemption, queue timeouts (they cut a run) and prefix caching over conversations;
    tiny KV pools and gaps of zero; behind every router (a state-reading one reads replicas mid-run)."""
    workload = make_workload(rows)
    workload.df["priority"] = np.asarray(priorities[: len(rows)], dtype=np.int64)
    if sessions:
        workload.df["session_id"] = np.arange(len(rows), dtype=np.int64) % sessions
    knobs = dict(knobs, policy=policy, queue=queue, preemption=preemption, starvation_guard_s=guard,
                 max_queue_time_s=timeout, enable_prefix_caching=caching)
    replicas, router = replicas_router
    results = []
    for mode in ("reference", "fast"):
        config = SimConfig.model_validate({"scheduler": knobs, "engine": {"mode": mode},
                                           "cluster": {"replicas": replicas, "router": router}})
        results.append(simulate(config, workload=workload))
    reference, fast = results
    _assert_frames_equal(reference.requests, fast.requests, "requests")
    _assert_frames_equal(reference.steps, fast.steps, "steps")
    _assert_frames_equal(reference.tables["replica_timeseries"], fast.tables["replica_timeseries"], "timeseries")
    for key in ("num_steps", "preemptions", "completed", "rejected", "max_num_waiting"):
        assert reference.summary[key] == fast.summary[key], key


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(st.floats(0.0, 1.5), st.integers(1, 400), st.integers(1, 120)), min_size=1, max_size=50),
    knobs=engine_settings(),
    replicas=st.sampled_from([1, 2, 3]),
    router=st.sampled_from(sorted(ROUTERS)),
    queue_cap=st.sampled_from([None, None, 3]),
    caching=st.sampled_from([False, False, True]),
)
def test_aggregate_engine_agrees_on_random_workloads(rows, knobs, replicas, router, queue_cap, caching) -> None:
    """The same across every router (state-reading ones run the replicas in lockstep) and admission control;
    small KV pools make preemption common, a per-request prefill cap leaves several prefills going on at
    once, zero gaps make several arrivals share a routing instant; with prefix caching (no shared prefixes) a
    preemption hands the run to the event-skipping loop."""
    workload = make_workload(rows)
    knobs = dict(knobs, max_waiting_requests=queue_cap, enable_prefix_caching=caching)
    results = []
    for mode in ("reference", "fast"):
        config = SimConfig.model_validate({"scheduler": knobs, "engine": {"mode": mode},
                                           "cluster": {"replicas": replicas, "router": router}})
        results.append(simulate(config, workload=workload))
    assert not aggregate_blockers(results[1].config, workload)
    reference, fast = results
    _assert_frames_equal(reference.requests, fast.requests, "requests")
    _assert_frames_equal(reference.steps, fast.steps, "steps")
    _assert_frames_equal(reference.tables["replicas"], fast.tables["replicas"], "replicas")
    _assert_frames_equal(reference.tables["replica_timeseries"], fast.tables["replica_timeseries"], "timeseries")
    for key in ("num_steps", "preemptions", "completed", "rejected", "max_num_waiting"):
        assert reference.summary[key] == fast.summary[key], key


def test_session_affinity_in_lockstep_keeps_conversations_together() -> None:
    """Session-affinity reads the request (its session) and the replicas' load; the lockstep run shows it both."""
    rng = np.random.default_rng(3)
    rows = [(float(g), int(p), int(o)) for g, p, o in zip(rng.exponential(0.05, 300), rng.integers(20, 400, 300),
                                                             rng.integers(5, 120, 300))]
    workload = make_workload(rows)
    workload.df["session_id"] = rng.integers(0, 40, len(rows))
    results = []
    for mode in ("reference", "fast"):
        config = SimConfig.model_validate({"engine": {"mode": mode},
                                           "cluster": {"replicas": 3, "router": "session-affinity"}})
        results.append(simulate(config, workload=workload))
    reference, fast = results
    assert fast.summary["engine_mode"] == "fast"
    _assert_frames_equal(reference.requests, fast.requests, "requests")
    _assert_frames_equal(reference.steps, fast.steps, "steps")
    _assert_frames_equal(reference.tables["replica_timeseries"], fast.tables["replica_timeseries"], "timeseries")
    assert (fast.requests.groupby(workload.df["session_id"])["replica"].nunique() == 1).all()


def test_compute_bound_decode_attention_agrees(tmp_path) -> None:
    """The quiet loop prices decode attention by its KV reads alone when they outweigh its FLOPs at every context
    (every real GPU); a GPU whose attention FLOP rate is starved takes the other branch, still step for step."""
    import yaml

    from llmsim.hardware.config import HardwareConfig
    from llmsim.hardware.profiles import load_gpu, load_model
    from llmsim.hardware.timing import build_timing_model

    source = Path(__file__).resolve().parents[2] / "hardware_profiles" / "gpus" / "A100-80GB.yaml"
    profile = yaml.safe_load(source.read_text())
    profile["name"], profile["aliases"] = "A100-slow-attention", []
    profile["efficiency"]["attn_prefill_mfu"] = 0.0005
    gpu_file = tmp_path / "A100-slow-attention.yaml"
    gpu_file.write_text(yaml.safe_dump(profile))
    timing = build_timing_model(HardwareConfig(gpu=str(gpu_file), model="Llama-2-7B"), load_gpu(str(gpu_file)),
                                load_model("Llama-2-7B"))
    per_unit, flops_rate, kv_bytes, bytes_rate, _, _ = timing.decode_arith()
    assert kv_bytes / bytes_rate < 2 * per_unit / flops_rate  # the FLOPs side wins: the loop's general branch
    overrides = ["workload.num_requests=300", "workload.rate=3", f"hardware.gpu={gpu_file}"]
    reference, fast = _run("reference", overrides), _run("fast", overrides)
    assert fast.summary["engine_mode"] == "fast"
    _assert_frames_equal(reference.requests, fast.requests, "requests")
    _assert_frames_equal(reference.steps, fast.steps, "steps")


def test_requests_wait_through_quiet_steps() -> None:
    """With max_num_seqs reached and a queue that never empties, the waiting pass stops at the same head step
    after step: those steps run in the quiet loop (the pass's recorded stopping range), not request by request."""
    result, general = _run_counting_general_steps(["workload.num_requests=600", "workload.rate=20",
                                                   "scheduler.max_num_seqs=16", "metrics.step_detail=false"])
    calls = {"general": general}
    assert result.summary["engine_mode"] == "fast" and result.summary["max_num_waiting"] > 100
    assert 0 < calls["general"] < result.summary["num_steps"] / 4
