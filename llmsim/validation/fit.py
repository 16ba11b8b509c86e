"""``llmsim calibrate fit-e2e``: fit a GPU profile's step-time parameters on end-to-end measurements.

The kernel fits (``llmsim calibrate fit``) set each operator's efficiency from microbenchmarks; what they cannot
see is everything between the kernels and the user: the engine loop's CPU time, launch overheads, the API server,
and how far a whole forward pass falls short of the sum of its kernels. This fit adjusts a few named, bounded,
physically meaningful parameters (:data:`FIT_PARAMETERS`) so that simulated benchmarks match published ones.

Method (deterministic, a few dozen simulations per GPU):

1. Residuals are log(predicted / measured) of each point's headline metrics (one throughput, mean and median
   TTFT, mean TPOT, batch latency), robustly weighted (soft-L1) so that one mis-transcribed row cannot pull the
   fit; the kernel-fitted values act as a prior (a residual ``log(θ/θ₀)/σ`` per parameter), so parameters that the
   points do not constrain stay where the microbenchmarks put them.
2. Gauss–Newton in log-parameter space: simulate every point at θ and at θ·e^h for each parameter (finite
   differences), solve the linearised, bounded least-squares problem (scipy) within a trust region, simulate
   the candidate and halve the step until the objective falls; repeat from the new θ.
3. Leave-one-model-out cross-validation: for each model, refit on the other models' points (on the last
   linearisation) and *simulate* the held-out model's points with that fit. Those out-of-sample residuals are
   the errors printed per metric, and their quantiles are stored in the profile as its prediction intervals.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import yaml

from llmsim.errors import UserError
from llmsim.validation.points import METRIC_CLASS, BenchmarkPoint
from llmsim.validation.setup import SkipPoint, build_setup


@dataclass(frozen=True)
class FitParameter:
    """One fitted quantity: ``block.key`` of the GPU profile YAML (``efficiency`` or ``api_server``), its bounds
    and meaning."""

    key: str
    low: float
    high: float
    meaning: str
    prior_sigma: float = 0.5  # how far (in log units) the points may move it from the kernel fit's value

    @property
    def block(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]


#: What fit-e2e adjusts (the kernel fits and datasheets fix everything else).
FIT_PARAMETERS: tuple[FitParameter, ...] = (
    # Bounds keep each parameter physical; the prior's width says how far the points may pull it from the
    # kernel fit: the compute and bandwidth efficiencies are measured by microbenchmarks (narrow), the CPU and
    # server times are not measured at all (wide).
    FitParameter("efficiency.sustained_compute_fraction", 0.35, 1.0, "share of the burst FLOP rate kept under load",
                 prior_sigma=0.3),
    # Decode MBU is ~60-85 % in practice (REFERENCE.md, Efficiency); 0.93 leaves room for the best GEMVs, not more:
    # left at 0.98 the A100 and H100 fits ran dense decodes at 98 % of the datasheet bandwidth.
    FitParameter("efficiency.linear_mbu", 0.5, 0.93, "GEMM weight-streaming bandwidth efficiency (small batches)",
                 prior_sigma=0.3),
    FitParameter("efficiency.moe_gemm_efficiency", 0.2, 1.0,
                 "fused MoE grouped-GEMM share of the dense GEMM efficiency", prior_sigma=0.5),
    FitParameter("efficiency.moe_gemm_bandwidth_efficiency", 0.2, 1.0,
                 "fused MoE grouped-GEMM share of the dense GEMM weight-streaming bandwidth", prior_sigma=0.5),
    FitParameter("efficiency.weight_only_gemm_efficiency", 0.2, 1.0,
                 "weight-only quantized (dequantizing) GEMM share of the bf16 GEMM efficiency", prior_sigma=0.5),
    FitParameter("efficiency.attn_decode_mbu", 0.3, 0.95, "decode attention KV-read bandwidth efficiency",
                 prior_sigma=0.3),
    FitParameter("efficiency.cpu_step_overhead_ms", 0.05, 20.0, "engine loop CPU time per step", prior_sigma=1.5),
    FitParameter("efficiency.cpu_per_request_overhead_us", 1.0, 100.0, "engine loop CPU time per scheduled request",
                 prior_sigma=1.5),
    FitParameter("api_server.request_overhead_ms", 0.5, 200.0, "API server CPU time per request", prior_sigma=1.5),
    FitParameter("api_server.stream_us_per_token", 1.0, 1000.0, "API server CPU time per streamed token",
                 prior_sigma=1.5),
)

#: The metrics a fit weighs, per point (the first throughput present counts, so variants are not counted thrice).
_THROUGHPUTS = ("request_throughput", "output_token_throughput", "total_token_throughput", "throughput_tok_s_unspecified")
_LATENCIES = ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "latency_s", "mean_e2el_ms")
MIN_POINTS = 6  # fewer points than this on a GPU: no fit, the profile keeps its values (and wide intervals)


def fitted_metrics(point: BenchmarkPoint) -> list[str]:
    throughput = [m for m in _THROUGHPUTS if m in point.measured][:1]
    return throughput + [m for m in _LATENCIES if m in point.measured]


# ---- evaluation: simulate points with a GPU profile variant ----------------------------------------
def _predict(args: tuple[BenchmarkPoint, Optional[str]]) -> dict[str, float]:
    """Predicted metrics of one point, with the GPU profile replaced by the file ``gpu_file`` when given."""
    from llmsim.simulation import simulate
    from llmsim.validation.run import bench_metrics

    point, gpu_file = args
    try:
        setup = build_setup(point)
        if gpu_file is not None:
            hardware = setup.config.hardware.model_copy(update={"gpu": gpu_file})
            setup.config = setup.config.model_copy(update={"hardware": hardware})
        result = simulate(setup.config, workload=setup.workload)
        return bench_metrics(setup, result.requests, result.summary)
    except (SkipPoint, UserError):
        return {}


@dataclass
class Evaluator:
    """Simulates a GPU's points for parameter vectors, writing a profile variant per evaluation."""

    base_yaml: dict
    points: list[BenchmarkPoint]
    jobs: int = 1
    workdir: Optional[Path] = None  # made on the first pass, removed by close(): the variants are scratch
    evaluations: int = 0
    on_evaluation: Optional[Callable[[int], None]] = None
    _executor: Optional[object] = field(default=None, repr=False)  # one worker pool for every pass

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def profile_yaml(self, theta: dict[str, float]) -> dict:
        return profile_with(self.base_yaml, theta)

    def predict(self, theta: dict[str, float], points: Optional[list[BenchmarkPoint]] = None) -> list[dict]:
        from llmsim.sweep.executors import LocalExecutor

        points = self.points if points is None else points
        self.evaluations += 1
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="llmsim-fit-"))
        path = self.workdir / f"gpu-{self.evaluations}.yaml"
        path.write_text(yaml.safe_dump(self.profile_yaml(theta), sort_keys=False))
        out: list[dict] = [{} for _ in points]
        if self._executor is None:
            self._executor = LocalExecutor(self.jobs)
        for index, ok, value in self._executor.map_unordered(_predict, [(p, str(path)) for p in points]):
            out[index] = value if ok else {}
        if self.on_evaluation is not None:
            self.on_evaluation(self.evaluations)
        return out


