"""The cluster's machines and links as a graph, and how long moving bytes between two GPUs takes.

Vertices are GPUs (``node0/gpu3``), one NVSwitch per node (``node0/nvswitch``), leaf switches and, when
there is more than one leaf, a spine. Edges carry ``bandwidth_Bps`` (bytes/s, one direction) and
``latency_s`` (one way):

- inside a node every GPU has an NVLink edge to the node's NVSwitch (as in DGX/HGX H100: each GPU's
  NVLink ports all go to the NVSwitch fabric), so GPU→GPU in a node is two NVLink hops;
- every GPU also has its own NIC edge to its leaf switch (rail-style GPUDirect RDMA, one NIC per GPU as in
  DGX H100), so GPU→GPU across nodes is NIC → leaf (→ spine → leaf) → NIC;
- leaves join a spine through one uplink each.

A transfer follows the lowest-latency path and its time is ``bytes / bottleneck bandwidth + Σ latencies``
(the store-and-forward of a pipelined stream: the slowest link sets the rate, each hop adds its latency).
Concurrent transfers do not share bandwidth in this model (an optimistic bound when many transfers cross
the same link at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Optional, Sequence


from llmsim.cluster.config import NodeGroupSpec, TopologyConfig
from llmsim.errors import ConfigError

GB = 1e9


@dataclass(frozen=True)
class Node:
    name: str
    gpu: str  # resolved GPU profile name
    num_gpus: int

    def gpu_vertex(self, index: int) -> str:
        return f"{self.name}/gpu{index}"


@dataclass(frozen=True)
class Path:
    """A route between two GPUs: its vertices, slowest link and summed latency."""

    vertices: tuple[str, ...]
    bottleneck_Bps: float
    latency_s: float

    def transfer_time(self, num_bytes: float) -> float:
        if len(self.vertices) <= 1:
            return 0.0  # same GPU: nothing moves
        return num_bytes / self.bottleneck_Bps + self.latency_s


def expand_nodes(groups: Sequence[NodeGroupSpec], resolve_gpu) -> list[Node]:
    """Node groups → named nodes (``resolve_gpu(name_or_None)`` gives a GPU profile name)."""
    nodes: list[Node] = []
    for group in groups:
        gpu = resolve_gpu(group.gpu)
        for i in range(group.count):
            name = group.name if group.count == 1 else f"{group.name}{i}"
            nodes.append(Node(name, gpu, group.gpus_per_node))
    names = [n.name for n in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"config field cluster.nodes: node names must be unique, {duplicates[0]!r} repeats")
    return nodes


class Topology:
    """The graph of nodes, GPUs, switches and links, with cached GPU-to-GPU paths."""

    def __init__(self, nodes: Sequence[Node], config: TopologyConfig, nvlink_Bps: dict[str, float]) -> None:
        """``nvlink_Bps[gpu kind]`` is the NVLink bandwidth per GPU used when the config does not set one."""
        self.nodes = list(nodes)
        self.config = config
        self._nvlink_Bps = nvlink_Bps
        self._path = lru_cache(maxsize=None)(self._compute_path)

    @cached_property
    def graph(self):
        """The networkx graph, built when a path or a GPU's node is first asked for (most runs never ask:
        networkx takes a fifth of a second to import)."""
        import networkx as nx

        config = self.config
        graph = nx.Graph()
        net_Bps = config.network_bandwidth_gb_per_s * GB
        net_lat = config.network_latency_us * 1e-6
        nvl_lat = config.nvlink_latency_us * 1e-6
        num_leaves = -(-len(self.nodes) // config.nodes_per_leaf)
        for index, node in enumerate(self.nodes):
            nvl_Bps = (config.nvlink_bandwidth_gb_per_s * GB if config.nvlink_bandwidth_gb_per_s
                       else self._nvlink_Bps[node.gpu])
            switch = f"{node.name}/nvswitch"
            leaf = f"leaf{index // config.nodes_per_leaf}"
            for g in range(node.num_gpus):
                gpu = node.gpu_vertex(g)
                graph.add_node(gpu, kind="gpu", node=node.name)
                graph.add_edge(gpu, switch, kind="nvlink", bandwidth_Bps=nvl_Bps, latency_s=nvl_lat)
                if len(self.nodes) > 1:
                    graph.add_edge(gpu, leaf, kind="network", bandwidth_Bps=net_Bps, latency_s=net_lat)
        if num_leaves > 1:
            for leaf in range(num_leaves):
                graph.add_edge(f"leaf{leaf}", "spine", kind="network",
                               bandwidth_Bps=config.spine_bandwidth_gb_per_s * GB, latency_s=net_lat)
        return graph

    def gpus_of(self, node: Node) -> list[str]:
        return [node.gpu_vertex(g) for g in range(node.num_gpus)]

    def path(self, src_gpu: str, dst_gpu: str) -> Path:
        return self._path(src_gpu, dst_gpu)

    def _compute_path(self, src: str, dst: str) -> Path:
        if src == dst:
            return Path((src,), float("inf"), 0.0)
        import networkx as nx

        vertices = nx.shortest_path(self.graph, src, dst, weight="latency_s")
        edges = [self.graph.edges[a, b] for a, b in zip(vertices, vertices[1:])]
        return Path(tuple(vertices), min(e["bandwidth_Bps"] for e in edges), sum(e["latency_s"] for e in edges))

    def transfer_time(self, src_gpus: Sequence[str], dst_gpus: Sequence[str], num_bytes: float) -> float:
        """Seconds to move ``num_bytes`` spread evenly over the GPUs of one replica to those of another.

        A replica's KV cache is sharded over its GPUs (KV heads over TP ranks, layers over PP stages), so
        the shards move in parallel over ``min(len(src), len(dst))`` GPU pairs; the slowest pair sets the
        time.
        """
        pairs = min(len(src_gpus), len(dst_gpus))
        share = num_bytes / pairs
        return max(self.path(src_gpus[i], dst_gpus[i]).transfer_time(share) for i in range(pairs))


class GPUAllocator:
    """Which GPUs are free; places a replica's ``tp × pp`` GPUs on one node when it fits, else on whole nodes."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.free: dict[str, list[str]] = {n.name: topology.gpus_of(n) for n in topology.nodes}
        self._of_kind: dict[str, list[Node]] = {}
        for n in topology.nodes:
            self._of_kind.setdefault(n.gpu, []).append(n)
        # Per GPU kind, the first node (in node order) with a free GPU: the nodes before it are full, so first fit
        # may start there (placing thousands of replicas stays linear, not quadratic, in the node count).
        self._first_free: dict[str, int] = {kind: 0 for kind in self._of_kind}
        self._position = {n.name: (kind, i) for kind, nodes in self._of_kind.items() for i, n in enumerate(nodes)}

    def place(self, gpu_kind: str, num_gpus: int, allowed_nodes: Optional[Sequence[str]] = None) -> Optional[list[str]]:
        """Take ``num_gpus`` GPUs of ``gpu_kind`` (first fit, in node order); None when none fit."""
        if allowed_nodes is None:
            of_kind = self._of_kind.get(gpu_kind, [])
            start = self._first_free.get(gpu_kind, 0)
            while start < len(of_kind) and not self.free[of_kind[start].name]:
                start += 1
            self._first_free[gpu_kind] = start
            nodes = of_kind[start:]
        else:
            nodes = [n for n in self.topology.nodes if n.gpu == gpu_kind and n.name in allowed_nodes]
            order = {name: i for i, name in enumerate(allowed_nodes)}
            nodes.sort(key=lambda n: order[n.name])
        for node in nodes:
            if len(self.free[node.name]) >= num_gpus:
                taken, self.free[node.name] = self.free[node.name][:num_gpus], self.free[node.name][num_gpus:]
                return taken
        # Larger than any node's free GPUs: span consecutive wholly free nodes (TP/PP across nodes).
        run: list[Node] = []
        for node in nodes:
            if len(self.free[node.name]) == node.num_gpus:
                run.append(node)
                if sum(n.num_gpus for n in run) >= num_gpus:
                    taken = [g for n in run for g in self.free[n.name]][:num_gpus]
                    for n in run:
                        self.free[n.name] = [g for g in self.free[n.name] if g not in taken]
                    return taken
            else:
                run = []
        return None

    def release(self, gpus: Sequence[str]) -> None:
        for gpu in gpus:
            node = self.topology.graph.nodes[gpu]["node"]
            kind, position = self._position[node]
            self._first_free[kind] = min(self._first_free[kind], position)
            self.free[node].append(gpu)
            self.free[node].sort(key=lambda g: int(g.rsplit("gpu", 1)[1]))
