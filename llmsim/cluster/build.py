"""Build a cluster from the config, and turn what it recorded into tables and a summary.

The engine side (what a replica is, how its engine is constructed) comes in as two functions from
:mod:`llmsim.simulation`, so this package depends on the engine only through them:

- ``deployment_for(gpu, model, tp, pp)`` → an object with ``num_gpu_blocks``, ``max_model_len``,
  ``step_time`` (a replica of that shape);
- ``engine_factory(replica_id, spec, recorder)`` → a started engine replica reporting to ``recorder``.
"""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd
import simpy

from llmsim.cluster.autoscaler import Autoscaler, make_policy
from llmsim.cluster.cluster import Cluster
from llmsim.cluster.config import ClusterConfig, NodeGroupSpec
from llmsim.cluster.disaggregation import Disaggregation
from llmsim.cluster.faults import FaultInjector
from llmsim.cluster.handle import ReplicaSpec
from llmsim.cluster.report import (cluster_summary, replicas_frame, request_columns, run_end_s, timeseries_frame,
                                   transfers_summary)
from llmsim.cluster.routers import make_router
from llmsim.cluster.topology import GPUAllocator, Topology, expand_nodes
from llmsim.errors import ConfigError
from llmsim.hardware.profiles import load_gpu, load_model

AUTO_GPUS_PER_NODE = 8


def replica_specs(config, deployment_for: Callable) -> list[ReplicaSpec]:
    """One resolved spec per replica group, in config order."""
    hw, sched, cluster = config.hardware, config.scheduler, config.cluster
    specs = []
    for index, group in enumerate(cluster.replica_groups()):
        gpu = load_gpu(group.gpu or hw.gpu)
        model = load_model(group.model or hw.model)
        tp, pp = group.tp or hw.tp, group.pp or hw.pp
        deployment = deployment_for(group.gpu or hw.gpu, group.model or hw.model, tp, pp)
        budget = sched.max_num_batched_tokens
        specs.append(ReplicaSpec(
            group=index, role=group.role, gpu=gpu.name, model=model.name, tp=tp, pp=pp,
            num_gpu_blocks=deployment.num_gpu_blocks, block_size=sched.block_size,
            max_model_len=deployment.max_model_len,
            kv_bytes_per_token=float(model.kv_bytes_per_token(hw.kv_cache_dtype)),
            prefill_s_per_token=deployment.step_time([budget], [0], 1) / budget,
            cost_per_gpu_hour_usd=gpu.cost_per_hour_usd,
            allowed_nodes=tuple(group.nodes) if group.nodes else None, deployment=deployment))
    return specs


