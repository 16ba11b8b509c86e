"""One step scheduled by the aggregate engine, and the request states its arrays use."""

from __future__ import annotations

WAITING, RUNNING, PREEMPTED, FINISHED, REJECTED = range(5)
ANY = 1 << 62  # an unbounded side of an ``admission_blocked`` range
STATUS_NAMES = ("waiting", "running", "preempted", "finished", "rejected")


class AggregatePlan:
    """One scheduled step: who samples in it (explicitly listed, plus ``pool_n`` pool members) and its figures."""

    __slots__ = ("step", "pool_step", "pool_decodes", "start", "end", "tokens", "prefill", "batch", "sampling",
                 "pool_n", "preempted", "free_after", "num_running", "num_waiting", "new")

    def __init__(self, step: int, pool_step: int = 0) -> None:
        self.step = step  # the replica's step index (the step table's)
        self.pool_step = pool_step  # the decode pool's clock at this step (llmsim.engine.pool; the engine sets it)
        self.pool_decodes = True  # False: a step of newcomers' prompts alone (vLLM V0, TGI): the pool waits
        self.start = self.end = 0.0
        self.tokens = self.prefill = self.batch = self.pool_n = self.preempted = 0
        self.sampling: list[int] = []
        self.new: list[int] = []
        self.free_after = self.num_running = self.num_waiting = 0
