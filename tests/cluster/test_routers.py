"""Each router's choice on hand-built replica states (no simulation)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from llmsim.cluster.routers import ROUTERS, ReplicaSnapshot, SessionAffinityRouter, _argmin, make_router
from llmsim.engine.request import Request
from llmsim.errors import ConfigError


def req(session=None, prefix=None) -> Request:
    return Request("r", 0.0, 100, 10, session_id=session, prefix_hashes=prefix)


STATES = [
    ReplicaSnapshot(0, num_outstanding=5, num_waiting=3, kv_usage=0.20, estimated_queue_time_s=2.0),
    ReplicaSnapshot(1, num_outstanding=2, num_waiting=0, kv_usage=0.90, estimated_queue_time_s=0.5),
    ReplicaSnapshot(2, num_outstanding=7, num_waiting=1, kv_usage=0.10, estimated_queue_time_s=0.1),
    ReplicaSnapshot(3, num_outstanding=2, num_waiting=0, kv_usage=0.50, estimated_queue_time_s=1.0),
]


def test_round_robin_cycles_over_candidates():
    router = make_router("round-robin", seed=0)
    assert [router.choose(req(), STATES) for _ in range(6)] == [0, 1, 2, 3, 0, 1]


def test_round_robin_chooses_many_as_it_chooses_one_at_a_time():
    one, many = make_router("round-robin", seed=0), make_router("round-robin", seed=0)
    singles = [one.choose(req(), STATES) for _ in range(7)]
    assert many.choose_many(3, STATES).tolist() + many.choose_many(4, STATES).tolist() == singles
    assert many.choose(req(), STATES) == one.choose(req(), STATES)  # and carries on where it stopped


def test_least_outstanding_takes_fewest_in_flight_and_first_on_ties():
    assert make_router("least-outstanding", 0).choose(req(), STATES) == 1


def test_least_kv_takes_lowest_usage():
    assert make_router("least-kv", 0).choose(req(), STATES) == 2


def test_least_kv_breaks_ties_by_outstanding():
    states = [ReplicaSnapshot(0, num_outstanding=4, kv_usage=0.3), ReplicaSnapshot(1, num_outstanding=1, kv_usage=0.3)]
    assert make_router("least-kv", 0).choose(req(), states) == 1


@given(st.lists(st.tuples(st.sampled_from([0.0, 0.25, 0.5]), st.integers(0, 3)), min_size=1, max_size=8))
def test_tie_broken_choices_are_the_lexicographic_minimum_reading_only_tied_replicas(keys):
    # Ties on KV usage (or queue time) go to the fewest outstanding, then the lowest replica id; the second key
    # is read only for the tied candidates.
    states = [ReplicaSnapshot(i, num_outstanding=n, kv_usage=u, estimated_queue_time_s=u) for i, (u, n) in enumerate(keys)]
    expected = min(range(len(keys)), key=lambda i: (keys[i], i))
    assert make_router("least-kv", 0).choose(req(), states) == expected
    assert make_router("shortest-queue-time", 0).choose(req(), states) == expected
    read = []
    lowest = min(u for u, _ in keys)
    assert _argmin(states, lambda r: r.kv_usage, lambda r: read.append(r.replica_id) or r.num_outstanding) == expected
    tied = [i for i, (u, _) in enumerate(keys) if u == lowest]
    assert read == (tied if len(tied) > 1 else [])


def test_shortest_queue_time_takes_least_queued_prefill_work():
    assert make_router("shortest-queue-time", 0).choose(req(), STATES) == 2


def test_random_is_seeded_and_covers_all_candidates():
    picks = [make_router("random", 5).choose(req(), STATES) for _ in range(3)]
    assert len(set(picks)) == 1  # same seed, same first draw
    router = make_router("random", 5)
    assert {router.choose(req(), STATES) for _ in range(200)} == {0, 1, 2, 3}


def test_power_of_two_keeps_the_less_loaded_of_its_two_samples():
    router = make_router("power-of-two", 1)
    for _ in range(100):
        index = router.choose(req(), STATES)
        # Replica 2 (7 outstanding) is the most loaded: it can only win if sampled with… nobody lighter.
        assert index != 2
    two = [ReplicaSnapshot(0, num_outstanding=9), ReplicaSnapshot(1, num_outstanding=0)]
    assert all(make_router("power-of-two", s).choose(req(), two) == 1 for s in range(20))


def test_session_affinity_sticks_to_the_first_replica_of_a_conversation():
    router = make_router("session-affinity", 0)
    first = router.choose(req(session=42), STATES)
    assert first == 1  # a new conversation goes to the least outstanding replica
    loaded = [ReplicaSnapshot(0, 0), ReplicaSnapshot(1, 50), ReplicaSnapshot(2, 0), ReplicaSnapshot(3, 0)]
    assert router.choose(req(session=42), loaded) == 1  # … and stays there under load
    assert router.choose(req(session=7), loaded) == 0


def test_session_affinity_moves_when_its_replica_is_gone():
    router = make_router("session-affinity", 0)
    assert router.choose(req(session=1), STATES) == 1
    without_1 = [s for s in STATES if s.replica_id != 1]
    assert without_1[router.choose(req(session=1), without_1)].replica_id == 3
    assert router.choose(req(session=1), STATES) == 3  # the new home sticks


def test_session_affinity_uses_the_first_prefix_block_without_a_session():
    assert SessionAffinityRouter.key_of(req(prefix=(11, 12))) == ("prefix", 11)
    router = make_router("session-affinity", 0)
    a = router.choose(req(prefix=(11, 12)), STATES)
    busy = [ReplicaSnapshot(s.replica_id, 100 if s.replica_id == STATES[a].replica_id else 0) for s in STATES]
    assert router.choose(req(prefix=(11, 99)), busy) == a


class FirstRouter:
    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def choose(self, request, replicas):
        return len(replicas) - 1


def test_user_router_is_loaded_from_module_and_class():
    router = make_router("tests.cluster.test_routers:FirstRouter", seed=3)
    assert router.seed == 3 and router.choose(req(), STATES) == 3


def test_unknown_router_lists_the_valid_names():
    with pytest.raises(ConfigError) as err:
        make_router("fastest", 0)
    message = str(err.value)
    assert "cluster.router" in message
    for name in ROUTERS:
        assert name in message


def test_unimportable_user_router_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot import"):
        make_router("no_such_module_xyz:Router", 0)
    with pytest.raises(ConfigError, match="no attribute"):
        make_router("tests.cluster.test_routers:Nope", 0)
