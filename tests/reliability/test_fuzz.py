"""Hypothesis fuzz of config values and trace rows: every input is either accepted or refused with a
UserError; nothing else escapes, and nothing hangs (each example runs under a SIGALRM watchdog)."""

from __future__ import annotations

import signal
from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsim.config import load_config
from llmsim.errors import UserError

FIELDS = ["seed", "workload.num_requests", "workload.rate", "workload.burstiness", "workload.duration_s",
          "workload.diurnal_amplitude", "workload.day_s", "workload.time_scale", "hardware.tp", "hardware.pp",
          "scheduler.max_num_seqs", "scheduler.max_num_batched_tokens", "scheduler.block_size",
          "scheduler.num_gpu_blocks", "scheduler.gpu_memory_utilization", "scheduler.max_model_len",
          "scheduler.watermark", "cluster.replicas", "metrics.timeseries_interval_s", "client.timeout_s",
          "client.retry_on", "slo.ttft_s", "metrics.percentiles"]
VALUES = st.one_of(
    st.integers(min_value=-10, max_value=10), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["1e-300", "1e300", ".inf", ".nan", "-0"]),
    st.text(max_size=6), st.booleans(), st.lists(st.integers(-3, 200), max_size=3), st.none())


@contextmanager
def watchdog(seconds: int):
    def hung(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _value_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return {float("inf"): ".inf", float("-inf"): "-.inf"}.get(value, ".nan" if value != value else repr(value))
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=3))
def test_fuzzed_config_values_are_accepted_or_refused_cleanly(pairs):
    from llmsim.limits import check_run
    from llmsim.deployment import build_deployment

    overrides = ["workload.num_requests=20", "workload.preset=poisson"]
    overrides += [f"{path}={_value_text(value)}" for path, value in pairs]
    with watchdog(20):
        try:
            config = load_config(None, overrides)
            check_run(config)
            build_deployment(config)
        except UserError:
            return
        if check_run(config).requests <= 50:  # small enough to simulate here: it must finish or refuse
            from llmsim.simulation import simulate

            try:
                simulate(config)
            except UserError:
                pass


CELLS = st.one_of(st.integers(-5, 10**6), st.integers(-2**80, 2**80), st.floats(allow_nan=True, allow_infinity=True),
                  st.text(alphabet="0123456789.-eE xnaif", max_size=8), st.just(""))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(CELLS, CELLS, CELLS), min_size=1, max_size=6), st.sampled_from(["csv", "jsonl"]))
def test_fuzzed_trace_rows_load_or_are_refused_naming_the_file(tmp_path, rows, kind):
    import json

    from llmsim.workload.loaders import load_trace

    path = tmp_path / f"t.{kind}"
    if kind == "csv":
        text = "arrival_s,prompt_tokens,output_tokens\n" + "".join(f"{a},{p},{o}\n" for a, p, o in rows)
    else:
        def cell(v):
            return v if isinstance(v, (int, str)) or v == v and abs(v) != float("inf") else str(v)
        text = "".join(json.dumps({"arrival_s": cell(a), "prompt_tokens": cell(p), "output_tokens": cell(o)}) + "\n"
                       for a, p, o in rows)
    path.write_text(text)
    with watchdog(10):
        try:
            workload = load_trace(path)
        except UserError as exc:
            assert "t." + kind in str(exc) and "\n" not in str(exc)
            return
    df = workload.df
    assert (df["prompt_tokens"] >= 0).all() and (df["output_tokens"] >= 0).all()
    assert df["arrival_s"].is_monotonic_increasing and df["arrival_s"].iloc[0] == 0.0
