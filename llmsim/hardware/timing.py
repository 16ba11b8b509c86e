"""How long one engine step takes: the interface the engine calls, and its roofline implementation.

An engine step is one forward pass of the whole batch through every layer of every pipeline stage, plus the
CPU work around it (scheduling, input preparation, sampling). Its cost depends on the batch *shape* only:
how many tokens each request feeds (a prefill chunk, or 1 for a decode) and how many tokens each already
has cached (what its attention must read).

How the step is *executed* (``llmsim.hardware.execution``) changes its price, never a decision: a uniform
decode batch replays a FULL CUDA graph padded to its capture size, other batches PIECEWISE graphs (attention
eager) or run eagerly; and the engine loop's CPU time overlaps the GPU (async scheduling: period
max(CPU, GPU)) or adds to it (synchronous loop). Serving-time FLOP rates are the fitted burst rates times
``sustained_compute_fraction``.

The roofline model prices each operator as max(compute time, memory time) + a fixed kernel time
(``llmsim.hardware.ops``) with efficiencies fitted per GPU, and adds tensor-parallel all-reduces, expert-
parallel all-to-alls and pipeline send/recv over the interconnect (``llmsim.hardware.collectives``).
Everything that depends only on the number of tokens in the batch (all GEMMs, norms, collectives:
``llmsim.hardware.forward``) is memoised per token count, so a step costs one pass over the batch in pure
Python; this is the simulator's hottest call (10^5-10^6 per run).

**Pipeline parallelism** (``hardware.pp`` > 1) is priced stage by stage over micro-batches
(:mod:`llmsim.hardware.pipeline`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol, Sequence

import numpy as np

from llmsim.errors import ProfileError
from llmsim.hardware.config import HardwareConfig
from llmsim.hardware.execution import Execution
from llmsim.hardware.forward import ForwardPassCosts
from llmsim.hardware.memory import check_expert_parallel, expert_layout, layers_per_stage
from llmsim.hardware.ops import LayerShape, Roofline, act_bytes_of
from llmsim.hardware.precision import weight_bytes_per_param
from llmsim.hardware.specs import GPUSpec, dtype_bytes
from llmsim.hardware.model_spec import SLIDING_ATTENTION, ModelSpec
from llmsim.hardware.pipeline import PipelineStages


class TimingModel(Protocol):
    """What the engine needs from a timing model: the duration of a step from its batch shape."""

    def step_time(self, new_tokens: Sequence[int], context_lens: Sequence[int], num_sampled: int) -> float:
        """Seconds of ONE engine step (with pipeline parallelism: the replica's occupancy per step).

        ``new_tokens[i]``: tokens fed for request i (prefill chunk, or 1 for a decode);
        ``context_lens[i]``: tokens of request i already in the KV cache before this step;
        ``num_sampled``: requests that produce a token this step (rows of the LM head).
        """
        ...

    def decode_step_times(self, context_lens: np.ndarray, num_steps: int) -> np.ndarray:
        """Durations of ``num_steps`` consecutive decode-only steps of this batch (contexts grow by 1 a step)."""
        ...


class RooflineTimingModel(PipelineStages, ForwardPassCosts):
    """Per-operator roofline of every layer, per pipeline stage, executed as ``execution`` says, plus CPU time."""

    def __init__(self, hw: HardwareConfig, gpu: GPUSpec, model: ModelSpec, cpu_overhead: bool = True,
                 execution: Optional[Execution] = None) -> None:
        self.hw, self.gpu, self.model = hw, gpu, model
        execution = execution or Execution()
        if not cpu_overhead:
            execution = dataclasses.replace(execution, cpu_overhead=False)
        self.execution = execution
        check_expert_parallel(model, hw)
        # Precision -> bytes per weight (scales included) and GEMM peak, per component: linear layers, routed
        # experts (MXFP4 in gpt-oss), LM head (never quantized: the model dtype).
        weight_dtype, expert_dtype = model.weight_precisions(hw.weight_dtype, hw.expert_weight_dtype)
        self._weight_b = weight_bytes_per_param(weight_dtype)
        self._expert_b = weight_bytes_per_param(expert_dtype)
        self._act_b = act_bytes_of(model)
        self._head_b = weight_bytes_per_param(model.dtype)
        eff = gpu.efficiency
        self._burst = Roofline.of(gpu, weight_dtype)  # operator timings: bursts at boost clock
        self._sustained, self._clock_half = eff.sustained_compute_fraction, eff.sustained_half_tokens
        self._expert_burst = Roofline.of(gpu, expert_dtype)  # routed experts may be stored at another precision
        self._tp, self._ep, self._pp = hw.tp, hw.ep, hw.pp
        self._expert_dims = expert_layout(model, hw, gpu) if model.is_moe else (model.hidden_size, 0.0)
        self._num_layers = model.num_layers
        self._shape = LayerShape.of(model, hw.tp)
        self._stages = self._stage_layout()
        # Sliding-window layers (gpt-oss, Gemma 3, Step-3.5) attend to the last ``sliding_window`` tokens only:
        # their attention is priced on the window, the other layers' on the whole context.
        kinds = model.attention_layer_types
        self._window = model.sliding_window if SLIDING_ATTENTION in kinds else None
        self._sliding_layers = sum(1 for kind in kinds if kind == SLIDING_ATTENTION)
        self._full_layers = model.num_layers - self._sliding_layers
        self._stage_sliding = []
        first = 0
        for count in layers_per_stage(model.num_layers, hw.pp):
            self._stage_sliding.append(sum(1 for kind in kinds[first:first + count] if kind == SLIDING_ATTENTION))
            first += count
        # Attention constants (per layer, per TP rank). MLA attends in the latent space (absorbed weights):
        # scores over kv_lora_rank + rope dims, values of kv_lora_rank dims.
        if model.uses_mla:
            qk_dim, v_dim = model.kv_lora_rank + model.qk_rope_head_dim, model.kv_lora_rank
        else:
            qk_dim = v_dim = model.head_dim
        heads = self._shape.heads_per_rank
        kv_b = dtype_bytes(model.resolve_dtype(hw.kv_cache_dtype))
        self._attn_flops_per_unit = heads * (qk_dim + v_dim)  # × Σ c·(2k + c + 1)
        self._kv_bytes_per_ctx_token = model.kv_elements_per_token_per_layer(hw.tp) * kv_b
        self._qo_bytes_per_token = heads * (qk_dim + v_dim) * self._act_b
        self._attn_flops_rate = self._burst.peak_flops * self._sustained * eff.attn_prefill_mfu
        self._attn_bytes_rate = gpu.hbm_bandwidth * eff.attn_decode_mbu
        self._attn_overhead = eff.attn_overhead_s
        self._kernel_gap = eff.kernel_gap_s
        self._half = eff.attn_prefill_half_tokens
        self._ctx_w2 = 2.0 * eff.attn_prefill_context_weight
        on = execution.cpu_overhead
        self._cpu_step = eff.cpu_step_overhead_s if on else 0.0
        self._cpu_per_request = eff.cpu_per_request_overhead_s if on else 0.0
        self._cpu_per_token = eff.cpu_per_token_s if on else 0.0
        self._cpu_per_sampled = eff.cpu_per_sampled_token_s if on else 0.0
        self._overlap = execution.async_scheduling
        self._base_cache: dict[tuple[int, int, bool], tuple[float, float]] = {}
        self._layer_cache: dict[int, tuple[float, float]] = {}
        self._stage_cache: dict[tuple[int, int, bool], tuple[tuple[float, ...], tuple[float, ...]]] = {}
        self._body_cache: dict[tuple[str, int], tuple[list[tuple[float, float]], tuple[float, ...]]] = {}
        self._roof_cache: dict[int, Roofline] = {}
        self._step_cache: dict[tuple[int, int, int], tuple[float, float, float]] = {}
        self._decode_consts: dict[int, tuple[float, float, float, float]] = {}

    def _stage_layout(self) -> list[tuple[int, int, bool]]:
        """(dense layers, MoE layers, send crosses nodes) of each stage; layers keep their model order."""
        m, tp = self.model, self._tp
        stages, first = [], 0
        for index, count in enumerate(layers_per_stage(m.num_layers, self._pp)):
            dense = sum(1 for layer in range(first, first + count) if not m.is_moe_layer(layer))
            # stage s runs on GPUs [s·tp, (s+1)·tp): its send leaves the node when the next stage starts a node
            crosses = ((index + 1) * tp) % self.gpu.gpus_per_node == 0 or tp > self.gpu.gpus_per_node
            stages.append((dense, count - dense, crosses))
            first += count
        return stages

    # ---- the engine loop around the forward pass ------------------------------------------------------
    def cpu_time(self, tokens, num_scheduled, num_sampled):
        """The engine core's CPU seconds for one step (scheduling, input preparation, sampling, outputs);
        Python numbers or numpy arrays, same arithmetic."""
        return (self._cpu_step + self._cpu_per_request * num_scheduled + self._cpu_per_token * tokens
                + self._cpu_per_sampled * num_sampled)

    def period(self, gpu, cpu):
        """A step's period from its GPU and CPU seconds: max with async scheduling (the CPU work of the next
        step overlaps this one's forward pass), their sum with the synchronous loop."""
        if not self._overlap:
            return gpu + cpu
        if isinstance(gpu, np.ndarray) or isinstance(cpu, np.ndarray):
            return np.maximum(gpu, cpu)
        return gpu if gpu > cpu else cpu

    # ---- attention: one varlen kernel per layer over the whole batch --------------------------------
    def attention_time(self, flop_units, ctx_tokens, tokens):
        """Per-layer attention time; works on Python numbers and on numpy arrays with identical arithmetic.

        ``flop_units``: Σ over requests of (2k + c + 1)·c for decodes (c = 1), (2wk + c + 1)·(c + half) for
        prefill chunks, where ``half`` = ``attn_prefill_half_tokens`` (a chunk of c queries reaches only
        c/(c + half) of the prefill MFU) and ``w`` = ``attn_prefill_context_weight`` (relative cost of the
        products against the k cached tokens).
        """
        compute = flop_units * self._attn_flops_per_unit / self._attn_flops_rate
        memory = (ctx_tokens * self._kv_bytes_per_ctx_token + tokens * self._qo_bytes_per_token) / self._attn_bytes_rate
        if isinstance(compute, np.ndarray):
            return np.maximum(compute, memory) + self._attn_overhead
        return max(compute, memory) + self._attn_overhead

    def step_time(self, new_tokens: Sequence[int], context_lens: Sequence[int], num_sampled: int) -> float:
        if self._pp > 1:
            return self.pipeline_times(new_tokens, context_lens, num_sampled).occupancy_s
        # Pure-Python loop on purpose: batches are small lists and numpy's per-call cost would dominate.
        tokens = flop_units = ctx_tokens = 0
        for c, k in zip(new_tokens, context_lens):
            tokens += c
            flop_units += 2 * k + 2 if c == 1 else self.chunk_flop_units(c, k)
            ctx_tokens += k + c
        if tokens == 0:
            return 0.0
        window = self.window_totals(new_tokens, context_lens) if self._window else None
        return self.time_from_totals(tokens, flop_units, ctx_tokens, num_sampled, len(new_tokens), window)

    def window_totals(self, new_tokens: Sequence[int], context_lens: Sequence[int]) -> tuple[float, int]:
        """(attention work units, KV tokens read) of the batch in a sliding-window layer, the counterparts of
        :meth:`step_time`'s ``flop_units`` and ``ctx_tokens``. Query i of a chunk of c new tokens over k cached
        ones sees min(k + i + 1, W) keys; a decode (c = 1) is the integer 2·min(k + 1, W) units and reads
        min(k + 1, W) tokens, the last W of its cache."""
        w = self._window
        units = ctx = 0
        for c, k in zip(new_tokens, context_lens):
            if c == 1:
                seen = k + 1 if k < w else w
                units += 2 * seen
                ctx += seen
                continue
            if k >= w:
                keys = c * w
            elif k + c <= w:
                keys = c * k + c * (c + 1) // 2
            else:
                keys = (w - k) * (k + 1 + w) // 2 + (k + c - w) * w
            units += 2 * keys * (c + self._half) / c  # a chunk's tile waste, as chunk_flop_units
            ctx += min(k + c, w + c - 1)
        return units, ctx

    def decode_step_time(self, batch: int, sum_context: int) -> float:
        """``step_time([1] * batch, contexts, batch)`` for contexts summing to ``sum_context`` (pp = 1), from
        constants memoised per batch size: the aggregate engine's pure-decode steps. Same operations in the
        same order as :meth:`time_from_totals`, so the result is bit-identical."""
        base, qo_bytes, floor, add = self.decode_consts(batch)
        compute = (2 * sum_context + 2 * batch) * self._attn_flops_per_unit / self._attn_flops_rate
        memory = ((sum_context + batch) * self._kv_bytes_per_ctx_token + qo_bytes) / self._attn_bytes_rate
        gpu = base + self._num_layers * ((compute if compute > memory else memory) + self._attn_overhead)
        return (gpu if gpu > floor else floor) + add

    def decode_consts(self, batch: int) -> tuple[float, float, float, float]:
        """(base, Q/O bytes, floor, added) of a pure-decode step of ``batch`` requests, memoised."""
        consts = self._decode_consts.get(batch)
        if consts is None:
            base, floor, add = self._step_consts(batch, batch, batch)
            consts = self._decode_consts[batch] = (base, batch * self._qo_bytes_per_token, floor, add)
        return consts

    def decode_arith(self) -> tuple[float, float, float, float, int, float]:
        """The constants :meth:`decode_step_time` applies to every batch size (flops per unit, flops rate,
        KV bytes per context token, bytes rate, layers, attention overhead): a caller that inlines its
        arithmetic (the aggregate engine's quiet loop) gets the bit-identical result."""
        return (self._attn_flops_per_unit, self._attn_flops_rate, self._kv_bytes_per_ctx_token,
                self._attn_bytes_rate, self._num_layers, self._attn_overhead)

    def chunk_flop_units(self, c: int, k: int) -> float:
        """Attention work units of a chunk of ``c`` > 1 new tokens over ``k`` cached ones (a decode, c = 1,
        is the integer 2k + 2). Causal: query i of the chunk sees k + i keys; a chunk pays its tile waste
        (c + half) / c."""
        return (self._ctx_w2 * k + c + 1) * (c + self._half)

    def time_from_totals(self, tokens: int, flop_units, ctx_tokens: int, num_sampled: int, num_scheduled: int,
                         window: Optional[tuple] = None) -> float:
        """A step's duration (pp = 1) from the batch totals :meth:`step_time` accumulates: new tokens, attention
        units (summed in batch order), cached-plus-new context tokens, sampled rows and scheduled requests.
        The aggregate engine calls it with totals it keeps without visiting each request; the arithmetic is
        the same, so the durations are bit-identical. One token per request is a uniform decode batch (vLLM's
        FULL CUDA graph). ``window``: the sliding-window layers' (units, KV tokens) (:meth:`window_totals`), for
        a model that has them; without it every layer is priced on the whole context."""
        consts = self._step_cache.get((tokens, num_sampled, num_scheduled))
        if consts is None:
            consts = self._step_consts(tokens, num_sampled, num_scheduled)
        base, floor, add = consts
        if window is None:
            # attention_time's scalar arithmetic, inlined (same operations in the same order, and max's choice on
            # a tie): the aggregate engine prices every general step here, a call and a type test fewer each.
            compute = flop_units * self._attn_flops_per_unit / self._attn_flops_rate
            memory = ((ctx_tokens * self._kv_bytes_per_ctx_token + tokens * self._qo_bytes_per_token)
                      / self._attn_bytes_rate)
            gpu = base + self._num_layers * ((memory if memory > compute else compute) + self._attn_overhead)
        else:
            gpu = (base + self._full_layers * self.attention_time(flop_units, ctx_tokens, tokens)
                   + self._sliding_layers * self.attention_time(window[0], window[1], tokens))
        return (gpu if gpu > floor else floor) + add

    def _step_consts(self, tokens: int, num_sampled: int, num_scheduled: int) -> tuple[float, float, float]:
        """(non-attention GPU seconds, floor, added CPU seconds) of a step shape: the step takes
        max(GPU, floor) + added. Sync: floor = host launch time, added = CPU time; async: floor = max(host,
        CPU) (= max(max(GPU, host), CPU) exactly: max selects, never rounds), added = 0."""
        # Not through _consts: this shape is new to _step_cache, so nearly always to the coarser caches too (a run
        # with prefills meets tens of thousands of shapes), which would only add two lookups and entries.
        base, host = self._consts_of(tokens, num_sampled, tokens == num_scheduled)
        cpu = self.cpu_time(tokens, num_scheduled, num_sampled)
        floor, add = (max(host, cpu), 0.0) if self._overlap else (host, cpu)
        self._step_cache[(tokens, num_sampled, num_scheduled)] = result = (base, floor, add)
        return result

    def decode_step_times(self, context_lens: np.ndarray, num_steps: int) -> np.ndarray:
        ctx = np.asarray(context_lens, dtype=np.int64)
        batch = int(ctx.size)
        if batch == 0 or num_steps <= 0:
            return np.zeros(max(num_steps, 0))
        step = np.arange(num_steps, dtype=np.int64)
        cpu = self.cpu_time(batch, batch, batch)
        if self._pp > 1:
            return self.pipeline_decode_times(ctx, num_steps, cpu)
        summed = int(ctx.sum()) + step * batch  # Σ context before each step
        flop_units = 2 * summed + 2 * batch  # Σ 1·(2k + 1 + 1)
        ctx_tokens = summed + batch
        base, host = self._consts(batch, batch, True)
        attention = self.attention_time(flop_units, ctx_tokens, batch)
        if self._window:
            seen = self.window_decode_sums(ctx, num_steps)
            gpu = (base + self._full_layers * attention
                   + self._sliding_layers * self.attention_time(2 * seen, seen, batch))
            return self.period(np.maximum(gpu, host), cpu)
        return self.period(np.maximum(base + self._num_layers * attention, host), cpu)

    def window_decode_sums(self, context_lens: np.ndarray, num_steps: int,
                           alive: Optional[np.ndarray] = None) -> np.ndarray:
        """Σ over the batch of min(k + 1, W) in each of ``num_steps`` decode steps (contexts k grow by one a
        step): the keys a sliding-window layer reads, as :meth:`window_totals` counts them. ``alive[i, m]``:
        request i is in the batch of step m + 1 (default: every request in every step)."""
        steps = np.arange(1, num_steps + 1, dtype=np.int64)
        seen = np.minimum(np.asarray(context_lens, dtype=np.int64)[:, None] + steps[None, :], self._window)
        return (seen if alive is None else seen * alive).sum(axis=0)

    @property
    def decode_steps_from_totals(self) -> bool:
        """Whether a pure-decode step's time follows from its batch size and context sum alone, as
        :meth:`decode_step_time` prices it: pp = 1 and no sliding-window layers."""
        return self._pp == 1 and not self._window

    @property
    def sliding_window(self) -> Optional[int]:
        """The window of the model's sliding-window layers (None without any): their attention reads only it."""
        return self._window

    def decode_times_from_totals(self, batch_sizes: np.ndarray, sum_contexts: np.ndarray,
                                 window_sums: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """Durations of decode-only steps from each step's batch size and Σ context before it.

        Equal to ``step_time([1]*b, ctx, b)`` step by step (same integer totals, same float operations), for
        batches that shrink as requests finish; the engine's fast path uses it. None when pp > 1 (the
        micro-batch split needs the individual contexts: use :meth:`decode_step_times` per fixed batch).
        ``window_sums``: each step's Σ min(k + 1, W) over the batch, for a model with sliding-window layers
        (:meth:`window_totals`).
        """
        if self._pp > 1:
            return None
        b = np.asarray(batch_sizes, dtype=np.int64)
        summed = np.asarray(sum_contexts, dtype=np.int64)
        # Batches only shrink inside a run: price each stretch of equal size once.
        starts = np.concatenate([[0], np.flatnonzero(np.diff(b)) + 1])
        lengths = np.diff(np.append(starts, len(b)))
        consts = [self._consts(int(x), int(x), True) for x in b[starts]]
        base = np.repeat([c[0] for c in consts], lengths)
        host = np.repeat([c[1] for c in consts], lengths)
        attention = self.attention_time(2 * summed + 2 * b, summed + b, b)
        if self._window:
            seen = np.asarray(window_sums, dtype=np.int64)
            gpu = base + self._full_layers * attention + self._sliding_layers * self.attention_time(2 * seen, seen, b)
            return self.period(np.maximum(gpu, host), self.cpu_time(b, b, b))
        return self.period(np.maximum(base + self._num_layers * attention, host), self.cpu_time(b, b, b))


TIMING_MODELS = {"roofline": RooflineTimingModel}


def build_timing_model(
    hw: HardwareConfig, gpu: GPUSpec, model: ModelSpec, cpu_overhead: bool = True, kind: str = "roofline",
    execution: Optional[Execution] = None,
) -> TimingModel:
    """The timing model named ``kind`` for this hardware (only ``roofline`` so far), executed as ``execution``
    says (default: vLLM V1's defaults, see ``llmsim.hardware.execution``). The one place a timing model is
    built: every parameter it reads is a field of the GPU profile's ``efficiency:`` block or of ``execution``."""
    try:
        cls = TIMING_MODELS[kind]
    except KeyError:
        raise ProfileError(f"timing model {kind!r} is unknown; valid names: {', '.join(TIMING_MODELS)}") from None
    return cls(hw, gpu, model, cpu_overhead=cpu_overhead, execution=execution)


def swap_time(gpu: GPUSpec, num_bytes: float, efficiency: float = 0.8) -> float:
    """Seconds to move ``num_bytes`` of KV cache between GPU and host memory over PCIe.

    Pinned-memory copies reach ~80% of the PCIe link's theoretical rate [R]; override ``efficiency`` if
    measured otherwise.
    """
    return num_bytes / (gpu.pcie_bandwidth * efficiency)
