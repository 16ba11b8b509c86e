"""Which batching policies the aggregate engine runs, read from their classes.

Two kinds: vLLM V1's class with switches (:func:`states_rules_of`; :mod:`.rules` states those rules on arrays and
reads the switches), and the classes whose steps prefill newcomers alone, vLLM V0's and TGI's, whose own admission
methods the engine calls (:func:`prefill_first_kind`, :mod:`.prefill_first`). Everything else runs on the event-skipping loop (:mod:`llmsim.engine_modes`).
"""

from __future__ import annotations

from llmsim.engine.schedulers.tgi import TGIScheduler
from llmsim.engine.schedulers.vllm_v0 import VLLMV0Scheduler
from llmsim.engine.schedulers.vllm_v1 import VLLMV1Scheduler

#: The switches of :class:`VLLMV1Scheduler` that :mod:`.rules` reads from the policy's class (the engine sets them up from
#: it): a policy that is vLLM V1 with only these changed (Sarathi-Serve, Orca, static batching, TensorRT-LLM's two
#: schedulers) runs here from its own statement.
POLICY_SWITCHES = ("full_prompt_check", "prefill_cap", "admission_watermark", "chunked_prefill_switch",
                   "reserve_whole_length", "token_budget", "joins_running_batch")
#: Switches that change nothing in the configurations this engine runs: FCFS victims from the running list's tail
#: (``vllm_preemption``), no prefix cache (``catch_up_cache``), and ``decodes_first`` without a per-request cap:
#: a prompt's chunk then takes what is left of the budget, so at most one prefill is going on, the last admitted,
#: and admission order already puts the decodes first (:func:`states_rules_of` requires it).
_MOOT_SWITCHES = ("vllm_preemption", "catch_up_cache", "decodes_first")
#: What any policy class states besides its rules.
_BASICS = frozenset(("__module__", "__qualname__", "__doc__", "__firstlineno__", "__static_attributes__", "name"))
_CLASS_ATTRIBUTES = _BASICS | frozenset((*POLICY_SWITCHES, *_MOOT_SWITCHES))


def states_rules_of(policy: type | None) -> bool:
    """Whether :mod:`.rules` states ``policy``'s rules: vLLM V1's class, or a subclass that sets nothing but its name
    and the switches above (any method it overrode would be a rule that module does not state)."""
    if policy is None or not issubclass(policy, VLLMV1Scheduler):
        return False
    own = policy.__mro__[: policy.__mro__.index(VLLMV1Scheduler)]
    if not all(set(vars(klass)) <= _CLASS_ATTRIBUTES for klass in own):
        return False
    return not (policy.decodes_first and policy.prefill_cap)  # several prefills at once: the order matters


def aggregate_engine_blockers(sched_cfg, pp: int) -> list[str]:
    """What the aggregate engine does not model on top of what decode runs need
    (:func:`llmsim.engine.fastpath.scheduler_blockers`, which the caller adds): empty when it may run."""
    reasons = []
    if sched_cfg.victim not in ("auto", "most-recent"):
        reasons.append(f"victim rule {sched_cfg.victim}")
    if pp > 1:
        reasons.append("pipeline parallelism")
    return reasons


#: The policies whose steps prefill newcomers alone (or else decode every running request), with the methods the
#: engine calls from their class (:mod:`.prefill_first`): a subclass may restate those, and nothing else.
PREFILL_FIRST = {
    VLLMV0Scheduler: ("admit_prefills", "_schedule_prefills", "_watermark"),
    TGIScheduler: ("admit_prefills", "_admissible_count", "_min_prefill_size", "_admit_reserved", "decode_run_rules",
                   "note_steps", "advance_decode_run"),
}


def prefill_first_kind(policy: type | None) -> type | None:
    """The class of :data:`PREFILL_FIRST` that ``policy`` is, or a subclass of that changes only the methods the engine
    calls (whatever they say); None otherwise (any other method it overrode would be a rule the engine does not
    follow)."""
    for kind, asked in PREFILL_FIRST.items():
        if policy is not None and issubclass(policy, kind):
            own = policy.__mro__[: policy.__mro__.index(kind)]
            return kind if all(set(vars(klass)) <= _BASICS | set(asked) for klass in own) else None
    return None


def serves_policy(policy: type | None) -> bool:
    """Whether the aggregate engine runs ``policy`` (either kind above)."""
    return states_rules_of(policy) or prefill_first_kind(policy) is not None
