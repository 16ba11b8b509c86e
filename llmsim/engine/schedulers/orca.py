"""Orca (Yu et al., "Orca: A Distributed Serving System for Transformer-Based Generative Models", OSDI 2022).

Iteration-level scheduling: the batch is re-formed at every iteration, so a finished request leaves and a
new one joins at the next iteration instead of waiting for the whole batch (contrast ``static``). Selective
batching runs a newcomer's WHOLE prompt in the same iteration as the running requests' decodes: there is no
chunking. Orca's scheduler reserves ``max_tokens`` KV slots for a request when it first schedules it (paper
§4.5), so it never preempts. Its only cap is the batch size (``scheduler.max_num_seqs``); the paper has no
per-iteration token budget, so ``max_num_batched_tokens`` does not apply.

These are vLLM V1's step rules (:mod:`llmsim.engine.schedulers.vllm_v1`) with no token budget, each request's
whole length reserved at admission, and vLLM's admission extras off (full-prompt check, per-request cap, watermark;
with no budget a prompt always fits in one iteration).
"""

from __future__ import annotations

from llmsim.engine.schedulers.vllm_v1 import V1CoreScheduler


class OrcaScheduler(V1CoreScheduler):
    name = "orca"
    token_budget = False
    reserve_whole_length = True
    chunked_prefill_switch = False  # (without a budget every prompt fits its iteration anyway)
