"""Time of the collectives a sharded model runs: all-reduce (TP), send/recv (PP), all-to-all (EP).

Each is an alpha-beta cost, ``latency + bytes / achieved rate``, on the slowest link the group crosses:

* inside an NVLink group (an NVSwitch board of 8, or a bridged pair) at the interconnect rate;
* across NVLink groups inside a node over PCIe;
* across nodes over the network, **hierarchically** (what NCCL does on multi-node rings and trees): GPUs of a
  node first reduce-scatter over NVLink, each node then exchanges its share over the network (a ring of
  ``N`` nodes moves 2(N−1)/N of the buffer through each node's links), then the node all-gathers over NVLink.
  A node's achieved network rate is ``internode_bandwidth × network_efficiency × g**network_gpu_scaling``
  for ``g`` GPUs per node: scaling 1 means every GPU drives its own NIC, 0 means they share one.

Point-to-point transfers over the network show a *burst*: the first ``network_burst_bytes`` go
``network_burst_speedup`` times faster than the sustained rate (NIC and switch buffers absorb them), which is
how Vidur's cross-node send/recv timings on the pairwise-NVLink machines look (≈8.5 GB/s up to ~2.4 MB,
≈2.1 GB/s after). Every rate and latency is fitted per machine on Vidur's network measurements
(``llmsim.hardware.calibration``); the line rates they multiply are datasheet numbers in the GPU profiles.
"""

from __future__ import annotations

import math

import numpy as np

from llmsim.hardware.specs import GPUSpec


def link_bandwidth(gpu: GPUSpec, num_gpus: int, devices_per_node: int | None = None) -> float:
    """Achieved per-GPU bus bandwidth of a collective among ``num_gpus`` GPUs of ONE node.

    Inside the NVLink group at the interconnect rate; a group spanning bridged pairs falls back to PCIe.
    """
    e = gpu.efficiency
    if num_gpus > gpu.interconnect_group_size:
        return gpu.pcie_bandwidth * e.slow_link_efficiency
    return gpu.interconnect_bandwidth * e.allreduce_bus_efficiency


def _layout(gpu: GPUSpec, num_gpus: int, devices_per_node: int | None) -> tuple[int, int]:
    """(GPUs per node used, nodes) of a group of ``num_gpus`` packed onto nodes."""
    per_node = min(num_gpus, devices_per_node or gpu.gpus_per_node)
    return per_node, math.ceil(num_gpus / per_node)


def node_network(gpu: GPUSpec, gpus_per_node: int) -> tuple[float, float]:
    """(achieved fraction of ONE GPU's line rate that a node using ``gpus_per_node`` GPUs reaches, latency s).

    Measured layouts (``network_by_gpus``) are used as fitted; between them both values are interpolated
    linearly in log2(GPUs) and held flat past the ends; without any, the power law and ``network_latency_s``.
    """
    e = gpu.efficiency
    table = e.network_by_gpus
    if not table:
        return e.network_efficiency * gpus_per_node**e.network_gpu_scaling, e.network_latency_s
    x, xs = math.log2(gpus_per_node), [math.log2(row[0]) for row in table]
    return float(np.interp(x, xs, [row[1] for row in table])), float(np.interp(x, xs, [row[2] for row in table]))


def network_time(gpu: GPUSpec, node_bytes: float, efficiency: float | None, gpus_per_node: int = 1, burst: bool = False) -> float:
    """Seconds for one node to push ``node_bytes`` through its network links (no latency term).

    ``efficiency`` None: the all-reduce rate of this layout (:func:`node_network`).
    """
    e = gpu.efficiency
    if efficiency is None:
        rate = gpu.internode_bandwidth * node_network(gpu, gpus_per_node)[0]
    else:
        rate = gpu.internode_bandwidth * efficiency * gpus_per_node**e.network_gpu_scaling
    fast = np.minimum(node_bytes, e.network_burst_bytes) if burst else 0.0  # numpy: calibration passes arrays
    return fast / (rate * e.network_burst_speedup) + (node_bytes - fast) / rate


