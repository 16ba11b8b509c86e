"""From a published benchmark row to the simulation of that benchmark, run as its client ran it.

* ``serve``: vLLM's OpenAI server under ``vllm bench serve``. The random dataset sends fixed lengths; where
  ``--ignore-eos`` was not used the real outputs stop early, so the output length is the measured mean
  (``total_output_tokens / successful_requests``) when the source gives it. ``request_rate: inf`` sends every
  request at t = 0; a finite rate draws Poisson gaps (vLLM's default burstiness 1.0, first request at 0, seed 0);
  ``max_concurrency`` is a closed loop: at most that many requests outstanding, the next one sent when one ends.
  The API server sits in front of the engine.
* ``throughput``: the offline ``LLM`` engine: every prompt at t = 0, no API server.
* ``latency``: one batch of ``batch_size`` prompts (fixed lengths, ``--ignore-eos``), offline; the figure is the
  wall time of the whole batch.

Engine settings are vLLM's defaults for the row's version, GPU and entry point, unless ``engine_flags`` set them:
V1 (vLLM >= 0.8) budgets 2,048 tokens and 256 sequences behind the API server and 8,192 / 256 offline; from 0.9
on, GPUs with at least 70 GiB that are not A100s get 8,192 / 1,024 (server) and 16,384 / 1,024 (offline) [vLLM
``EngineArgs._set_default_args``]. Async scheduling is vLLM's default from 0.13 on (opt-in before). Older rows
run llmsim's V0 scheduler (chunked prefill off, 256 sequences).
"""

from __future__ import annotations

import re

import math
from dataclasses import dataclass, field


import numpy as np

from llmsim.config import SimConfig, build_config
from llmsim.errors import UserError
from llmsim.hardware.profiles import load_gpu, load_model
from llmsim.hardware.resolve import resolve_deployment
from llmsim.hardware.vllm_flags import engine_defaults
from llmsim.validation.points import BenchmarkPoint
from llmsim.workload.synthetic import GammaArrivals
from llmsim.workload.workload import Workload, canonical_frame

#: Mean prompt/response tokens of the ShareGPT sample ``vllm bench serve --dataset-name sharegpt`` draws when a
#: source reports no lengths (its default 1,000 conversations, Llama-3/Qwen tokenizers: ~217 in, ~200 out, as the
#: same client reports on many published runs).
SHAREGPT_MEAN_INPUT, SHAREGPT_MEAN_OUTPUT = 217.0, 200.0
#: Spread of ShareGPT lengths (log-normal sigma): conversations range from a few tokens to the client's caps.
SHAREGPT_SIGMA = 1.0
#: vllm bench serve's ShareGPT filter: prompts and outputs of at least 4 tokens, prompts up to 1,024 and prompt +
#: output up to 2,048 tokens.
SHAREGPT_MIN, SHAREGPT_MAX_PROMPT, SHAREGPT_MAX_TOTAL = 4, 1024, 2048
DEFAULT_SEED = 0


class SkipPoint(Exception):
    """This row cannot be modelled; the message says why (it is listed under ``skipped``)."""


@dataclass
class PointSetup:
    """Everything one simulation of a point needs."""

    point: BenchmarkPoint
    config: SimConfig
    workload: Workload
    online: bool  # behind the API server (serve), or the offline engine
    notes: list[str] = field(default_factory=list)


def _v0_budget(scheduler: dict, flags, model_max_len: int) -> None:
    """vLLM V0's budget: chunked prefill only for contexts over 32K by default (then 512 tokens a step),
    else one whole prompt a step (the budget is at least max_model_len)."""
    max_model_len = scheduler.get("max_model_len") or model_max_len
    if flags.enable_chunked_prefill is None:
        scheduler["enable_chunked_prefill"] = max_model_len > 32768
    if "max_num_batched_tokens" not in scheduler:
        scheduler["max_num_batched_tokens"] = 512 if scheduler["enable_chunked_prefill"] else max(2048, max_model_len)


