"""vLLM V1's scheduler (vLLM 0.32, ``vllm/v1/core/sched/scheduler.py``), rule for rule.

There are no prefill or decode phases. Each step spends one token budget (``max_num_batched_tokens``) in two
passes: first over the RUNNING list in admission order (decodes and unfinished prefill chunks alike), then
over the WAITING queue, admitting FCFS until the first request that does not fit. When a running request
cannot get its KV blocks, the most recently admitted running request is preempted (recompute: its blocks
are dropped and it is prepended to the waiting queue); a step that preempted admits nobody. The rules and
the traces that pin them are in ``../shared/goldens/vllm_v1/README.md``; the numbered comments below refer
to that README's list.

Beyond the goldens (which use FCFS, recompute and no prefix caching): ``scheduler.queue`` re-sorts the
waiting queue before each step; the victim is chosen by ``scheduler.victim`` among the running requests not
yet scheduled in the step (vLLM's ``running.pop()`` is the most recent of them); swap preemption puts the
victim at the waiting queue's head with its blocks in CPU memory, to be swapped back in when admitted;
with preemption ``none`` a request that cannot grow waits; prefix-cache hits start an admitted request's
``num_computed_tokens`` at the hit length, as vLLM's ``get_computed_blocks`` does.
"""

from __future__ import annotations

from typing import Optional

from llmsim.engine.config import SchedulerConfig, vllm_version_tuple
from llmsim.engine.decode_runs import RunRules
from llmsim.engine.kv_cache import KVCacheManager
from llmsim.engine.request import Request
from llmsim.engine.step import StepPlan
from llmsim.engine.scheduler import SchedulerBase


