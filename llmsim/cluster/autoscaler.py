"""Autoscaling: how many replicas of one pool should run, re-decided every ``interval_s``.

A policy reads a :class:`ScalingObservation` (read-only numbers about the pool and recent traffic) and
returns a target replica count; the :class:`Autoscaler` clamps it to ``[min_replicas, max_replicas]`` and
acts. Scaling up provisions replicas that serve only after ``cold_start_s`` (loading weights; GPU time is
paid from provisioning on). Scaling down first cancels replicas still starting, then *drains* the active
replicas with the fewest outstanding requests: they take no new requests and stop when empty, so no
request is cut off.

Policies (``cluster.autoscaler.policy``):

- ``reactive``: thresholds on one metric (waiting requests per replica, mean KV usage, or the fraction of
  requests ending in the last ``window_s`` that missed an SLO): one replica more above
  ``scale_up_threshold``, one fewer below ``scale_down_threshold``, each direction with its cool-down since
  the last scaling action (the Kubernetes HPA's stabilisation windows play the same role).
- ``scheduled``: a time table of replica counts (e.g. from yesterday's traffic).
- ``predictive``: forecast the arrival rate one cold start ahead by a linear trend through the last
  ``window_s`` (rate in each half of the window), and run ``ceil(forecast × (1 + headroom) /
  capacity_rps_per_replica)`` replicas.

For policies that name absolute targets (scheduled, predictive, user policies unless they set
``stabilise_scale_down = False``), a scale-down goes only as low as the largest target named during the
last ``scale_down_cooldown_s`` (a stabilisation window against flapping); the reactive policy has its own
cool-downs instead.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol

from llmsim.cluster.config import AutoscalerConfig
from llmsim.cluster.handle import ReplicaSpec, ReplicaState
from llmsim.cluster.routers import load_user_class
from llmsim.engine.request import Request, RequestStatus
from llmsim.errors import ConfigError, did_you_mean
from llmsim.metrics.config import SLOConfig

if TYPE_CHECKING:
    from llmsim.cluster.cluster import Cluster

EVENT_COLUMNS = ("time_s", "action", "replica", "replicas_before", "target", "metric")


@dataclass(frozen=True)
class ScalingObservation:
    now_s: float
    num_replicas: int  # starting + active in the pool
    num_active: int
    waiting_per_replica: float  # waiting requests per active replica
    mean_kv_usage: float  # over active replicas
    slo_violation_fraction: float  # of requests that ended in the window (0 when none ended)
    arrival_rate_rps: float  # over the window
    arrival_trend_rps_per_s: float  # d(rate)/dt estimated from the two halves of the window
    window_s: float


class ScalingPolicy(Protocol):
    def target(self, obs: ScalingObservation) -> int: ...


class ReactivePolicy:
    # Steps one replica at a time behind its own cool-downs, so no extra scale-down stabilisation.
    stabilise_scale_down = False

    def __init__(self, cfg: AutoscalerConfig) -> None:
        self.cfg = cfg
        self._last_action_s = -math.inf

    def metric(self, obs: ScalingObservation) -> float:
        return {"queue_length": obs.waiting_per_replica, "kv_usage": obs.mean_kv_usage,
                "slo_violation": obs.slo_violation_fraction}[self.cfg.metric]

    def target(self, obs: ScalingObservation) -> int:
        value, cfg, since = self.metric(obs), self.cfg, obs.now_s - self._last_action_s
        if value > cfg.scale_up_threshold and since >= cfg.scale_up_cooldown_s:
            self._last_action_s = obs.now_s
            return obs.num_replicas + 1
        if value < cfg.scale_down_threshold and since >= cfg.scale_down_cooldown_s and obs.num_replicas > 0:
            self._last_action_s = obs.now_s
            return obs.num_replicas - 1
        return obs.num_replicas


class ScheduledPolicy:
    def __init__(self, cfg: AutoscalerConfig) -> None:
        entries = sorted(cfg.schedule, key=lambda e: e.at_s)
        self._times = [e.at_s for e in entries]
        self._counts = [e.replicas for e in entries]

    def target(self, obs: ScalingObservation) -> int:
        i = bisect.bisect_right(self._times, obs.now_s) - 1
        return self._counts[i] if i >= 0 else obs.num_replicas


class PredictivePolicy:
    def __init__(self, cfg: AutoscalerConfig) -> None:
        self.cfg = cfg

    def forecast_rps(self, obs: ScalingObservation) -> float:
        return max(0.0, obs.arrival_rate_rps + obs.arrival_trend_rps_per_s * (obs.window_s / 2 + self.cfg.cold_start_s))

    def target(self, obs: ScalingObservation) -> int:
        need = self.forecast_rps(obs) * (1.0 + self.cfg.headroom) / self.cfg.capacity_rps_per_replica
        return math.ceil(need - 1e-9)


POLICIES: dict[str, type] = {"reactive": ReactivePolicy, "scheduled": ScheduledPolicy, "predictive": PredictivePolicy}


def make_policy(cfg: AutoscalerConfig) -> Optional[ScalingPolicy]:
    if cfg.policy == "none":
        return None
    if cfg.policy in POLICIES:
        return POLICIES[cfg.policy](cfg)
    if ":" in cfg.policy:
        return load_user_class(cfg.policy, "cluster.autoscaler.policy")(cfg)
    valid = ", ".join(["none", *POLICIES])
    raise ConfigError(f"config field cluster.autoscaler.policy: unknown policy {cfg.policy!r}{did_you_mean(cfg.policy, ['none', *POLICIES])}; valid: {valid}, or module:Class")


class Autoscaler:
    """Evaluates the policy periodically and starts or drains replicas of ``cfg.role``."""

    def __init__(self, cluster: "Cluster", cfg: AutoscalerConfig, policy: ScalingPolicy, template: ReplicaSpec,
                 slo: SLOConfig) -> None:
        self.cluster, self.cfg, self.policy, self.template, self.slo = cluster, cfg, policy, template, slo
        self._ended: deque[tuple[float, bool]] = deque()
        self._recent: deque[tuple[float, int]] = deque()
        self.events: dict[str, list] = {name: [] for name in EVENT_COLUMNS}
        cluster.listeners.append(self)
        cluster.env.process(self._run())

    def on_request_end(self, request: Request, now_s: float) -> None:
        self._ended.append((now_s, not self._met_slo(request)))

    def _met_slo(self, request: Request) -> bool:
        if request.status != RequestStatus.FINISHED or request.first_token_s is None:
            return False
        slo, ttft = self.slo, request.first_token_s - request.arrival_s
        if slo.ttft_s is not None and ttft > slo.ttft_s:
            return False
        e2el = request.last_token_s - request.arrival_s
        if slo.e2el_s is not None and e2el > slo.e2el_s:
            return False
        if slo.tpot_s is not None and request.num_output_tokens > 1:
            return (e2el - ttft) / (request.num_output_tokens - 1) <= slo.tpot_s
        return True

    def observe(self) -> ScalingObservation:
        cluster, now, window = self.cluster, self.cluster.env.now, self.cfg.window_s
        live = cluster.live_replicas(self.cfg.role)
        active = [r for r in live if r.state == ReplicaState.ACTIVE]
        while self._ended and self._ended[0][0] < now - window:
            self._ended.popleft()
        violated = sum(v for _, v in self._ended)
        times = cluster.arrival_times
        lo, mid = bisect.bisect_left(times, now - window), bisect.bisect_left(times, now - window / 2)
        older, newer = mid - lo, len(times) - mid
        span = min(window, now) or 1.0
        return ScalingObservation(
            now_s=now, num_replicas=len(live), num_active=len(active),
            waiting_per_replica=(sum(r.view.num_waiting for r in active) + len(cluster.pending)) / max(len(active), 1),
            mean_kv_usage=sum(r.view.kv_usage for r in active) / max(len(active), 1),
            slo_violation_fraction=violated / len(self._ended) if self._ended else 0.0,
            arrival_rate_rps=(older + newer) / span,
            arrival_trend_rps_per_s=(newer - older) / (window / 2) / (window / 2) if now >= window else 0.0,
            window_s=window,
        )

    def _run(self):
        env = self.cluster.env
        while not self.cluster.done.triggered:
            yield env.timeout(self.cfg.interval_s)
            obs = self.observe()
            target = int(self.policy.target(obs))
            if getattr(self.policy, "stabilise_scale_down", True):
                target = self._stabilised(obs.now_s, target)
            target = min(max(target, self.cfg.min_replicas), self.cfg.max_replicas)
            metric = getattr(self.policy, "metric", None)
            value = metric(obs) if metric is not None else float("nan")
            if target > obs.num_replicas:
                self._scale_up(target - obs.num_replicas, obs.num_replicas, target, value)
            elif target < obs.num_replicas:
                self._scale_down(obs.num_replicas - target, obs.num_replicas, target, value)

    def _stabilised(self, now_s: float, target: int) -> int:
        """Scale down only to the largest target of the last ``scale_down_cooldown_s`` (Kubernetes HPA's
        scale-down stabilisation window): a forecast or queue that dips for one interval does not cancel
        replicas that the next interval needs again."""
        self._recent.append((now_s, target))
        while self._recent and self._recent[0][0] < now_s - self.cfg.scale_down_cooldown_s:
            self._recent.popleft()
        return max(t for _, t in self._recent)

    def _log(self, action: str, replica: int, before: int, target: int, value: float) -> None:
        for name, v in zip(EVENT_COLUMNS, (self.cluster.env.now, action, replica, before, target, value)):
            self.events[name].append(v)

    def _scale_up(self, count: int, before: int, target: int, value: float) -> None:
        for _ in range(count):
            replica = self.cluster.add_replica(self.template, cold_start_s=self.cfg.cold_start_s)
            self._log("start" if replica is not None else "no_free_gpus", -1 if replica is None else replica.replica_id,
                      before, target, value)
            if replica is None:
                return

    def _scale_down(self, count: int, before: int, target: int, value: float) -> None:
        live = self.cluster.live_replicas(self.cfg.role)
        # Cancel the newest starting replicas first, then drain the least-loaded active ones (newest on ties).
        starting = [r for r in live if r.state == ReplicaState.STARTING][::-1]
        active = sorted((r for r in live if r.state == ReplicaState.ACTIVE),
                        key=lambda r: (r.num_outstanding, -r.replica_id))
        for replica in (starting + active)[:count]:
            self._log("cancel" if replica.state == ReplicaState.STARTING else "drain", replica.replica_id,
                      before, target, value)
            self.cluster.drain(replica)
