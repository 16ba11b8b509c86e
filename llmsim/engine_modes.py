"""Which engine runs a config: the aggregate engine, the event-skipping loop, or the per-step reference, and why."""

from __future__ import annotations

from typing import Optional

from llmsim.config import SimConfig
from llmsim.engine.aggregate import aggregate_engine_blockers
from llmsim.engine.aggregate.policies import serves_policy
from llmsim.engine.schedulers import SCHEDULERS
from llmsim.engine.fastpath import scheduler_blockers
from llmsim.engine.hybrid_kv import is_sliding
from llmsim.errors import UserError
from llmsim.hardware.profiles import load_model
from llmsim.metrics.listeners import active_listeners


def engine_mode(config: SimConfig, workload=None, aggregate_abandoned: Optional[str] = None) -> str:
    """Which engine ran, for the summary: ``fast`` (the aggregate engine), ``fast (event-skipping loop: why)``
    or ``reference`` / ``reference (fast path off: why)``. ``aggregate_abandoned``: why the aggregate engine
    gave the run up part-way (it was then run again on the event-skipping loop)."""
    if config.engine.mode == "reference":
        return "reference"
    aggregate_off = aggregate_blockers(config, workload)
    if not aggregate_off and aggregate_abandoned:
        aggregate_off = [aggregate_abandoned]
    if not aggregate_off:
        return "fast"
    blockers = fast_path_blockers(config)
    if blockers:
        # Why neither fast engine runs: what keeps the aggregate engine off, then what keeps decode runs off.
        reasons = aggregate_off + [reason for reason in blockers if reason not in aggregate_off]
        return "reference (fast path off: " + ", ".join(reasons) + ")"
    return "fast (event-skipping loop: " + ", ".join(aggregate_off) + ")"


def aggregate_blockers(config: SimConfig, workload=None) -> list[str]:
    """Why the aggregate engine (:mod:`llmsim.engine.aggregate`) cannot run this config (empty: it runs) on
    ``workload`` (None: any workload the config may get).

    Any router is served (a state-reading one in lockstep, see :mod:`llmsim.cluster.lockstep`), but replicas
    must interact only through routing, retries are not modelled, and no per-step listener may be attached
    (the timeline export wants every step's plan)."""
    reasons = (_aggregate_policy_blockers(config.scheduler) + scheduler_blockers(config.scheduler)
               + _feature_blockers(config) + _interaction_blockers(config))
    reasons += _prefix_cache_blockers(config.scheduler, workload)
    pps = {group.pp or config.hardware.pp for group in config.cluster.replica_groups()}
    reasons += aggregate_engine_blockers(config.scheduler, max(pps, default=1))
    if config.client.max_retries > 0:
        reasons.append("client retries")
    if active_listeners():
        reasons.append("per-step listeners")
    return reasons


def _aggregate_policy_blockers(cfg) -> list[str]:
    """The aggregate engine restates vLLM V1's FCFS, recompute rules on arrays (and policies that are those rules
    with a switch it reads from their class), and runs vLLM V0's step with V0's own admission pass
    (:func:`llmsim.engine.aggregate.policies.serves_policy`)."""
    reasons = []
    if not serves_policy(SCHEDULERS.get(cfg.policy)):
        reasons.append(f"policy {cfg.policy}")
    if cfg.queue != "fcfs":
        reasons.append(f"queue order {cfg.queue}")
    if cfg.preemption != "recompute":
        reasons.append(f"preemption {cfg.preemption}")
    if cfg.max_queue_time_s is not None:
        reasons.append("queue timeouts")
    return reasons


def _prefix_cache_blockers(cfg, workload) -> list[str]:
    """Prefix caching on the aggregate engine, which keeps block counts, not block contents.

    A block is found in the cache only under a key some earlier block was registered with. Without shared
    prefixes in the workload (no conversation with a second turn, no Mooncake hash ids) every key is private to
    its request, so a request admitted for the first time never hits. Only a request preempted by recompute can
    find its own blocks again when it resumes, and which are left follows from the free queue's counts
    (:mod:`llmsim.engine.aggregate.prefix`). In a state those counts do not follow the engine gives the run up
    (``BlockContentsNeeded``) and the event-skipping loop, which keeps every block's content, runs it."""
    if not cfg.enable_prefix_caching:
        return []
    if cfg.kv_offload_gib:
        return ["prefix caching with KV offload"]
    if workload is None or workload_shares_blocks(workload.df):
        return ["prefix caching"]
    return []


def workload_shares_blocks(df) -> bool:
    """Whether two requests of ``df`` may hold blocks under the same key: a session with a second turn (its
    prompt starts with the previous turn's), or Mooncake prefix hash ids (llmsim.engine.prefix_cache)."""
    if "prefix_hashes" in df.columns and df["prefix_hashes"].notna().any():
        return True
    return "session_id" in df.columns and bool(df["session_id"].dropna().duplicated().any())


def _has_sliding_layers(model_name: str) -> bool:
    try:
        model = load_model(model_name)
    except UserError:  # an unknown model is reported where the deployment is built
        return False
    return is_sliding(getattr(model, "layer_types", None))


def fast_path_blockers(config: SimConfig) -> list[str]:
    """Why the event-skipping engine would not be exact for this config (empty: it may be used).

    A skipped decode run is committed when it ends. What routers read of a replica in the middle of one is
    computed from the run's plan (:mod:`llmsim.engine.decode_run_state`), so every router is served; what
    changes a replica's state from outside, or reads more than a router does (autoscaling, faults, P/D
    hand-offs, client timeouts), needs the per-step loop.
    """
    reasons = scheduler_blockers(config.scheduler) + _feature_blockers(config)
    return reasons + _interaction_blockers(config)


def _feature_blockers(config: SimConfig) -> list[str]:
    """Engine features only the per-step loop models."""
    reasons = []
    if config.speculative.enabled:
        reasons.append("speculative decoding")
    if _has_sliding_layers(config.hardware.model):
        reasons.append("sliding-window (hybrid) KV memory")
    return reasons


def _interaction_blockers(config: SimConfig) -> list[str]:
    """What makes replicas interact other than at routing instants (or reach into one from outside)."""
    cluster = config.cluster
    reasons = []
    if cluster.autoscaler.policy != "none":
        reasons.append("autoscaling")
    if cluster.faults.mtbf_s is not None or cluster.faults.script:
        reasons.append("fault injection")
    if isinstance(cluster.replicas, list) and any(group.role != "colocated" for group in cluster.replicas):
        reasons.append("prefill/decode disaggregation")
    if config.client.timeout_s is not None:
        reasons.append("timeouts")
    if config.client.max_concurrency is not None:
        reasons.append("closed-loop clients")
    return reasons
