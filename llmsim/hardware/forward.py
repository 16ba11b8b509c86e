"""Everything in a step's forward pass but attention: GEMMs, norms, collectives, launches and the logits.

A mixin of :class:`~llmsim.hardware.timing.RooflineTimingModel` (its fitted rates and caches are ``self``).
These costs depend on the number of tokens in the batch only (the padded size a CUDA graph runs, how many rows
are sampled), never on what each request has cached, so they are memoised per size: a step's price is then
one pass over the batch for its attention.
"""

from __future__ import annotations

import dataclasses

from llmsim.hardware.collectives import all_to_all_time, allreduce_time, send_recv_time
from llmsim.hardware.execution import launch_cost
from llmsim.hardware.ops import LayerShape, Roofline, layer_op_times

LAYER_OPS = 9  # operators of layer_op_times: two norms, QKV, rotary, output projection, up, activation, down, add


class ForwardPassCosts:
    """The non-attention part of a forward pass, per stage, memoised per token count."""

    def _roof_for(self, tokens: int) -> Roofline:
        """The roofline of a step's GEMMs: the power-limited clock binds as the step's tokens grow."""
        roof = self._roof_cache.get(tokens)
        if roof is None:
            s = self._sustained
            clock = s + (1.0 - s) * self._clock_half / (tokens + self._clock_half) if s < 1.0 else 1.0
            roof = self._roof_cache[tokens] = dataclasses.replace(self._burst, peak_flops=self._burst.peak_flops * clock)
        return roof

    def _dense_layer(self, roof: Roofline, tokens: int) -> float:
        ops = layer_op_times(roof, self._shape, tokens, self._weight_b, self._act_b)
        return sum(ops.values())

    def _moe_layer(self, roof: Roofline, tokens: int) -> float:
        """Attention half of a dense layer, then router + the routed experts' grouped GEMMs (+ shared experts).

        All experts sit in memory, but a step only reads the weights of experts that some token picked:
        with uniform routing that is E·(1 − (1 − k/E)^T) experts, and only k/E of the tokens' MLP FLOPs.
        With expert parallelism (``ep`` > 1) each of the ``ep`` ranks holds E/ep whole experts (sharded over
        the remaining tp/ep ranks); tokens travel to their experts' ranks and back in two all-to-alls, and the
        busiest rank (binomial spread of the routed tokens) sets the time.
        """
        m, wb, ab, tp, ep = self.model, self._weight_b, self._act_b, self._tp, self._ep
        # routed experts may be stored at another precision: their own peak, at this step's clock
        xb = self._expert_b
        xroof = dataclasses.replace(self._expert_burst,
                                    peak_flops=self._expert_burst.peak_flops * roof.peak_flops / self._burst.peak_flops)
        ops = layer_op_times(roof, self._shape, tokens, wb, ab)
        time = sum(v for k, v in ops.items() if not k.startswith("mlp_"))
        shard = tp // ep  # ranks one expert is split over
        inter = m.expert_intermediate_size
        # the expert GEMMs' widths as the kernel stores them (MXFP4 experts padded: memory.expert_layout)
        hidden_x, inter_x = self._expert_dims
        up_out = (2 if m.gated_mlp else 1) * inter_x
        experts = m.num_experts / ep  # on one rank
        touched = experts * (1.0 - (1.0 - m.experts_per_token / m.num_experts) ** tokens)
        routed = tokens * m.experts_per_token / ep
        if ep > 1:  # the busiest EP rank: mean + 2 standard deviations of a binomial(T·k, 1/ep)
            routed += 2.0 * (tokens * m.experts_per_token * (1.0 / ep) * (1.0 - 1.0 / ep)) ** 0.5
        time += roof.linear(tokens, m.hidden_size, m.num_experts, wb, ab)  # router
        for k_in, n_out in ((hidden_x, up_out), (inter_x, hidden_x)):
            flops = 2.0 * routed * k_in * n_out
            bytes_moved = touched * k_in * n_out * xb + routed * (k_in + n_out) * ab
            e = xroof.eff
            # fused grouped GEMMs: a share of a dense GEMM's compute and bandwidth efficiencies
            mfu = e.linear_mfu * e.moe_gemm_efficiency
            mbu = e.linear_mbu * e.moe_gemm_bandwidth_efficiency
            time += max(flops / (xroof.peak_flops * mfu), bytes_moved / (xroof.hbm_bandwidth * mbu))
            time += e.linear_overhead_s
        time += roof.elementwise(routed * (up_out + inter_x) * ab)  # activation
        if m.num_shared_experts:
            shared = LayerShape.of(m, tp, intermediate=inter * m.num_shared_experts)
            shared_ops = layer_op_times(roof, shared, tokens, wb, ab)
            time += sum(v for k, v in shared_ops.items() if k.startswith("mlp_"))
        if ep > 1:  # dispatch + combine: each rank owns T/ep tokens and sends each to its k experts
            time += 2.0 * all_to_all_time(self.gpu, tokens / ep * m.experts_per_token * m.hidden_size * ab, ep)
        return time

    def _layer_times(self, tokens: int) -> tuple[float, float]:
        """(dense layer, MoE layer) seconds without attention, TP all-reduces included (memoised per size)."""
        cached = self._layer_cache.get(tokens)
        if cached is None:
            cached = self._layer_cache[tokens] = self._compute_layer_times(self._roof_for(tokens), tokens)
        return cached

    def _compute_layer_times(self, roof: Roofline, tokens: int) -> tuple[float, float]:
        m = self.model
        activation_bytes = tokens * m.hidden_size * self._act_b
        allreduce = allreduce_time(self.gpu, activation_bytes, self._tp, custom=True)
        # with EP the MoE output is combined by the all-to-all; its TP all-reduce remains over tp/ep ranks
        moe_reduce = allreduce_time(self.gpu, activation_bytes, self._tp // self._ep, custom=True)
        if m.parallel_attn_mlp:
            dense, moe = allreduce, moe_reduce
        else:
            dense, moe = 2.0 * allreduce, allreduce + moe_reduce
        dense += self._dense_layer(roof, tokens) if m.num_layers > m.num_moe_layers else 0.0
        moe += self._moe_layer(roof, tokens) if m.num_moe_layers else 0.0
        return dense, moe

    def _kernels_per_layer(self, dense: bool) -> int:
        """Kernels one layer launches: its operators, the cache write and attention, the TP all-reduces."""
        m = self.model
        count = LAYER_OPS + 2 + (0 if m.parallel_attn_mlp else 1) * (self._tp > 1) + (self._tp > 1)
        return count if dense else count + 4  # MoE: router, top-k, and two grouped GEMMs

    def _stage_shape(self, tokens: int, num_sampled: int, uniform: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(each stage's non-attention GPU seconds, its send to the next stage included; each stage's host
        seconds to launch its forward pass) for one (micro-)batch of ``tokens``; ``uniform``: every request
        feeds one token. A CUDA graph runs its padded batch and costs one launch (FULL) or one per piece
        with the attention kernels launched between them (PIECEWISE); eagerly every kernel is launched, and
        each launch leaves the GPU idle for ``kernel_gap_s``."""
        key = (tokens, num_sampled, uniform)
        cached = self._stage_cache.get(key)
        if cached is None:
            cached = self._stage_cache[key] = self._stage_shape_of(tokens, num_sampled, uniform)
        return cached

    def _stage_shape_of(self, tokens: int, num_sampled: int, uniform: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """:meth:`_stage_shape`, computed (not memoised)."""
        m, ab = self.model, self._act_b
        mode, run_tokens = self.execution.graph_for(tokens, uniform)
        times = []
        last = len(self._stages) - 1
        bodies, hosts = self._stage_bodies(mode, run_tokens)
        for index, (body, idle) in enumerate(bodies):
            time = body
            if index == last:
                if num_sampled:  # logits of the sampled rows, computed after the graph (eager)
                    time += self._roof_for(run_tokens).linear(num_sampled, m.hidden_size, m.vocab_size / self._tp,
                                                              self._head_b, ab)
            else:
                time += send_recv_time(self.gpu, tokens * m.hidden_size * ab, same_node=not self._stages[index][2])
            times.append(time + idle)
        return tuple(times), hosts

    def _stage_bodies(self, mode: str, run_tokens: int) -> tuple[list[tuple[float, float]], tuple[float, ...]]:
        """(per stage: GPU seconds of its layers, embedding and final norm, and GPU idle seconds of its launches;
        per stage: host seconds to issue them) of a forward pass over ``run_tokens`` in graph ``mode``; memoised,
        as the rest of a step's shape (sampled rows, the unpadded size the stages send) varies far more often."""
        cached = self._body_cache.get((mode, run_tokens))
        if cached is not None:
            return cached
        m, ab = self.model, self._act_b
        roof = self._roof_for(run_tokens)
        dense, moe = self._layer_times(run_tokens)
        activation_bytes = run_tokens * m.hidden_size * ab
        bodies, hosts = [], []
        for index, (dense_layers, moe_layers, _) in enumerate(self._stages):
            time = dense_layers * dense + moe_layers * moe
            kernels = dense_layers * self._kernels_per_layer(True) + moe_layers * self._kernels_per_layer(False)
            if index == 0:
                time += roof.elementwise(activation_bytes)  # embedding
            if index == len(self._stages) - 1:
                time += roof.elementwise(2.0 * activation_bytes)  # final norm
            # + 3 kernels: embedding, final norm, logits
            launches, host = launch_cost(mode, dense_layers + moe_layers, kernels + 3, self.gpu.efficiency)
            bodies.append((time, launches * self._kernel_gap))
            hosts.append(host)
        self._body_cache[(mode, run_tokens)] = cached = (bodies, tuple(hosts))
        return cached

    def _consts(self, tokens: int, num_sampled: int, uniform: bool) -> tuple[float, float]:
        """(all stages' non-attention GPU seconds one after the other, host seconds to launch them)."""
        key = (tokens, num_sampled, uniform)
        cached = self._base_cache.get(key)
        if cached is None:
            cached = self._base_cache[key] = self._consts_of(tokens, num_sampled, uniform)
        return cached

    def _consts_of(self, tokens: int, num_sampled: int, uniform: bool) -> tuple[float, float]:
        """:meth:`_consts`, computed (not memoised): for a caller that memoises on a finer key itself."""
        stages, hosts = self._stage_shape_of(tokens, num_sampled, uniform)
        return sum(stages), sum(hosts)
