"""How many KV-cache blocks a replica gets: vLLM's memory budget, computed instead of profiled.

vLLM reserves ``gpu_memory_utilization`` of each GPU's *total* memory, subtracts what a profiling forward
pass shows is taken (weights, activation peak, non-torch memory such as NCCL and cuBLAS workspaces) and
cuts the rest into pages of ``block_size`` tokens (REFERENCE.md section 2, ``vllm/v1/worker/gpu_worker.py``):

    available = utilization × GPU memory − weights / (tp · pp) − activation reserve
    num_gpu_blocks = available // (block_size × KV bytes per token on one GPU)

Every GPU of a replica holds the same number of blocks (each holds its share of the KV heads of its own
pipeline stage's layers), so ``num_gpu_blocks`` is per replica. Block 0 is reserved later by the engine.
The activation reserve is what vLLM's profiling run leaves taken besides the weights: the peak of that run
plus non-torch memory (:func:`activation_reserve_bytes`). The peak is the larger of two passes. The forward
pass over ``max_num_batched_tokens`` dummy tokens keeps one layer's activations alive. The dummy sampler runs
over ``min(max_num_seqs, max_num_batched_tokens)`` rows with top-k and top-p on, and holds fp32 logits,
their sort values and int64 indices, softmax and cumulative probabilities, exponential noise and masks for
every row × vocabulary entry. The sampler usually dominates. It makes the reserve depend on the model's
vocabulary and on ``max_num_seqs``: about 1.2 GiB for a 128k vocabulary at 256 sequences, and 7.4 GiB for
gpt-oss's 201k at 1,024. A profile (``activation_reserve_gib``) or a config (``hardware.activation_reserve_gib``)
may fix it instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmsim.errors import ProfileError
from llmsim.hardware.config import HardwareConfig
from llmsim.hardware.specs import GIB, GPUSpec
from llmsim.hardware.model_spec import ModelSpec
from llmsim.hardware.precision import mxfp4_expert_dims

# Non-torch memory (CUDA context share, cuBLAS workspaces) and its growth with NCCL communicators: llm-d
# measured 0.13 GiB at TP 1 and 0.55 GiB at TP 2 (REFERENCE.md section 2).
NON_TORCH_GIB = 0.13
NCCL_RESERVE_GIB = 0.4
#: Bytes alive per logit (row × vocabulary entry) at the peak of vLLM's dummy sampler run: fp32 logits (4),
#: sorted values (4) and int64 sort indices (8), probabilities and their cumulative sums (4 + 4), exponential
#: noise (4), the scattered-back logits (4), masks and the bf16 logits of the LM head (~3): about 35 B [I].
#: Two published engine logs put it at 38-39 B. Llama-3.1-8B on an H100 (1,024 rows × 128,256) profiled
#: 4.76 GiB of activations (llm-d, REFERENCE.md section 2). gpt-oss-120b on an H100 (1,024 rows × 201,088)
#: left 7.4-7.5 GiB between its weights and its KV cache (vLLM issues 23278 and 27508).
SAMPLER_BYTES_PER_LOGIT = 38.5
#: Activation bytes (bf16) per token of the forward pass's widest moment: input, residual, normed hidden
#: state and attention output (4 × hidden), and the MLP's gate/up output with its activation (3 × width) [I].
ACTIVATION_BYTES = 2


@dataclass(frozen=True)
class KVCapacity:
    """The KV-cache budget of one replica, with the numbers it was computed from."""

    num_gpu_blocks: int
    block_size: int
    kv_bytes_per_token: float  # whole model, all layers, all KV heads (what one token costs a replica)
    kv_bytes_per_token_per_gpu: float  # this GPU's layers (PP) and KV heads (TP)
    weight_bytes_per_gpu: float
    activation_reserve_bytes: float
    usable_bytes_per_gpu: float  # utilization × GPU memory
    available_kv_bytes_per_gpu: float
    window_bytes_per_request_per_gpu: float = 0.0  # sliding-window layers' KV held by one running request

    @property
    def num_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size

    @property
    def block_bytes_per_gpu(self) -> float:
        return self.block_size * self.kv_bytes_per_token_per_gpu


def layers_per_stage(num_layers: int, pp: int) -> list[int]:
    """Split layers over pipeline stages as evenly as possible (earlier stages take the remainder).

    Every layer belongs to exactly one stage; vLLM's default partition does the same.
    """
    if pp < 1 or pp > num_layers:
        raise ProfileError(f"hardware.pp: expected 1 to {num_layers} (the model's layers), got {pp}")
    base, extra = divmod(num_layers, pp)
    return [base + (1 if stage < extra else 0) for stage in range(pp)]


def check_tensor_parallel(model: ModelSpec, tp: int, flag: str = "hardware.tp") -> None:
    """vLLM refuses a tensor-parallel degree that does not split the attention heads evenly
    (``ModelConfig.verify_with_parallel_config``), and its QKV projection needs the KV heads either split
    evenly (tp ≤ KV heads) or replicated evenly (tp a multiple of them). So must we: with tp = 3 on 32
    heads, or tp = 1024, a simulation would bill GPUs that cannot hold a shard."""
    if model.num_heads % tp:
        divisors = [d for d in range(1, model.num_heads + 1) if model.num_heads % d == 0 and d <= 64]
        raise ProfileError(f"{flag}: {model.name} has {model.num_heads} attention heads, which tp={tp} does not "
                           f"divide (vLLM refuses it); valid: {', '.join(map(str, divisors))}")
    kv = model.num_kv_heads
    if (tp <= kv and kv % tp) or (tp > kv and tp % kv):
        raise ProfileError(f"{flag}: {model.name} has {kv} KV heads; tp={tp} must divide them or be a multiple "
                           "of them (vLLM's QKV projection splits or replicates KV heads evenly)")


def check_expert_parallel(model: ModelSpec, hw: HardwareConfig) -> None:
    """``hardware.ep`` must split a MoE model's experts evenly over GPUs the stage already has."""
    if hw.ep == 1:
        return
    if not model.is_moe:
        raise ProfileError(f"hardware.ep: {model.name} has no experts; expected ep = 1, got {hw.ep}")
    if hw.tp % hw.ep or model.num_experts % hw.ep:
        raise ProfileError(
            f"hardware.ep: expected a divisor of both hardware.tp ({hw.tp}) and {model.name}'s "
            f"{model.num_experts} experts, got {hw.ep}"
        )


