"""Speculative decoding (``speculative:``): a cheap proposer drafts tokens, the target model verifies them.

How vLLM V1 schedules it (``vllm/v1/core/sched/scheduler.py``), and so llmsim:

- After a request samples a token, the proposer drafts ``num_speculative_tokens`` (k) more. In the next step
  the request is scheduled for ``1 + k`` tokens: its last sampled token and the k drafts. They count against
  the token budget and need KV slots like any other token; a budget that runs out trims the drafts.
  EAGLE/MTP heads also reserve k *lookahead* slots for the drafting pass that follows.
- The target model verifies all of them in that one forward pass. With ``a`` drafts accepted (a prefix of
  the k: the first rejection ends it), the request gains ``a + 1`` tokens (the accepted drafts and the
  target's own next token) and its computed tokens drop by the ``k - a`` rejected slots, which it reuses.
  A preempted request loses its drafts. (llmsim's choice: drafts are never proposed past the request's last
  output token, since they could only be discarded.)
- Prefill steps carry no drafts.

Acceptance model (how many of k drafts the target accepts), one of:

- ``acceptance_rate`` α: each draft is accepted with probability α given the previous one was (fixed);
- ``acceptance_per_position``: that probability per draft position (EAGLE's falls with depth);
- ``acceptance_length_pmf``: a fitted distribution of the accepted count, P(a = 0), …, P(a = k)
  (e.g. from vLLM's ``spec_decode`` metrics of a real deployment).

Step cost: verification is part of the target's forward pass (the drafts are ordinary scheduled tokens, so
the timing model prices them). Drafting is a separate, added term (:meth:`Speculator.draft_time`): k
sequential passes of the proposer, each ``draft_cost_fraction`` × the target's decode step of the batch
(a small draft model: its size ratio; an EAGLE/MTP head: about one layer's worth), or, for n-gram lookup, a
CPU cost per request. Defaults per method are below; set ``draft_cost_fraction`` from a measurement when
you have one.

llmsim models vLLM's synchronous loop here: a config that asks for speculative decoding with the async
loop is refused rather than run with a made-up rule.
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
        return self

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def length_pmf(self) -> np.ndarray:
        """P(a drafts accepted) for a = 0 … k, whichever way the acceptance was given."""
        k = self.num_speculative_tokens
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
        self.lookahead = self.k if config.method in ("eagle", "mtp") else 0
        self._cdf = np.cumsum(config.length_pmf())
        self._rng = np.random.default_rng([config.seed, stream])
        self.draft_cost_fraction = (config.draft_cost_fraction if config.draft_cost_fraction is not None
                                    else DEFAULT_DRAFT_COST[config.method])

    def drafts_for(self, remaining_outputs: int) -> int:
        """Drafts to propose for a request that still has ``remaining_outputs`` tokens to produce."""
        return max(0, min(self.k, remaining_outputs - 1))

    def propose(self, request) -> None:
        """After a request sampled: the drafts it carries into its next step."""
        request.spec_tokens = self.drafts_for(request.max_output_tokens - request.num_output_tokens)

    def verify(self, request) -> int:
        """The target checks the request's scheduled drafts (``spec_tokens``): accepted ones become tokens,
        rejected slots are given back (its computed tokens drop by them). Returns the tokens gained: the
        accepted drafts and the target's own."""
        drafts = request.spec_tokens
        accepted = self.accepted(drafts)
        request.num_computed_tokens -= drafts - accepted
        request.num_draft_tokens += drafts
        request.num_accepted_tokens += accepted
        request.num_verify_steps += 1
        request.spec_tokens = 0
        return accepted + 1

    def accepted(self, num_drafts: int) -> int:
        """How many of ``num_drafts`` scheduled drafts the target accepts (a prefix of them)."""
        if num_drafts <= 0:
            return 0
        a = int(np.searchsorted(self._cdf, self._rng.random(), side="right"))
        # Fewer drafts than k (trimmed by the budget or the output length): the first rejection among them.
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
