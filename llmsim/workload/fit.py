"""A workload model fitted to a trace, and generation from it at any duration and scale.

The model has three parts, each kept from the source rather than reduced to a mean:

1. **Rate profile** — request counts in consecutive windows of ``window_s`` seconds (chosen so a window
   holds ~100 requests on average, between 1 s and 1 hour). Generation walks the windows in order
   (cycling when asked for more time than the source covers), so daily/weekly shapes and bursts of
   minutes survive.
2. **Inter-arrival shape** — the source's gaps divided by their window's mean gap (so they have mean 1
   in every window), kept *in order*. Inside a window of c requests, c+1 normalised gaps are drawn as
   blocks of consecutive gaps (a block bootstrap, which keeps runs such as Mooncake's batches of equal
   timestamps) and their partial sums are rescaled so the (c+1)-th lands on the window's end — the
   order-statistics construction, which for exponential gaps gives exactly a Poisson process. Rescaling
   multiplies every gap of a window by one factor, so the gap CV is that of the source.
3. **Lengths** — a source request is drawn at random (its model and service come along); its prompt
   length is drawn between its own order statistic and the next (a smoothed bootstrap of the marginal),
   and its response from the empirical response distribution of its prompt-length bin (20 quantile bins,
   drawn at stratified quantiles so the tail is reproduced with little noise)
   — conditional binned sampling, which keeps the request→response dependence.

Sessions (BurstGPT_3): when the source has ``session_id``, the arrival model is fitted to session starts,
and each generated session gets a turn count and think times drawn from the source's sessions.

Scaling: ``rate_scale`` multiplies every window's count (stochastic rounding) and leaves window lengths and
the normalised gaps alone — the rate changes, the burstiness (gap CV) does not. ``time_scale`` is the
BurstGPT study's **naive time compression**: every time (windows, think times) is multiplied by the factor,
which also squeezes the daily pattern into a shorter span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from llmsim.errors import ConfigError
from llmsim.workload.workload import Workload, canonical_frame

TARGET_PER_WINDOW = 100
#: Window lengths the fit chooses from: the smallest that holds TARGET_PER_WINDOW requests on average.
WINDOW_CHOICES_S = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
BLOCK_GAPS = 32
LENGTH_BINS = 20


def order_statistic_times(norm_gaps: np.ndarray, count: int, span_s: float, rng: np.random.Generator,
                          block: int = BLOCK_GAPS) -> np.ndarray:
    """``count`` offsets from 0 to ``span_s`` (both ends included when count ≥ 2) whose count−1 gaps are
    block-bootstrapped normalised gaps, all multiplied by one factor so they fill the span."""
    if count == 1:
        return np.zeros(1)
    needed = count - 1
    if len(norm_gaps) == 0:
        draws = rng.exponential(size=needed)
    else:
        block = max(1, min(block, len(norm_gaps)))
        starts = rng.integers(0, len(norm_gaps) - block + 1, size=-(-needed // block))
        draws = norm_gaps[(starts[:, None] + np.arange(block)[None, :]).ravel()[:needed]]
    sums = np.concatenate([[0.0], np.cumsum(draws)])
    if sums[-1] <= 0:  # every drawn gap was 0 (ties): spread uniformly instead
        return np.sort(rng.random(count)) * span_s
    return sums * (span_s / sums[-1])


@dataclass
class ArrivalModel:
    """Per window: request count and the first/last arrival offsets; plus the pooled normalised gaps.

    Keeping each window's occupied interval [first, last] reproduces the silences between bursts (which
    dominate the gap CV of on/off traffic such as Azure's) while the gaps inside a window are redrawn.
    """

    window_s: float
    counts: np.ndarray  # requests per source window
    first_s: np.ndarray  # offset of the window's first arrival from the window start
    last_s: np.ndarray  # offset of its last arrival
    norm_gaps: np.ndarray  # within-window gaps / the window's mean within-window gap, in source order

    @classmethod
    def fit(cls, arrival_s: np.ndarray, window_s: Optional[float] = None) -> "ArrivalModel":
        t = arrival_s - arrival_s[0]
        duration = float(t[-1]) if len(t) else 0.0
        if window_s is None:
            rate = len(t) / duration if duration > 0 else 1.0
            wanted = TARGET_PER_WINDOW / rate
            window_s = next((w for w in WINDOW_CHOICES_S if w >= wanted), WINDOW_CHOICES_S[-1])
        k = int(duration // window_s) + 1
        index = np.minimum((t // window_s).astype(np.int64), k - 1)
        counts = np.bincount(index, minlength=k)
        offset = t - index * window_s
        first = np.full(k, np.nan)
        last = np.full(k, np.nan)
        np.fmin.at(first, index, offset)
        np.fmax.at(last, index, offset)
        inner = index[1:] == index[:-1]
        span = (last - first)[index[1:]]
        mean_gap = span / np.maximum(counts[index[1:]] - 1, 1)
        gaps = np.diff(t)
        keep = inner & (mean_gap > 0)
        return cls(window_s, counts, first, last, gaps[keep] / mean_gap[keep])

    def generate(self, rng: np.random.Generator, duration_s: float, rate_scale: float,
                 time_scale: float) -> np.ndarray:
        window = self.window_s * time_scale
        times = []
        for j in range(int(np.ceil(duration_s / window))):
            w = j % len(self.counts)
            expected = self.counts[w] * rate_scale
            count = int(np.floor(expected) + (rng.random() < expected - np.floor(expected)))
            if count == 0:
                continue
            first, last = self._occupied(w, count, rate_scale)
            offsets = first + order_statistic_times(self.norm_gaps, count, last - first, rng)
            times.append(j * window + offsets * time_scale)
        out = np.concatenate(times) if times else np.zeros(0)
        return out[out <= duration_s]

    def _occupied(self, w: int, count: int, rate_scale: float) -> tuple[float, float]:
        """The interval of window w that generated arrivals fill.

        At a higher rate the quiet edges of a window shrink like every other gap (divided by the scale),
        so the gap CV inside busy periods is kept; at a lower rate they are left as they are.
        """
        first, last, window = self.first_s[w], self.last_s[w], self.window_s
        if np.isnan(first):  # an empty source window that stochastic rounding gave a request
            return 0.0, window
        if last <= first and count > 1:  # one source arrival, several generated: spread to the window end
            last = window
        if rate_scale > 1.0:
            first, last = first / rate_scale, window - (window - last) / rate_scale
        return first, last


@dataclass
class LengthModel:
    prompt_sorted: np.ndarray
    prompt_rank: np.ndarray  # rank of each source row's prompt in prompt_sorted
    bin_of_row: np.ndarray
    outputs_by_bin: list
    categories: dict = field(default_factory=dict)  # column -> Categorical of source rows

    @classmethod
    def fit(cls, df: pd.DataFrame) -> "LengthModel":
        prompt = df["prompt_tokens"].to_numpy()
        output = df["output_tokens"].to_numpy()
        order = np.argsort(prompt, kind="stable")
        rank = np.empty(len(prompt), dtype=np.int64)
        rank[order] = np.arange(len(prompt))
        edges = np.unique(np.percentile(prompt, np.linspace(0, 100, LENGTH_BINS + 1)))
        bins = np.clip(np.searchsorted(edges, prompt, side="right") - 1, 0, max(len(edges) - 2, 0))
        by_bin = [np.sort(output[bins == b]) for b in range(max(len(edges) - 1, 1))]
        cats = {c: pd.Categorical(df[c]) for c in ("model", "service") if c in df.columns}
        return cls(prompt[order], rank, bins, by_bin, cats)

    def sample(self, rng: np.random.Generator, n: int) -> dict:
        """n requests. Source rows are drawn as whole random permutations (each row once per pass) and
        responses at stratified quantiles of their bin, which keeps sampling noise in tail quantiles low."""
        size = len(self.prompt_rank)
        rows = np.concatenate([rng.permutation(size) for _ in range(-(-n // size))])[:n]
        k = self.prompt_rank[rows]
        nxt = np.minimum(k + 1, len(self.prompt_sorted) - 1)
        lo, hi = self.prompt_sorted[k], self.prompt_sorted[nxt]
        prompt = np.rint(lo + rng.random(n) * (hi - lo)).astype(np.int64)
        output = np.zeros(n, dtype=np.int64)
        bins = self.bin_of_row[rows]
        for b, values in enumerate(self.outputs_by_bin):
            sel = np.flatnonzero(bins == b)
            if len(sel) and len(values):
                u = (rng.permutation(len(sel)) + rng.random(len(sel))) / len(sel)
                output[sel] = values[np.minimum((u * len(values)).astype(np.int64), len(values) - 1)]
        out = {"prompt_tokens": prompt, "output_tokens": output}
        out.update({c: cat.take(rows) for c, cat in self.categories.items()})
        return out


@dataclass
class SessionModel:
    turns: np.ndarray  # turns per source session
    think_s: np.ndarray  # gaps between consecutive turns of a session

    @classmethod
    def fit(cls, df: pd.DataFrame) -> Optional["SessionModel"]:
        if "session_id" not in df.columns:
            return None
        ordered = df[["session_id", "arrival_s"]].sort_values(["session_id", "arrival_s"], kind="stable")
        ids = ordered["session_id"].to_numpy()
        same = ids[1:] == ids[:-1]
        think = np.diff(ordered["arrival_s"].to_numpy())[same]
        return cls(ordered.groupby("session_id").size().to_numpy(), think)

    def expand(self, rng, starts_s: np.ndarray, time_scale: float) -> tuple[np.ndarray, np.ndarray]:
        turns = self.turns[rng.integers(0, len(self.turns), size=len(starts_s))]
        session = np.repeat(np.arange(len(starts_s)), turns)
        first = np.concatenate([[0], np.cumsum(turns)[:-1]])
        think = np.zeros(len(session))
        if len(self.think_s):
            think = self.think_s[rng.integers(0, len(self.think_s), size=len(session))] * time_scale
        think[first] = 0.0
        offsets = np.cumsum(think) - np.repeat(np.cumsum(think)[first], turns)
        return starts_s[session] + offsets, session


@dataclass
class FittedWorkload:
    """A trace's arrival, length and session models; :meth:`generate` draws new workloads from it."""

    source: str
    source_duration_s: float
    num_requests: int
    arrivals: ArrivalModel
    lengths: LengthModel
    sessions: Optional[SessionModel] = None

    @classmethod
    def fit(cls, workload: Workload, window_s: Optional[float] = None) -> "FittedWorkload":
        df = workload.df
        if len(df) < 2:
            raise ConfigError(f"{workload.source}: need at least 2 requests to fit a workload model")
        if float(df["arrival_s"].iloc[-1] - df["arrival_s"].iloc[0]) <= 0:
            raise ConfigError(f"{workload.source}: all {len(df)} arrivals are at the same instant, so there is no "
                              "arrival rate to fit; give a trace whose arrivals span some time")
        sessions = SessionModel.fit(df)
        starts = df["arrival_s"].to_numpy()
        if sessions is not None:
            starts = np.sort(df.groupby("session_id")["arrival_s"].min().to_numpy())
        ok = ~df["failed"].to_numpy() if "failed" in df.columns else np.ones(len(df), dtype=bool)
        return cls(workload.source, float(df["arrival_s"].iloc[-1] - df["arrival_s"].iloc[0]), len(df),
                   ArrivalModel.fit(starts, window_s), LengthModel.fit(df[ok]), sessions)

    @property
    def mean_rps(self) -> float:
        return self.num_requests / max(self.source_duration_s, 1e-9)

    def generate(self, duration_s: Optional[float] = None, *, rate: Optional[float] = None,
                 rate_scale: Optional[float] = None, time_scale: Optional[float] = None,
                 seed: int = 0) -> Workload:
        """New workload: ``rate`` (target mean req/s) or ``rate_scale`` keep burstiness; ``time_scale`` is
        naive time compression. ``duration_s`` defaults to the source's (time-scaled) duration."""
        if sum(x is not None for x in (rate, rate_scale, time_scale)) > 1:
            raise ConfigError("give at most one of rate, rate_scale and time_scale")
        from llmsim.limits import check_generated_size

        for name, value in (("duration", duration_s), ("rate", rate), ("rate-scale", rate_scale),
                            ("time-scale", time_scale)):
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ConfigError(f"--{name}: expected a positive finite number, got {value}")
        tscale = 1.0 if time_scale is None else time_scale
        rscale = rate_scale if rate_scale is not None else (rate / self.mean_rps if rate is not None else 1.0)
        duration = duration_s if duration_s is not None else self.source_duration_s * tscale
        check_generated_size(self.mean_rps * rscale / tscale * duration, f"a workload fitted to {self.source}",
                             "--duration or the rate")
        arrivals_rng, sessions_rng, lengths_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
        times = self.arrivals.generate(arrivals_rng, duration, rscale, tscale)
        session_ids = None
        if self.sessions is not None:
            times, session_ids = self.sessions.expand(sessions_rng, times, tscale)
            order = np.argsort(times, kind="stable")
            times, session_ids = times[order], session_ids[order]
        if not len(times):
            raise ConfigError(f"the model fitted to {self.source} generated no request in {duration:g} s; "
                              "lengthen --duration or raise the rate")
        cols = self.lengths.sample(lengths_rng, len(times))
        cols["arrival_s"] = times
        if session_ids is not None:
            cols["session_id"] = session_ids
        how = (f"rate {rate:g} req/s" if rate is not None else f"rate x{rscale:g}" if rate_scale
               else f"naive time compression x{tscale:g}" if time_scale else "as fitted")
        return Workload(canonical_frame(cols), f"fit:{self.source} ({how}, seed={seed})",
                        meta={"fitted_window_s": self.arrivals.window_s}).validate()
