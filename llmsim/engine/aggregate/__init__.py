"""The aggregate engine: a batching policy on one replica with its steadily decoding requests held in aggregate.

The reference engine (``engine.mode: reference``) visits every running request in every step. But in most
steps most of the batch is *steady*: each request decodes one token, its context grows by one and it needs
a new KV block exactly when its context crosses a multiple of the block size. Such a request's state is a
linear function of the step index from the step it became steady until the step it samples its last token,
so this engine keeps those requests in a *pool* (:class:`~llmsim.engine.pool.DecodePool`) described by a
few totals: how many members decode this step and the sum of their contexts, which price the step through
:meth:`~llmsim.hardware.timing.RooflineTimingModel.time_from_totals` with the same integer totals and float
operations as the per-step loop; how many of them need a block (members bucketed by their context's phase
modulo the block size: one lookup); and when each samples its last token.

Every step still runs vLLM V1's rules — the running pass, the waiting pass with its full-prompt and
watermark checks, chunked prefill and the per-request cap, the async loop's one-step lag, vLLM's empty
bookkeeping steps — but only requests that are *not* steady (a prefill chunk, an admission, a first token,
a finish) are visited one by one. Policies that are vLLM V1's class with switches run those rules here; vLLM V0
and TGI, whose steps prefill newcomers alone, run their own classes' admission methods over this engine's state
(:mod:`.prefill_first`), and a prefill-only step leaves the pool's clock where it was. Three kinds of step,
cheapest first:

* a *quiet* step (the pool alone: nobody waits, blocks suffice) is a few arithmetic operations
  (:mod:`~llmsim.engine.aggregate.quiet`); new decodes join and finished ones leave the pool inline;
* a step with admissions or a prefill going on prices the pool by its totals and the few others one by one
  (:meth:`~llmsim.engine.aggregate.rules.VLLMV1Rules._schedule_fast`);
* a step whose blocks do not suffice for the whole batch (a preemption is coming, and the victim depends on
  the running order), or whose running pass is not the simple shape (several prefills under a per-request
  cap), walks the running list in order as the reference scheduler does, pool members in place; a victim,
  or a member the token budget does not reach, leaves the pool (:meth:`~llmsim.engine.aggregate.rules.VLLMV1Rules._schedule_explicit`).

The engine runs one replica without simpy: its clock moves from one tick of the engine loop to the next.
Its loop is a generator, so a replica can run alone over arrivals routed up front (round-robin, random) or
in lockstep with the others, pausing at each routing instant (:mod:`llmsim.cluster.lockstep`).
:mod:`.policies` says which policies and configurations it serves; the equivalence tests check that it
gives the reference engine's per-request results, step table, time series and summary.

The package, by responsibility: :mod:`.engine` (the replica's state, its loop, arrivals and deliveries),
:mod:`.rules` (vLLM V1's scheduling decisions on that state), :mod:`.prefill_first` (vLLM V0's and TGI's steps,
their admission asked of their classes), :mod:`.prefix` (prefix caching by block counts), :mod:`.quiet` (the
quiet-step loop), :mod:`.outcome` (step records and what a finished run hands back), :mod:`.plan` (one scheduled
step), :mod:`.policies` (which policies it runs).
"""

from llmsim.engine.aggregate.engine import AggregateReplica
from llmsim.engine.aggregate.outcome import ReplicaOutcome, ReplicaTail
from llmsim.engine.aggregate.policies import aggregate_engine_blockers

__all__ = ["AggregateReplica", "ReplicaOutcome", "ReplicaTail", "aggregate_engine_blockers"]
