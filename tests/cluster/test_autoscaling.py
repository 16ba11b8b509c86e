"""Autoscaling: policies' decisions, cold start, draining, GPU-seconds."""

from __future__ import annotations

import math

import pytest

from llmsim.cluster.autoscaler import PredictivePolicy, ReactivePolicy, ScalingObservation, ScheduledPolicy
from llmsim.cluster.config import AutoscalerConfig
from llmsim.hardware.profiles import load_gpu
from tests.cluster.helpers import run, workload


def obs(now=100.0, replicas=2, waiting=0.0, kv=0.0, slo=0.0, rate=10.0, trend=0.0) -> ScalingObservation:
    return ScalingObservation(now, replicas, replicas, waiting, kv, slo, rate, trend, 60.0)


def test_reactive_scales_on_thresholds_and_respects_cooldowns():
    policy = ReactivePolicy(AutoscalerConfig(policy="reactive", scale_up_threshold=4, scale_down_threshold=1,
                                             scale_up_cooldown_s=30, scale_down_cooldown_s=120))
    assert policy.target(obs(now=0, waiting=5)) == 3
    assert policy.target(obs(now=10, waiting=9)) == 2  # cooling down
    assert policy.target(obs(now=30, waiting=9)) == 3
    assert policy.target(obs(now=100, waiting=0)) == 2  # 70 s after the last action < 120 s
    assert policy.target(obs(now=150, waiting=0)) == 1
    assert policy.target(obs(now=400, waiting=2)) == 2  # between thresholds: hold


def test_reactive_reads_the_configured_metric():
    kv = ReactivePolicy(AutoscalerConfig(policy="reactive", metric="kv_usage", scale_up_threshold=0.8,
                                         scale_down_threshold=0.2))
    assert kv.target(obs(kv=0.9, waiting=0)) == 3
    slo = ReactivePolicy(AutoscalerConfig(policy="reactive", metric="slo_violation", scale_up_threshold=0.1,
                                          scale_down_threshold=0.01))
    assert slo.target(obs(slo=0.005, waiting=50)) == 1


def test_scheduled_follows_its_table():
    policy = ScheduledPolicy(AutoscalerConfig(policy="scheduled", schedule=[{"at_s": 100, "replicas": 5},
                                                                             {"at_s": 0, "replicas": 2}]))
    assert [policy.target(obs(now=t)) for t in (0, 99.9, 100, 5000)] == [2, 2, 5, 5]


def test_predictive_extrapolates_one_cold_start_ahead():
    cfg = AutoscalerConfig(policy="predictive", capacity_rps_per_replica=4, headroom=0.25, cold_start_s=60)
    policy = PredictivePolicy(cfg)
    assert policy.target(obs(rate=8, trend=0)) == math.ceil(8 * 1.25 / 4)
    # Rate rising 0.1 req/s per second: forecast at now + cold start is rate + trend × (window/2 + cold start).
    assert policy.forecast_rps(obs(rate=8, trend=0.1)) == pytest.approx(8 + 0.1 * 90)


def test_scale_down_waits_out_the_stabilisation_window():
    cluster = {"replicas": 1, "router": "round-robin",
               "autoscaler": {"policy": "scheduled", "interval_s": 5, "cold_start_s": 0, "max_replicas": 2,
                              "scale_down_cooldown_s": 30,
                              "schedule": [{"at_s": 0, "replicas": 2}, {"at_s": 50, "replicas": 1}]}}
    result = run(cluster, workload([0.25 * i for i in range(480)], prompt=300, output=40))
    events = result.tables["scaling_events"]
    assert list(events["action"]) == ["start", "drain"]
    assert events["time_s"].iloc[1] == pytest.approx(80.0)  # the last target of 2 (t=45) left the 30 s window


def test_autoscaler_config_is_validated():
    with pytest.raises(ValueError):
        AutoscalerConfig(policy="predictive")
    with pytest.raises(ValueError):
        AutoscalerConfig(min_replicas=3, max_replicas=2)


def scheduled_run(cold_start_s=30.0):
    cluster = {"replicas": 1, "router": "round-robin",
               "autoscaler": {"policy": "scheduled", "interval_s": 5, "cold_start_s": cold_start_s, "max_replicas": 2,
                              "scale_down_cooldown_s": 0,
                              "schedule": [{"at_s": 0, "replicas": 1}, {"at_s": 20, "replicas": 2},
                                           {"at_s": 80, "replicas": 1}]}}
    return run(cluster, workload([0.25 * i for i in range(480)], prompt=300, output=40))


def test_a_cold_started_replica_serves_nothing_before_it_is_ready():
    result = scheduled_run()
    replicas = result.tables["replicas"].set_index("replica")
    assert replicas.loc[1, "provisioned_s"] == pytest.approx(20.0)
    assert replicas.loc[1, "ready_s"] == pytest.approx(50.0)
    served = result.requests[result.requests["replica"] == 1]
    assert len(served) > 0
    assert served["first_scheduled_s"].min() >= 50.0
    steps = result.steps[result.steps["replica"] == 1]
    assert len(steps) > 0 and steps["start_s"].min() >= 50.0


def test_scale_down_drains_without_losing_requests_and_gpu_time_counts_the_cold_start():
    result = scheduled_run()
    req = result.requests
    assert (req["status"] == "finished").all() and len(req) == 480
    events = result.tables["scaling_events"]
    assert list(events["action"]) == ["start", "drain"]
    replicas = result.tables["replicas"].set_index("replica")
    drained = int(events.loc[events["action"] == "drain", "replica"].iloc[0])
    stop = replicas.loc[drained, "stopped_s"]
    assert stop >= 80.0
    # The drained replica took no request after the drain began.
    assert (req.loc[req["replica"] == drained, "arrival_s"] < 80.0 + 1e-9).all()
    run_end = result.requests["finish_s"].max()
    for replica in (0, 1):
        row = replicas.loc[replica]
        stop = run_end if math.isnan(row["stopped_s"]) else row["stopped_s"]
        assert row["gpu_seconds"] == pytest.approx(stop - row["provisioned_s"])  # cold start included
    cluster = result.summary["cluster"]
    price = load_gpu("A100-80GB").cost_per_hour_usd
    assert cluster["cost_usd_by_kind"]["A100-80GB"] == pytest.approx(cluster["gpu_seconds"] / 3600 * price)


def test_reactive_autoscaler_adds_replicas_under_a_queue_and_every_request_ends_once():
    cluster = {"replicas": 1, "router": "least-outstanding",
               "autoscaler": {"policy": "reactive", "interval_s": 5, "cold_start_s": 10, "max_replicas": 4,
                              "scale_up_threshold": 5, "scale_down_threshold": 0, "scale_up_cooldown_s": 5}}
    result = run(cluster, workload([0.02 * i for i in range(1500)], prompt=800, output=100))
    summary = result.summary["cluster"]
    assert summary["autoscaling"]["start"] >= 1
    assert summary["accounting"]["ok"] and result.summary["completed"] == 1500
