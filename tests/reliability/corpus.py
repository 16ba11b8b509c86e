"""A corpus of bad input: small files and argument lists that every ``llmsim`` command must refuse cleanly.

Each :class:`Case` is one thing a new user might plausibly do wrong: a config in UTF-16, a trace row with a
token count beyond int64, ``-o`` under a file, a scenario that is a JSON number, a run that could never
finish. ``tests/reliability/test_bad_input.py`` runs every case through ``llmsim.cli.main`` in-process and
asserts the README's promise: non-zero exit, no traceback, ONE line that names the culprit (``expect``),
no output file left behind, and an answer within seconds (no hang).

Argument lists use ``{d}`` for the case's own folder, where ``files`` are written first. File contents
are ``bytes`` (written as is) or ``str`` (UTF-8). The cases are grouped by the kind of mistake; the group
is the id's prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

Content = Union[str, bytes]


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    files: dict[str, Content] = field(default_factory=dict)
    expect: tuple[str, ...] = ()  # substrings (case-insensitive) the one error line must contain


CASES: list[Case] = []


def case(id: str, argv: str | list[str], files: dict[str, Content] | None = None, expect: str | tuple = ()) -> None:
    args = argv.split() if isinstance(argv, str) else list(argv)
    CASES.append(Case(id, tuple(args), dict(files or {}), (expect,) if isinstance(expect, str) else tuple(expect)))


# ---------------------------------------------------------------- building blocks
GOOD_CSV = "arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n0.5,20,8\n1.2,15,4\n2.0,30,6\n"
GOOD_YAML = "workload: {preset: poisson, num_requests: 20}\n"
SCENARIO_OK = ('{"config": {"num_gpu_blocks": 64, "block_size": 16, "max_num_seqs": 4, "max_num_batched_tokens": 256},'
               ' "requests": [{"id": "a", "arrival_step": 0, "prompt_len": 20, "output_len": 3}]}')
MLP_HEADER = ("n_head,n_kv_head,n_embd,n_expanded_embd,vocab_size,use_gated_mlp,num_tokens,num_tensor_parallel_workers,"
              "time_stats.attn_pre_proj.median,time_stats.attn_post_proj.median,time_stats.mlp_up_proj.median,"
              "time_stats.mlp_down_proj.median")
RUN = ["run", "-q", "--json"]  # --json: no table, so a clean refusal is all that is printed

# ---------------------------------------------------------------- config values given with --set
SET_CASES = {
    # workload
    "rate_inf": ("workload.rate=.inf", "workload.rate"),
    "rate_nan": ("workload.rate=.nan", "workload.rate"),
    "rate_negative": ("workload.rate=-1", "workload.rate"),
    "rate_zero": ("workload.rate=0", "workload.rate"),
    "rate_tiny": ("workload.rate=1e-300", "workload.rate"),
    "rate_text": ("workload.rate=fast", "workload.rate"),
    "burstiness_tiny": ("workload.burstiness=1e-300", "workload.burstiness"),
    "burstiness_inf": ("workload.burstiness=.inf", "workload.burstiness"),
    "burstiness_nan": ("workload.burstiness=.nan", "workload.burstiness"),
    "burstiness_zero": ("workload.burstiness=0", "workload.burstiness"),
    "day_inf": ("workload.day_s=.inf", "workload.day_s"),
    "day_nan": ("workload.day_s=.nan", "workload.day_s"),
    "peak_inf": ("workload.peak_s=.inf", "workload.peak_s"),
    "diurnal_one": ("workload.diurnal_amplitude=1", "workload.diurnal_amplitude"),
    "seed_negative": ("seed=-1", "seed"),
    "seed_huge": ("seed=1e30", "seed"),
    "seed_beyond_uint64": ("seed=99999999999999999999999", "seed"),
    "seed_text": ("seed=abc", "seed"),
    "num_requests_huge": ("workload.num_requests=1000000000000", "workload.num_requests"),
    "num_requests_too_many": ("workload.num_requests=2000000000", "workload.num_requests"),
    "num_requests_zero": ("workload.num_requests=0", "workload.num_requests"),
    "num_requests_negative": ("workload.num_requests=-5", "workload.num_requests"),
    "num_requests_float": ("workload.num_requests=2.5", "workload.num_requests"),
    "duration_huge": ("workload.duration_s=1e12", "workload.duration_s"),
    "duration_inf": ("workload.duration_s=.inf", "workload.duration_s"),
    "duration_nan": ("workload.duration_s=.nan", "workload.duration_s"),
    "time_scale_negative": ("workload.time_scale=-1", "workload.time_scale"),
    "time_scale_inf": ("workload.time_scale=.inf", "workload.time_scale"),
    "preset_unknown": ("workload.preset=nope", "preset"),
    "preset_servegen_bad": ("workload.preset=servegen:nowhere/0", "servegen"),
    "preset_fit_missing": ("workload.preset=fit:missing.csv", "missing.csv"),
    "trace_missing": ("workload.trace=missing.csv", "missing.csv"),
    "trace_format_unknown": ("workload.format=nope", "nope"),
    "workload_unknown_key": ("workload.nonsense=1", "workload.nonsense"),
    # metrics, slo
    "timeseries_tiny": ("metrics.timeseries_interval_s=1e-9", "metrics.timeseries_interval_s"),
    "timeseries_zero": ("metrics.timeseries_interval_s=0", "metrics.timeseries_interval_s"),
    "timeseries_nan": ("metrics.timeseries_interval_s=.nan", "metrics.timeseries_interval_s"),
    "percentile_over_100": ("metrics.percentiles=[50,101]", "metrics.percentiles"),
    "percentile_nan": ("metrics.percentiles=[.nan]", "metrics.percentiles"),
    "slo_negative": ("slo.ttft_s=-1", "slo.ttft_s"),
    "slo_nan": ("slo.tpot_s=.nan", "slo.tpot_s"),
    # hardware
    "tp_indivisible_heads": ("hardware.tp=3", "hardware.tp"),
    "tp_huge": ("hardware.tp=1024", "hardware.tp"),
    "tp_zero": ("hardware.tp=0", "hardware.tp"),
    "tp_text": ("hardware.tp=abc", "hardware.tp"),
    "pp_zero": ("hardware.pp=0", "hardware.pp"),
    "pp_more_than_layers": ("hardware.pp=64", "hardware.pp"),
    "gpu_unknown": ("hardware.gpu=nope", "nope"),
    "model_unknown": ("hardware.model=nope", "nope"),
    "model_too_big": ("hardware.model=Llama-2-70B", "hardware.tp"),
    # scheduler
    "max_num_seqs_zero": ("scheduler.max_num_seqs=0", "scheduler.max_num_seqs"),
    "max_num_seqs_text": ("scheduler.max_num_seqs=many", "scheduler.max_num_seqs"),
    "budget_zero": ("scheduler.max_num_batched_tokens=0", "scheduler.max_num_batched_tokens"),
    "block_size_zero": ("scheduler.block_size=0", "scheduler.block_size"),
    "gpu_util_zero": ("scheduler.gpu_memory_utilization=0", "scheduler.gpu_memory_utilization"),
    "gpu_util_over_one": ("scheduler.gpu_memory_utilization=1.5", "scheduler.gpu_memory_utilization"),
    "gpu_util_nan": ("scheduler.gpu_memory_utilization=.nan", "scheduler.gpu_memory_utilization"),
    "gpu_util_tiny": ("scheduler.gpu_memory_utilization=0.05", "gpu_memory_utilization"),
    "num_gpu_blocks_zero": ("scheduler.num_gpu_blocks=0", "scheduler.num_gpu_blocks"),
    "num_gpu_blocks_one": ("scheduler.num_gpu_blocks=1", "scheduler.num_gpu_blocks"),
    "max_model_len_zero": ("scheduler.max_model_len=0", "scheduler.max_model_len"),
    "policy_unknown": ("scheduler.policy=magic", "scheduler.policy"),
    "queue_unknown": ("scheduler.queue=magic", "scheduler.queue"),
    "preemption_unknown": ("scheduler.preemption=magic", "scheduler.preemption"),
    "victim_unknown": ("scheduler.victim=magic", "scheduler.victim"),
    # engine, client, cluster
    "engine_mode_unknown": ("engine.mode=magic", "engine.mode"),
    "retry_on_unknown": ("client.retry_on=[bogus]", "client.retry_on"),
    "timeout_negative": ("client.timeout_s=-1", "client.timeout_s"),
    "retries_negative": ("client.max_retries=-1", "client.max_retries"),
    "replicas_zero": ("cluster.replicas=0", "replicas"),
    "replicas_huge": ("cluster.replicas=100000000", "cluster.replicas"),
    "router_unknown": ("cluster.router=magic", "cluster.router"),
    # the override syntax itself
    "set_without_equals": ("noequals", "noequals"),
    "set_empty_path": (".=1", "--set"),
    "set_section_as_value": ("scheduler=5", "scheduler"),
    "set_into_value": ("seed.x=1", "seed"),
    "unknown_section": ("nonsense.key=1", "nonsense"),
}
for name, (override, expect) in SET_CASES.items():
    case(f"set-{name}", RUN + ["--set", override], expect=expect)
case("set-config-cmd-bad", ["config", "--set", "scheduler.max_num_seqs=-3"], expect="scheduler.max_num_seqs")
case("set-config-cmd-rate", ["config", "--set", "workload.rate=.inf"], expect="workload.rate")

# ---------------------------------------------------------------- config files
YAML_FILES: dict[str, tuple[Content, str]] = {
    "utf16": (GOOD_YAML.encode("utf-16"), "cfg.yaml"),
    "utf16_bom_le": (b"\xff\xfe" + "seed: 1\n".encode("utf-16-le"), "cfg.yaml"),
    "latin1": ("# caf\xe9\nseed: 1\n".encode("latin-1"), "cfg.yaml"),
    "binary": (bytes(range(256)) * 4, "cfg.yaml"),
    "nul_bytes": (b"seed: 1\n\x00\x00\x00", "cfg.yaml"),
    "top_list": ("- 1\n- 2\n", "cfg.yaml"),
    "top_string": ("just a sentence\n", "cfg.yaml"),
    "top_number": ("42\n", "cfg.yaml"),
    "duplicate_keys": ("seed: 1\nseed: 2\n", "seed"),
    "duplicate_nested": ("scheduler:\n  max_num_seqs: 4\n  max_num_seqs: 8\n", "max_num_seqs"),
    "syntax_error": ("workload: {preset: poisson\n", "cfg.yaml"),
    "tab_indent": ("workload:\n\tpreset: poisson\n", "cfg.yaml"),
    "section_number": ("workload: 5\n", "workload"),
    "section_list": ("hardware: [1, 2]\n", "hardware"),
    "unknown_top": ("wrkload: {preset: poisson}\n", "wrkload"),
    "wrong_type": ("scheduler: {enable_chunked_prefill: maybe}\n", "enable_chunked_prefill"),
    "trace_is_dir": ("workload: {trace: .}\n", "directory"),
    "null_key": ("? null\n: 1\n", "cfg.yaml"),
    "number_key": ("1: 2\n", "cfg.yaml"),
    "alias_bomb": ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                   "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n", "cfg.yaml"),
    "retry_on_string": ("client: {retry_on: queue_full}\n", "client.retry_on"),
    "python_tag": ("seed: !!python/object:os.system ls\n", "cfg.yaml"),
}
for name, (content, expect) in YAML_FILES.items():
    case(f"yaml-{name}", RUN + ["{d}/cfg.yaml"], {"cfg.yaml": content}, expect)
case("yaml-directory", RUN + ["{d}"], expect="directory")
case("yaml-missing", RUN + ["{d}/nope.yaml"], expect="nope.yaml")
case("yaml-config-cmd-utf16", ["config", "{d}/cfg.yaml"], {"cfg.yaml": GOOD_YAML.encode("utf-16")}, "cfg.yaml")
case("yaml-config-cmd-dup", ["config", "{d}/cfg.yaml"], {"cfg.yaml": "seed: 1\nseed: 2\n"}, "seed")

# ---------------------------------------------------------------- trace files (run, analyze, generate --fit)
TRACES: dict[str, tuple[str, Content, str]] = {
    "utf16_csv": ("t.csv", GOOD_CSV.encode("utf-16"), "t.csv"),
    "latin1_csv": ("t.csv", ("arrival_s,prompt_tokens,output_tokens,model\n0,1,1,caf\xe9\n").encode("latin-1"), "t.csv"),
    "binary_csv": ("t.csv", bytes(range(256)) * 8, "t.csv"),
    "empty_csv": ("t.csv", "", "t.csv"),
    "header_only": ("t.csv", "arrival_s,prompt_tokens,output_tokens\n", "t.csv"),
    "missing_column": ("t.csv", "arrival_s,prompt_tokens\n0,1\n", "output_tokens"),
    "negative_tokens": ("t.csv", "arrival_s,prompt_tokens,output_tokens\n0,-3,4\n", "prompt_tokens"),
    "tokens_beyond_int64": ("t.csv", "arrival_s,prompt_tokens,output_tokens\n0,99999999999999999999,4\n", "prompt_tokens"),
    "tokens_huge": ("t.csv", "arrival_s,prompt_tokens,output_tokens\n0,10,1000000000000000\n", "output_tokens"),
    "tokens_fraction": ("t.csv", "arrival_s,prompt_tokens,output_tokens\n0,1.5,4\n", "prompt_tokens"),
    "tokens_text": ("t.csv", "arrival_s,prompt_tokens,output_tokens\n0,ten,4\n", "prompt_tokens"),
    "arrival_inf": ("t.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\ninf,2,2\n", "arrival_s"),
    "arrival_nan": ("t.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\nnan,2,2\n", "arrival_s"),
    "arrival_late": ("t.csv", "arrival_s,prompt_tokens,output_tokens\n0,10,5\n1e300,10,5\n", "arrival_s"),
    "arrival_decades": ("t.csv", "arrival_s,prompt_tokens,output_tokens\n0,10,5\n2e9,10,5\n", "arrival_s"),
    "arrival_backwards": ("t.csv", "arrival_s,prompt_tokens,output_tokens\n5,1,1\n2,1,1\n", "arrival_s"),
    "arrival_text": ("t.csv", "arrival_s,prompt_tokens,output_tokens\nnoon,1,1\n", "arrival_s"),
    "unknown_header": ("t.csv", "a,b,c\n1,2,3\n", "t.csv"),
    "jsonl_bool": ("t.jsonl", '{"arrival_s": 0, "prompt_tokens": true, "output_tokens": 3}\n', "prompt_tokens"),
    "jsonl_nested": ("t.jsonl", '{"arrival_s": 0, "prompt_tokens": {"n": 1}, "output_tokens": 3}\n', "prompt_tokens"),
    "jsonl_list_line": ("t.jsonl", '[1, 2, 3]\n', "t.jsonl"),
    "jsonl_malformed": ("t.jsonl", '{"arrival_s": 0, "prompt_tokens": 3\n', "t.jsonl"),
    "jsonl_utf16": ("t.jsonl", '{"arrival_s": 0, "prompt_tokens": 3, "output_tokens": 3}\n'.encode("utf-16"), "t.jsonl"),
    "jsonl_latin1": ("t.jsonl", '{"arrival_s": 0, "prompt_tokens": 3, "output_tokens": 3, "model": "caf\xe9"}\n'.encode("latin-1"), "t.jsonl"),
    "jsonl_binary": ("t.jsonl", bytes(range(256)) * 8, "t.jsonl"),
    "jsonl_missing_key": ("t.jsonl", '{"arrival_s": 0, "prompt_tokens": 3}\n', "output_tokens"),
    "jsonl_string_tokens": ("t.jsonl", '{"arrival_s": 0, "prompt_tokens": "3x", "output_tokens": 3}\n', "prompt_tokens"),
    "jsonl_big_int": ("t.jsonl", '{"arrival_s": 0, "prompt_tokens": 123456789012345678901234567890, "output_tokens": 3}\n', "prompt_tokens"),
    "parquet_corrupt": ("t.parquet", b"PAR1" + bytes(range(200)) + b"PAR1", "t.parquet"),
    "parquet_text": ("t.parquet", GOOD_CSV, "t.parquet"),
    "burstgpt_negative": ("t.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n0,ChatGPT,-1,5,4,Conversation log\n", "Request tokens"),
    "azure_bad_date": ("t.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,5,5\n", "TIMESTAMP"),
    "mooncake_bool": ("t.jsonl", '{"timestamp": 0, "input_length": false, "output_length": 3}\n', "input_length"),
}
for name, (fname, content, expect) in TRACES.items():
    case(f"trace-run-{name}", RUN + ["--set", f"workload.trace={{d}}/{fname}"], {fname: content}, expect)
    case(f"trace-analyze-{name}", ["analyze", f"{{d}}/{fname}"], {fname: content}, expect)
for name in ("utf16_csv", "binary_csv", "tokens_beyond_int64", "arrival_late", "jsonl_bool", "parquet_corrupt",
             "latin1_csv"):
    fname, content, expect = TRACES[name]
    case(f"trace-fit-{name}", ["generate", "--fit", f"{{d}}/{fname}", "-o", "{d}/out.csv"], {fname: content}, expect)
EQUAL_TIMES = "arrival_s,prompt_tokens,output_tokens\n" + "".join(f"5,{10 + i},{5 + i}\n" for i in range(30))
EVEN_TIMES = "arrival_s,prompt_tokens,output_tokens\n" + "".join(f"{i},{10 + i},{5 + i}\n" for i in range(30))
case("trace-fit-equal-timestamps", ["generate", "--fit", "{d}/t.csv", "-o", "{d}/out.csv"], {"t.csv": EQUAL_TIMES}, "t.csv")
case("trace-analyze-directory", ["analyze", "{d}"], expect="directory")
case("trace-analyze-missing", ["analyze", "{d}/nope.csv"], expect="nope.csv")
case("trace-filter-empty", RUN + ["--set", "workload.trace={d}/t.csv", "--set", "workload.start_s=1e6"],
     {"t.csv": GOOD_CSV}, "workload.start_s")
case("trace-filter-end-before-start", RUN + ["--set", "workload.trace={d}/t.csv", "--set", "workload.end_s=-5"],
     {"t.csv": GOOD_CSV}, "workload.end_s")
case("trace-time-scale-negative", RUN + ["--set", "workload.trace={d}/t.csv", "--set", "workload.time_scale=-1"],
     {"t.csv": GOOD_CSV}, "workload.time_scale")
case("trace-analyze-fit-window-zero", ["analyze", "{d}/t.csv", "--fit-window", "0"], {"t.csv": EVEN_TIMES}, "--fit-window")
case("trace-analyze-fit-window-nan", ["analyze", "{d}/t.csv", "--fit-window", "nan"], {"t.csv": EVEN_TIMES}, "--fit-window")
case("trace-analyze-fit-window-tiny", ["analyze", "{d}/t.csv", "--fit-window", "1e-300"], {"t.csv": EVEN_TIMES}, "--fit-window")
case("trace-analyze-fit-window-negative", ["analyze", "{d}/t.csv", "--fit-window", "-3"], {"t.csv": EVEN_TIMES}, "--fit-window")
case("trace-analyze-model-absent", ["analyze", "{d}/t.csv", "--model", "GPT-9"],
     {"t.csv": "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n0,ChatGPT,1,5,6,Conversation log\n"},
     "GPT-9")
case("trace-analyze-format-unknown", ["analyze", "{d}/t.csv", "--format", "nope"], {"t.csv": GOOD_CSV}, "nope")

# ---------------------------------------------------------------- output paths that cannot be written
OUT_FILES = {"t.csv": GOOD_CSV, "cfg.yaml": GOOD_YAML, "afile": "x", "s.json": SCENARIO_OK}
for name, argv, expect in (
    ("run-o-under-file", RUN + ["{d}/cfg.yaml", "-o", "{d}/afile/out"], "afile"),
    ("run-o-is-file", RUN + ["{d}/cfg.yaml", "-o", "{d}/afile"], "afile"),
    ("run-o-proc", RUN + ["{d}/cfg.yaml", "-o", "/proc/llmsim-out"], "/proc/llmsim-out"),
    ("run-timeline-dir", RUN + ["{d}/cfg.yaml", "--timeline", "{d}"], "--timeline"),
    ("run-timeline-under-file", RUN + ["{d}/cfg.yaml", "--timeline", "{d}/afile/t.json"], "afile"),
    ("run-timeline-proc", RUN + ["{d}/cfg.yaml", "--timeline", "/proc/llmsim.json"], "/proc/llmsim.json"),
    ("run-report-dir", RUN + ["{d}/cfg.yaml", "--report", "{d}"], "--report"),
    ("run-report-under-file", RUN + ["{d}/cfg.yaml", "--report", "{d}/afile/r.html"], "afile"),
    ("analyze-json-under-file", ["analyze", "{d}/t.csv", "--json", "{d}/afile/a.json"], "afile"),
    ("analyze-json-dir", ["analyze", "{d}/t.csv", "--json", "{d}"], "--json"),
    ("analyze-report-is-file", ["analyze", "{d}/t.csv", "--report", "{d}/afile"], "afile"),
    ("analyze-json-proc", ["analyze", "{d}/t.csv", "--json", "/proc/a.json"], "/proc/a.json"),
    ("generate-o-under-file", ["generate", "--preset", "poisson", "--duration", "5", "-o", "{d}/afile/x.csv"], "afile"),
    ("generate-o-dir", ["generate", "--preset", "poisson", "--duration", "5", "-o", "{d}"], "-o"),
    ("generate-o-suffix", ["generate", "--preset", "poisson", "--duration", "5", "-o", "{d}/x.txt"], "x.txt"),
    ("generate-o-proc", ["generate", "--preset", "poisson", "--duration", "5", "-o", "/proc/x.csv"], "/proc/x.csv"),
    ("sweep-o-is-file", ["sweep", "{d}/s.yaml", "-o", "{d}/afile", "-j", "1", "-q"], "afile"),
    ("sweep-o-under-file", ["sweep", "{d}/s.yaml", "-o", "{d}/afile/x", "-j", "1", "-q"], "afile"),
    ("sweep-o-proc", ["sweep", "{d}/s.yaml", "-o", "/proc/llmsim-sweep", "-j", "1", "-q"], "/proc/llmsim-sweep"),
    ("replay-o-dir", ["replay-scheduler", "{d}/s.json", "-o", "{d}"], "-o"),
    ("replay-o-under-file", ["replay-scheduler", "{d}/s.json", "-o", "{d}/afile/t.json"], "afile"),
    ("replay-o-proc", ["replay-scheduler", "{d}/s.json", "-o", "/proc/t.json"], "/proc/t.json"),
    ("report-o-dir", ["report", "{d}/run", "-o", "{d}"], "-o"),
    ("report-o-under-file", ["report", "{d}/run", "-o", "{d}/afile/r.html"], "afile"),
    ("calibrate-json-under-file", ["calibrate", "check", "{d}/mlp.csv", "--gpu", "H100", "--json", "{d}/afile/x.json"], "afile"),
    ("plan-write-config-under-file", ["plan", "-w", "preset:poisson", "--slo", "ttft_p99=2s", "-n", "20",
                                      "--write-config", "{d}/afile/c.yaml"], "afile"),
    ("bench-json-under-file", ["bench", "speed", "--requests", "10", "--replicas", "1", "--reference-requests", "0",
                               "--json", "{d}/afile/b.json"], "afile"),
):
    files = dict(OUT_FILES, **{"s.yaml": "set: {workload.num_requests: 5}\n",
                               "mlp.csv": MLP_HEADER + "\n32,32,4096,11008,32000,True,16,1,0.1,0.1,0.1,0.1\n",
                               "run/summary.json": "{}", "run/requests.parquet": b"PAR1" + bytes(50) + b"PAR1"})
    case(f"out-{name}", argv, files, expect)

# ---------------------------------------------------------------- generate flags
GEN = ["generate", "-o", "{d}/out.csv"]
for name, flags, expect in (
    ("duration-negative", "--preset poisson --duration -5", "--duration"),
    ("duration-zero", "--preset poisson --duration 0", "--duration"),
    ("duration-nan", "--preset poisson --duration nan", "--duration"),
    ("duration-inf", "--preset poisson --duration inf", "--duration"),
    ("duration-huge", "--preset poisson --duration 1e12", "--duration"),
    ("duration-text", "--preset poisson --duration long", "--duration"),
    ("rate-nan", "--preset poisson --duration 5 --rate nan", "--rate"),
    ("rate-zero", "--preset poisson --duration 5 --rate 0", "--rate"),
    ("rate-negative", "--preset poisson --duration 5 --rate -2", "--rate"),
    ("rate-inf", "--preset poisson --duration 5 --rate inf", "--rate"),
    ("rate-scale-zero", "--preset poisson --duration 5 --rate-scale 0", "--rate-scale"),
    ("rate-scale-nan", "--preset poisson --duration 5 --rate-scale nan", "--rate-scale"),
    ("burstiness-zero", "--preset gamma --duration 5 --burstiness 0", "--burstiness"),
    ("burstiness-nan", "--preset gamma --duration 5 --burstiness nan", "--burstiness"),
    ("burstiness-tiny", "--preset gamma --duration 5 --burstiness 1e-300", "--burstiness"),
    ("time-scale-negative", "--preset poisson --duration 5 --time-scale -1", "--time-scale"),
    ("time-scale-zero", "--preset poisson --duration 5 --time-scale 0", "--time-scale"),
    ("time-scale-nan", "--preset poisson --duration 5 --time-scale nan", "--time-scale"),
    ("preset-unknown", "--preset nope --duration 5", "nope"),
    ("no-source", "--duration 5", "--preset"),
    ("both-sources", "--preset poisson --fit {d}/t.csv --duration 5", "--fit"),
    ("preset-no-duration", "--preset poisson", "--duration"),
    ("two-rates", "--preset poisson --duration 5 --rate 1 --rate-scale 2", "--rate"),
    ("fit-burstiness", "--fit {d}/t.csv --burstiness 2", "--burstiness"),
    ("fit-duration-negative", "--fit {d}/t.csv --duration -1", "--duration"),
    ("fit-missing", "--fit {d}/nope.csv", "nope.csv"),
    ("seed-negative", "--preset poisson --duration 5 --seed -1", "--seed"),
):
    case(f"generate-{name}", GEN + flags.split(), {"t.csv": EVEN_TIMES}, expect)

# ---------------------------------------------------------------- plan flags
PLAN = ["plan", "-w", "preset:poisson", "-n", "20"]
for name, flags, expect in (
    ("tp-text", "--slo ttft_p99=2s --tp abc", "--tp"),
    ("tp-zero", "--slo ttft_p99=2s --tp 0", "--tp"),
    ("tp-empty", ["--slo", "ttft_p99=2s", "--tp", ""], "--tp"),
    ("tp-indivisible", "--slo ttft_p99=2s --tp 3", "--tp"),
    ("gpu-unknown", "--slo ttft_p99=2s --gpus nope", "nope"),
    ("slo-garbage", "--slo fast", "--slo"),
    ("slo-value-text", "--slo ttft_p99=abc", "--slo"),
    ("slo-negative", "--slo ttft_p99=-2s", "--slo"),
    ("attainment-over-one", "--slo ttft_p99=2s --attainment 2", "--attainment"),
    ("max-replicas-zero", "--slo ttft_p99=2s --max-replicas 0", "--max-replicas"),
    ("rate-zero", "--slo ttft_p99=2s --rate 0", "--rate"),
    ("rate-nan", "--slo ttft_p99=2s --rate nan", "--rate"),
    ("jobs-zero", "--slo ttft_p99=2s --jobs 0", "--jobs"),
    ("vary-garbage", "--slo ttft_p99=2s --vary nonsense", "--vary"),
    ("set-bad", "--slo ttft_p99=2s --set scheduler.max_num_seqs=-1", "scheduler.max_num_seqs"),
    ("num-requests-zero", "--slo ttft_p99=2s -n 0", "-n"),
):
    argv = PLAN + (flags.split() if isinstance(flags, str) else flags)
    case(f"plan-{name}", argv, expect=expect)
case("plan-workload-missing", ["plan", "-w", "{d}/nope.csv", "--slo", "ttft_p99=2s"], expect="nope.csv")
case("plan-workload-preset-unknown", ["plan", "-w", "preset:nope", "--slo", "ttft_p99=2s", "-n", "20"], expect="nope")
case("plan-workload-bad-trace", ["plan", "-w", "{d}/t.csv", "--slo", "ttft_p99=2s"],
     {"t.csv": TRACES["tokens_beyond_int64"][1]}, "prompt_tokens")

# ---------------------------------------------------------------- calibrate
for name, content, expect in (
    ("empty", "", "mlp.csv"),
    ("garbage", "hello world\nthis is not, a csv\n", "mlp.csv"),
    ("binary", bytes(range(256)) * 8, "mlp.csv"),
    ("utf16", (MLP_HEADER + "\n32,32,4096,11008,32000,True,16,1,0.1,0.1,0.1,0.1\n").encode("utf-16"), "mlp.csv"),
    ("tp-zero", MLP_HEADER + "\n32,32,4096,11008,32000,True,16,0,0.1,0.1,0.1,0.1\n", "num_tensor_parallel_workers"),
    ("heads-zero", MLP_HEADER + "\n0,0,4096,11008,32000,True,16,1,0.1,0.1,0.1,0.1\n", "n_head"),
    ("tokens-negative", MLP_HEADER + "\n32,32,4096,11008,32000,True,-16,1,0.1,0.1,0.1,0.1\n", "num_tokens"),
    ("header-only", MLP_HEADER + "\n", "mlp.csv"),
    ("text-cells", MLP_HEADER + "\nx,y,z,w,v,True,16,1,a,b,c,d\n", "mlp.csv"),
):
    case(f"calibrate-check-{name}", ["calibrate", "check", "{d}/mlp.csv", "--gpu", "H100"], {"mlp.csv": content}, expect)
    case(f"calibrate-fit-{name}", ["calibrate", "fit", "--gpu", "H100", "--mlp", "{d}/mlp.csv"], {"mlp.csv": content}, expect)
case("calibrate-check-missing", ["calibrate", "check", "{d}/nope.csv", "--gpu", "H100"], expect="nope.csv")
case("calibrate-check-directory", ["calibrate", "check", "{d}", "--gpu", "H100"], expect="MLP_CSV")
case("calibrate-check-gpu-unknown", ["calibrate", "check", "{d}/nope.csv", "--gpu", "nope"], expect="nope")
case("calibrate-check-nothing", ["calibrate", "check", "--gpu", "H100"], expect="calibrate check")
case("calibrate-check-attention-garbage", ["calibrate", "check", "--gpu", "H100", "--attention", "{d}/a.csv"],
     {"a.csv": "a,b\n1,2\n"}, "a.csv")
case("calibrate-check-collective-garbage", ["calibrate", "check", "--gpu", "H100", "--collective", "{d}/c.csv"],
     {"c.csv": "a,b\n1,2\n"}, "c.csv")

# ---------------------------------------------------------------- replay-scheduler scenarios
REPLAY = ["replay-scheduler", "{d}/s.json", "-o", "{d}/trace.json"]
CFG = '"config": {"num_gpu_blocks": 64, "block_size": 16, "max_num_seqs": 4, "max_num_batched_tokens": 256}'
for name, content, expect in (
    ("number", "42", "s.json"),
    ("string", '"hello"', "s.json"),
    ("list", "[1, 2]", "s.json"),
    ("null", "null", "s.json"),
    ("empty", "", "s.json"),
    ("binary", bytes(range(256)) * 4, "s.json"),
    ("utf16", SCENARIO_OK.encode("utf-16"), "s.json"),
    ("malformed", '{"config": {', "s.json"),
    ("no-config", '{"requests": []}', "config"),
    ("no-requests", "{" + CFG + "}", "requests"),
    ("config-not-object", '{"config": 5, "requests": []}', "config"),
    ("requests-not-list", "{" + CFG + ', "requests": 5}', "requests"),
    ("requests-dict", "{" + CFG + ', "requests": {"a": 1}}', "requests"),
    ("no-num-gpu-blocks", '{"config": {"block_size": 16}, "requests": [{"id": "a", "arrival_step": 0, "prompt_len": 5, "output_len": 2}]}', "num_gpu_blocks"),
    ("num-gpu-blocks-zero", '{"config": {"num_gpu_blocks": 0, "block_size": 16}, "requests": []}', "num_gpu_blocks"),
    ("num-gpu-blocks-text", '{"config": {"num_gpu_blocks": "many", "block_size": 16}, "requests": []}', "num_gpu_blocks"),
    ("request-number", "{" + CFG + ', "requests": [5]}', "requests[0]"),
    ("request-string", "{" + CFG + ', "requests": ["r1"]}', "requests[0]"),
    ("request-null", "{" + CFG + ', "requests": [null]}', "requests[0]"),
    ("request-no-id", "{" + CFG + ', "requests": [{"arrival_step": 0, "prompt_len": 5, "output_len": 2}]}', "requests[0]"),
    ("request-id-object", "{" + CFG + ', "requests": [{"id": {}, "arrival_step": 0, "prompt_len": 5, "output_len": 2}]}', "requests[0].id"),
    ("duplicate-ids", "{" + CFG + ', "requests": [' + ", ".join(
        '{"id": "a", "arrival_step": %d, "prompt_len": 5, "output_len": 2}' % i for i in range(3)) + "]}", "'a'"),
    ("prompt-bool", "{" + CFG + ', "requests": [{"id": "a", "arrival_step": 0, "prompt_len": true, "output_len": 2}]}', "prompt_len"),
    ("prompt-zero", "{" + CFG + ', "requests": [{"id": "a", "arrival_step": 0, "prompt_len": 0, "output_len": 2}]}', "prompt_len"),
    ("prompt-negative", "{" + CFG + ', "requests": [{"id": "a", "arrival_step": 0, "prompt_len": -4, "output_len": 2}]}', "prompt_len"),
    ("output-zero", "{" + CFG + ', "requests": [{"id": "a", "arrival_step": 0, "prompt_len": 5, "output_len": 0}]}', "output_len"),
    ("prompt-over-cache", "{" + CFG + ', "requests": [{"id": "a", "arrival_step": 0, "prompt_len": 5000, "output_len": 2}]}', "prompt_len"),
    ("arrival-far", "{" + CFG + ', "requests": [{"id": "a", "arrival_step": 1000000000000, "prompt_len": 5, "output_len": 2}]}', "arrival_step"),
    ("arrival-float", "{" + CFG + ', "requests": [{"id": "a", "arrival_step": 1.5, "prompt_len": 5, "output_len": 2}]}', "arrival_step"),
    ("output-huge", "{" + CFG + ', "requests": [{"id": "a", "arrival_step": 0, "prompt_len": 5, "output_len": 100000000000}]}', "output_len"),
    ("policy-unknown", '{"config": {"num_gpu_blocks": 64, "block_size": 16, "policy": "lifo"}, "requests": []}', "policy"),
    ("config-bad-field", '{"config": {"num_gpu_blocks": 64, "block_size": -16}, "requests": []}', "block_size"),
):
    case(f"replay-{name}", REPLAY, {"s.json": content}, expect)
case("replay-engine-unknown", ["replay-scheduler", "{d}/s.json", "-o", "{d}/t.json", "--engine", "turbo"],
     {"s.json": SCENARIO_OK}, "--engine")
case("replay-directory", ["replay-scheduler", "{d}", "-o", "{d}/t.json"], expect="directory")
case("replay-missing", ["replay-scheduler", "{d}/nope.json", "-o", "{d}/t.json"], expect="nope.json")

# ---------------------------------------------------------------- sweep specs
SWEEP = ["sweep", "{d}/s.yaml", "-o", "{d}/out", "-j", "1", "-q"]
for name, content, expect in (
    ("list", "- 1\n- 2\n", "s.yaml"),
    ("utf16", "set: {workload.num_requests: 5}\n".encode("utf-16"), "s.yaml"),
    ("binary", bytes(range(256)) * 4, "s.yaml"),
    ("unknown-key", "gird: {seed: [1]}\n", "gird"),
    ("grid-not-list", "grid: {seed: 5}\n", "grid"),
    ("grid-empty", "grid: {seed: []}\n", "grid"),
    ("base-missing", "base: nope.yaml\n", "nope.yaml"),
    ("bad-value", "grid: {scheduler.max_num_seqs: [0]}\n", "scheduler.max_num_seqs"),
    ("duplicate-keys", "grid: {seed: [1]}\ngrid: {seed: [2]}\n", "grid"),
    ("every-run-fails", "set: {workload.num_requests: 5, workload.trace: gone.csv}\n", "gone.csv"),
    ("seeds-text", "seeds: [a, b]\n", "seeds"),
):
    case(f"sweep-{name}", SWEEP, {"s.yaml": content}, expect)
case("sweep-every-run-fails-model", SWEEP,
     {"s.yaml": "set: {workload.num_requests: 5}\ngrid: {hardware.model: [Llama-2-70B]}\n"}, "fail")
case("sweep-executor-unknown", SWEEP + ["--executor", "nope"], {"s.yaml": "set: {workload.num_requests: 5}\n"}, "--executor")
case("sweep-jobs-zero", ["sweep", "{d}/s.yaml", "-o", "{d}/out", "-j", "0", "-q"], {"s.yaml": "set: {seed: 1}\n"}, "--jobs")
case("sweep-missing", ["sweep", "{d}/nope.yaml", "-o", "{d}/out"], expect="nope.yaml")

# ---------------------------------------------------------------- report inputs
for name, files, expect in (
    ("missing", {}, "run"),
    ("empty-folder", {"run/.keep": ""}, "run"),
    ("corrupt-parquet", {"run/summary.json": "{}", "run/requests.parquet": b"PAR1" + bytes(100) + b"PAR1"}, "requests.parquet"),
    ("text-parquet", {"run/summary.json": "{}", "run/requests.parquet": "not parquet"}, "requests.parquet"),
    ("summary-garbage", {"run/summary.json": "{nope", "run/requests.parquet": b"x"}, "summary.json"),
    ("summary-binary", {"run/summary.json": bytes(range(256)), "run/requests.parquet": b"x"}, "summary.json"),
    ("results-corrupt", {"run/results.parquet": b"PAR1garbagePAR1"}, "results.parquet"),
    ("is-file", {"run": "a file"}, "run"),
):
    case(f"report-{name}", ["report", "{d}/run", "-o", "{d}/r.html"], files, expect)

# ---------------------------------------------------------------- profiles
for name, argv, files, expect in (
    ("show-unknown", ["profiles", "show", "nope"], {}, "nope"),
    ("add-model-garbage", ["profiles", "add-model", "{d}/m.json"], {"m.json": "{not json"}, "m.json"),
    ("add-model-binary", ["profiles", "add-model", "{d}/m.json"], {"m.json": bytes(range(256))}, "m.json"),
    ("add-model-missing-fields", ["profiles", "add-model", "{d}/m.json"], {"m.json": '{"hidden_size": 10}'}, "m.json"),
    ("add-model-list", ["profiles", "add-model", "{d}/m.json"], {"m.json": "[1, 2]"}, "m.json"),
    ("add-model-missing", ["profiles", "add-model", "{d}/nope.json"], {}, "nope.json"),
    ("add-gpu-garbage", ["profiles", "add-gpu", "{d}/g.yaml"], {"g.yaml": "name: [unclosed\n"}, "g.yaml"),
    ("add-gpu-utf16", ["profiles", "add-gpu", "{d}/g.yaml"], {"g.yaml": "name: X\n".encode("utf-16")}, "g.yaml"),
    ("add-gpu-number", ["profiles", "add-gpu", "{d}/g.yaml"], {"g.yaml": "5\n"}, "g.yaml"),
    ("run-gpu-path-garbage", RUN + ["--set", "hardware.gpu={d}/g.yaml"], {"g.yaml": bytes(range(256))}, "g.yaml"),
    ("run-model-path-utf16", RUN + ["--set", "hardware.model={d}/m.yaml"], {"m.yaml": "name: X\n".encode("utf-16")}, "m.yaml"),
):
    case(f"profiles-{name}", argv, files, expect)

# ---------------------------------------------------------------- bench flags
case("bench-requests-zero", ["bench", "speed", "--requests", "0"], expect="--requests")
case("bench-requests-huge", ["bench", "speed", "--requests", "1000000000000", "--reference-requests", "0"], expect="--requests")
