"""Static batching, as in NVIDIA FasterTransformer: a batch is formed, then runs until ALL its requests finish.

When the engine is empty it takes up to ``scheduler.max_num_seqs`` waiting requests (FCFS, each with KV space
for its full length, as FasterTransformer allocates for the maximum sequence length), prefills all their
prompts in one step, then decodes. A request that finishes early leaves, but nobody joins until the batch is
empty, so short requests wait for long ones (the inefficiency Orca's iteration-level scheduling removes).
FasterTransformer has no per-step token budget, so ``max_num_batched_tokens`` does not apply; it never
preempts.

These are Orca's rules (:mod:`llmsim.engine.schedulers.orca`: vLLM V1's step with no token budget and each request's
whole length reserved at admission) with one more switch: a waiting request joins only an empty engine.
"""

from __future__ import annotations

from llmsim.engine.schedulers.vllm_v1 import V1CoreScheduler


class StaticBatchScheduler(V1CoreScheduler):
    name = "static"
    token_budget = False
    reserve_whole_length = True
    chunked_prefill_switch = False  # (without a budget every prompt fits its step anyway)
    joins_running_batch = False