def allreduce_time(gpu: GPUSpec, size_bytes: float, num_gpus: int, devices_per_node: int | None = None,
                   custom: bool = False) -> float:
    """All-reduce of ``size_bytes`` over ``num_gpus`` (ring inside a node; hierarchical across nodes).

    ``devices_per_node``: how many of the group's GPUs share a node (default: packed, up to the node size).
    ``custom``: the caller is vLLM's model runner, which reduces messages up to ``custom_allreduce_max_bytes``
    inside one NVLink group with its own one-kernel all-reduce (``vllm/distributed/device_communicators/
    custom_all_reduce.py``, max_size 8 MiB): same bandwidth term, ``custom_allreduce_latency_s`` instead of
    NCCL's latency. NCCL's own timings (Vidur's all_reduce.csv) are compared with ``custom=False``.
    """
    if num_gpus <= 1:
        return 0.0
    e = gpu.efficiency
    per_node, nodes = _layout(gpu, num_gpus, devices_per_node)
    intra = 0.0
    if per_node > 1:
        intra = 2.0 * (per_node - 1) / per_node * size_bytes / link_bandwidth(gpu, per_node)
    if nodes == 1:
        # vLLM enables it on world sizes 2, 4, 6, 8 over NVLink (PCIe-only: 2 GPUs at most)
        fully_linked = per_node <= gpu.interconnect_group_size and (gpu.interconnect != "PCIe" or per_node <= 2)
        if custom and fully_linked and per_node in (2, 4, 6, 8) and size_bytes <= e.custom_allreduce_max_bytes:
            return intra + e.custom_allreduce_latency_s
        return intra + e.allreduce_latency_s
    inter = network_time(gpu, 2.0 * (nodes - 1) / nodes * size_bytes, None, per_node)
    if per_node > 1:
        intra += e.allreduce_latency_s  # the NVLink reduce-scatter/all-gather phases
    return intra + inter + node_network(gpu, per_node)[1]


def send_recv_time(gpu: GPUSpec, size_bytes: float, same_node: bool = True) -> float:
    """Point-to-point transfer of activations between pipeline stages (NVLink in a node, else network)."""
    e = gpu.efficiency
    if same_node:
        return size_bytes / (gpu.interconnect_bandwidth * e.send_recv_efficiency) + e.send_recv_latency_s
    return network_time(gpu, size_bytes, e.network_send_recv_efficiency, burst=True) + e.network_send_recv_latency_s


def all_to_all_time(gpu: GPUSpec, bytes_per_gpu: float, num_gpus: int, devices_per_node: int | None = None) -> float:
    """All-to-all where each GPU holds ``bytes_per_gpu`` and keeps 1/p of it (MoE dispatch or combine).

    Each GPU sends (p−1)/p of its buffer, one piece to every peer, all links busy at once: inside a node that
    is a point-to-point rate per GPU (NVSwitch gives every pair full rate); across nodes the share bound for
    other nodes leaves through the node's network links. Costed with the send/recv efficiencies, which are
    what a pairwise exchange achieves; no all-to-all timings were measured to fit it on.
    """
    if num_gpus <= 1:
        return 0.0
    e = gpu.efficiency
    per_node, nodes = _layout(gpu, num_gpus, devices_per_node)
    if per_node > gpu.interconnect_group_size:
        intra_rate = gpu.pcie_bandwidth * e.slow_link_efficiency
    else:
        intra_rate = gpu.interconnect_bandwidth * e.send_recv_efficiency
    time = (per_node - 1) / num_gpus * bytes_per_gpu / intra_rate + e.send_recv_latency_s
    if nodes > 1:
        off_node = (num_gpus - per_node) / num_gpus * bytes_per_gpu * per_node
        time += network_time(gpu, off_node, e.network_send_recv_efficiency, per_node) + e.network_send_recv_latency_s
    return time
