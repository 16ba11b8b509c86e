"""Sarathi-Serve (Agrawal et al., "Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve",
OSDI 2024): stall-free batching with chunked prefills.

Every step has a token budget (``scheduler.max_num_batched_tokens``, the paper's "token budget" chosen from
the TBT SLO). The step first takes ONE decode token from every running request that has finished its
prefill, then continues the running requests' partial prefills, then admits new requests FCFS with prefill
chunks that fill what is left of the budget. Decodes therefore never stall behind a long prefill, and a
prompt is spread over several steps. Admission checks only the blocks of this step's chunk (vLLM V0's
chunked-prefill mode, on which Sarathi-Serve was built). When a decode cannot get a block, the most recently
admitted running request is preempted (recompute or swap); as in vLLM V1, a step that preempted admits
nobody (our choice: it avoids re-admitting a victim's freed blocks to a newcomer in the same step).

These are vLLM V1's step rules (:mod:`llmsim.engine.schedulers.vllm_v1`) with vLLM's own additions switched off:
no full-prompt admission check, no per-request chunk cap (``long_prefill_token_threshold``), no admission
watermark, always chunked (``enable_chunked_prefill`` does not apply), FCFS victims from the running list's
tail whatever the queue order, and blocks registered with the prefix cache after every step; and the running
pass takes the decodes first, each group in admission order (vLLM V1 walks admission order: the two differ when a
partial prefill is followed by a decode, as when a request that cannot grow waits without preemption).
"""

from __future__ import annotations

from llmsim.engine.schedulers.vllm_v1 import V1CoreScheduler


class SarathiScheduler(V1CoreScheduler):
    name = "sarathi"
    chunked_prefill_switch = False  # always chunked
    decodes_first = True