def profile_with(base: dict, theta: dict[str, float]) -> dict:
    """A copy of a GPU profile (YAML mapping) with ``block.key`` values replaced; it borrows no end-to-end values
    any more (``end_to_end_from``): these are its own."""
    data = yaml.safe_load(yaml.safe_dump(base))
    data.pop("end_to_end_from", None)
    for key, value in theta.items():
        block, name = key.split(".", 1)
        if data.get(block) is None:  # absent, or an empty block in the file
            data[block] = {}
        data[block][name] = float(value)
    return data


def current_values(base: dict, parameters: tuple[FitParameter, ...]) -> dict[str, float]:
    """Each parameter's value before any end-to-end fit: the profile's ``validation.prior`` when it was fitted
    already (so a refit is the same fit), else its value in the profile, else the schema's default."""
    from llmsim.hardware.profile_schema import APIServerYAML, EfficiencyYAML

    defaults = {"efficiency": EfficiencyYAML().model_dump(), "api_server": APIServerYAML().model_dump()}
    prior = (base.get("validation") or {}).get("prior") or {}  # a profile already fitted: its pre-fit values
    return {p.key: float(prior.get(p.key, (base.get(p.block) or {}).get(p.name, defaults[p.block][p.name])))
            for p in parameters}


def residual_vector(points: list[BenchmarkPoint], predictions: list[dict]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """log(predicted / measured) over each point's fitted metrics (NaN where nothing was predicted)."""
    values, labels = [], []
    for i, (point, predicted) in enumerate(zip(points, predictions)):
        for metric in fitted_metrics(point):
            measured = point.measured[metric]
            p = predicted.get(metric)
            values.append(math.log(p / measured) if p and p > 0 and measured > 0 else math.nan)
            labels.append((i, metric))
    return np.asarray(values), labels


@dataclass
class FitResult:
    gpu: str
    theta: dict[str, float]
    theta0: dict[str, float]
    in_sample: dict[str, dict]
    cross_validated: dict[str, dict]
    residuals: dict[str, dict]  # per metric class: n, q05, q95 of out-of-sample log(pred/measured)
    num_points: int
    models: list[str]
    evaluations: int
    cv_errors: dict[str, list[float]] = field(default_factory=dict)  # held-out |relative error| per metric
    points: list[BenchmarkPoint] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)  # in-sample, at the fitted parameters
    held_out: list[dict] = field(default_factory=list)  # each point predicted by the fit without its model


