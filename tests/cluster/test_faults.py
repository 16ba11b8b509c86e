"""Faults: a failed replica's requests end as configured, and none is lost in the accounting."""

from __future__ import annotations

from tests.cluster.helpers import run, workload

ARRIVALS = [0.05 * i for i in range(300)]


def failing(on_failure: str, **faults):
    cluster = {"replicas": 2, "router": "round-robin",
               "faults": {"script": [{"at_s": 5.0, "replica": 0, "cause": "gpu_xid"}], "on_failure": on_failure,
                          **faults}}
    return run(cluster, workload(ARRIVALS, prompt=400, output=200))


def test_requests_on_a_failed_replica_fail_when_so_configured():
    result = failing("fail")
    req = result.requests
    held = int(result.tables["faults"]["requests_held"].iloc[0])
    failed = req[req["status"] == "failed"]
    assert held > 0 and len(failed) == held
    assert (failed["reason"] == "replica_failure").all() and (failed["replica"] == 0).all()
    assert (failed["arrival_s"] <= 5.0).all()
    assert result.summary["cluster"]["requests_failed_by_cause"] == {"gpu_xid": held}
    assert result.summary["cluster"]["replica_failures_by_cause"] == {"gpu_xid": 1}
    # After the failure every new request goes to the survivor, and all of them finish.
    late = req[req["arrival_s"] > 5.0]
    assert (late["replica"] == 1).all() and (late["status"] == "finished").all()
    assert len(req) == len(ARRIVALS) and req["request_id"].is_unique


def test_requests_on_a_failed_replica_are_retried_elsewhere():
    result = failing("retry", max_retries=2)
    req = result.requests
    held = int(result.tables["faults"]["requests_held"].iloc[0])
    retried = req[req["retries"] > 0]
    assert len(retried) == held and (retried["replica"] == 1).all()
    assert (retried["served_by"] == "0,1").all()  # the requests table names every replica that served it
    assert (req["status"] == "finished").all() and len(req) == len(ARRIVALS)
    # The retry keeps the first arrival time, so the lost work shows in its latency.
    assert (retried["first_token_s"] > 5.0).all()


def test_a_repaired_replica_serves_again():
    result = failing("retry", max_retries=1, script=[{"at_s": 5.0, "replica": 0, "down_s": 3.0}])
    req = result.requests
    assert (req.loc[req["arrival_s"] > 8.5, "replica"] == 0).any()
    assert result.tables["replicas"].set_index("replica").loc[0, "down_s"] == 3.0


def test_losing_every_replica_ends_the_run_with_every_request_recorded_once():
    cluster = {"replicas": 1, "faults": {"script": [{"at_s": 2.0, "replica": 0}], "on_failure": "retry"}}
    result = run(cluster, workload(ARRIVALS, prompt=400, output=200))
    req = result.requests
    assert len(req) == len(ARRIVALS) and req["request_id"].is_unique
    assert set(req["status"]) <= {"finished", "failed"}
    assert (req.loc[req["arrival_s"] > 2.0, "reason"] == "stalled").all()
    assert result.summary["cluster"]["accounting"]["ok"]


def test_random_failures_are_reproducible_from_the_seed():
    def faults(seed):
        cluster = {"replicas": 3, "router": "least-outstanding",
                   "faults": {"mtbf_s": 10.0, "mttr_s": 4.0, "on_failure": "retry", "max_retries": 3}}
        result = run(cluster, workload(ARRIVALS, prompt=400, output=100), seed=seed)
        assert result.summary["cluster"]["accounting"]["ok"]
        return result.tables["faults"]

    a, b, c = faults(1), faults(1), faults(2)
    assert len(a) > 0 and a.equals(b) and not a.equals(c)


def test_a_replica_failed_and_never_repaired_is_down_until_the_end():
    result = failing("fail")  # replica 0 fails at 5 s with no down_s: never repaired
    replicas = result.tables["replicas"].set_index("replica")
    end = float(result.summary["duration_s"])
    r0 = replicas.loc[0]
    assert r0["down_s"] > 0.9 * (end - 5.0)  # not 0: it was out of service from 5 s to the end
    assert r0["utilization"] <= 1.0
    assert r0["busy_s"] / r0["utilization"] <= 5.0 + 1e-6  # utilisation counts only the 5 s it served


def test_a_scripted_failure_that_cannot_apply_is_reported_not_dropped():
    import pytest

    # The second failure is aimed at a replica already out of service (failed at 1 s, never repaired).
    cluster = {"replicas": 2, "faults": {"script": [{"at_s": 1.0, "replica": 0, "cause": "first"},
                                                    {"at_s": 2.0, "replica": 0, "cause": "second"}]}}
    with pytest.warns(UserWarning, match="'second' not applied: replica 0 is failed at 2 s"):
        result = run(cluster, workload(ARRIVALS[:80], prompt=100, output=20))
    assert result.summary["cluster"]["replica_failures_by_cause"] == {"first": 1}
    assert "'second' not applied" in result.summary["cluster"]["scripted_failures_not_applied"][0]
