"""A tick-by-tick driver for any batch scheduler (sync engine loop), for hand-built policy scenarios."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmsim.engine.config import SchedulerConfig
from llmsim.engine.request import Request
from llmsim.engine.step import StepOutcome, StepPlan
from llmsim.engine.schedulers import make_kv_cache, make_scheduler


def make(policy: str, num_gpu_blocks: int = 64, num_cpu_blocks: int = 0, max_model_len: int = 4096, **knobs):
    knobs.setdefault("max_num_batched_tokens", 256)
    knobs.setdefault("max_num_seqs", 16)
    config = SchedulerConfig(policy=policy, num_gpu_blocks=num_gpu_blocks, async_scheduling=False, **knobs)
    kv = make_kv_cache(config, num_gpu_blocks, num_cpu_blocks)
    return make_scheduler(config, kv, max_model_len)


def req(rid: str, prompt: int, output: int, **kw) -> Request:
    return Request(rid, kw.pop("arrival_s", 0.0), prompt, output, **kw)


@dataclass
class Trace:
    plans: list[StepPlan] = field(default_factory=list)
    outcomes: list[StepOutcome] = field(default_factory=list)
    running_before: list[list[str]] = field(default_factory=list)

    def scheduled(self, step: int) -> list[tuple[str, int]]:
        return [(r.request_id, n) for r, n in self.plans[step].scheduled]


def run(scheduler, arrivals: dict[int, list[Request]], max_steps: int = 10_000) -> Trace:
    """Add ``arrivals[tick]`` before each tick's schedule; run until every request has ended."""
    trace = Trace()
    last_arrival = max(arrivals, default=0)
    for tick in range(max_steps):
        for request in arrivals.get(tick, []):
            scheduler.add_request(request)
        if tick > last_arrival and not scheduler.has_requests():
            return trace
        trace.running_before.append([r.request_id for r in scheduler.running])
        plan = scheduler.schedule()
        trace.plans.append(plan)
        trace.outcomes.append(scheduler.update_from_output(plan))
    raise AssertionError("scenario did not finish")
