"""The `cluster:` section: nodes, replicas and their placement, topology, routing, disaggregation,
autoscaling and faults.

The short form ``cluster.replicas: 4`` means four identical replicas built from the ``hardware:`` section.
The rich form is a list of replica groups, each with its own GPU kind, model, parallelism, role and
placement::

    cluster:
      nodes: [{name: node, count: 4, gpus_per_node: 8, gpu: H100-80GB}]
      replicas:
        - {count: 2, role: prefill, tp: 2}
        - {count: 4, role: decode, tp: 2}
      router: least-outstanding
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, model_validator

from llmsim.configbase import StrictModel

Role = Literal["colocated", "prefill", "decode"]


class NodeGroupSpec(StrictModel):
    """``count`` identical machines named ``{name}0``, ``{name}1`` … (just ``name`` when count is 1)."""

    name: str = Field("node", description="name (prefix) of the nodes of this group")
    count: int = Field(1, ge=1, description="number of nodes in the group")
    gpus_per_node: int = Field(8, ge=1, description="GPUs per node, joined by NVLink through an NVSwitch")
    gpu: Optional[str] = Field(None, description="GPU kind of the nodes; hardware.gpu when omitted")


class ReplicaGroupSpec(StrictModel):
    """``count`` identical replicas; omitted fields come from the ``hardware:`` section."""

    count: int = Field(1, ge=0, description="replicas in the group (the autoscaler may change it)")
    role: Role = Field("colocated", description="colocated (prefill and decode), or one side of P/D disaggregation")
    gpu: Optional[str] = Field(None, description="GPU kind; hardware.gpu when omitted")
    model: Optional[str] = Field(None, description="model profile; hardware.model when omitted")
    tp: Optional[int] = Field(None, ge=1, description="tensor-parallel degree; hardware.tp when omitted")
    pp: Optional[int] = Field(None, ge=1, description="pipeline-parallel degree; hardware.pp when omitted")
    nodes: Optional[list[str]] = Field(None, description="node names this group may be placed on, in order; all when omitted")


class TopologyConfig(StrictModel):
    """Links of the cluster graph. Bandwidths are per direction in GB/s (10^9 bytes/s), latencies one way."""

    nvlink_bandwidth_gb_per_s: Optional[float] = Field(
        None, gt=0, description="GPU↔NVSwitch link; the GPU profile's interconnect bandwidth when omitted")
    nvlink_latency_us: float = Field(1.0, ge=0, description="one NVLink hop")
    network_bandwidth_gb_per_s: float = Field(
        50.0, gt=0, description="each GPU's NIC to its leaf switch (400 Gb/s InfiniBand NDR = 50 GB/s)")
    network_latency_us: float = Field(2.5, ge=0, description="one network hop (NIC↔switch or switch↔switch)")
    nodes_per_leaf: int = Field(32, ge=1, description="nodes under one leaf switch; more leaves join a spine")
    spine_bandwidth_gb_per_s: float = Field(400.0, gt=0, description="each leaf's uplink to the spine")


class DisaggregationConfig(StrictModel):
    """Prefill/decode disaggregation, active when replica groups have roles ``prefill`` and ``decode``."""

    first_token: Literal["after_transfer", "prefill"] = Field(
        "after_transfer",
        description="after_transfer: the client gets token 1 with the KV cache at the decode replica (vLLM's P/D "
                    "proxy); prefill: the prefill replica streams token 1 itself (DistServe)")
    decode_router: Optional[str] = Field(None, description="router of the decode pool; cluster.router when omitted")
    kv_bytes_per_token: Optional[float] = Field(None, gt=0, description="override the model profile's KV bytes per token")


class ScheduleEntry(StrictModel):
    at_s: float = Field(ge=0, description="from this time on…")
    replicas: int = Field(ge=0, description="…run this many replicas")


class AutoscalerConfig(StrictModel):
    """Elastic replicas of one role. Every ``interval_s`` the policy names a target; the cluster starts replicas
    (each serving only after ``cold_start_s``) or drains them (no new requests; stopped when empty)."""

    policy: str = Field("none", description="none, reactive, scheduled, predictive, or module:Class")
    role: Role = Field("colocated", description="which pool scales (new replicas copy that group's first spec)")
    min_replicas: int = Field(1, ge=0, description="fewest replicas (starting + active) of the scaled pool")
    max_replicas: int = Field(8, ge=1, description="most replicas (starting + active) of the scaled pool")
    interval_s: float = Field(10.0, gt=0, description="how often the policy is evaluated")
    cold_start_s: float = Field(60.0, ge=0, description="from provisioning to serving (loading weights, warm-up)")
    # reactive
    metric: Literal["queue_length", "kv_usage", "slo_violation"] = Field(
        "queue_length", description="reactive: waiting requests per replica, mean KV usage, or SLO-violating fraction")
    scale_up_threshold: float = Field(4.0, ge=0, description="reactive: add a replica above this")
    scale_down_threshold: float = Field(0.5, ge=0, description="reactive: remove a replica below this")
    scale_up_cooldown_s: float = Field(30.0, ge=0, description="reactive: no scale-up sooner than this after a scaling")
    scale_down_cooldown_s: float = Field(120.0, ge=0, description="reactive: no scale-down sooner than this after a scaling")
    window_s: float = Field(60.0, gt=0, description="reactive slo_violation and predictive: look-back window")
    # scheduled
    schedule: list[ScheduleEntry] = Field(default_factory=list, description="scheduled: target replicas over time")
    # predictive
    capacity_rps_per_replica: Optional[float] = Field(None, gt=0, description="predictive: requests/s one replica serves")
    headroom: float = Field(0.2, ge=0, description="predictive: spare capacity above the forecast")

    @model_validator(mode="after")
    def _consistent(self) -> "AutoscalerConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        if self.policy == "scheduled" and not self.schedule:
            raise ValueError("the scheduled policy needs a schedule: [{at_s: 0, replicas: N}, …]")
        if self.policy == "predictive" and self.capacity_rps_per_replica is None:
            raise ValueError("the predictive policy needs capacity_rps_per_replica")
        if self.scale_down_threshold > self.scale_up_threshold:
            raise ValueError("scale_down_threshold must not exceed scale_up_threshold")
        return self


class ScriptedFailure(StrictModel):
    at_s: float = Field(ge=0, description="time of the failure")
    replica: int = Field(ge=0, description="replica id (initial replicas are numbered from 0 in config order)")
    down_s: Optional[float] = Field(None, gt=0, description="time until it serves again; never when omitted")
    cause: str = Field("scripted", description="label in the failures-by-cause table")


class FaultsConfig(StrictModel):
    """Replica failures: random (each replica fails after Exp(mtbf_s), is repaired after Exp(mttr_s)) and scripted."""

    mtbf_s: Optional[float] = Field(None, gt=0, description="mean time between failures of one replica; off when omitted")
    mttr_s: float = Field(300.0, gt=0, description="mean time to repair (until the replica serves again)")
    script: list[ScriptedFailure] = Field(default_factory=list, description="scripted failures: [{at_s, replica, down_s, cause}]")
    on_failure: Literal["fail", "retry"] = Field(
        "retry", description="requests held by a failed replica: fail, or start again on another replica")
    max_retries: int = Field(1, ge=0, description="retries per request before it fails")


class ClusterConfig(StrictModel):
    replicas: Union[int, list[ReplicaGroupSpec]] = Field(
        1, description="number of identical replicas (from hardware:), or a list of replica groups")
    router: str = Field("round-robin", description="global scheduler that picks a replica per request (or module:Class)")
    nodes: Optional[list[NodeGroupSpec]] = Field(
        None, description="machines; when omitted, nodes of 8 GPUs of each kind are added as needed")
    topology: TopologyConfig = Field(default_factory=TopologyConfig)
    disaggregation: DisaggregationConfig = Field(default_factory=DisaggregationConfig)
    autoscaler: AutoscalerConfig = Field(default_factory=AutoscalerConfig)
    faults: FaultsConfig = Field(default_factory=FaultsConfig)

    @model_validator(mode="after")
    def _replicas(self) -> "ClusterConfig":
        if isinstance(self.replicas, int):
            if self.replicas < 1:
                raise ValueError(f"replicas must be at least 1, got {self.replicas}")
            return self
        if not self.replicas:
            raise ValueError("replicas: give a number or at least one replica group")
        roles = {group.role for group in self.replicas}
        if ("prefill" in roles) != ("decode" in roles):
            raise ValueError("disaggregation needs both a prefill and a decode replica group")
        if "colocated" in roles and len(roles) > 1:
            raise ValueError("a cluster is either colocated or disaggregated (prefill + decode groups), not both")
        if self.autoscaler.policy == "none":
            for role in roles:
                if sum(group.count for group in self.replicas if group.role == role) < 1:
                    raise ValueError(f"replicas: the {role} groups start with 0 replicas and no autoscaler adds any; "
                                     "give at least one a count of 1 or more")
        return self

    def replica_groups(self) -> list[ReplicaGroupSpec]:
        """The replica groups, the short form turned into one group."""
        if isinstance(self.replicas, int):
            return [ReplicaGroupSpec(count=self.replicas)]
        return list(self.replicas)

    @property
    def disaggregated(self) -> bool:
        return any(group.role == "prefill" for group in self.replica_groups())
