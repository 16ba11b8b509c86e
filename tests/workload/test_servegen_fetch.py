"""ServeGen presets from the shared parameter files, and `trace fetch` (offline, checksum)."""

from __future__ import annotations

import hashlib
import io
import urllib.error

import pandas as pd
import pytest

from llmsim.errors import ConfigError, UserError
from llmsim.workload import build_workload
from llmsim.workload import fetch
from llmsim.workload.config import WorkloadConfig
from llmsim.workload.servegen import servegen_workload
from tests.conftest import shared_path


@pytest.fixture
def servegen(monkeypatch):
    folder = shared_path("traces", "servegen", "data")
    monkeypatch.setenv("LLMSIM_SERVEGEN_DIR", str(folder))
    return folder


def test_servegen_client_follows_its_window_rates(servegen):
    table = pd.read_csv(servegen / "language/m-small/chunk-0-trace.csv", header=None,
                        names=["start", "rate", "cv", "family", "shape", "scale"])
    active = table.loc[table.index[table["rate"] > 0][0]:].reset_index(drop=True)
    hours = 24
    w = servegen_workload("m-small/0", duration_s=hours * 3600.0, seed=0)
    expected = active["rate"].iloc[: hours * 6].sum() * 600
    assert len(w) == pytest.approx(expected, rel=0.05)
    assert w.meta["lengths"] == "dataset"
    assert (w.df["output_tokens"] >= 1).all()


def test_servegen_rate_override_and_via_config(servegen):
    w = servegen_workload("deepseek-r1/0", num_requests=4000, rate=5.0, seed=1)
    assert len(w) == 4000
    cfg = WorkloadConfig(preset="servegen:deepseek-r1/0", num_requests=500)
    assert len(build_workload(cfg, seed=0)) == 500


def test_servegen_bad_client_names(servegen):
    with pytest.raises(ConfigError, match="pool one of m-large, m-mid, m-small"):
        servegen_workload("nosuch/1")
    with pytest.raises(ConfigError, match="not found"):
        servegen_workload("m-small/99999")


class FakeResponse(io.BytesIO):
    headers = {"Content-Length": "0"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_fetch_without_network_says_where_to_put_the_file(tmp_path):
    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    with pytest.raises(UserError) as err:
        fetch.fetch_burstgpt("1", tmp_path, opener=offline)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "BurstGPT_1.csv") in message
    assert fetch.BURSTGPT_FILES["1"].sha256 in message
    assert not list(tmp_path.iterdir())


def test_fetch_checks_sha256(tmp_path, monkeypatch):
    body = b"Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,ChatGPT,1,1,2,API log\n"
    good = fetch.ReleaseFile("BurstGPT_1.csv", "https://example/BurstGPT_1.csv", hashlib.sha256(body).hexdigest(), len(body))
    monkeypatch.setitem(fetch.BURSTGPT_FILES, "1", good)
    path = fetch.fetch_burstgpt("1", tmp_path, opener=lambda url, timeout: FakeResponse(body))
    assert path.read_bytes() == body
    # already present with the right hash: no download
    assert fetch.fetch_burstgpt("1", tmp_path, opener=None) == path
    bad = fetch.ReleaseFile("BurstGPT_2.csv", "https://example/BurstGPT_2.csv", "0" * 64, None)
    monkeypatch.setitem(fetch.BURSTGPT_FILES, "2", bad)
    with pytest.raises(UserError, match="does not match the published"):
        fetch.fetch_burstgpt("2", tmp_path, opener=lambda url, timeout: FakeResponse(body))
    assert not (tmp_path / "BurstGPT_2.csv").exists()


def test_published_hashes_are_the_ones_in_source_md():
    source = shared_path("traces", "burstgpt", "SOURCE.md").read_text()
    for key in ("1", "1-without-fails", "2", "2-without-fails"):
        spec = fetch.BURSTGPT_FILES[key]
        assert spec.sha256 in source and f"{spec.size_bytes:,}" in source
