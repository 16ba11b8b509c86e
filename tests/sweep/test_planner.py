"""The capacity planner: its plan meets the SLOs when simulated again, and one replica fewer does not."""

from __future__ import annotations

import pytest

from llmsim.config import load_config
from llmsim.errors import ConfigError
from llmsim.planner import SLOTerm, make_plan, meets, parse_slo, workload_overrides
from llmsim.simulation import simulate
from llmsim.sweep.worker import run_metrics

WORKLOAD = ["workload.preset=burstgpt", "workload.rate=12", "workload.burstiness=0.5", "workload.num_requests=300"]


def test_parse_slo_units_and_errors():
    assert parse_slo("ttft_p99=2s, tpot_p90=100ms,e2el_p50=1500") == [
        SLOTerm("ttft", 99.0, 2.0), SLOTerm("tpot", 90.0, 0.1), SLOTerm("e2el", 50.0, 1500.0)]
    with pytest.raises(ConfigError, match="METRIC_pXX=BOUND"):
        parse_slo("latency=2s")


def test_workload_option_takes_a_preset_or_an_existing_trace(tmp_path):
    assert workload_overrides("preset:poisson", 3.0, None, 100) == {
        "workload.preset": "poisson", "workload.trace": None, "workload.rate": 3.0, "workload.num_requests": 100}
    with pytest.raises(ConfigError, match="no such trace file"):
        workload_overrides(str(tmp_path / "missing.csv"), None, None, None)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    base = load_config(None, WORKLOAD)
    return make_plan(base, parse_slo("ttft_p99=2s,tpot_p99=100ms"), gpus=["A100-80GB"], tps=[1], jobs=1,
                     cache_dir=tmp_path_factory.mktemp("cache"))


def test_plan_meets_its_slos_and_one_replica_fewer_does_not(plan):
    chosen = plan.chosen
    assert chosen is not None and chosen.replicas >= 2
    # Simulate the chosen deployment again from its config, independently of the planner's cache.
    again = simulate(plan.config_of(chosen))
    assert again.config.cluster.replicas == chosen.replicas
    assert meets(run_metrics(again), plan.terms, plan.attainment)
    fewer = simulate(plan.config_of(chosen, chosen.replicas - 1))
    assert not meets(run_metrics(fewer), plan.terms, plan.attainment)


def test_search_is_bisection_not_a_grid(plan):
    tried = sorted(e.replicas for e in plan.evaluations)
    n = plan.chosen.replicas
    assert n - 1 in tried and n in tried
    # Doubling to the first passing count, then bisection: about 2·log2(N) simulations, not N.
    assert len(tried) == len(set(tried)) <= 2 * n.bit_length()


def test_frontier_is_cheapest_first_and_improving(plan):
    frontier = plan.frontier()
    costs = [e.cost_per_hour for e in frontier]
    attainments = [e.metrics["slo_attainment"] for e in frontier]
    assert costs == sorted(costs) and attainments == sorted(attainments)
    assert plan.chosen in frontier


def test_max_cost_below_any_feasible_plan_finds_none(plan):
    base = load_config(None, WORKLOAD)
    cheap = make_plan(base, parse_slo("ttft_p99=2s,tpot_p99=100ms"), gpus=["A100-80GB"], tps=[1],
                      max_cost=plan.chosen.cost_per_hour - 0.01)
    assert cheap.chosen is None and cheap.notes


def test_plan_command_writes_a_config_that_reproduces_the_plan(tmp_path):
    from llmsim.cli import main

    code = main(["plan", "--workload", "preset:burstgpt", "--rate", "12", "--burstiness", "0.5", "-n", "300",
                 "--slo", "ttft_p99=2s,tpot_p99=100ms", "--gpus", "A100-80GB", "--write-config", str(tmp_path / "p.yaml")])
    assert code == 0
    config = load_config(tmp_path / "p.yaml")
    assert config.cluster.replicas >= 2 and config.slo.ttft_s == 2.0
