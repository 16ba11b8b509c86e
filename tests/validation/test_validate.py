"""`llmsim validate`: each benchmark kind's semantics on small hand-checked cases, the file format, the JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from llmsim.cli import main
from llmsim.errors import UserError
from llmsim.simulation import simulate
from llmsim.hardware.vllm_flags import engine_defaults, parse_engine_flags, parse_version
from llmsim.validation.points import read_points
from llmsim.validation.run import bench_metrics, run_point, summarize_errors, to_json
from llmsim.validation.setup import SkipPoint, build_setup

HEADER = ("id,gpu,num_gpus,tp,pp,model,dtype/quantization,vllm_version,engine_flags,benchmark,dataset,input_len,"
          "output_len,num_prompts,request_rate,max_concurrency,request_throughput,mean_ttft_ms,mean_tpot_ms,"
          "latency_s,batch_size,benchmark_client")


def _csv(tmp_path, *rows: str, name: str = "points.csv"):
    path = tmp_path / name
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    return path


def _row(id="P1", benchmark="serve", input_len=128, output_len=16, num_prompts=8, rate="inf", conc="",
         flags="defaults", version="v0.11.0", thr=1.0, ttft=50.0, tpot=10.0, latency="", batch="",
         client="vllm bench serve --ignore-eos", dataset="random"):
    return (f"{id},H100-80GB,1,1,1,Llama-3-8B,BF16,{version},{flags},{benchmark},{dataset},{input_len},{output_len},"
            f"{num_prompts},{rate},{conc},{thr},{ttft},{tpot},{latency},{batch},{client}")


def _simulate(tmp_path, **row):
    point = read_points(_csv(tmp_path, _row(**row)))[0]
    setup = build_setup(point)
    return setup, simulate(setup.config, workload=setup.workload)


def test_closed_loop_of_one_client_sends_back_to_back(tmp_path):
    setup, result = _simulate(tmp_path, conc=1, num_prompts=5)
    done = result.requests.sort_values("arrival_s")
    arrivals = done["arrival_s"].to_numpy()
    finishes = (done["arrival_s"] + done["e2el_s"]).to_numpy()  # when the client has the last token
    assert arrivals[0] == 0.0
    # each request is sent the instant the previous one ends: never two in flight
    np.testing.assert_allclose(arrivals[1:], finishes[:-1])
    assert result.summary["engine_mode"].startswith("reference")  # closed loops need the per-step engine
    assert setup.config.server.enabled  # online: the API server's time is in every TTFT
    assert (done["server_s"] > 0).all()
    assert (done["ttft_s"] > done["first_token_s"] - done["arrival_s"]).all()  # + streaming the first token


def test_closed_loop_never_exceeds_its_concurrency(tmp_path):
    point = read_points(_csv(tmp_path, _row(conc=3, num_prompts=12)))[0]
    setup = build_setup(point)
    # the client's loop alone (with the API server, a slot frees when the engine's last token has streamed at an
    # idle server's pace, which a busy server's backlog can outlast: an approximation the docs state)
    config = setup.config.model_copy(update={"server": setup.config.server.model_copy(update={"enabled": False})})
    r = simulate(config, workload=setup.workload).requests
    ends = r["arrival_s"] + r["e2el_s"]
    events = sorted([(t, 1) for t in r["arrival_s"]] + [(t, -1) for t in ends], key=lambda e: (e[0], e[1]))
    level, peak = 0, 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    assert peak == 3


def test_infinite_rate_sends_everything_at_once_and_finite_rate_is_poisson(tmp_path):
    setup, _ = _simulate(tmp_path, num_prompts=4)
    assert (setup.workload.df["arrival_s"] == 0).all()
    point = read_points(_csv(tmp_path, _row(rate=4.0, num_prompts=4000)))[0]
    arrivals = build_setup(point).workload.df["arrival_s"].to_numpy()
    gaps = np.diff(arrivals)
    assert arrivals[0] == 0.0
    assert gaps.mean() == pytest.approx(0.25, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.1)  # exponential gaps: CV 1


def test_serve_metrics_follow_vllm_bench_serve(tmp_path):
    point = read_points(_csv(tmp_path, _row()))[0]
    setup = build_setup(point)
    requests = pd.DataFrame({
        "status": ["finished", "finished", "failed"], "arrival_s": [0.0, 1.0, 0.5],
        "finish_s": [2.0, 4.0, np.nan], "ttft_s": [0.5, 1.0, np.nan], "e2el_s": [2.0, 3.0, np.nan],
        "tpot_s": [1.5 / 3, 2.0 / 4, np.nan], "prompt_tokens": [10, 20, 5], "num_output_tokens": [4, 5, 0]})
    m = bench_metrics(setup, requests, {"itl_s": {"median": 0.5, "p99": 0.6}})
    assert m["request_throughput"] == pytest.approx(2 / 4.0)  # finished requests over first send → last response
    assert m["total_token_throughput"] == pytest.approx((30 + 9) / 4.0)
    assert m["mean_ttft_ms"] == pytest.approx(750.0)
    assert m["mean_tpot_ms"] == pytest.approx(1e3 * (0.5 + 0.5) / 2)  # TPOT excludes the first token
    assert m["mean_itl_ms"] == pytest.approx(1e3 * (1.5 + 2.0) / (3 + 4))  # every token gap counts once
    assert m["median_itl_ms"] == pytest.approx(500.0)
    # The chat endpoint streams the role first: with it, n tokens are n timed chunks, not n - 1.
    chat = read_points(_csv(tmp_path, _row(client="vllm bench serve --backend openai-chat --ignore-eos"),
                            name="chat.csv"))[0]
    m_chat = bench_metrics(build_setup(chat), requests, {"itl_s": {"median": 0.5, "p99": 0.6}})
    assert m_chat["mean_itl_ms"] == pytest.approx(1e3 * (1.5 + 2.0) / (4 + 5))
    assert m_chat["mean_tpot_ms"] == pytest.approx(m["mean_tpot_ms"])  # TPOT counts tokens, not chunks


def test_throughput_benchmark_is_offline_all_at_once(tmp_path):
    setup, result = _simulate(tmp_path, benchmark="throughput", num_prompts=16, rate="inf")
    assert not setup.online and not setup.config.server.enabled  # offline: no API server in front
    assert (result.requests["arrival_s"] == 0).all()
    # offline LLM class on an H100 (>= 70 GiB, not an A100) with vLLM 0.11: 16,384 tokens, 1,024 sequences
    assert setup.config.scheduler.max_num_batched_tokens == 16384
    assert setup.config.scheduler.max_num_seqs == 1024


def test_tokens_per_second_of_unstated_kind_are_output_tokens(tmp_path):
    # The "client fed at an infinite rate" tables (TensorRT-LLM's overview, AMD's copy of it) report output tokens.
    setup, result = _simulate(tmp_path, benchmark="throughput", input_len=512, output_len=16, num_prompts=16)
    m = bench_metrics(setup, result.requests, result.summary)
    assert m["throughput_tok_s_unspecified"] == pytest.approx(m["output_token_throughput"])
    assert m["total_token_throughput"] > 10 * m["throughput_tok_s_unspecified"]  # prompts dominate here


def test_latency_benchmark_is_the_wall_time_of_one_batch(tmp_path):
    row = _row(benchmark="latency", num_prompts="", batch=4, input_len=64, output_len=8, thr="", ttft="",
               tpot="", latency=0.5, client="benchmark_latency")
    point = read_points(_csv(tmp_path, row))[0]
    outcome = run_point(point)
    setup = build_setup(point)
    result = simulate(setup.config, workload=setup.workload)
    assert len(setup.workload) == 4 and (setup.workload.df["output_tokens"] == 8).all()
    assert outcome.predicted["latency_s"] == pytest.approx(result.requests["finish_s"].max())


def test_output_length_is_the_measured_mean_without_ignore_eos(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,gpu,tp,model,benchmark,dataset,input_len,output_len,num_prompts,request_rate,"
                    "successful_requests,total_output_tokens,request_throughput\n"
                    "E1,H100-80GB,1,Llama-3-8B,serve,random,100,200,10,inf,10,1234,1.0\n")
    workload = build_setup(read_points(path)[0]).workload.df
    assert workload["output_tokens"].sum() == 1234  # mean 123.4 kept exactly over the 10 requests
    assert set(workload["output_tokens"]) == {123, 124}


def test_engine_flags_and_version_defaults():
    flags = parse_engine_flags("VLLM_USE_TRITON_FLASH_ATTN=0 -tp 8 --max-num-seqs 1024 --enable-chunked-prefill=False "
                               "--kv-cache-dtype fp8_e4m3 --async-scheduling --trust-remote-code")
    assert (flags.tp, flags.max_num_seqs, flags.enable_chunked_prefill, flags.kv_cache_dtype) == (8, 1024, False, "fp8")
    assert flags.async_scheduling is True and "--trust-remote-code" in flags.ignored
    assert parse_engine_flags("max_num_seqs=1500; docker rocm/vllm:x").max_num_seqs == 1500
    assert dict(parse_engine_flags("--tensor-parallel-size 8 --speculative-config.method mtp "
                                   "--speculative-config.num_speculative_tokens 3").speculative) == {
        "method": "mtp", "num_speculative_tokens": "3"}
    assert dict(parse_engine_flags("""--speculative-config '{"method": "eagle3", "num_speculative_tokens": 2}'"""
                                   ).speculative) == {"method": "eagle3", "num_speculative_tokens": "2"}
    assert dict(parse_engine_flags("--speculative-model [ngram] --num-speculative-tokens 5").speculative) == {
        "method": "ngram", "num_speculative_tokens": "5"}
    assert parse_version("0.9.1 (ROCm build)") == (0, 9) and parse_version("unknown")[0] == 0
    assert engine_defaults((0, 11), 80, "A100-80GB", online=True)["max_num_batched_tokens"] == 2048
    assert engine_defaults((0, 11), 79, "H100-80GB", online=True)["max_num_batched_tokens"] == 8192
    assert engine_defaults((0, 11), 79, "H100-80GB", online=True)["async_scheduling"] is False
    assert engine_defaults((0, 14), 79, "H100-80GB", online=True)["async_scheduling"] is True
    assert engine_defaults((0, 6), 79, "H100-80GB", online=False)["policy"] == "vllm-v0"


def test_rows_that_cannot_be_modelled_are_skipped_with_a_reason(tmp_path):
    path = _csv(tmp_path, _row(id="A"), _row(id="B").replace("H100-80GB", "Abacus-9000"),
                _row(id="C", flags="--speculative-config.method medusa"), _row(id="D", thr="", ttft="", tpot=""))
    outcomes = [run_point(p) for p in read_points(path)]
    reasons = {o.id: o.skipped for o in outcomes}
    assert reasons["A"] is None
    assert "Abacus-9000" in reasons["B"]
    assert "medusa" in reasons["C"]
    assert "no measured metric" in reasons["D"]
    doc = to_json(outcomes)
    assert {s["id"] for s in doc["skipped"]} == {"B", "C", "D"}
    assert set(doc["rows"][0]) >= {"id", "metrics"}
    assert set(doc["rows"][0]["metrics"]["request_throughput"]) == {"measured", "predicted", "error", "interval"}
    low, high = doc["rows"][0]["metrics"]["request_throughput"]["interval"]
    assert low < doc["rows"][0]["metrics"]["request_throughput"]["predicted"] < high
    assert set(doc["summary"]["request_throughput"]) == {"n", "median_abs_error", "p90_abs_error", "interval_coverage"}


def test_summary_is_median_and_p90_of_absolute_errors():
    from llmsim.validation.run import PointOutcome

    outcomes = [PointOutcome(str(i), measured={"mean_ttft_ms": 100.0}, predicted={"mean_ttft_ms": 100.0 + e})
                for i, e in enumerate([-10, 20, -30, 40, 0])]
    s = summarize_errors(outcomes)["mean_ttft_ms"]
    assert s["n"] == 5 and s["median_abs_error"] == pytest.approx(0.2)
    assert s["p90_abs_error"] == pytest.approx(np.percentile([0.1, 0.2, 0.3, 0.4, 0.0], 90))


@pytest.mark.parametrize("content, expected", [
    ("id,gpu,tp,model\nA,H100,1,x\n", "missing column benchmark"),
    (HEADER + "\n" + _row(id="A") + "\n" + _row(id="A") + "\n", "row 2, column id: 'A' repeats row 1"),
    (HEADER + "\n" + _row(thr="fast") + "\n", "row 1, column request_throughput: expected a number"),
    (HEADER + "\n" + _row(benchmark="chat") + "\n", "column benchmark"),
    ("", "not a readable CSV"),
])
def test_malformed_points_file_is_one_clear_line(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=expected.replace("(", r"\(")):
        read_points(path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and str(path) in err


def test_cli_writes_json_with_the_documented_keys(tmp_path, capsys):
    path = _csv(tmp_path, _row(id="A"), _row(id="B", conc=2))
    out = tmp_path / "v.json"
    assert main(["validate", str(path), "--json", str(out), "--only", "A,B", "-q"]) == 0
    doc = json.loads(out.read_text())
    assert set(doc) == {"rows", "summary", "skipped", "interval_coverage"}
    assert 0.0 <= doc["interval_coverage"] <= 1.0
    assert [r["id"] for r in doc["rows"]] == ["A", "B"]
    error = doc["rows"][0]["metrics"]["mean_ttft_ms"]["error"]
    assert math.isfinite(error)
    assert main(["validate", str(path), "--only", "Z"]) == 2


def test_shared_points_resolve_and_run(shared):
    """The shared points file reads without error (its modelling coverage is measured by the README command)."""
    points = read_points(shared("realworld", "points.csv"))
    assert len(points) >= 100 and len({p.id for p in points}) == len(points)
    speculative = build_setup(next(p for p in points if "speculative" in p.engine_flags))
    assert speculative.config.speculative.enabled


def test_speculative_rows_take_the_quoted_acceptance(tmp_path):
    """A row with speculative flags runs speculative decoding; a quoted draft acceptance rate (accepted ÷
    proposed, vLLM's metric) becomes the chained per-draft probability, and more acceptance is faster."""
    flags = "--speculative-config.method mtp --speculative-config.num_speculative_tokens 3"
    header = ("id,gpu,tp,pp,model,dtype/quantization,vllm_version,engine_flags,benchmark,dataset,input_len,"
              "output_len,num_prompts,request_rate,max_concurrency,request_throughput,mean_ttft_ms,mean_tpot_ms,"
              "benchmark_client,uncertain\n")
    rows = "".join(f"{name},H100-80GB,1,1,Llama-3-8B,BF16,v0.11.0,{flags},serve,random,128,64,8,inf,1,1.0,50,10,"
                   f"vllm bench serve --ignore-eos,{remark}\n"
                   for name, remark in (("LOW", "acceptance 20%"), ("HIGH", "draft acceptance rate: 80.0 %"),
                                        ("NONE", "")))
    path = tmp_path / "p.csv"
    path.write_text(header + rows)
    setups = {p.id: build_setup(p) for p in read_points(path)}
    low, high = (setups[k].config.speculative for k in ("LOW", "HIGH"))
    assert (low.method, low.num_speculative_tokens) == ("mtp", 3)
    for section, rate in ((low, 0.2), (high, 0.8)):
        p = section.acceptance_rate
        assert (p + p ** 2 + p ** 3) / 3 == pytest.approx(rate, abs=1e-5)
    assert any("not quoted" in note for note in setups["NONE"].notes)
    tpot = {k: run_point(p).predicted["mean_tpot_ms"] for k, p in
            ((p.id, p) for p in read_points(path)) if k != "NONE"}
    assert tpot["HIGH"] < 0.8 * tpot["LOW"]


@pytest.mark.parametrize("name, expected", [("fits.txt", "must end in .csv"), ("a_file/p.csv", "is a file")])
def test_fit_e2e_refuses_an_unwritable_predictions_file_before_fitting(tmp_path, capsys, name, expected):
    (tmp_path / "a_file").write_text("x")
    points = tmp_path / "missing_points.csv"  # never read: the output is checked first
    code = main(["calibrate", "fit-e2e", str(points), "-o", str(tmp_path / "fits"),
                 "--predictions", str(tmp_path / name)])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "--predictions" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("gpu, out, expected", [(["--gpu", "H100"], "fits", "is a directory"),
                                                (["--gpu", "H100"], "H100.json", "must end in .yaml"),
                                                ([], "H100.yaml", "give a folder"),
                                                ([], "a_file", "is a file")])
def test_fit_e2e_refuses_an_unwritable_profile_path_before_fitting(tmp_path, capsys, gpu, out, expected):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "fits").mkdir()
    points = tmp_path / "missing_points.csv"  # never read: the output is checked first
    code = main(["calibrate", "fit-e2e", str(points), *gpu, "-o", str(tmp_path / out)])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "-o" in err and len(err.strip().splitlines()) == 1


def test_a_published_server_that_started_had_room_for_one_max_model_len_request(tmp_path):
    # At this utilization the memory model leaves Llama-3-8B fewer blocks than its 8,192-token max_model_len
    # needs, so vLLM would refuse to start; the published server ran, so the cache held at least that.
    tight = build_setup(read_points(_csv(tmp_path, _row(flags="--gpu-memory-utilization 0.26")))[0])
    assert tight.config.scheduler.num_gpu_blocks == 8192 // 16 + 1  # one request's blocks and the null block
    assert any("fewer KV blocks than one max_model_len request" in note for note in tight.notes)
    roomy = build_setup(read_points(_csv(tmp_path, _row(), name="roomy.csv"))[0])
    assert roomy.config.scheduler.num_gpu_blocks is None and not any("max_model_len" in n for n in roomy.notes)
    with pytest.raises(UserError, match="vLLM would refuse to start"):  # a run of that config is refused
        simulate(tight.config.model_copy(update={"scheduler": tight.config.scheduler.model_copy(
            update={"num_gpu_blocks": None})}), workload=tight.workload)
