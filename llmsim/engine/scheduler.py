"""The state and rules every batching policy shares (:class:`SchedulerBase`): queues, the running pass,
admission bookkeeping and preemption; output processing is in :mod:`llmsim.engine.step_output`. The protocol
the replica drives and the step's plan and outcome are in :mod:`llmsim.engine.step`.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from llmsim.engine.config import SchedulerConfig
from llmsim.engine.decode_runs import DecodeRunRules
from llmsim.engine.kv_cache import KVCacheManager
from llmsim.engine.prefix_cache import PrefixCachingKVCacheManager
from llmsim.engine.queues import VictimRule, make_queue_order, make_victim_rule
from llmsim.engine.request import Request, RequestStatus
from llmsim.engine.speculative import Speculator
from llmsim.engine.step import StepPlan
from llmsim.engine.step_output import OutputProcessing
from llmsim.errors import ConfigError, did_you_mean

PREEMPTION_MODES = ("recompute", "swap", "none")


class SchedulerBase(DecodeRunRules, OutputProcessing):
    """Queues, admission bookkeeping and output processing shared by the concrete policies.

    Subclasses implement :meth:`schedule`. ``async_scheduling`` reproduces vLLM's AsyncScheduler: a token
    sampled in step s is delivered in the update that follows step s+1's schedule, so until then the request
    carries an *output placeholder* that the scheduler counts as part of its length.

    Shared by every policy: the waiting-queue order (``scheduler.queue``), the victim rule
    (``scheduler.victim``), the preemption mode (``scheduler.preemption``: recompute drops the victim's
    blocks, swap moves them to CPU swap space, none never evicts) and prefix-cache hits at admission.
    """

    name = "base"
    default_victim: VictimRule | None = None  # the policy's own rule for scheduler.victim = auto
    # vLLM's priority policy looks for a victim among all running requests, even those already scheduled in
    # the step; its FCFS policy pops the running list's tail, which is never scheduled yet.
    victims_include_scheduled = False
    # What a running request that preempted itself does to the rest of the running pass: vLLM 0.32 ends it,
    # 0.33 continues with the next running request (only differs when the victim is not the list's tail).
    continue_after_self_preemption = False
    # Register newly computed full blocks after each step too (for policies that allocate ahead, whose later
    # tokens never pass through allocate_slots); vLLM V1 registers only at allocation and in the async update.
    catch_up_cache = True

    def __init__(self, config: SchedulerConfig, kv_cache: KVCacheManager, max_model_len: int) -> None:
        self.config = config
        self.kv_cache = kv_cache
        self.max_model_len = max_model_len
        self.async_scheduling = config.async_scheduling
        if config.preemption not in PREEMPTION_MODES:
            raise ConfigError(f"config field scheduler.preemption: unknown mode {config.preemption!r}{did_you_mean(config.preemption, PREEMPTION_MODES)}; "
                              f"valid: {', '.join(PREEMPTION_MODES)}")
        self.preemption = config.preemption
        self.queue_order = make_queue_order(config)
        self.victim_rule = make_victim_rule(config, self.default_victim)
        self.prefix_caching = config.enable_prefix_caching
        if config.kv_offload_gib and self.name != "vllm-v1":
            raise ConfigError(f"config field scheduler.kv_offload_gib: KV offloading is modelled for scheduler.policy "
                              f"vllm-v1 only, not {self.name}")
        self.speculator: Optional[Speculator] = None  # speculative decoding (see enable_speculation)
        self._lookahead = 0
        self._draft_slots = 0  # input slots each scheduled request takes beyond its tokens (a draft model: 1)
        self.now_s = 0.0
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.swapped: deque[Request] = deque()  # only policies with a separate swapped queue (vLLM V0) use it
        self.step_index = 0
        self._admission_counter = 0
        # vLLM keeps the ids finished in the last update until the next schedule() reports them to the
        # workers; while any are pending the engine still calls schedule() (a "bookkeeping" step).
        self._finished_pending = False

    def enable_speculation(self, speculator: Speculator) -> None:
        """Schedule drafts as vLLM V1 does (:mod:`llmsim.engine.speculative`); refused where not modelled."""
        if self.name != "vllm-v1":
            raise ConfigError(f"config field speculative.method: speculative decoding is modelled for scheduler.policy "
                              f"vllm-v1 only, not {self.name}")
        self.speculator = speculator
        self._lookahead = speculator.lookahead
        self._draft_slots = speculator.draft_slots
        if isinstance(self.kv_cache, PrefixCachingKVCacheManager):
            self.kv_cache.num_lookahead_tokens = speculator.lookahead  # allocations carry it; never cached

    # -- queue state -----------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting) + len(self.swapped)

    def add_request(self, request: Request) -> None:
        request.status = RequestStatus.WAITING
        self.waiting.append(request)

    def has_unfinished_requests(self) -> bool:
        return bool(self.running) or bool(self.waiting) or bool(self.swapped)

    def has_requests(self) -> bool:
        return self.has_unfinished_requests() or self._finished_pending

    # -- helpers for subclasses ------------------------------------------------------------------
    def _begin_step(self) -> StepPlan:
        plan = StepPlan(step=self.step_index)
        self.step_index += 1
        self._finished_pending = False
        self.waiting = self.queue_order.order(self.waiting, self.now_s)
        return plan

    def _admit(self, queue: deque, plan: StepPlan, num_new: int) -> None:
        """Move the head of ``queue`` (waiting or swapped) to the tail of the running list, scheduled for
        ``num_new`` tokens in this step; it becomes the most recently admitted."""
        request = queue.popleft()
        plan.scheduled.append((request, num_new))
        request.status = RequestStatus.RUNNING
        request.admitted_seq = self._admission_counter
        self._admission_counter += 1
        self.running.append(request)
        if request.was_preempted:
            plan.resumed.append(request)
            request.resumed_at_steps.append(plan.step)
        else:
            plan.new.append(request)
            request.first_scheduled_step = plan.step

    def _remove_running(self, request: Request) -> None:
        if self.running and self.running[-1] is request:
            self.running.pop()
        else:
            self.running.remove(request)

    def _preempt(self, request: Request, plan: StepPlan) -> None:
        """Take a running request's KV blocks away (the caller has removed it from ``running``).

        Swap (if the swap space has room): its blocks move to CPU memory and it keeps its computed tokens.
        Otherwise recompute: the blocks are dropped and it re-prefills everything when resumed.
        """
        request.num_preemptions += 1
        request.was_preempted = True
        request.preempted_at_steps.append(plan.step)
        plan.preempted.append(request)
        request.spec_tokens = 0  # drafts are dropped with the KV
        if self.preemption == "swap":
            moved = self.kv_cache.swap_out(request)
            if moved >= 0:
                plan.swap_out_blocks += moved
                request.status = RequestStatus.SWAPPED
                return
        self.kv_cache.free(request)
        request.num_recomputed_tokens += request.num_computed_tokens
        request.num_computed_tokens = 0
        request.status = RequestStatus.PREEMPTED

    @staticmethod
    def _last_token_in_flight(request: Request) -> bool:
        """Async loop: skip a request whose final token is already being sampled (vLLM 0.32)."""
        return (
            request.num_output_placeholders > 0
            and request.num_computed_tokens + 2 - request.num_output_placeholders >= request.max_total_tokens
        )

    @staticmethod
    def _max_total_tokens(request: Request) -> int:
        """Prompt plus every output token the request may produce (what a reserving policy holds for it)."""
        return request.max_total_tokens

    @staticmethod
    def _tokens_to_feed(request: Request) -> int:
        """Tokens not yet in the KV cache: a prefill (chunk), a recompute, or 1 for a decode."""
        return request.num_tokens + request.num_output_placeholders - request.num_computed_tokens

    def _requeue(self, victim: Request) -> None:
        """Put a preempted request back at the head of the waiting queue (vLLM prepends victims)."""
        self.waiting.appendleft(victim)

    def _grow_or_preempt(self, request: Request, num_new: int, plan: StepPlan, index: int) -> tuple[bool, int, int]:
        """Give ``running[index]`` slots for ``num_new`` tokens, preempting others until they fit (vLLM's rule).

        Victims are chosen by the victim rule among ``running[index:]`` — the running requests not yet
        scheduled in this step, the requester included — or, when ``victims_include_scheduled`` (vLLM's
        priority policy), among all running requests: a victim already scheduled in this step loses its
        tokens, which go back to the budget. Returns (granted, tokens handed back, scheduled victims removed). Not granted: the requester itself was preempted, or, with preemption ``none``, it cannot
        grow (it then waits, keeping its blocks).
        """
        kv = self.kv_cache
        running = self.running
        refund = shift = 0
        while not kv.allocate_slots(request, num_new + self._lookahead):
            if self.preemption == "none":
                return False, refund, shift
            victim = self.victim_rule(running if self.victims_include_scheduled else running[index - shift:], kv)
            if self.victims_include_scheduled:
                for k, (scheduled, n) in enumerate(plan.scheduled):
                    if scheduled is victim:
                        # vLLM steps its index back only for a victim it had scheduled; an earlier victim that
                        # it had skipped (its last token in flight) makes it skip the request after this one.
                        del plan.scheduled[k]
                        refund += n + self._draft_slots
                        shift += 1
                        break
            self._remove_running(victim)
            self._preempt(victim, plan)
            self._requeue(victim)
            if victim is request:
                return False, refund, shift
        return True, refund, shift

    def _schedule_running(self, plan: StepPlan, budget: int, stalled: list[Request], threshold: int = 0) -> int:
        """The running pass of the paged policies (vLLM's rules 1 and 5): each running request in list order
        gets ``min(tokens to feed, threshold, budget)`` tokens, preempting victims when its blocks run out.

        The pass ends when the budget is spent or a request preempts itself. With preemption ``none`` a
        request that cannot grow is skipped and collected in ``stalled``. Returns the budget left. With a
        draft model each scheduled request also takes ``draft_slots`` input slots (vLLM's input budget).
        """
        # Hot loop (once per running request per step): the rules of _last_token_in_flight, _tokens_to_feed
        # and KVCacheManager.allocate_slots are inlined for the common case; anything that needs a block the
        # pool cannot give goes through _grow_or_preempt.
        running = self.running
        kv = self.kv_cache
        plain_kv = type(kv) is KVCacheManager
        # Prefix cache: a request that needs no new block and fills no new block needs no allocate_slots call.
        num_cached = kv._num_cached if type(kv) is PrefixCachingKVCacheManager else None
        blocks = kv._blocks
        block_size = kv.block_size
        last_slot = self.max_model_len - 1
        lookahead = self._lookahead
        draft_slots = self._draft_slots
        scheduled = plan.scheduled
        index = 0
        while index < len(running) and budget > draft_slots:
            request = running[index]
            computed = request.num_computed_tokens
            placeholders = request.num_output_placeholders
            if placeholders and computed + 2 - placeholders >= request.prompt_tokens + request.max_output_tokens:
                index += 1  # async: its final token is already being sampled
                continue
            num_new = request.prompt_tokens + request.num_output_tokens + placeholders - computed + request.spec_tokens
            if threshold and num_new > threshold:
                num_new = threshold
            if num_new > budget - draft_slots:
                num_new = budget - draft_slots
            if num_new > last_slot - computed:
                num_new = last_slot - computed
            if num_new <= 0:
                index += 1
                continue
            granted = False
            if plain_kv:
                held = blocks.get(request.request_id, 0)
                need = -(-(computed + num_new + lookahead) // block_size) - held
                if need <= 0:
                    granted = True
                elif need <= kv.num_free_blocks:
                    blocks[request.request_id] = held + need
                    kv.num_free_blocks -= need
                    granted = True
            elif num_cached is not None and -(-(computed + num_new + lookahead) // block_size) <= blocks.get(
                    request.request_id, 0):
                known = request.prompt_tokens + request.num_output_tokens
                granted = min(computed + num_new, known) // block_size <= num_cached.get(request.request_id, 0)
            if not granted:
                granted, refund, shift = self._grow_or_preempt(request, num_new, plan, index)
                budget += refund
                index -= shift
                if not granted:
                    if self.preemption == "none":
                        stalled.append(request)  # no preemption: it waits for blocks, keeping its own
                        index += 1
                        continue
                    if self.continue_after_self_preemption:
                        continue  # vLLM ≥ 0.33: the running pass goes on with the next request
                    break  # the request preempted itself: the running pass ends (vLLM 0.32)
            scheduled.append((request, num_new))
            budget -= num_new + draft_slots
            index += 1
        return budget

    def _allocate(self, request: Request, num_new: int, plan: StepPlan, reserve_blocks: int = 0,
                  num_cached_blocks: int = 0) -> bool:
        """Allocate for a request being admitted; a swapped-out request first gets its blocks back."""
        kv = self.kv_cache
        if request.status == RequestStatus.SWAPPED:
            if kv.blocks_for_tokens(request.num_computed_tokens + num_new) + reserve_blocks > kv.num_free_blocks:
                return False
            plan.swap_in_blocks += kv.swap_in(request)
        if not kv.allocate_slots(request, num_new + self._lookahead, reserve_blocks, num_cached_blocks):
            return False
        if num_cached_blocks:
            cached = num_cached_blocks * kv.block_size
            request.num_computed_tokens += cached
            request.num_cached_tokens += cached
        return True

    def _reserve(self, request: Request, plan: StepPlan, hit_blocks: int = 0) -> bool:
        """Allocate slots for prompt + max output − 1 tokens (the last token is never fed back): the whole request
        at admission, for the policies that never preempt."""
        kv = self.kv_cache
        tokens = request.max_total_tokens - 1 - request.num_computed_tokens - hit_blocks * kv.block_size
        return self._allocate(request, max(tokens, 0), plan, 0, hit_blocks)

    def _prefix_hit(self, request: Request) -> int:
        """Leading blocks of a request being admitted that the prefix cache already holds."""
        if not self.prefix_caching or request.status == RequestStatus.SWAPPED:
            return 0
        hit = self.kv_cache.match_prefix(request)
        # vLLM with an EAGLE/MTP head drops the last hit block: the head needs its hidden states recomputed.
        return hit - 1 if hit and self.speculator is not None and self.speculator.eagle_block_drop else hit

    def _fail(self, request: Request, plan: StepPlan, reason: str) -> None:
        """End a request the engine cannot serve (reported through the step's outcome)."""
        self._remove_from_queues(request)
        self.kv_cache.free(request)
        request.status = RequestStatus.FAILED
        request.reason = reason
        plan.failed.append(request)
        self._finished_pending = True

    def _fail_if_deadlocked(self, plan: StepPlan, stalled: list[Request]) -> None:
        """Preemption ``none``: running requests that cannot grow wait for others to finish. If none of them
        could run and no token is in flight, nothing will ever free a block: one of them (by the victim rule)
        fails, as an engine without preemption would abort it for lack of KV memory."""
        if stalled and not plan.scheduled and not any(r.num_output_placeholders for r in self.running):
            self._fail(self.victim_rule(stalled, self.kv_cache), plan, "kv_cache_full")

    def _finish_plan(self, plan: StepPlan) -> StepPlan:
        """Advance computed tokens of every scheduled request and decide who samples (vLLM's
        ``_update_after_schedule``); record the queue sizes the goldens report."""
        sampling = plan.sampling
        spec_drafts = plan.spec_drafts
        context_lens = plan.context_lens
        speculating = self.speculator is not None
        total = prefill = 0
        cache_blocks = self.kv_cache.cache_full_blocks if self.prefix_caching and self.catch_up_cache else None
        async_scheduling = self.async_scheduling
        for request, num_new in plan.scheduled:
            context_lens.append(request.num_computed_tokens)
            target = request.prompt_tokens + request.num_output_tokens + request.num_output_placeholders
            request.num_computed_tokens += num_new
            if async_scheduling:
                request.num_in_flight_tokens += num_new
            request.num_scheduled_tokens_total += num_new
            total += num_new
            if cache_blocks is not None:
                cache_blocks(request)
            if request.num_computed_tokens >= target:
                request.is_prefill_chunk = False
                sampling.append(request)
                # Speculative decoding: the drafts that fitted in the step (a budget cut trims them).
                drafts = request.num_computed_tokens - target
                if speculating:
                    spec_drafts.append(drafts)
                    # Sync: new drafts come with the output; async: vLLM counts k placeholder drafts at once.
                    request.spec_tokens = self.speculator.k if self.async_scheduling else 0
                if self.async_scheduling:
                    request.num_output_placeholders += 1 + drafts
                if num_new - drafts > 1:
                    prefill += num_new
            else:
                request.is_prefill_chunk = True
                prefill += num_new
        plan.num_scheduled_tokens = total
        plan.num_prefill_tokens = prefill
        plan.free_blocks_after_schedule = self.kv_cache.num_free_blocks
        plan.num_running = len(self.running)
        plan.num_waiting = len(self.waiting)
        return plan
