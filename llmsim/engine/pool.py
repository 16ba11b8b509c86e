"""The pool of steady decodes: the requests of one replica whose state is a linear function of the step index.

The step index here is the pool's own clock: it counts the steps in which the pool decodes. Under vLLM V1's rules
that is every step; a policy whose newcomers' prompts run in a step of their own (vLLM V0) leaves the clock where it
is for that step, and everything below holds on it unchanged.

A request is *steady* from the step it starts decoding one token per step until the step that samples its last
token. A member that joins before step ``entry`` with ``context`` tokens in its KV cache has, before any step s
up to its ``final`` step, a context of ``base + s`` where ``base = context − entry``, needs a new KV block at
step s exactly when ``base + s`` is a multiple of the block size, and gets one token per step. So for the
members still decoding the pool keeps three totals, enough to schedule and price a step without visiting them:

* ``n`` — how many;
* ``a`` — Σ base, so that Σ context before step s is ``a + n·s``;
* ``phase[r]`` — how many have ``base ≡ r`` (mod block size): those needing a block at step s are
  ``phase[−s mod block size]``.

A member stops counting at the step after its final one (``retire_at``) and finishes when the update of its
final step delivers its last token (``finish_at``). The engine that owns the pool
(:class:`llmsim.engine.aggregate.AggregateReplica`) keeps each request's own counters; what the pool added to
them since ``entry`` follows from the step indices when the request leaves.
"""

from __future__ import annotations


class DecodePool:
    """Steady decodes of one replica, held as totals (module docstring). Requests are local indices."""

    def __init__(self, num_requests: int, block_size: int, allocates: bool = True) -> None:
        self.block_size = block_size
        # False for a policy that reserved each request's whole length at admission: members never need a block,
        # so no phase is counted and every step's need reads 0.
        self.allocates = allocates
        self.member = [False] * num_requests
        self.entry = [0] * num_requests
        self.final = [0] * num_requests
        self.base = [0] * num_requests
        self.n = 0
        self.a = 0
        self.phase = [0] * block_size
        self.retire_at: dict[int, list[int]] = {}
        self.finish_at: dict[int, list[int]] = {}

    def grow(self) -> None:
        """Room for one more request (one routed to the replica during the run)."""
        for values, value in ((self.member, False), (self.entry, 0), (self.final, 0), (self.base, 0)):
            values.append(value)

    def add(self, i: int, step: int, context: int, remaining: int) -> None:
        """Request ``i`` decodes from ``step`` on, with ``context`` tokens cached and ``remaining`` to sample."""
        final = step + remaining - 1
        base = context - step
        self.member[i] = True
        self.entry[i] = step
        self.final[i] = final
        self.base[i] = base
        self.n += 1
        self.a += base
        if self.allocates:
            self.phase[base % self.block_size] += 1
        self.retire_at.setdefault(final + 1, []).append(i)
        self.finish_at.setdefault(final, []).append(i)

    def retire(self, step: int) -> None:
        """Members whose final step was ``step − 1`` stop counting (they finish when that step's update comes)."""
        retiring = self.retire_at.pop(step, None)
        if retiring:
            for i in retiring:
                self._uncount(i)

    def _uncount(self, i: int) -> None:
        base = self.base[i]
        self.n -= 1
        self.a -= base
        if self.allocates:
            self.phase[base % self.block_size] -= 1

    def remove(self, i: int, step: int) -> None:
        """Request ``i`` leaves before step ``step`` (a preemption victim, or a decode the token budget does
        not reach): it stops counting if it still did, and will not be finished by the pool."""
        final = self.final[i]
        tables = [(self.finish_at, final)]
        if final >= step:  # not retired yet
            self._uncount(i)
            tables.append((self.retire_at, final + 1))
        for table, key in tables:
            members = table[key]
            members.remove(i)
            if not members:
                del table[key]
        self.member[i] = False

    def pop_finishing(self, step: int) -> list[int]:
        """Members whose last token the update of ``step`` delivers; they leave the pool."""
        done = self.finish_at.pop(step)
        for i in done:
            self.member[i] = False
        return done

    def steps_between(self, i: int, first: int, last: int) -> int:
        """How many of member ``i``'s pool steps lie in ``first..last``."""
        return max(0, min(last, self.final[i]) - max(first, self.entry[i]) + 1)