def build_setup(point: BenchmarkPoint) -> PointSetup:
    """The config and workload that reproduce ``point`` (raises :class:`SkipPoint` when it cannot)."""
    if not point.measured:
        raise SkipPoint("no measured metric llmsim predicts")
    flags = point.flags()
    quantization = point.quantization
    if flags.weight_quantization and flags.weight_quantization not in quantization.lower():
        quantization = f"{quantization} {flags.weight_quantization}"
    try:
        resolved = resolve_deployment(point.gpu, point.model, quantization)
    except UserError as exc:
        raise SkipPoint(str(exc)) from None
    notes = [resolved.note] if getattr(resolved, "note", "") else []
    online = point.benchmark == "serve"
    gpu = load_gpu(resolved.gpu)
    scheduler = engine_defaults(point.version(), gpu.memory_gib, gpu.name, online)
    for name in ("max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization", "max_model_len",
                 "enable_chunked_prefill", "async_scheduling", "block_size"):
        value = getattr(flags, name)
        if value is not None:
            scheduler[name] = value
    if scheduler["policy"] == "vllm-v0":
        _v0_budget(scheduler, flags, load_model(resolved.model_id or resolved.model).max_position_embeddings)
    tp = flags.tp or point.tp
    pp = flags.pp or point.pp
    hardware = resolved.hardware(tp=tp, pp=pp, ep=tp if flags.expert_parallel else 1).model_dump()
    if flags.kv_cache_dtype:
        hardware["kv_cache_dtype"] = flags.kv_cache_dtype
    if flags.ignored:
        notes.append("flags without effect in llmsim: " + " ".join(flags.ignored))
    if flags.num_scheduler_steps and flags.num_scheduler_steps > 1:
        notes.append(f"multi-step scheduling ({flags.num_scheduler_steps} steps) not modelled")
    workload = build_workload(point, notes)
    speculative = _speculative(point, dict(flags.speculative), notes) if flags.speculative else None
    replicas = flags.dp or 1
    data = {
        "seed": DEFAULT_SEED,
        "hardware": hardware,
        "scheduler": scheduler,
        "engine": {"mode": "fast"},
        "cluster": {"replicas": replicas, "router": "round-robin"},
        "client": {"max_concurrency": point.max_concurrency} if online and point.max_concurrency else {},
        "server": {"enabled": online},  # vllm bench serve talks to the API server; offline benchmarks do not
        "metrics": {"step_detail": False, "timeseries_interval_s": 1e6},
    }
    if speculative:
        data["speculative"] = speculative
    try:
        config = build_config(data, source=f"point {point.id}")
        config = _started(config, notes)
    except UserError as exc:
        raise SkipPoint(str(exc)) from None
    return PointSetup(point, config, workload, online, notes)


def _started(config, notes: list[str]):
    """The config, with at least the KV blocks vLLM's start-up check asks for: the published server ran, so its
    cache held one request of ``max_model_len``, whatever the memory model says (a lower bound, noted)."""
    from llmsim.deployment import KVCacheBelowMaxModelLen, build_deployment

    try:
        build_deployment(config)
    except KVCacheBelowMaxModelLen as exc:
        notes.append(f"the memory model leaves fewer KV blocks than one max_model_len request needs, yet the "
                     f"server started: simulated with the {exc.blocks_needed:,} blocks that start needs (a lower "
                     f"bound)")
        scheduler = config.scheduler.model_copy(update={"num_gpu_blocks": exc.blocks_needed})
        return config.model_copy(update={"scheduler": scheduler})
    return config


#: vLLM's proposer names -> llmsim's speculative.method (any "*mtp" method is a multi-token-prediction head).
_PROPOSERS = {"eagle": "eagle", "eagle3": "eagle", "ngram": "ngram", "draft_model": "draft", "mtp": "mtp"}
_ACCEPTANCE = re.compile(r"acceptance(?:\s+rate)?\D{0,5}?(\d+(?:\.\d+)?)\s*%", re.IGNORECASE)


def _speculative(point: BenchmarkPoint, fields: dict, notes: list[str]) -> dict:
    """The ``speculative:`` section of a row whose flags enable speculative decoding.

    A source that quotes vLLM's *draft acceptance rate* (accepted ÷ proposed drafts, what ``vllm bench serve``
    and the engine's metrics print) sets the acceptance: llmsim's chained model accepts draft i with
    probability p given draft i−1 was, so the rate is (p + p² + … + p^k) / k, solved for p. Without one the
    default acceptance is assumed and the row's notes say so."""
    method = fields.get("method", "")
    method = "mtp" if method.endswith("mtp") else _PROPOSERS.get(method)
    if method is None:
        raise SkipPoint(f"speculative method {fields.get('method')!r} is not modelled (eagle, mtp, ngram, draft)")
    try:
        k = int(fields.get("num_speculative_tokens", ""))
    except ValueError:
        raise SkipPoint("speculative decoding without num_speculative_tokens") from None
    section = {"method": method, "num_speculative_tokens": k}
    quoted = _ACCEPTANCE.search(point.remarks)
    if quoted:
        rate = min(max(float(quoted.group(1)) / 100.0, 0.0), 1.0)
        section["acceptance_rate"] = round(_chained_acceptance(rate, k), 6)
        notes.append(f"speculative {method} k={k}: draft acceptance {rate:.1%} as quoted "
                     f"(per-draft {section['acceptance_rate']:.3f})")
    else:
        notes.append(f"speculative {method} k={k}: acceptance not quoted, llmsim's default assumed")
    return section


