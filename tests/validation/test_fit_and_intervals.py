"""fit-e2e's fitting and leave-one-model-out machinery, and the prediction intervals it feeds."""

from __future__ import annotations

import math

import pytest

from llmsim.hardware.specs import PredictionResiduals
from llmsim.metrics.intervals import UNCALIBRATED_LOG_HALF_WIDTH, add_intervals, interval, log_bounds, plus_minus
from llmsim.validation.fit import FitParameter, Evaluator, fit_gpu, prediction_rows, residual_quantiles
from llmsim.validation.points import BenchmarkPoint

PARAMS = (FitParameter("efficiency.linear_mfu", 0.1, 0.95, "compute"),
          FitParameter("efficiency.cpu_step_overhead_ms", 0.01, 20.0, "cpu"))


def _point(i: int, model: str, tokens: float) -> BenchmarkPoint:
    return BenchmarkPoint(id=f"P{i}", row=i, benchmark="throughput", gpu="H100-80GB", model=model, quantization="",
                          vllm_version="", tp=1, pp=1, engine_flags="", dataset="random", input_len=tokens,
                          output_len=10, num_prompts=10, request_rate=math.inf, max_concurrency=None, batch_size=None,
                          successful_requests=None, total_input_tokens=None, total_output_tokens=None,
                          benchmark_client="", measured={})


class FakeEvaluator(Evaluator):
    """Latency = compute work / mfu + steps × CPU time: the fit must find the true (mfu, cpu)."""

    def predict(self, theta, points=None):
        self.evaluations += 1
        points = self.points if points is None else points
        mfu, cpu = theta["efficiency.linear_mfu"], theta["efficiency.cpu_step_overhead_ms"]
        return [{"latency_s": p.input_len / mfu + 3 * cpu} for p in points]


def _measured_points(true_mfu=0.5, true_cpu=4.0):
    points = []
    for i, (model, tokens) in enumerate([("a", 1), ("a", 20), ("b", 2), ("b", 40), ("c", 5), ("c", 80)]):
        p = _point(i, model, tokens)
        p.measured["latency_s"] = tokens / true_mfu + 3 * true_cpu
        points.append(p)
    return points


def test_fit_recovers_the_parameters_that_produced_the_measurements():
    points = _measured_points()
    evaluator = FakeEvaluator({"name": "fake", "efficiency": {"linear_mfu": 0.8, "cpu_step_overhead_ms": 1.0}}, points)
    result = fit_gpu(evaluator, lambda p: p.model, iterations=4, parameters=PARAMS)
    assert result.theta["efficiency.linear_mfu"] == pytest.approx(0.5, rel=0.05)
    assert result.theta["efficiency.cpu_step_overhead_ms"] == pytest.approx(4.0, rel=0.1)
    assert result.in_sample["latency_s"]["median_abs_error"] < 0.05  # the kernel-fit prior pulls a little
    # leave-one-model-out: every point was predicted by a fit that never saw its model
    assert result.cross_validated["latency_s"]["n"] == len(points)
    assert result.models == ["a", "b", "c"]
    assert set(result.residuals) == {"e2el"} and result.residuals["e2el"]["n"] == len(points)


def test_prediction_rows_give_each_point_its_in_sample_and_held_out_values():
    """--predictions: one row per measured metric; the in-sample value is the fitted model's, the held-out value
    that of the fit without the point's model (each model's points are predicted by another fit)."""
    points = _measured_points()
    evaluator = FakeEvaluator({"name": "fake", "efficiency": {"linear_mfu": 0.8, "cpu_step_overhead_ms": 1.0}}, points)
    result = fit_gpu(evaluator, lambda p: p.model, iterations=3, parameters=PARAMS)
    rows = [line.split(",") for line in prediction_rows(result)]
    assert [r[0] for r in rows] == [p.id for p in points] and {r[2] for r in rows} == {"latency_s"}
    at_fit = FakeEvaluator(evaluator.base_yaml, points).predict(result.theta)
    for (pid, gpu, metric, measured, fitted, held), point, expected in zip(rows, points, at_fit):
        assert gpu == "fake" and float(measured) == pytest.approx(point.measured[metric], rel=1e-5)
        assert float(fitted) == pytest.approx(expected["latency_s"], rel=1e-5)
    held = [float(r[5]) for r in rows]
    assert held != [float(r[4]) for r in rows]  # another fit's predictions...
    assert held == pytest.approx([float(r[3]) for r in rows], rel=0.15)  # ...from the other models' exact points


def test_held_out_coverage_counts_measurements_inside_the_fits_own_intervals():
    """The fit's residuals make intervals around its held-out predictions; the coverage counts the measured
    values inside them, and an interval shrunk to nothing holds none of the inexact predictions."""
    import dataclasses

    from llmsim.validation.fit import held_out_coverage

    points = _measured_points()
    evaluator = FakeEvaluator({"name": "fake", "efficiency": {"linear_mfu": 0.8, "cpu_step_overhead_ms": 1.0}}, points)
    result = fit_gpu(evaluator, lambda p: p.model, iterations=3, parameters=PARAMS)
    inside, total = held_out_coverage(result)
    assert total == len(points) and inside >= 0.8 * total
    tight = dataclasses.replace(result, residuals={c: {"n": 1000, "q05": 0.0, "q95": 0.0} for c in result.residuals})
    exact = sum(abs(h["latency_s"] / p.measured["latency_s"] - 1) < 0.049 for p, h in zip(points, result.held_out))
    assert held_out_coverage(tight) == (exact, total)  # ±5 % at least: only near-exact predictions stay inside