def _auto_nodes(cluster_cfg: ClusterConfig, specs: list[ReplicaSpec]) -> list[NodeGroupSpec]:
    """Enough nodes of 8 GPUs of each kind for the replicas and the autoscaler's maximum."""
    need: dict[str, int] = {}
    widest: dict[str, int] = {}
    groups = cluster_cfg.replica_groups()
    scaler = cluster_cfg.autoscaler
    scaled_role_seen = False
    for spec, group in zip(specs, groups):
        count = group.count
        if scaler.policy != "none" and group.role == scaler.role and not scaled_role_seen:
            count = max(count, scaler.max_replicas)
            scaled_role_seen = True
        need[spec.gpu] = need.get(spec.gpu, 0) + count * spec.num_gpus
        widest[spec.gpu] = max(widest.get(spec.gpu, 0), spec.num_gpus)
    nodes = []
    for kind, gpus in need.items():
        per_node = max(AUTO_GPUS_PER_NODE, widest[kind])
        name = "node" if len(need) == 1 else f"{kind.lower()}-node"
        nodes.append(NodeGroupSpec(name=name, count=max(1, -(-gpus // per_node)), gpus_per_node=per_node, gpu=kind))
    return nodes


def build_cluster(config, env: simpy.Environment, recorder, num_requests: int, deployment_for: Callable,
                  engine_factory: Callable) -> Cluster:
    """The cluster of ``config.cluster`` with its initial replicas serving (warm) at time 0."""
    cfg: ClusterConfig = config.cluster
    specs = replica_specs(config, deployment_for)
    node_groups = cfg.nodes if cfg.nodes is not None else _auto_nodes(cfg, specs)
    # profile name → spec: a GPU given as a profile file is known by the name inside it from here on
    loaded = {gpu.name: gpu for gpu in (load_gpu(g.gpu or config.hardware.gpu) for g in cfg.replica_groups())}

    def gpu_kind(name):
        if name in loaded:
            return name
        gpu = load_gpu(name or config.hardware.gpu)
        loaded[gpu.name] = gpu
        return gpu.name

    nodes = expand_nodes(node_groups, gpu_kind)
    nvlink = {n.gpu: (loaded.get(n.gpu) or load_gpu(n.gpu)).interconnect_bandwidth for n in nodes}
    topology = Topology(nodes, cfg.topology, nvlink)
    routers = {"colocated": make_router(cfg.router, config.seed), "prefill": make_router(cfg.router, config.seed),
               "decode": make_router(cfg.disaggregation.decode_router or cfg.router, config.seed + 1,
                                     "cluster.disaggregation.decode_router")}
    cluster = Cluster(env, recorder, topology, GPUAllocator(topology), routers, engine_factory,
                      num_requests=num_requests, on_failure=cfg.faults.on_failure,
                      max_retries=cfg.faults.max_retries,
                      timeseries_interval_s=config.metrics.timeseries_interval_s)
    if cfg.disaggregated:
        d = cfg.disaggregation
        cluster.disaggregation = Disaggregation(cluster, d.first_token, d.kv_bytes_per_token)
    for index, (spec, group) in enumerate(zip(specs, cfg.replica_groups())):
        for _ in range(group.count):
            if cluster.add_replica(spec) is None:
                where = f"nodes {list(group.nodes)}" if group.nodes else "the cluster's nodes"
                raise ConfigError(
                    f"config field cluster.replicas[{index}]: no {spec.num_gpus} free {spec.gpu} GPUs left on {where} "
                    f"for replica {len(cluster.replicas)} (tp={spec.tp}, pp={spec.pp}); add nodes or lower count")
    cluster.autoscaler = _autoscaler(cluster, cfg, specs, config.slo)
    cluster.faults = None
    if cfg.faults.mtbf_s is not None or cfg.faults.script:
        for entry in cfg.faults.script:
            if entry.replica >= len(cluster.replicas):
                raise ConfigError(f"config field cluster.faults.script: replica {entry.replica} does not exist "
                                  f"(initial replicas are 0..{len(cluster.replicas) - 1})")
        cluster.faults = FaultInjector(cluster, cfg.faults, config.seed)
    return cluster


def _autoscaler(cluster: Cluster, cfg: ClusterConfig, specs: list[ReplicaSpec], slo):
    policy = make_policy(cfg.autoscaler)
    if policy is None:
        return None
    template = next((s for s in specs if s.role == cfg.autoscaler.role), None)
    if template is None:
        raise ConfigError(f"config field cluster.autoscaler.role: no replica group has role {cfg.autoscaler.role!r}")
    return Autoscaler(cluster, cfg.autoscaler, policy, template, slo)


def cluster_results(cluster: Cluster, requests: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, Any]]:
    """(requests with cluster columns, extra tables by file stem, ``summary["cluster"]``). ``requests`` (the
    recorder's fresh frame) gets the cluster columns in place."""
    end_s = run_end_s(cluster)
    for name, values in request_columns(cluster, requests["request_id"]).items():
        requests[name] = values
    replicas = replicas_frame(cluster, end_s)
    tables = {"replicas": replicas, "replica_timeseries": timeseries_frame(cluster)}
    extra: dict[str, Any] = {}
    if cluster.disaggregation is not None:
        tables["transfers"] = pd.DataFrame(cluster.disaggregation.rows)
        extra["transfers"] = transfers_summary(tables["transfers"])
    if cluster.autoscaler is not None:
        tables["scaling_events"] = pd.DataFrame(cluster.autoscaler.events)
        actions = tables["scaling_events"]["action"].value_counts()
        extra["autoscaling"] = {str(k): int(v) for k, v in actions.sort_index().items()}
    if cluster.faults is not None:
        tables["faults"] = pd.DataFrame(cluster.faults.events)
        extra["replica_failures_by_cause"] = cluster.faults.failures_by_cause()
        if cluster.faults.not_applied:
            extra["scripted_failures_not_applied"] = list(cluster.faults.not_applied)
    return requests, tables, cluster_summary(cluster, replicas, requests, extra)
