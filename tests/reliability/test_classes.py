"""One test per class of problem the reliability issue found: each pins the root fix, not one input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from llmsim.cli import app
from llmsim.config import build_config, load_config
from llmsim.errors import ConfigError, UserError
from llmsim.inputs import check_number, check_output_dir, check_output_file, decode_utf8, parse_yaml
from llmsim.limits import RunEstimate, check_estimate, check_run
from llmsim.deployment import build_deployment
from llmsim.simulation import simulate
from llmsim.workload import Workload
from llmsim.workload.loaders import load_trace
from llmsim.workload.workload import canonical_frame


# ------------------------------------------------------------------ input files: one reader for all
@pytest.mark.parametrize("data, expected", [
    ("seed: 1\n".encode("utf-16"), "UTF-16"),
    ("caf\xe9".encode("latin-1"), "not UTF-8"),
    (b"\x00\x01\x02", "binary"),
])
def test_every_input_file_is_utf8_text_or_refused_with_its_name(data, expected):
    with pytest.raises(UserError, match=f"cfg.yaml.*{expected}"):
        decode_utf8(data, "cfg.yaml")
    assert decode_utf8("\ufeffseed: 1\n".encode("utf-8"), "cfg.yaml") == "seed: 1\n"  # a UTF-8 BOM is fine


def test_a_yaml_key_given_twice_is_refused_not_silently_overwritten():
    with pytest.raises(UserError, match=r"c.yaml line 3: .*'max_num_seqs' appears twice"):
        parse_yaml("scheduler:\n  max_num_seqs: 4\n  max_num_seqs: 8\n", "c.yaml")
    assert parse_yaml("a: 1\nb: {a: 2}\n", "c.yaml") == {"a": 1, "b": {"a": 2}}  # same key, other mapping


# ------------------------------------------------------------------ output paths: checked before work
def test_output_paths_are_checked_before_any_work_and_create_nothing(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UserError, match="afile is a file"):
        check_output_file(afile / "out.json", "--json")
    with pytest.raises(UserError, match="is a directory"):
        check_output_file(tmp_path, "--timeline")
    with pytest.raises(UserError, match="-o .*afile: is a file"):
        check_output_dir(afile, "-o")
    with pytest.raises(UserError, match="cannot write"):
        check_output_dir("/proc/llmsim-test", "-o")
    check_output_dir(tmp_path / "new" / "deeper", "-o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # the check made nothing


def test_an_output_file_left_by_an_earlier_run_is_replaced_not_refused(tmp_path):
    # Rerunning a command with the same --json / --report / -o file is the normal case, not bad input.
    earlier = tmp_path / "summary.json"
    earlier.write_text("{}")
    assert check_output_file(earlier, "--json") == earlier
    result = CliRunner().invoke(app, ["bench", "speed", "--requests", "50", "--replicas", "1",
                                      "--reference-requests", "0", "--json", str(earlier)])
    assert result.exit_code == 0, result.output
    assert json.loads(earlier.read_text())["requests"] == 50


def test_command_line_numbers_must_be_finite_and_in_range():
    for value in (float("nan"), float("inf"), 0.0, -5.0):
        with pytest.raises(UserError, match="--rate"):
            check_number(value, "--rate", minimum=0, exclusive_minimum=True)
    assert check_number(2.5, "--rate", minimum=0, exclusive_minimum=True) == 2.5


# ------------------------------------------------------------------ config values
@pytest.mark.parametrize("override", ["workload.rate=.inf", "workload.day_s=.nan", "slo.ttft_s=.inf",
                                      "seed=-1", "workload.burstiness=1e-300", "client.retry_on=[bogus]",
                                      "workload.format=nope", "workload.preset=nope"])
def test_config_values_that_cannot_mean_anything_are_refused(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].split(".")[-1]):
        load_config(None, [override])


# ------------------------------------------------------------------ limits: work and memory before a run
def test_a_run_larger_than_the_machines_memory_is_refused_with_numbers_and_knob(monkeypatch):
    monkeypatch.setenv("LLMSIM_MEMORY_LIMIT_BYTES", str(10 * 2**20))  # a 10 MB machine
    config = load_config(None, ["workload.num_requests=100000"])
    with pytest.raises(UserError, match=r"needs about 163\.\d MB .* 10\.5 MB available; lower workload.num_requests"):
        check_run(config)
    monkeypatch.setenv("LLMSIM_MEMORY_LIMIT_BYTES", str(2**40))
    assert check_run(config).requests == 100000


def test_a_span_no_float_clock_can_step_through_is_refused_instead_of_hanging():
    with pytest.raises(UserError, match="span 1e\\+300 s.*workload.rate"):
        check_estimate(RunEstimate(10, 1e300, 1, 1.0, span_knob="workload.rate"), memory_bytes=2**40)
    with pytest.raises(UserError, match="time-series samples.*metrics.timeseries_interval_s"):
        check_estimate(RunEstimate(10, 1000.0, 1, 1e-9), memory_bytes=2**40)


def test_a_late_arrival_in_a_trace_is_refused_naming_its_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,5\n5,10,5\n1e300,10,5\n")
    with pytest.raises(UserError, match=r"t.csv row 3, column 'arrival_s': arrival 1e\+300 s"):
        load_trace(path)


# ------------------------------------------------------------------ silently wrong deployments
@pytest.mark.parametrize("tp", [3, 1024])
def test_a_tp_that_does_not_divide_the_heads_is_refused_as_vllm_does(tp):
    with pytest.raises(UserError, match=f"hardware.tp: Llama-2-7B has 32 attention heads, which tp={tp}"):
        build_deployment(load_config(None, [f"hardware.tp={tp}"]))
    assert build_deployment(load_config(None, ["hardware.tp=2"])).num_gpu_blocks > 0


def test_a_deployment_with_no_usable_kv_block_is_refused_up_front(monkeypatch):
    import dataclasses

    import llmsim.deployment as deployment

    with pytest.raises(UserError, match="num_gpu_blocks"):
        load_config(None, ["scheduler.num_gpu_blocks=1"])
    real = deployment.kv_cache_capacity
    # weights that fit with room for exactly one block, which vLLM reserves: 0 usable
    monkeypatch.setattr(deployment, "kv_cache_capacity",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), num_gpu_blocks=1))
    with pytest.raises(UserError, match="leaves 0 usable KV blocks .*gpu_memory_utilization"):
        build_deployment(load_config())


def test_a_kv_cache_below_one_max_model_len_request_is_refused_as_vllm_refuses_to_start(monkeypatch):
    import dataclasses

    import llmsim.deployment as deployment

    config = load_config(None, ["scheduler.max_model_len=4096"])  # 256 blocks of 16 tokens
    real = deployment.kv_cache_capacity
    for blocks, starts in ((257, True), (256, False)):  # block 0 is the null block: 256 usable, then 255
        monkeypatch.setattr(deployment, "kv_cache_capacity",
                            lambda *a, blocks=blocks, **k: dataclasses.replace(real(*a, **k), num_gpu_blocks=blocks))
        if starts:
            assert build_deployment(config).num_gpu_blocks == blocks
            continue
        with pytest.raises(deployment.KVCacheBelowMaxModelLen,
                           match=r"holds 255 blocks but one request of max_model_len 4,096 tokens needs 256, so vLLM "
                                 r"would refuse to start; set scheduler.max_model_len to at most 4,080") as caught:
            build_deployment(config)
        assert caught.value.blocks_needed == 257
    # vLLM checks the memory it profiled; a num_gpu_blocks override is taken as given, as the goldens need.
    assert build_deployment(load_config(None, ["scheduler.max_model_len=4096",
                                               "scheduler.num_gpu_blocks=64"])).num_gpu_blocks == 64


def test_the_start_up_check_charges_a_sliding_group_its_admission_cap_only():
    from llmsim.deployment import blocks_for_one_request

    # 8,192 tokens: 512 blocks in the full group; the sliding group at most ceil((128 - 1 + 2,048) / 16) + 1 = 137
    assert blocks_for_one_request(8192, 16, [128, None], 2048, 8192) == 137 + 512
    assert blocks_for_one_request(8192, 16, None, 2048, 8192) == 512
    assert blocks_for_one_request(100, 16, [128, None], 2048, 100) == 7 + 7  # a short request: no cap reached


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_an_empty_prompt_is_refused_per_request_never_finished_with_ttft_zero(mode):
    frame = canonical_frame({"arrival_s": np.array([0.0, 0.1, 0.2]), "prompt_tokens": np.array([0, 12, 30]),
                             "output_tokens": np.array([4, 5, 6])})
    config = build_config({"workload": {"preset": "poisson"}, "engine": {"mode": mode}})
    result = simulate(config, workload=Workload(frame, "memory"))
    first = result.requests.sort_values("arrival_s").iloc[0]
    assert (first["status"], first["reason"]) == ("failed", "empty_prompt")
    assert np.isnan(first["ttft_s"])
    assert (result.requests["status"] == "finished").sum() == 2


def test_generate_never_replaces_a_zero_rate_or_burstiness_by_the_default():
    from llmsim.workload.cli import build_generated

    for kwargs, flag in (({"rate": 0.0}, "--rate"), ({"burstiness": 0.0}, "--burstiness"),
                         ({"time_scale": -1.0}, "--time-scale")):
        with pytest.raises(UserError, match=flag):
            build_generated(preset="gamma", duration=10.0, **kwargs)


def test_jsonl_true_is_not_one_token_and_huge_counts_do_not_wrap(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"arrival_s": 0, "prompt_tokens": true, "output_tokens": 3}\n')
    with pytest.raises(UserError, match="line 1, column 'prompt_tokens'.*True"):
        load_trace(path)
    path.write_text('{"arrival_s": 0, "prompt_tokens": 99999999999999999999, "output_tokens": 3}\n')
    with pytest.raises(UserError, match="prompt_tokens.*non-negative integer"):
        load_trace(path)


def test_parquet_datetime_arrivals_become_seconds(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"arrival_s": pd.to_datetime(["2024-01-01 00:00:00", "2024-01-01 00:00:02.5"], format="ISO8601"),
                  "prompt_tokens": [5, 6], "output_tokens": [2, 3]}).to_parquet(path)
    assert load_trace(path).df["arrival_s"].tolist() == [0.0, 2.5]


def test_a_trace_filter_that_keeps_nothing_is_an_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,5\n2,10,5\n")
    with pytest.raises(UserError, match="no rows left after the filters.*start_s"):
        load_trace(path, start_s=100.0)


def test_analyze_on_evenly_spaced_arrivals_reports_no_fit_instead_of_crashing():
    from llmsim.workload.analyze import analyze_workload

    n = 40
    frame = canonical_frame({"arrival_s": np.arange(n, dtype=float), "prompt_tokens": np.full(n, 10),
                             "output_tokens": np.arange(1, n + 1)})
    result = analyze_workload(Workload(frame, "even"))
    assert result["arrival_fit"] is None and result["interarrival_cv"] == pytest.approx(0.0)


def test_replay_refuses_duplicate_ids_and_a_request_larger_than_the_cache(tmp_path):
    import json

    from llmsim.engine.scenario import load_scenario

    path = tmp_path / "s.json"
    config = {"num_gpu_blocks": 8, "block_size": 16}
    req = {"id": "a", "arrival_step": 0, "prompt_len": 5, "output_len": 2}
    path.write_text(json.dumps({"config": config, "requests": [req, dict(req, arrival_step=3)]}))
    with pytest.raises(UserError, match=r"requests\[1\].id 'a' repeats requests\[0\].id"):
        load_scenario(path)
    path.write_text(json.dumps({"config": config, "requests": [dict(req, prompt_len=500)]}))
    with pytest.raises(UserError, match=r"requests\[0\]: prompt_len 500 .* 112 tokens"):
        load_scenario(path)