def test_residual_quantiles_are_log_ratios_per_metric_class():
    points = [_point(i, "m", 1) for i in range(3)]
    for p in points:
        p.measured.update({"mean_ttft_ms": 100.0, "request_throughput": 10.0})
    predictions = [{"mean_ttft_ms": 100.0 * math.exp(r), "request_throughput": 10.0} for r in (-0.2, 0.0, 0.2)]
    q = residual_quantiles(points, predictions)
    assert q["throughput"] == {"n": 3, "q05": 0.0, "q95": 0.0}
    assert q["ttft"]["q05"] == pytest.approx(-0.18) and q["ttft"]["q95"] == pytest.approx(0.18)


def test_an_uncalibrated_profile_gets_the_widest_interval():
    low, high = interval(100.0, PredictionResiduals(), "ttft")
    assert (low, high) == pytest.approx((100 * math.exp(-UNCALIBRATED_LOG_HALF_WIDTH), 100 * math.exp(0.5)))


def test_interval_contains_the_measurement_when_the_error_is_typical_and_widens_with_few_points():
    # predictions were 10-30 % too high out of sample: the measurement is below the prediction
    many = PredictionResiduals((("ttft", 100, math.log(1.1), math.log(1.3)),))
    few = PredictionResiduals((("ttft", 6, math.log(1.1), math.log(1.3)),))
    low, high = interval(120.0, many, "ttft")
    assert low < 100.0 < high and high < 120.0  # a prediction of 120 means ~92-109 measured
    wide = log_bounds(few, "ttft")
    narrow = log_bounds(many, "ttft")
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    assert log_bounds(PredictionResiduals((("ttft", 3, 0.0, 0.01),)), "ttft") == (-0.5, 0.5)  # too few points


def test_summary_gets_an_interval_for_every_latency_and_throughput_figure():
    summary = {"ttft_s": {"mean": 1.0, "median": 0.5, "p99": 3.0, "std": 0.1}, "request_throughput": 2.0,
               "output_throughput": 100.0, "total_token_throughput": 300.0, "goodput": 1.5}
    add_intervals(summary, PredictionResiduals((("ttft", 50, -0.1, 0.1), ("throughput", 50, -0.05, 0.05)),
                                               "fit on points"))
    assert summary["ttft_s"]["mean_interval"][0] < 1.0 < summary["ttft_s"]["mean_interval"][1]
    assert "std_interval" not in summary["ttft_s"]
    assert summary["request_throughput_interval"][0] < 2.0 < summary["request_throughput_interval"][1]
    assert summary["prediction_intervals"] == {"level": 0.9, "source": "fit on points"}
    assert plus_minus(1.0, summary["ttft_s"]["mean_interval"]).strip().startswith("±")


def test_a_run_summary_carries_intervals(tmp_path):
    from llmsim.config import load_config
    from llmsim.simulation import simulate

    result = simulate(load_config(None, ["workload.num_requests=20"]))
    ttft = result.summary["ttft_s"]
    assert ttft["mean_interval"][0] < ttft["mean"] < ttft["mean_interval"][1]
    assert result.summary["request_throughput_interval"] is not None


def test_a_fitted_bundled_profile_keeps_its_kernel_fit_and_a_refit_starts_there():
    from llmsim.hardware.profiles import load_gpu
    from llmsim.validation.fit import FIT_PARAMETERS, current_values
    import yaml

    fitted, kernels = load_gpu("H100"), load_gpu("H100", kernel_fit=True)
    assert fitted.residuals.by_class and not kernels.residuals.by_class
    assert fitted.efficiency != kernels.efficiency  # the end-to-end fit moved something
    data = yaml.safe_load(open(fitted.source_file))
    start = current_values(data, FIT_PARAMETERS)
    assert start == data["validation"]["prior"]  # not the fitted values: refitting is the same fit
    assert kernels.efficiency.cpu_step_overhead_s == pytest.approx(start["efficiency.cpu_step_overhead_ms"] * 1e-3)


def test_a_profile_fitted_end_to_end_stops_borrowing_and_starts_from_its_own_kernel_values():
    """fit-e2e on a GPU that borrowed another's end-to-end values: the fit starts from its own kernel-fit values,
    and every profile it evaluates or writes is its own (no end_to_end_from left to override the fit)."""
    from pathlib import Path

    import yaml

    from llmsim.hardware.profiles import load_gpu
    from llmsim.validation.fit import FIT_PARAMETERS, current_values, profile_with

    base = yaml.safe_load(Path(load_gpu("H20").source_file).read_text())
    assert base["end_to_end_from"] == "A100-80GB"
    start = current_values(base, FIT_PARAMETERS)
    assert start["api_server.request_overhead_ms"] == base.get("api_server", {}).get("request_overhead_ms", 25.0)
    assert start["api_server.request_overhead_ms"] != load_gpu("A100-80GB").api_server.request_overhead_s * 1e3
    fitted = profile_with(base, {"api_server.request_overhead_ms": 9.0})
    assert "end_to_end_from" not in fitted and fitted["api_server"]["request_overhead_ms"] == 9.0


def test_the_fits_profile_variants_are_scratch_removed_when_the_evaluator_closes():
    """Every simulation pass writes a profile variant; a fit of hundreds of passes must not leave them in /tmp."""
    evaluator = Evaluator({"name": "fake", "efficiency": {"linear_mfu": 0.8}}, [_point(0, "a", 1)])
    assert evaluator.workdir is None  # nothing is made before the first pass
    evaluator.predict({"efficiency.linear_mfu": 0.5})
    workdir = evaluator.workdir
    assert (workdir / "gpu-1.yaml").is_file()
    evaluator.close()
    assert not workdir.exists() and evaluator.workdir is None