class VLLMV1Scheduler(SchedulerBase):
    name = "vllm-v1"
    # Switches: a policy that is these rules with some of vLLM's own turned off says so in a subclass that sets
    # them and nothing else (TensorRT-LLM's two schedulers, Sarathi-Serve, Orca); the aggregate engine reads the
    # same class attributes (llmsim.engine.aggregate.policies.POLICY_SWITCHES).
    full_prompt_check = True  # rule 3's full-ISL check (``scheduler_reserve_full_isl``)
    prefill_cap = True  # rule 2: ``long_prefill_token_threshold`` caps a request's chunk
    admission_watermark = True  # rule 3: admissions keep ``watermark`` blocks free while some request runs
    chunked_prefill_switch = True  # ``enable_chunked_prefill: false`` makes a prompt wait for a budget that holds it
    vllm_preemption = True  # vLLM's priority victims and its version's rule after a request preempts itself
    decodes_first = False  # the running pass takes every decode before any partial prefill (else admission order)
    reserve_whole_length = False  # admission allocates the whole request (prompt + outputs), so nobody preempts
    token_budget = True  # ``max_num_batched_tokens`` bounds a step (Orca's iterations have no such budget)
    catch_up_cache = False  # blocks are registered where vLLM registers them, nowhere else
    joins_running_batch = True  # a waiting request may join while others run (static batching: only an empty engine)

    def __init__(self, config: SchedulerConfig, kv_cache: KVCacheManager, max_model_len: int) -> None:
        super().__init__(config, kv_cache, max_model_len)
        if self.vllm_preemption:
            # vLLM's priority policy: victim = max(running, key=(priority, arrival)), already scheduled or not.
            self.victims_include_scheduled = (config.queue == "priority"
                                              and config.victim in ("auto", "lowest-priority"))
            self.continue_after_self_preemption = vllm_version_tuple(config.vllm_version) >= (0, 33)

    def schedule(self) -> StepPlan:
        plan = self._begin_step()
        cfg = self.config
        budget = self.decode_token_budget()
        # Rule 2: the per-request cap is waived when the system holds exactly one request.
        threshold = cfg.long_prefill_token_threshold if self.prefill_cap else 0
        if len(self.running) + len(self.waiting) == 1:
            threshold = 0
        running = self.running
        if self.decodes_first and running:
            # In decode: every token but the newest is computed (placeholders: async tokens in flight).
            decoding = [r.num_computed_tokens >= r.prompt_tokens + r.num_output_tokens - 1 + r.num_output_placeholders
                        for r in running]
            if False in decoding and True in decoding[decoding.index(False):]:  # (usually in order already)
                running[:] = ([r for r, d in zip(running, decoding) if d]
                              + [r for r, d in zip(running, decoding) if not d])
        stalled: list[Request] = []
        budget = self._schedule_running(plan, budget, stalled, threshold)  # rules 1 and 5
        # Rule 6: a step that preempted admits nobody, not even the victims.
        if not plan.preempted and (self.joins_running_batch or not running):
            self._schedule_waiting(plan, budget, threshold)
        self._fail_if_deadlocked(plan, stalled)
        return self._finish_plan(plan)

    def decode_run_rules(self, head_refused: bool) -> Optional[RunRules]:
        if self.joins_running_batch:
            return super().decode_run_rules(head_refused)
        # While a batch runs nobody joins: neither a finish nor an arrival changes a decode step, so a run goes on
        # until the batch's last request is done (the caller stops there), whoever waits.
        return RunRules(truncate_on_arrival=False) if self.running else None

    # Rule 3 and rule 4.
    def _schedule_waiting(self, plan: StepPlan, budget: int, threshold: int) -> None:
        cfg = self.config
        kv = self.kv_cache
        waiting = self.waiting
        draft_slots = self._draft_slots
        # Speculative decoding: vLLM pads a single-token admission to a full 1 + k decode when the running pass
        # scheduled decodes only (its prefill flag is the one set at the request's previous schedule).
        pad_k = 0
        if self.speculator is not None and waiting:
            pad_k = self.speculator.k
            running_scheduled = bool(plan.scheduled)
            prefill_scheduled = any(r.is_prefill_chunk for r, _ in plan.scheduled)
        while waiting and budget > draft_slots:
            if len(self.running) >= cfg.max_num_seqs:
                break
            request = waiting[0]
            hit = self._prefix_hit(request)
            # KV offloading: blocks after the GPU hit that the CPU tier holds are loaded, not computed.
            loaded = kv.match_offloaded(request, hit) if self.prefix_caching and request.num_computed_tokens == 0 else 0
            num_new = (request.num_tokens + request.num_output_placeholders - request.num_computed_tokens
                       - (hit + loaded) * kv.block_size)
            padded = False
            if pad_k and num_new == 1 and not prefill_scheduled:
                computed = request.num_computed_tokens + (hit + loaded) * kv.block_size
                if (running_scheduled or computed > 0) and computed + pad_k + 2 <= self.max_model_len:
                    if 1 + pad_k > budget - draft_slots:
                        break  # vLLM would rather not schedule it than schedule it unpadded
                    num_new = 1 + pad_k
                    padded = True
            if threshold:
                num_new = min(num_new, threshold)
            if self.chunked_prefill_switch and not cfg.enable_chunked_prefill and num_new > budget - draft_slots:
                break
            num_new = min(num_new, budget - draft_slots)
            # The watermark counts only while some request is running.
            watermark = kv.watermark_blocks if self.running and self.admission_watermark else 0
            if self.full_prompt_check and cfg.scheduler_reserve_full_isl:
                if kv.blocks_to_admit(request, request.num_tokens, hit) + watermark > kv.num_free_blocks:
                    break
            if self.reserve_whole_length:
                if not self._reserve(request, plan, hit):
                    break
            elif not self._allocate(request, num_new + loaded * kv.block_size, plan, watermark, hit):
                break
            if loaded:
                request.num_computed_tokens += loaded * kv.block_size
                request.num_loaded_tokens += loaded * kv.block_size
                plan.swap_in_blocks += loaded  # the replica charges the PCIe copy to the step
            self._admit(waiting, plan, num_new)
            if padded:
                plan.padded.append(request)
            budget -= num_new + draft_slots


class V1CoreScheduler(VLLMV1Scheduler):
    """vLLM V1's step (running pass, then FCFS admission; recompute the most recent when blocks run out; a step that
    preempted admits nobody) without vLLM's own extras: no full-prompt admission check, no per-request chunk cap, no
    admission watermark, victims from the running list's tail whatever the queue order, and blocks registered with
    the prefix cache after every step. The common core of the other engines' policies written on vLLM V1's class
    (Sarathi-Serve, Orca, TensorRT-LLM's guaranteed-no-evict), which set their own switches on top."""

    name = "v1-core"
    full_prompt_check = False
    prefill_cap = False
    admission_watermark = False
    vllm_preemption = False
    catch_up_cache = True

