"""Synthetic workloads from a seed: arrival process × length model, chosen by preset name.

**Arrivals** follow ``vllm bench serve``: inter-arrival gaps are Gamma(shape=b, scale=1/(rate·b)), where
``b`` is the *burstiness*. The mean gap is 1/rate whatever ``b``; the coefficient of variation of the gaps is
1/sqrt(b), so b = 1 is a Poisson process and b < 1 is burstier (clusters of arrivals separated by long
quiet gaps). As in recent vLLM (the variant with ``target_total_delay_s``), a workload of N requests
rescales the cumulative arrival times so that the last one lands exactly at N/rate: the realised mean rate
is then exactly ``rate`` while the gaps keep their shape (rescaling multiplies every gap by one factor, so
the CV is unchanged). The first request arrives after one gap, not at 0, as in vLLM. When generating for a
``duration_s`` instead, gaps are drawn until the duration is filled and are not rescaled.

**Lengths** follow the BurstGPT study (Wang et al., arXiv:2401.17644): request lengths are heavy-tailed
("Zipf-like"), responses are bimodal and correlated with the request. See :class:`BurstGPTLengths`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from llmsim.errors import ConfigError, did_you_mean
from llmsim.workload.workload import Workload, canonical_frame

# ---- Defaults of the bundled workload: the lead tunes these (one place). ------------------------------
#: Mean arrival rate of the bundled default (req/s). One Llama-2-7B replica on an A100-80GB saturates at about
#: 3.7 req/s of these lengths (measured: `llmsim run --set workload.rate=5`), so 2.2 req/s is a moderate ~60 %
#: mean load; the burst episodes of the `burstgpt` preset run at ~2.5× the mean and overload it for a minute.
DEFAULT_RATE_RPS = 2.2
#: Burstiness (gamma shape) inside calm spells and burst episodes: 0.5 → gap CV ≈ 1.4.
DEFAULT_BURSTINESS = 0.5
#: Number of requests when neither num_requests nor duration_s is given.
DEFAULT_NUM_REQUESTS = 2000
#: Llama-2's context window (max_model_len 4096): every synthetic request must fit it.
MAX_MODEL_LEN = 4096


@dataclass(frozen=True)
class BurstGPTLengths:
    """Request and response lengths shaped like BurstGPT's ChatGPT conversation logs.

    The BurstGPT study reports (arXiv:2401.17644, §"Response lengths"): request lengths are heavy-tailed
    (it fits a Zipf law; its generator samples Zipf(1.1)), responses are *bimodal* and depend on the
    request, the median response growing roughly linearly with the request to about 450 tokens at 2,000
    request tokens for ChatGPT conversations. The paper publishes figures, not numbered parameters, so:

    - requests: a two-component lognormal — a short-prompt mode (~22 % of requests, median 40 tokens) and a
      main mode (median 900, sigma 0.6). Weights and medians are fitted to the 38 successful rows of the
      BurstGPT_1 sample in ../shared/traces/burstgpt (9 of 38 prompts are under 100 tokens; the others have
      median ≈ 950); a lognormal, unlike an untruncated Zipf(1.1), has a finite mean and a 4k-token window.
    - responses: with probability ``short_response_frac`` a short answer (median 20 tokens: the paper's
      lower mode), else lognormal around the linear median ``response_base + response_slope × request``:
      150 + 0.17 × 2000 = 490 for the main mode at 2,000 request tokens, which puts the median over both
      modes at ≈ 450 (the paper's anchor above: 0.9·F(m) + 0.1 ≈ 0.5 gives m ≈ 0.92 × 490).
    Everything is clipped so prompt ≤ ``max_prompt_tokens`` and prompt + output ≤ ``max_model_len``.
    """

    short_prompt_frac: float = 0.22
    short_prompt_median: float = 40.0
    short_prompt_sigma: float = 0.7
    prompt_median: float = 900.0
    prompt_sigma: float = 0.6
    short_response_frac: float = 0.10
    short_response_median: float = 20.0
    response_base: float = 150.0
    response_slope: float = 0.17
    response_sigma: float = 0.6
    max_prompt_tokens: int = 3584
    max_model_len: int = MAX_MODEL_LEN

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        short = rng.random(n) < self.short_prompt_frac
        median = np.where(short, self.short_prompt_median, self.prompt_median)
        sigma = np.where(short, self.short_prompt_sigma, self.prompt_sigma)
        prompt = np.rint(median * np.exp(sigma * rng.standard_normal(n)))
        prompt = np.clip(prompt, 1, self.max_prompt_tokens).astype(np.int64)
        short_answer = rng.random(n) < self.short_response_frac
        response_median = np.where(short_answer, self.short_response_median,
                                   self.response_base + self.response_slope * prompt)
        output = np.rint(response_median * np.exp(self.response_sigma * rng.standard_normal(n)))
        output = np.clip(output, 1, self.max_model_len - prompt).astype(np.int64)
        return prompt, output


@dataclass(frozen=True)
class GammaArrivals:
    """Gamma renewal arrivals with vLLM's burstiness (see the module docstring)."""

    rate_rps: float
    burstiness: float
    rescale_to_rate: bool = True

    def for_count(self, rng: np.random.Generator, n: int) -> np.ndarray:
        gaps = rng.gamma(shape=self.burstiness, scale=1.0 / (self.rate_rps * self.burstiness), size=n)
        times = np.cumsum(gaps)
        if self.rescale_to_rate and n and times[-1] > 0:
            times *= (n / self.rate_rps) / times[-1]
        return times

    def for_duration(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        expected = self.rate_rps * duration_s
        # Draw in blocks sized for the expected count plus a generous margin (CV can be large).
        block = int(expected + 10 * np.sqrt(expected / self.burstiness) + 16)
        times = np.empty(0)
        last = 0.0
        while last < duration_s:
            gaps = rng.gamma(shape=self.burstiness, scale=1.0 / (self.rate_rps * self.burstiness), size=block)
            new = last + np.cumsum(gaps)
            times = np.concatenate([times, new])
            last = float(new[-1])
        return times[times < duration_s]


@dataclass(frozen=True)
class BurstEpisodeArrivals:
    """Gamma arrivals whose rate switches between calm spells and burst episodes.

    A renewal process with one fixed rate has bursts of a few requests at most; the BurstGPT study's traces
    (Wang et al., arXiv:2401.17644, the per-minute request-rate figures) show minutes-long stretches at a
    multiple of the mean rate, and those are what exhaust KV-cache memory. This process alternates calm spells
    and burst episodes with exponentially distributed lengths (means ``mean_calm_s`` and ``mean_burst_s``);
    during an episode the rate is ``burst_factor`` × the calm rate. The calm rate is set so the long-run mean
    is ``rate_rps``; inside each spell, gaps are gamma with vLLM's ``burstiness``. The episode parameters are
    illustrative (the study publishes rate traces, not a fitted episode model): fit a real trace with
    ``llmsim generate --fit`` to reproduce a specific one.
    """

    rate_rps: float
    burstiness: float
    burst_factor: float = 4.0
    mean_burst_s: float = 45.0
    mean_calm_s: float = 180.0
    rescale_to_rate: bool = True

    def _rates(self) -> tuple[float, float]:
        burst_share = self.mean_burst_s / (self.mean_burst_s + self.mean_calm_s)
        calm = self.rate_rps / (1.0 - burst_share + self.burst_factor * burst_share)
        return calm, calm * self.burst_factor

    def _until(self, rng: np.random.Generator, horizon_s: float, min_count: int = 0) -> np.ndarray:
        calm_rate, burst_rate = self._rates()
        chunks, t, in_burst = [], 0.0, False
        count = 0
        while t < horizon_s or count < min_count:
            length = rng.exponential(self.mean_burst_s if in_burst else self.mean_calm_s)
            rate = burst_rate if in_burst else calm_rate
            expected = rate * length
            n = int(expected + 10 * np.sqrt(expected / self.burstiness + 1) + 8)
            gaps = rng.gamma(shape=self.burstiness, scale=1.0 / (rate * self.burstiness), size=n)
            times = t + np.cumsum(gaps)
            times = times[times < t + length]
            chunks.append(times)
            count += len(times)
            t += length
            in_burst = not in_burst
        return np.concatenate(chunks) if chunks else np.empty(0)

    def for_count(self, rng: np.random.Generator, n: int) -> np.ndarray:
        times = self._until(rng, 0.0, min_count=n)[:n]
        if self.rescale_to_rate and n and times[-1] > 0:
            times *= (n / self.rate_rps) / times[-1]
        return times

    def for_duration(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        times = self._until(rng, duration_s)
        return times[times < duration_s]


@dataclass(frozen=True)
class SyntheticPreset:
    """A named arrival process with default rate/burstiness and a length model."""

    name: str
    description: str
    rate_rps: float
    burstiness: float
    lengths: BurstGPTLengths = BurstGPTLengths()
    fixed_burstiness: bool = False  # poisson: burstiness is 1 by definition
    burst_episodes: bool = False  # burstgpt: calm spells and minutes-long burst episodes

    def arrivals(self):
        if self.burst_episodes:
            return BurstEpisodeArrivals(self.rate_rps, self.burstiness)
        return GammaArrivals(self.rate_rps, self.burstiness)


#: Preset name → definition. ``servegen:<client>`` names are handled by :mod:`llmsim.workload.servegen`.
PRESETS: dict[str, SyntheticPreset] = {
    "burstgpt": SyntheticPreset(
        "burstgpt", "bundled default: gamma arrivals with minutes-long burst episodes, BurstGPT-like lengths",
        DEFAULT_RATE_RPS, DEFAULT_BURSTINESS, burst_episodes=True),
    "gamma": SyntheticPreset(
        "gamma", "gamma arrivals with vllm bench serve's burstiness (default 0.5), BurstGPT-like lengths",
        DEFAULT_RATE_RPS, 0.5),
    "poisson": SyntheticPreset(
        "poisson", "Poisson arrivals (gamma with burstiness 1), BurstGPT-like lengths",
        DEFAULT_RATE_RPS, 1.0, fixed_burstiness=True),
}


def get_preset(name: str) -> SyntheticPreset:
    if name not in PRESETS:
        raise ConfigError(f"workload.preset: unknown preset {name!r}{did_you_mean(name, PRESETS)}; valid presets: "
                          f"{', '.join(PRESETS)}, servegen:<client>, fit:<trace file>")
    return PRESETS[name]


def diurnal_warp(times: np.ndarray, amplitude: float, day_s: float, peak_s: float) -> np.ndarray:
    """Move arrivals made at a constant mean rate onto a daily rate curve, keeping their order and count.

    The rate becomes mean × (1 + amplitude·cos(2π(t − peak_s)/day_s)): the BurstGPT study's conversation traffic
    has a strong daily period (its hour-of-day profiles). Arrival i at operational time τ_i moves to the t with
    Λ(t) = τ_i, where Λ(t) = t + amplitude·day_s/2π·(sin(2π(t − peak_s)/day_s) + sin(2π·peak_s/day_s)) is the
    cumulative rate divided by the mean; Λ is increasing because amplitude < 1. Gaps keep their shape locally
    (burstiness) and stretch or shrink with the rate.
    """
    if amplitude == 0 or len(times) == 0:
        return times
    horizon = float(times[-1]) / (1.0 - amplitude) + day_s
    grid = np.linspace(0.0, horizon, max(20_001, int(horizon / day_s * 20_000)))
    phase = 2 * np.pi / day_s
    cumulative = grid + amplitude / phase * (np.sin(phase * (grid - peak_s)) + np.sin(phase * peak_s))
    return np.interp(times, cumulative, grid)


def _check_size(spec: "SyntheticPreset", num_requests: Optional[int], duration_s: Optional[float], amplitude: float,
                day_s: float) -> None:
    """Refuse, before drawing anything, arguments that are not finite and positive or a workload too large
    for this machine's memory or a float clock (see :mod:`llmsim.limits`)."""
    from llmsim.limits import MAX_SPAN_S, check_generated_size

    for name, value in (("rate", spec.rate_rps), ("burstiness", spec.burstiness), ("duration_s", duration_s),
                        ("day_s", day_s)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"workload {name} (--{name.replace('_s', '').replace('_', '-')}): expected a "
                              f"positive finite number, got {value}")
    if not 0.01 <= spec.burstiness <= 1000:
        raise ConfigError(f"workload burstiness (--burstiness): expected 0.01 to 1000, got {spec.burstiness:g}")
    count = spec.rate_rps * duration_s if duration_s is not None else (num_requests or DEFAULT_NUM_REQUESTS)
    check_generated_size(count, f"a {spec.name} workload", "the duration (--duration / workload.duration_s), "
                                                        "the rate or workload.num_requests")
    span = duration_s if duration_s is not None else count / spec.rate_rps
    if span > MAX_SPAN_S:
        raise ConfigError(f"a {spec.name} workload of {count:g} requests at {spec.rate_rps:g} req/s spans {span:.3g} s, "
                          f"beyond the {MAX_SPAN_S:.0e} s llmsim simulates; raise the rate (--rate / workload.rate)")
    if amplitude and span / day_s > 1e5:
        raise ConfigError(f"workload.day_s={day_s:g} makes {span / day_s:.3g} daily cycles over {span:.3g} s "
                          "(at most 100,000); lengthen workload.day_s")


def synthetic_workload(preset: str = "burstgpt", *, num_requests: Optional[int] = None,
                       duration_s: Optional[float] = None, rate: Optional[float] = None,
                       burstiness: Optional[float] = None, seed: int = 0, diurnal_amplitude: float = 0.0,
                       day_s: float = 86_400.0, peak_s: float = 50_400.0) -> Workload:
    """Generate a workload from a preset. Same arguments and seed ⇒ identical frame.

    Give ``num_requests`` (arrival times rescaled so the last lands at N/rate, as vLLM does) or
    ``duration_s`` (arrivals in [0, duration_s), not rescaled); with both, the first N within the
    duration; with neither, :data:`DEFAULT_NUM_REQUESTS`. Arrivals and lengths use independent random
    streams derived from ``seed``, so changing the rate does not change the lengths. ``diurnal_amplitude`` > 0
    puts the arrivals on a daily rate curve (:func:`diurnal_warp`; the day starts at t = 0, peak at ``peak_s``).
    """
    spec = get_preset(preset)
    if spec.fixed_burstiness and burstiness not in (None, 1.0):
        raise ConfigError(f"workload.burstiness: the poisson preset has burstiness 1, got {burstiness}; "
                          "use the gamma preset for other values")
    # `is None`, not `or`: a rate or burstiness of 0 is an error below, never silently the preset's default
    spec = replace(spec, rate_rps=spec.rate_rps if rate is None else rate,
                   burstiness=spec.burstiness if burstiness is None else burstiness)
    _check_size(spec, num_requests, duration_s, diurnal_amplitude, day_s)
    arrivals_rng, lengths_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    process = spec.arrivals()
    if duration_s is not None:
        times = process.for_duration(arrivals_rng, duration_s)
        if num_requests is not None:
            times = times[:num_requests]
    else:
        times = process.for_count(arrivals_rng, num_requests or DEFAULT_NUM_REQUESTS)
    if diurnal_amplitude:
        times = diurnal_warp(times, diurnal_amplitude, day_s, peak_s)
        if duration_s is not None:
            times = times[times < duration_s]
    prompt, output = spec.lengths.sample(lengths_rng, len(times))
    source = f"preset:{spec.name}(rate={spec.rate_rps:g}, burstiness={spec.burstiness:g}, seed={seed})"
    if diurnal_amplitude:
        source += f" on a daily curve (amplitude {diurnal_amplitude:g}, day {day_s:g} s)"
    workload = Workload(canonical_frame({"arrival_s": times, "prompt_tokens": prompt, "output_tokens": output}),
                        source, meta={"preset": spec.name, "rate_rps": spec.rate_rps,
                                      "burstiness": spec.burstiness})
    return workload.validate()
