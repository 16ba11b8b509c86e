"""Loaders on the shared real traces and on small bad files (each error is one line naming file/row/column)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from llmsim.errors import TraceError
from llmsim.workload import detect_format, load_trace
from tests.conftest import shared_path


def burstgpt_sample():
    return shared_path("traces", "burstgpt", "BurstGPT_1_first42rows_transcribed.csv")


def test_burstgpt_sample_loads_with_its_four_failures_flagged():
    w = load_trace(burstgpt_sample(), include_failures=True)
    assert len(w) == 42 and w.meta["format"] == "burstgpt"
    assert int(w.df["failed"].sum()) == 4
    failed = w.df[w.df["failed"]]
    assert (failed["prompt_tokens"] == 0).all() and (failed["output_tokens"] == 0).all()
    assert w.df["arrival_s"].iloc[0] == 0.0 and w.clock_origin_s == 5.0
    assert w.df["arrival_s"].iloc[-1] == 4725 - 5
    assert set(w.df["model"].astype(str)) == {"ChatGPT", "GPT-4"}


def test_burstgpt_failures_dropped_by_default_and_model_filter():
    assert len(load_trace(burstgpt_sample())) == 38
    gpt4 = load_trace(burstgpt_sample(), model="GPT-4", include_failures=True)
    assert len(gpt4) == int((pd.read_csv(burstgpt_sample())["Model"] == "GPT-4").sum()) and (gpt4.df["model"].astype(str) == "GPT-4").all()
    with pytest.raises(TraceError, match="no rows with model 'Claude'"):
        load_trace(burstgpt_sample(), model="Claude")


def test_burstgpt_release3_columns(tmp_path):
    path = tmp_path / "b3.csv"
    path.write_text("Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                    "10,7,0,ChatGPT,100,20,120,Conversation log\n"
                    "12,7,2,ChatGPT,150,0,150,Conversation log\n"
                    "15,9,0,GPT-4,30,40,70,API log\n")
    w = load_trace(path, include_failures=True)
    assert list(w.df["session_id"]) == [7, 7, 9]
    assert list(w.df["failed"]) == [False, True, False]
    assert list(w.df["arrival_s"]) == [0.0, 2.0, 5.0]
    assert len(load_trace(path, service="API log")) == 1


def test_azure_2023_code_trace():
    path = shared_path("traces", "azure_llm_2023", "AzureLLMInferenceTrace_code.csv")
    assert detect_format(path) == "azure"
    w = load_trace(path)
    raw = pd.read_csv(path)
    assert len(w) == len(raw) == 8819
    times = pd.to_datetime(raw["TIMESTAMP"])
    expected = (times - times.iloc[0]).dt.total_seconds().to_numpy()
    np.testing.assert_allclose(w.df["arrival_s"].to_numpy(), expected, atol=1e-6)
    assert (w.df["prompt_tokens"].to_numpy() == raw["ContextTokens"].to_numpy()).all()
    assert (w.df["output_tokens"].to_numpy() == raw["GeneratedTokens"].to_numpy()).all()
    assert w.start_datetime == times.iloc[0]


def test_mooncake_conversation_trace_keeps_prefix_hashes_and_ties():
    path = shared_path("traces", "mooncake_fast25", "conversation_trace.jsonl")
    w = load_trace(path)
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(w) == len(records) == 12031
    assert w.df["arrival_s"].iloc[-1] == pytest.approx((records[-1]["timestamp"] - records[0]["timestamp"]) / 1000)
    assert w.df["arrival_s"].nunique() < len(w)  # equal timestamps are accepted
    assert w.df["prefix_hashes"].iloc[1] == tuple(records[1]["hash_ids"])
    blocks = np.ceil(w.df["prompt_tokens"] / 512).astype(int)
    assert (w.df["prefix_hashes"].map(len) == blocks).all()


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_generic_formats_and_column_mapping(tmp_path, suffix):
    frame = pd.DataFrame({"t": [0.5, 1.0, 1.0], "inp": [10, 20, 30], "out": [1, 2, 3], "model": ["a", "b", "a"]})
    path = tmp_path / f"g.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    elif suffix == "parquet":
        frame.to_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")) + "\n")
    w = load_trace(path, suffix, columns={"arrival_s": "t", "prompt_tokens": "inp", "output_tokens": "out"})
    assert list(w.df["arrival_s"]) == [0.0, 0.5, 0.5]
    assert list(w.df["prompt_tokens"]) == [10, 20, 30] and list(w.df["model"].astype(str)) == ["a", "b", "a"]
    canonical = frame.rename(columns={"t": "arrival_s", "inp": "prompt_tokens", "out": "output_tokens"})
    canonical.to_csv(tmp_path / "c.csv", index=False)
    assert detect_format(tmp_path / "c.csv") == "csv" and len(load_trace(tmp_path / "c.csv", num_requests=2)) == 2


def test_time_window_rebases_to_window_start():
    w = load_trace(burstgpt_sample(), start_s=100, end_s=500, include_failures=True)
    # file-relative times are Timestamp - 5; window [100, 500) → Timestamps 105..504
    assert list(w.df["arrival_s"]) == [t - 105.0 for t in (118, 185, 214, 233, 261, 267, 410)]
    assert w.clock_origin_s == 105


BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


@pytest.mark.parametrize("body, fragment", [
    ("1,ChatGPT,10,5,15,API log\n2,ChatGPT,-3,5,2,API log\n", "row 2, column 'Request tokens': expected a non-negative integer, got '-3'"),
    ("1,ChatGPT,10,5,15,API log\n2,ChatGPT,10,abc,15,API log\n", "row 2, column 'Response tokens': expected a non-negative integer, got 'abc'"),
    ("1,ChatGPT,10,5,15,API log\n2,ChatGPT,10,,15,API log\n", "row 2, column 'Response tokens': expected a non-negative integer, got ''"),
    ("1,ChatGPT,10,5,15,API log\nnoon,ChatGPT,10,5,15,API log\n", "row 2, column 'Timestamp': expected a number of seconds, got 'noon'"),
    ("5,ChatGPT,10,5,15,API log\n5,ChatGPT,10,5,15,API log\n3,ChatGPT,10,5,15,API log\n", "row 3, column 'Timestamp': timestamp goes backwards"),
    ("", "header but no data rows"),
])
def test_bad_burstgpt_rows_name_file_row_and_column(tmp_path, body, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(BURST_HEADER + body)
    with pytest.raises(TraceError) as err:
        load_trace(path)
    message = str(err.value)
    assert fragment in message and "bad.csv" in message and "\n" not in message


def test_missing_empty_and_missing_column(tmp_path):
    with pytest.raises(TraceError, match="not found"):
        load_trace(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(TraceError, match="empty"):
        load_trace(tmp_path / "empty.csv")
    (tmp_path / "cols.csv").write_text("Timestamp,Model,Request tokens,Total tokens,Log Type\n1,ChatGPT,1,1,API log\n")
    with pytest.raises(TraceError, match="missing column 'Response tokens'"):
        load_trace(tmp_path / "cols.csv", "burstgpt")
    (tmp_path / "what.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TraceError, match="cannot tell the trace format"):
        load_trace(tmp_path / "what.csv")
    with pytest.raises(TraceError, match="valid formats: burstgpt, azure"):
        load_trace(tmp_path / "what.csv", "nosuch")


def test_backwards_timestamps_sorted_with_warning_when_asked(tmp_path):
    path = tmp_path / "back.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0,1,1\n5,2,2\n3,3,3\n")
    with pytest.warns(UserWarning, match="back.csv row 3, column 'arrival_s': timestamp goes backwards"):
        w = load_trace(path, sort=True)
    assert list(w.df["arrival_s"]) == [0, 3, 5] and list(w.df["prompt_tokens"]) == [1, 3, 2]


def test_bad_jsonl_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    good = '{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n'
    path.write_text(good + "\n" + '{"timestamp": 5, "input_length": 10, "output_length": 2\n')
    with pytest.raises(TraceError, match=r"m.jsonl line 3: malformed JSON"):
        load_trace(path, "mooncake")
    path.write_text(good + '{"timestamp": 5, "input_length": -1, "output_length": 2}\n')
    with pytest.raises(TraceError, match=r"m.jsonl line 2, column 'input_length': expected a non-negative integer"):
        load_trace(path)
    path.write_text(good + '{"timestamp": 5, "output_length": 2}\n')
    with pytest.raises(TraceError, match=r"m.jsonl line 2, column 'input_length': missing key"):
        load_trace(path)


def test_azure_bad_timestamp(tmp_path):
    path = tmp_path / "az.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,10,2\nyesterday,5,5\n")
    with pytest.raises(TraceError, match=r"az.csv row 2, column 'TIMESTAMP': expected a date-time"):
        load_trace(path)


def test_large_csv_streams_in_chunks(tmp_path, monkeypatch):
    from llmsim.workload import parsing

    monkeypatch.setattr(parsing, "CSV_CHUNK_ROWS", 7)
    path = tmp_path / "big.csv"
    n = 50
    rows = [f"{i},{'GPT-4' if i % 3 else 'ChatGPT'},{i + 1},{i % 5},{2 * i},API log" for i in range(n)]
    path.write_text(BURST_HEADER + "\n".join(rows) + "\n")
    w = load_trace(path, include_failures=True)
    assert len(w) == n and int(w.df["failed"].sum()) == 10
    assert set(w.df["model"].astype(str)) == {"GPT-4", "ChatGPT"}
    rows[40] = "40,ChatGPT,x,1,1,API log"
    path.write_text(BURST_HEADER + "\n".join(rows) + "\n")
    with pytest.raises(TraceError, match="row 41, column 'Request tokens'"):
        load_trace(path)


def test_azure_2024_format_with_utc_offset(tmp_path):
    path = tmp_path / "az24.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2024-05-10 00:00:00.009930+00:00,374,44\n2024-05-10 00:00:01.509930+00:00,396,109\n")
    w = load_trace(path)
    assert list(w.df["arrival_s"]) == pytest.approx([0.0, 1.5])
    assert w.start_datetime == pd.Timestamp("2024-05-10 00:00:00.009930")


def test_rows_without_session_id_are_sessions_of_their_own(tmp_path):
    path = tmp_path / "b3.csv"
    path.write_text("Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                    "1,,0,ChatGPT,10,2,12,API log\n2,5,0,ChatGPT,10,2,12,Conversation log\n"
                    "3,,0,ChatGPT,10,2,12,API log\n4,5,1,ChatGPT,10,2,12,Conversation log\n")
    ids = load_trace(path).df["session_id"]
    assert ids[1] == ids[3] and len({ids[0], ids[1], ids[2]}) == 3