def _chained_acceptance(rate: float, k: int) -> float:
    """p with (p + p² + … + p^k) / k = rate (bisection; the left side rises with p from 0 to 1)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if sum(mid ** i for i in range(1, k + 1)) / k < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _lengths(point: BenchmarkPoint, notes: list[str]) -> tuple[float, float]:
    """Mean prompt and output tokens per request as the benchmark sent and produced them."""
    done = point.successful_requests
    input_len = point.input_len
    if point.total_input_tokens and done:
        input_len = point.total_input_tokens / done
    output_len = point.output_len
    if point.total_output_tokens and done:
        output_len = point.total_output_tokens / done
    if input_len is None or output_len is None:
        if point.dataset.startswith("sharegpt"):
            notes.append(f"lengths not reported: ShareGPT means {SHAREGPT_MEAN_INPUT:g}/{SHAREGPT_MEAN_OUTPUT:g} assumed")
            return input_len or SHAREGPT_MEAN_INPUT, output_len or SHAREGPT_MEAN_OUTPUT
        raise SkipPoint("input/output lengths not reported and the dataset gives no default")
    if input_len < 1 or output_len < 1:
        raise SkipPoint(f"lengths below one token (input {input_len:g}, output {output_len:g})")
    return input_len, output_len


def _count(point: BenchmarkPoint) -> int:
    if point.benchmark == "latency":
        count = point.batch_size or point.num_prompts
    else:
        count = point.num_prompts or (int(round(point.successful_requests)) if point.successful_requests else None)
    if count is None:
        raise SkipPoint("number of prompts not reported")
    return int(count)


def _fixed(mean: float, n: int) -> np.ndarray:
    """``n`` whole token counts of exactly this mean (floor and ceil mixed, spread evenly)."""
    low = math.floor(mean)
    extra = int(round((mean - low) * n))
    counts = np.full(n, low, dtype=np.int64)
    if extra:
        counts[np.linspace(0, n - 1, extra).round().astype(np.int64)] += 1
    return np.maximum(counts, 1)


def _sharegpt(mean_in: float, mean_out: float, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Skewed ShareGPT-like lengths within vllm bench serve's filter, rescaled to the reported means."""
    prompt = rng.lognormal(0.0, SHAREGPT_SIGMA, n)
    output = rng.lognormal(0.0, SHAREGPT_SIGMA, n)
    prompt = np.clip(prompt * mean_in / prompt.mean(), SHAREGPT_MIN, SHAREGPT_MAX_PROMPT)
    output = np.clip(output * mean_out / output.mean(), SHAREGPT_MIN, SHAREGPT_MAX_TOTAL - prompt)
    # Clipping moves the means a little: one more proportional pass keeps them on the reported figures.
    prompt = np.clip(prompt * mean_in / prompt.mean(), SHAREGPT_MIN, SHAREGPT_MAX_PROMPT)
    output = np.clip(output * mean_out / output.mean(), SHAREGPT_MIN, SHAREGPT_MAX_TOTAL - prompt)
    return np.maximum(prompt.round(), 1).astype(np.int64), np.maximum(output.round(), 1).astype(np.int64)


def build_workload(point: BenchmarkPoint, notes: list[str]) -> Workload:
    """The requests the benchmark client sent (lengths and send times; closed loops are the client's job)."""
    n = _count(point)
    mean_in, mean_out = _lengths(point, notes)
    rng = np.random.default_rng(DEFAULT_SEED)
    if point.dataset.startswith("sharegpt"):
        prompt, output = _sharegpt(mean_in, mean_out, n, rng)
    else:
        prompt, output = _fixed(mean_in, n), _fixed(mean_out, n)
    rate = point.request_rate if point.benchmark == "serve" else math.inf
    if math.isinf(rate):
        arrival = np.zeros(n)
    else:  # vllm bench serve: the first request at once, then Poisson gaps
        times = GammaArrivals(rate, 1.0, rescale_to_rate=False).for_count(rng, n)
        arrival = np.concatenate([[0.0], times[:-1]])
    frame = canonical_frame({"arrival_s": arrival, "prompt_tokens": prompt, "output_tokens": output})
    return Workload(frame, source=f"benchmark point {point.id}").validate()
