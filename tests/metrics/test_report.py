"""The HTML run report: self-contained, every plot present, and it renders in a real (headless) browser."""

from __future__ import annotations

import re

import pytest

from llmsim.config import load_config
from llmsim.metrics.report import write_report
from llmsim.simulation import simulate
from tests.metrics.browser import Browser, find_browser

EXPECTED_FIGURES = ("latency_cdf", "latency_over_time", "kv_cache_and_queue", "batch_size", "preemptions_failures",
                    "arrival_rate")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    # Two replicas with a small KV cache under a bursty load: preemptions and a queue to show.
    config = load_config(None, ["workload.num_requests=300", "workload.rate=12", "workload.burstiness=0.2",
                                "scheduler.num_gpu_blocks=600", "cluster.replicas=2"])
    result = simulate(config)
    out = tmp_path_factory.mktemp("report")
    result.write(out / "run")
    return write_report(out / "run", out / "report.html"), result


def test_report_is_self_contained_with_every_figure(report):
    path, result = report
    page = path.read_text()
    assert "<table>" in page and f"{result.summary['num_requests']:,}" in page
    images = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(images) == len(EXPECTED_FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing fetched from elsewhere
    for stem in EXPECTED_FIGURES:
        png = path.with_name(f"report_{stem}.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_result_object_matches_the_folder_report(report, tmp_path):
    _, result = report
    path = write_report(result, tmp_path / "r.html")
    assert path.read_text().count("<img ") == len(EXPECTED_FIGURES)
    assert "Configuration" in path.read_text()  # a Result also carries its config


def test_report_renders_in_headless_chromium(report):
    chromium, driver = find_browser()
    path, _ = report
    with Browser(chromium, driver) as browser:
        browser.open(path)
        state = browser.run("""
            return {ready: document.readyState, title: document.title,
                    images: Array.from(document.images).map(i => ({complete: i.complete, w: i.naturalWidth,
                                                                    h: i.naturalHeight, shown: i.clientWidth})),
                    rows: document.querySelectorAll('table tr').length};""")
        errors = browser.console_errors()
    assert state["ready"] == "complete" and state["title"] == "llmsim run report"
    assert len(state["images"]) == len(EXPECTED_FIGURES)
    for image in state["images"]:
        assert image["complete"] and image["w"] > 0 and image["h"] > 0 and image["shown"] > 0
    assert state["rows"] >= 10
    assert errors == []


def test_missing_run_folder_is_a_user_error(tmp_path):
    from llmsim.errors import UserError

    with pytest.raises(UserError, match="not a run folder"):
        write_report(tmp_path, tmp_path / "x.html")


def test_report_command_writes_html_and_pngs(report, tmp_path):
    from llmsim.cli import main

    run_dir = report[0].parent / "run"
    assert main(["report", str(run_dir), "-o", str(tmp_path / "page.html")]) == 0
    assert (tmp_path / "page.html").exists()
    assert len(list(tmp_path.glob("page_*.png"))) == len(EXPECTED_FIGURES)