F_SCALE = 0.1  # soft-L1 scale of the residuals (log units): errors beyond ~10 % weigh linearly, not squared
TRUST = 1.0  # a linearised step moves each log-parameter at most this far (×/÷ e) before it is checked


def _prior_rows(x: np.ndarray, prior: np.ndarray, sigma: np.ndarray, count: int) -> np.ndarray:
    return (x - prior) / sigma / math.sqrt(max(count, 1))


def _cost(r: np.ndarray, x: np.ndarray, prior: np.ndarray, sigma: np.ndarray) -> float:
    """The fit's objective: soft-L1 of the finite residuals plus the prior (what least_squares minimises)."""
    r = r[np.isfinite(r)]
    z = np.concatenate([r, _prior_rows(x, prior, sigma, len(r))]) / F_SCALE
    return float(np.sum(2.0 * (np.sqrt(1.0 + z * z) - 1.0)) * F_SCALE**2)


def _solve(r0: np.ndarray, jac: np.ndarray, x0: np.ndarray, prior: np.ndarray, sigma: np.ndarray,
           lo: np.ndarray, hi: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Bounded robust least squares of the linearised residuals r0 + J(x − x0) (rows selected) plus the prior,
    within the trust region around x0."""
    from scipy.optimize import least_squares

    r, j = r0[rows], jac[rows]
    low, high = np.maximum(lo, x0 - TRUST), np.minimum(hi, x0 + TRUST)

    def fun(x):
        return np.concatenate([r + j @ (x - x0), _prior_rows(x, prior, sigma, len(r))])

    def jacobian(x):
        return np.vstack([j, np.diag(1.0 / sigma / math.sqrt(max(len(r), 1)))])

    start = np.clip(x0, low + 1e-9, high - 1e-9)
    return least_squares(fun, start, jac=jacobian, bounds=(low, high), loss="soft_l1", f_scale=F_SCALE).x


def fit_gpu(evaluator: Evaluator, model_of: Callable[[BenchmarkPoint], str], iterations: int = 2,
            step: float = 0.15, parameters: tuple[FitParameter, ...] = FIT_PARAMETERS) -> FitResult:
    """Gauss–Newton fit with leave-one-model-out cross-validation (module docstring). Each linearised step is
    checked by simulation and halved (up to twice) until the objective falls; a step that never helps ends the
    fit where it stands."""
    points = evaluator.points
    theta0 = current_values(evaluator.base_yaml, parameters)
    keys = [p.key for p in parameters]
    lo = np.log([p.low for p in parameters])
    hi = np.log([p.high for p in parameters])
    prior = np.clip(np.log([theta0[k] for k in keys]), lo, hi)
    sigma = np.array([p.prior_sigma for p in parameters])

    def theta_of(vec):
        return {k: float(math.exp(v)) for k, v in zip(keys, vec)}

    x = prior.copy()
    predictions = evaluator.predict(theta_of(x))
    r, labels = residual_vector(points, predictions)
    cost = _cost(r, x, prior, sigma)
    x_lin, r_lin, jac = x, r, np.zeros((len(r), len(keys)))
    for _ in range(iterations):
        jac = np.zeros((len(r), len(keys)))
        for k in range(len(keys)):
            bumped = x.copy()
            bumped[k] = x[k] + step if x[k] + step <= hi[k] else x[k] - step
            rk, _ = residual_vector(points, evaluator.predict(theta_of(bumped)))
            jac[:, k] = (rk - r) / (bumped[k] - x[k])
        x_lin, r_lin = x, r
        rows = np.flatnonzero(np.isfinite(r) & np.isfinite(jac).all(axis=1))
        candidate = _solve(r, jac, x, prior, sigma, lo, hi, rows)
        for _halving in range(3):
            trial = evaluator.predict(theta_of(candidate))
            r_trial, _ = residual_vector(points, trial)
            cost_trial = _cost(r_trial, candidate, prior, sigma)
            if cost_trial < cost:
                break
            candidate = x + 0.5 * (candidate - x)
        else:
            break  # no step along this linearisation helps: x is as good as this method gets
        x, r, cost, predictions = candidate, r_trial, cost_trial, trial
    in_sample = error_table(points, predictions)
    # Leave one model out: refit on the last linearisation (made at x_lin), simulate the held-out model's points.
    models = sorted({model_of(p) for p in points})
    held_predictions: list[dict] = [{} for _ in points]
    rows_all = np.flatnonzero(np.isfinite(r_lin) & np.isfinite(jac).all(axis=1))
    point_of_row = np.array([i for i, _ in labels])
    for model in models if len(models) > 1 else []:
        held = [i for i, p in enumerate(points) if model_of(p) == model]
        keep = np.array([row for row in rows_all if model_of(points[point_of_row[row]]) != model], dtype=np.int64)
        x_m = _solve(r_lin, jac, x_lin, prior, sigma, lo, hi, keep) if len(keep) else prior
        for i, predicted in zip(held, evaluator.predict(theta_of(x_m), [points[i] for i in held])):
            held_predictions[i] = predicted
    cross = error_table(points, held_predictions) if len(models) > 1 else {}
    residuals = residual_quantiles(points, held_predictions if len(models) > 1 else predictions)
    return FitResult(gpu=evaluator.base_yaml.get("name", "?"), theta=theta_of(x), theta0=theta0,
                     in_sample=in_sample, cross_validated=cross, residuals=residuals, num_points=len(points),
                     models=models, evaluations=evaluator.evaluations,
                     cv_errors=absolute_errors(points, held_predictions) if len(models) > 1 else {},
                     points=points, predictions=predictions,
                     held_out=held_predictions if len(models) > 1 else [{} for _ in points])


def prediction_rows(result: FitResult) -> list[str]:
    """CSV lines (no header) of every measured metric: id, metric, measured, in-sample and held-out predictions."""
    def fmt(value):
        return "" if value is None else f"{value:.6g}"

    lines = []
    for point, fitted, held in zip(result.points, result.predictions, result.held_out):
        for metric, measured in point.measured.items():
            lines.append(f"{point.id},{result.gpu},{metric},{measured:.6g},{fmt(fitted.get(metric))},"
                         f"{fmt(held.get(metric))}")
    return lines


def absolute_errors(points: list[BenchmarkPoint], predictions: list[dict]) -> dict[str, list[float]]:
    """Per metric: the absolute relative error of each prediction."""
    errors: dict[str, list[float]] = {}
    for point, predicted in zip(points, predictions):
        for metric, measured in point.measured.items():
            p = predicted.get(metric)
            if p is not None and measured > 0:
                errors.setdefault(metric, []).append(abs(p - measured) / measured)
    return errors


def error_table(points: list[BenchmarkPoint], predictions: list[dict]) -> dict[str, dict]:
    """Per metric: n and median absolute relative error of these predictions."""
    return {m: {"n": len(v), "median_abs_error": float(np.median(v))}
            for m, v in absolute_errors(points, predictions).items()}


def held_out_coverage(result: "FitResult") -> tuple[int, int]:
    """(inside, total): measured values inside the 90 % interval that the fit's residuals put around their held-out
    prediction. The same residuals set the intervals, so this is near 90 % by construction; it checks the
    small-sample widening and the quantile arithmetic, not generalisation."""
    from llmsim.hardware.specs import PredictionResiduals
    from llmsim.metrics.intervals import log_bounds

    residuals = PredictionResiduals(tuple((c, r["n"], r["q05"], r["q95"]) for c, r in result.residuals.items()))
    inside = total = 0
    for point, predicted in zip(result.points, result.held_out):
        for metric, measured in point.measured.items():
            p = predicted.get(metric)
            if not p or p <= 0 or measured <= 0 or metric not in METRIC_CLASS:
                continue
            low, high = log_bounds(residuals, METRIC_CLASS[metric])
            total += 1
            inside += p * math.exp(low) <= measured <= p * math.exp(high)
    return inside, total


def residual_quantiles(points: list[BenchmarkPoint], predictions: list[dict]) -> dict[str, dict]:
    """Per metric class: count and 5th/95th percentiles of log(predicted / measured)."""
    by_class: dict[str, list[float]] = {}
    for point, predicted in zip(points, predictions):
        for metric, measured in point.measured.items():
            p = predicted.get(metric)
            if p and p > 0 and measured > 0 and metric in METRIC_CLASS:
                by_class.setdefault(METRIC_CLASS[metric], []).append(math.log(p / measured))
    return {c: {"n": len(v), "q05": round(float(np.percentile(v, 5)), 4), "q95": round(float(np.percentile(v, 95)), 4)}
            for c, v in sorted(by_class.items())}
