"""Speculative decoding (``speculative:``): a cheap proposer drafts tokens, the target model verifies them.

How vLLM V1 schedules it (``vllm/v1/core/sched/scheduler.py``, ``async_scheduler.py``), and so llmsim; checked
step for step against the real scheduler on the goldens in ``tests/goldens/vllm_v1_speculative``:

- After a request samples a token, the proposer drafts ``num_speculative_tokens`` (k) more (n-gram lookup
  stops at ``max_model_len``; nothing looks at the request's max_tokens, so drafts past its last output token
  are scheduled too and their accepted tokens trimmed). In the next step the request is scheduled for
  ``1 + k`` tokens: its last sampled token and the k drafts. They count against the token budget and need KV
  slots like any other token; a budget that runs out trims the drafts, and so does ``max_model_len``.
- Per method (vLLM's ``max_num_new_slots_for_drafting`` and ``num_lookahead_tokens``): a draft model
  (``draft``) takes one more input slot per scheduled request off the token budget and reserves k
  *lookahead* KV slots; an EAGLE/MTP head reserves k lookahead slots and drops the last prefix-cache hit
  block; n-gram lookup needs neither.
- The target model verifies all of them in that one forward pass. With ``a`` drafts accepted (a prefix of
  the k: the first rejection ends it), the request gains ``a + 1`` tokens (the accepted drafts and the
  target's own next token) and its computed tokens drop by the ``k - a`` rejected slots, which it reuses.
  A preempted request loses its drafts. Prefill steps carry no drafts.
- A request admitted from the waiting queue for a single token (a one-token prompt, or a prefix hit that
  leaves one) beside running decodes and no running prefill is padded to ``1 + k`` tokens with placeholder
  drafts, which are never accepted (vLLM keeps its decode batch uniform).
- With the async loop vLLM does not wait for the drafts: right after scheduling a decode it counts k
  placeholder drafts for the request's next step, so every decode is scheduled for ``1 + k`` tokens.

Acceptance model (how many of k drafts the target accepts), one of:

- ``acceptance_rate`` α: each draft is accepted with probability α given the previous one was (fixed);
- ``acceptance_per_position``: that probability per draft position (EAGLE's falls with depth);
- ``acceptance_length_pmf``: a fitted distribution of the accepted count, P(a = 0), …, P(a = k)
  (e.g. from vLLM's ``spec_decode`` metrics of a real deployment);
- ``acceptance_pattern``: a scripted sequence: a request's n-th verification accepts
  ``pattern[n % len(pattern)]`` drafts (at most those scheduled). Deterministic; the oracle replays use it.

Step cost: verification is part of the target's forward pass (the drafts are ordinary scheduled tokens, so
the timing model prices them). Drafting is a separate, added term (:meth:`Speculator.draft_time`): k
sequential passes of the proposer, each ``draft_cost_fraction`` × the target's decode step of the batch
(a small draft model: its size ratio; an EAGLE/MTP head: about one layer's worth), or, for n-gram lookup, a
CPU cost per request. Defaults per method are below; set ``draft_cost_fraction`` from a measurement when
you have one.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional

import numpy as np
from pydantic import Field, model_validator

from llmsim.configbase import StrictModel

METHODS = ("none", "draft", "eagle", "mtp", "ngram")
# Cost of one drafting pass relative to the target's decode step of the same batch, per method.
DEFAULT_DRAFT_COST = {"draft": 0.1, "eagle": 0.05, "mtp": 0.05, "ngram": 0.0}
NGRAM_CPU_S_PER_REQUEST = 20e-6  # prompt-lookup matching on the host, per request and step


class SpeculativeConfig(StrictModel):
    method: Literal["none", "draft", "eagle", "mtp", "ngram"] = Field(
        "none", description="proposer: none (off), draft (a small draft model), eagle or mtp (a head on the target's "
                            "hidden states; reserves lookahead slots), ngram (prompt lookup)")
    num_speculative_tokens: int = Field(3, ge=1, le=16, description="drafts proposed per request and step (k)")
    acceptance_rate: float = Field(0.7, ge=0, le=1, description="probability that a draft is accepted given the "
                                                                "previous one was (fixed model)")
    acceptance_per_position: Optional[list[float]] = Field(
        None, description="per draft position, the probability it is accepted given the previous one was; "
                          "k values in [0, 1]; overrides acceptance_rate")
    acceptance_length_pmf: Optional[list[float]] = Field(
        None, description="P(accepted drafts = 0, 1, …, k): k + 1 non-negative values summing to 1; overrides "
                          "the other acceptance fields")
    acceptance_pattern: Optional[list[int]] = Field(
        None, description="scripted acceptance: a request's n-th verification accepts pattern[n % len] drafts "
                          "(at most those scheduled); values in 0..k; overrides the other acceptance fields")
    draft_cost_fraction: Optional[float] = Field(
        None, ge=0, description="one drafting pass as a fraction of the target's decode step of the batch; "
                                "default per method: draft 0.1, eagle/mtp 0.05, ngram 0 (CPU cost instead)")
    seed: int = Field(0, description="seed of the acceptance draws")

    @model_validator(mode="after")
    def _check_acceptance(self) -> "SpeculativeConfig":
        k = self.num_speculative_tokens
        per = self.acceptance_per_position
        if per is not None and (len(per) != k or not all(0 <= p <= 1 for p in per)):
            raise ValueError(f"acceptance_per_position: expected {k} probabilities in [0, 1] (one per draft "
                             f"position), got {per}")
        pmf = self.acceptance_length_pmf
        if pmf is not None and (len(pmf) != k + 1 or min(pmf) < 0 or abs(sum(pmf) - 1) > 1e-6):
            raise ValueError(f"acceptance_length_pmf: expected {k + 1} non-negative values summing to 1 "
                             f"(P(0 accepted) … P({k} accepted)), got {pmf}")
        pattern = self.acceptance_pattern
        if pattern is not None and (not pattern or not all(0 <= a <= k for a in pattern)):
            raise ValueError(f"acceptance_pattern: expected a non-empty list of accepted-draft counts in 0..{k}, "
                             f"got {pattern}")
        return self

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def length_pmf(self) -> np.ndarray:
        """P(a drafts accepted) for a = 0 … k, whichever way the acceptance was given."""
        k = self.num_speculative_tokens
        if self.acceptance_pattern is not None:
            return np.bincount(self.acceptance_pattern, minlength=k + 1) / len(self.acceptance_pattern)
        if self.acceptance_length_pmf is not None:
            return np.asarray(self.acceptance_length_pmf, dtype=float)
        per = self.acceptance_per_position or [self.acceptance_rate] * k
        pmf = np.zeros(k + 1)
        survive = 1.0
        for a, p in enumerate(per):
            pmf[a] = survive * (1 - p)
            survive *= p
        pmf[k] = survive
        return pmf

    @staticmethod
    def per_position_from_vllm_metrics(num_drafts: int, accepted_per_position: list[int]) -> list[float]:
        """Fit ``acceptance_per_position`` from a deployment's vLLM counters: ``num_drafts`` (verification
        steps with drafts, ``vllm:spec_decode_num_drafts``) and, per draft position, how often it was
        accepted (``vllm:spec_decode_num_accepted_tokens_per_pos``). Position k is accepted only if k-1
        was, so its conditional probability is ``accepted[k] / accepted[k-1]``."""
        if num_drafts <= 0:
            raise ValueError("num_drafts must be positive")
        probabilities = []
        previous = num_drafts
        for count in accepted_per_position:
            if count > previous:
                raise ValueError(f"accepted_per_position must not increase: {accepted_per_position}")
            probabilities.append(count / previous if previous else 0.0)
            previous = count
        return probabilities

    def expected_acceptance_length(self) -> float:
        """Tokens a verification step yields on average with all k drafts scheduled: 1 + E[a]."""
        pmf = self.length_pmf()
        return 1.0 + float(np.dot(np.arange(len(pmf)), pmf))


class Speculator:
    """The proposer and acceptance model one replica's scheduler uses."""

    def __init__(self, config: SpeculativeConfig, stream: int = 0) -> None:
        self.config = config
        self.k = config.num_speculative_tokens
        # vLLM's num_lookahead_tokens: KV slots past the scheduled tokens for the drafting pass that follows.
        self.lookahead = self.k if config.method in ("draft", "eagle", "mtp") else 0
        # vLLM's max_num_new_slots_for_drafting: input slots per scheduled request beyond its tokens.
        self.draft_slots = 1 if config.method == "draft" else 0
        # vLLM drops the last prefix-cache hit block for EAGLE-family heads (their hidden states are needed).
        self.eagle_block_drop = config.method in ("eagle", "mtp")
        self.pattern = config.acceptance_pattern
        self._cdf = np.cumsum(config.length_pmf())
        self._rng = np.random.default_rng([config.seed, stream])
        self.draft_cost_fraction = (config.draft_cost_fraction if config.draft_cost_fraction is not None
                                    else DEFAULT_DRAFT_COST[config.method])

    def propose(self, request, max_model_len: int) -> None:
        """After a request sampled (sync loop): the drafts it carries into its next step. The proposer does
        not know the request's max_tokens; n-gram lookup stops at ``max_model_len`` (vLLM's NgramProposer),
        the other proposers always draft k (the scheduler's own ``max_model_len`` cap trims them)."""
        k = self.k
        if self.config.method == "ngram":
            k = max(0, min(k, max_model_len - request.num_tokens))
        request.spec_tokens = k

    def verify(self, request, drafts: int, padded: bool = False) -> int:
        """The target checks ``drafts`` scheduled drafts of the request: accepted ones become tokens, rejected
        slots are given back by the caller. Returns the accepted drafts (placeholder padding: none)."""
        if padded:
            return 0
        accepted = self.accepted(drafts, request)
        request.num_draft_tokens += drafts
        request.num_accepted_tokens += accepted
        request.num_verify_steps += 1
        return accepted

    def accepted(self, num_drafts: int, request=None) -> int:
        """How many of ``num_drafts`` scheduled drafts the target accepts (a prefix of them)."""
        if num_drafts <= 0:
            return 0
        pattern = getattr(request, "acceptance_pattern", None) or self.pattern
        if pattern and request is not None:
            # Scripted: the request's n-th verification (num_verify_steps counts the earlier ones).
            return min(pattern[request.num_verify_steps % len(pattern)], num_drafts)
        a = int(np.searchsorted(self._cdf, self._rng.random(), side="right"))
        # Fewer drafts than k (trimmed by the budget or max_model_len): the first rejection among them.
        return min(a, num_drafts, self.k)

    def draft_time(self, step_time: Callable, drafting: list[int], context_lens: list[int]) -> float:
        """Seconds of the drafting that follows a step, for requests whose contexts are ``context_lens``."""
        if not drafting:
            return 0.0
        if self.config.method == "ngram":
            return NGRAM_CPU_S_PER_REQUEST * len(drafting)
        if not self.draft_cost_fraction:
            return 0.0
        one_pass = step_time([1] * len(drafting), context_lens, len(drafting))
        return self.k * self.draft_cost_fraction * one_pass