def expert_layout(model: ModelSpec, hw: HardwareConfig, gpu: GPUSpec | None) -> tuple[int, float]:
    """(hidden size, intermediate size on one GPU) of the routed experts as the GPU's kernel stores them: MXFP4
    experts are padded to the alignment of ``gpu.mxfp4_moe_kernel`` (:data:`MXFP4_MOE_ALIGNMENT`), others not."""
    inter = model.expert_intermediate_size / (hw.tp // hw.ep)
    if gpu is None or model.weight_precisions(hw.weight_dtype, hw.expert_weight_dtype)[1] != "mxfp4":
        return model.hidden_size, inter
    return mxfp4_expert_dims(gpu.mxfp4_moe_kernel, model.hidden_size, inter)


def weight_bytes_per_gpu(model: ModelSpec, hw: HardwareConfig, gpu: GPUSpec | None = None) -> float:
    """Weight bytes one GPU holds (the largest pipeline stage's share, split over its tp GPUs).

    Dense weights (attention, norms, dense MLPs, shared experts, embeddings) are split by TP over tp GPUs.
    Routed experts are split by expert parallelism: each of the ``ep`` ranks holds num_experts/ep whole
    experts, each of them TP-sharded over the tp/ep GPUs of that rank, so one GPU holds 1/(ep·tp/ep) of them.
    Each part is counted at its own precision (``ModelSpec.weight_bytes_split``: e.g. MXFP4 experts next to
    bf16 attention). Pipeline stages hold their own layers; the embedding and LM head are spread like the
    layers (vLLM puts them on the first and last stage; spreading keeps the total exact and the stage error
    below one layer). With ``gpu``, experts take the padded size its MXFP4 kernel stores them at
    (:func:`expert_layout`).
    """
    check_tensor_parallel(model, hw.tp)
    check_expert_parallel(model, hw)
    dense_bytes, expert_bytes = model.weight_bytes_split(hw.weight_dtype, hw.expert_weight_dtype)
    experts_per_gpu = expert_bytes / hw.ep / (hw.tp // hw.ep)
    if model.is_moe:  # both expert GEMMs hold hidden × intermediate weights: padding scales them alike
        stored, plain = expert_layout(model, hw, gpu), expert_layout(model, hw, None)
        if stored != plain:  # (unpadded experts keep their bytes exactly)
            experts_per_gpu *= stored[0] * stored[1] / (plain[0] * plain[1])
    return (dense_bytes / hw.tp + experts_per_gpu) / hw.pp


def kv_bytes_per_gpu(model: ModelSpec, hw: HardwareConfig, block_size: int) -> tuple[float, float]:
    """(KV bytes per token of the layers whose cache grows with the context, KV bytes per running request of
    the sliding-window layers) on one GPU of the most loaded pipeline stage.

    vLLM's hybrid KV cache manager gives a sliding-window layer at most ``sliding_window`` tokens of a
    request (plus the block being filled) and frees the blocks that fall out of the window, so those layers
    cost a bounded amount per running request instead of a share of every token. A model whose layers are
    all sliding (no full-attention layer) is sized as full attention, as vLLM without the hybrid manager does.
    """
    worst = (0.0, 0.0)
    first = 0
    for count in layers_per_stage(model.num_layers, hw.pp):
        full, sliding = model.kv_bytes_by_kind(hw.kv_cache_dtype, tp=hw.tp, layers=range(first, first + count))
        first += count
        if full == 0.0:
            full, sliding = sliding, 0.0
        window = sliding * ((model.sliding_window or 0) + block_size)
        worst = max(worst, (full, window))
    return worst


def activation_reserve_bytes(model: ModelSpec, gpu: GPUSpec, hw: HardwareConfig, max_num_seqs: int,
                             max_num_batched_tokens: int) -> float:
    """Memory per GPU that vLLM's profiling run finds taken besides the weights (module docstring): the config's
    or the GPU profile's fixed value when set, else non-torch memory plus the larger of the forward pass's
    and the dummy sampler's peaks."""
    if hw.activation_reserve_gib is not None:
        return hw.activation_reserve_gib * GIB
    if gpu.activation_reserve_gib is not None:
        return gpu.activation_reserve_gib * GIB
    non_torch = NON_TORCH_GIB + (NCCL_RESERVE_GIB if hw.tp * hw.pp > 1 else 0.0)
    # Every GPU holds the full logits (vLLM gathers the vocabulary-parallel LM head's output to all ranks).
    sampler = min(max_num_seqs, max_num_batched_tokens) * model.vocab_size * SAMPLER_BYTES_PER_LOGIT
    width = model.intermediate_size / hw.tp if not model.is_moe or model.first_dense_layers else 0.0
    if model.is_moe:  # each token goes through experts_per_token experts' MLPs at once
        width = max(width, model.experts_per_token * model.expert_intermediate_size / hw.tp)
    forward = max_num_batched_tokens * ACTIVATION_BYTES * (4 * model.hidden_size + 3 * width)
    return non_torch * GIB + max(sampler, forward)


def kv_cache_capacity(
    model: ModelSpec,
    gpu: GPUSpec,
    hw: HardwareConfig,
    block_size: int,
    gpu_memory_utilization: float,
    *,
    max_num_seqs: int = 256,
    max_num_batched_tokens: int = 8192,
) -> KVCapacity:
    """KV blocks per replica for ``model`` on ``tp × pp`` GPUs of kind ``gpu`` (raises if weights don't fit).

    ``max_num_seqs`` and ``max_num_batched_tokens`` size the profiling run's peak (the defaults are vLLM V1's
    offline ones before 0.9). With sliding-window layers (gpt-oss, Step-3.5) the blocks count the
    full-attention layers' bytes per token; the sliding layers share the pool (vLLM's hybrid allocator, which
    :mod:`llmsim.deployment` converts the count for and :mod:`llmsim.engine.hybrid_kv` allocates from), and
    ``window_bytes_per_request_per_gpu`` says what one running request holds there.
    """
    if not 0 < gpu_memory_utilization <= 1:
        raise ProfileError(f"scheduler.gpu_memory_utilization: expected a fraction in (0, 1], got {gpu_memory_utilization}")
    weight_per_gpu = weight_bytes_per_gpu(model, hw, gpu)
    usable = gpu_memory_utilization * gpu.memory_bytes
    reserve = activation_reserve_bytes(model, gpu, hw, max_num_seqs, max_num_batched_tokens)
    per_gpu_token, window_per_request = kv_bytes_per_gpu(model, hw, block_size)
    available = usable - weight_per_gpu - reserve
    if available <= 0:
        short = (weight_per_gpu + reserve - usable) / GIB
        raise ProfileError(
            f"{model.name} needs {weight_per_gpu / GIB:.1f} GiB of weights per GPU at tp={hw.tp}, pp={hw.pp} "
            f"(plus {reserve / GIB:.1f} GiB activation reserve) but {gpu.name} offers {usable / GIB:.1f} GiB at "
            f"gpu_memory_utilization={gpu_memory_utilization}: {short:.1f} GiB short; raise hardware.tp or hardware.pp"
        )
    blocks = math.floor(available / (block_size * per_gpu_token))
    return KVCapacity(
        num_gpu_blocks=blocks,
        block_size=block_size,
        kv_bytes_per_token=model.kv_bytes_per_token(hw.kv_cache_dtype),
        kv_bytes_per_token_per_gpu=per_gpu_token,
        weight_bytes_per_gpu=weight_per_gpu,
        activation_reserve_bytes=reserve,
        usable_bytes_per_gpu=usable,
        available_kv_bytes_per_gpu=available,
        window_bytes_per_request_per_gpu=window_per_request,
    )
