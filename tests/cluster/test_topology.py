"""Topology graph: paths, bottlenecks, latencies, placement."""

from __future__ import annotations

import pytest

from llmsim.cluster.config import NodeGroupSpec, TopologyConfig
from llmsim.cluster.topology import GPUAllocator, Topology, expand_nodes
from llmsim.errors import ConfigError


def topo(nodes: int, gpus: int = 8, **cfg) -> Topology:
    groups = [NodeGroupSpec(name="n", count=nodes, gpus_per_node=gpus, gpu="X")]
    return Topology(expand_nodes(groups, lambda g: g), TopologyConfig(**cfg), {"X": 300e9})


def test_gpus_in_one_node_talk_over_two_nvlink_hops():
    t = topo(1, nvlink_latency_us=1.0)
    path = t.path("n/gpu0", "n/gpu5")
    assert path.vertices == ("n/gpu0", "n/nvswitch", "n/gpu5")
    assert path.bottleneck_Bps == 300e9
    assert path.latency_s == pytest.approx(2e-6)
    assert t.transfer_time(["n/gpu0"], ["n/gpu5"], 3e9) == pytest.approx(3e9 / 300e9 + 2e-6)


def test_gpus_in_two_nodes_are_limited_by_the_nic():
    t = topo(2, network_bandwidth_gb_per_s=50, network_latency_us=2.5)
    path = t.path("n0/gpu1", "n1/gpu1")
    assert path.vertices == ("n0/gpu1", "leaf0", "n1/gpu1")
    assert path.bottleneck_Bps == 50e9
    assert t.transfer_time(["n0/gpu1"], ["n1/gpu1"], 1e9) == pytest.approx(1e9 / 50e9 + 5e-6)


def test_leaves_join_through_the_spine_whose_uplink_can_be_the_bottleneck():
    t = topo(4, nodes_per_leaf=2, network_bandwidth_gb_per_s=50, spine_bandwidth_gb_per_s=20, network_latency_us=1)
    path = t.path("n0/gpu0", "n3/gpu0")
    assert path.vertices == ("n0/gpu0", "leaf0", "spine", "leaf1", "n3/gpu0")
    assert path.bottleneck_Bps == 20e9 and path.latency_s == pytest.approx(4e-6)


def test_sharded_kv_moves_in_parallel_over_gpu_pairs():
    t = topo(1, nvlink_latency_us=0.0)
    one = t.transfer_time(["n/gpu0"], ["n/gpu4"], 8e9)
    four = t.transfer_time(["n/gpu0", "n/gpu1", "n/gpu2", "n/gpu3"], ["n/gpu4", "n/gpu5", "n/gpu6", "n/gpu7"], 8e9)
    assert four == pytest.approx(one / 4)


def test_same_gpu_costs_nothing():
    assert topo(1).transfer_time(["n/gpu2"], ["n/gpu2"], 1e12) == 0.0


def test_allocator_packs_nodes_first_fit_and_releases():
    t = topo(2, gpus=8)
    alloc = GPUAllocator(t)
    a = alloc.place("X", 4)
    b = alloc.place("X", 4)
    c = alloc.place("X", 2)
    assert a == ["n0/gpu0", "n0/gpu1", "n0/gpu2", "n0/gpu3"] and b[0] == "n0/gpu4" and c == ["n1/gpu0", "n1/gpu1"]
    assert alloc.place("X", 8) is None  # no whole node left
    alloc.release(a)
    assert alloc.place("X", 4) == a
    assert alloc.place("Y", 1) is None  # no GPU of that kind


def test_allocator_first_fit_survives_filling_and_releasing_many_nodes():
    """First fit skips the nodes it has filled (placing thousands of replicas stays linear), and a node freed
    behind that point is used again first."""
    alloc = GPUAllocator(topo(500, gpus=2))
    placed = [alloc.place("X", 2) for _ in range(500)]
    assert placed[-1] == ["n499/gpu0", "n499/gpu1"] and alloc.place("X", 1) is None
    alloc.release(placed[3])
    alloc.release(placed[400][:1])
    assert alloc.place("X", 1) == ["n3/gpu0"]
    assert alloc.place("X", 1) == ["n3/gpu1"]
    assert alloc.place("X", 1) == ["n400/gpu0"]
    alloc.release(placed[10])
    assert alloc.place("X", 2) == placed[10]  # whole free node found again


def test_allocator_spans_whole_nodes_for_wide_replicas():
    alloc = GPUAllocator(topo(3, gpus=8))
    gpus = alloc.place("X", 16)
    assert gpus[0] == "n0/gpu0" and gpus[-1] == "n1/gpu7"


def test_allocator_honours_allowed_nodes_in_order():
    alloc = GPUAllocator(topo(3, gpus=2))
    assert alloc.place("X", 2, ["n2", "n0"]) == ["n2/gpu0", "n2/gpu1"]
    assert alloc.place("X", 2, ["n2", "n0"]) == ["n0/gpu0", "n0/gpu1"]


def test_duplicate_node_names_are_a_config_error():
    groups = [NodeGroupSpec(name="a"), NodeGroupSpec(name="a")]
    with pytest.raises(ConfigError, match="cluster.nodes"):
        expand_nodes(groups, lambda g: "X")
