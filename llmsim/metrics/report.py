"""``llmsim report``: one self-contained HTML page per run (or sweep), with its plots also saved as PNG.

The page embeds every figure as a base64 PNG (``<img src="data:image/png;base64,...">``) and its CSS inline,
so it can be mailed or attached to an issue and opens anywhere without the files next to it. The same
figures are written beside the page as ``<page stem>_<figure>.png`` for slides and READMEs.

A *run* folder is what ``llmsim run -o DIR`` writes (summary.json, requests.parquet, steps.parquet); a
*sweep* folder is what ``llmsim sweep -o DIR`` writes (results.parquet).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Optional

import typer

from llmsim.errors import UserError
from llmsim.fileio import atomic_write_bytes, atomic_write_text

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } th { text-align: left; background: #f6f6f6; }
img { max-width: 100%; display: block; margin: 0.5em 0; } .note { color: #666; font-size: 0.85em; }
pre { background: #f6f6f6; padding: 1em; font-size: 0.8em; overflow-x: auto; }
.wide { overflow-x: auto; }
"""

_ROWS = (
    ("requests", "num_requests", "{:,}"), ("completed", "completed", "{:,}"), ("rejected", "rejected", "{:,}"),
    ("failed", "failed", "{:,}"), ("duration (s)", "duration_s", "{:,.1f}"),
    ("request throughput (req/s)", "request_throughput", "{:.3f}"),
    ("output token throughput (tok/s)", "output_throughput", "{:,.0f}"),
    ("total token throughput (tok/s)", "total_token_throughput", "{:,.0f}"),
    ("preemptions", "preemptions", "{:,}"), ("requests preempted", "preempted_requests", "{:,}"),
    ("peak KV-cache usage", "peak_kv_usage", "{:.1%}"), ("max waiting requests", "max_num_waiting", "{:,}"),
    ("max batch size", "max_batch_size", "{:,}"), ("SLO attainment", "slo_attainment", "{:.2%}"),
    ("goodput (req/s)", "goodput", "{:.3f}"),
)


def _fmt(template: str, value: Any) -> str:
    if value is None:
        return "–"
    try:
        return template.format(value)
    except (ValueError, TypeError):
        return str(value)


def summary_table_html(summary: dict[str, Any]) -> str:
    rows = []
    dep = summary.get("deployment") or {}
    if dep:
        rows.append(("deployment", f"{dep.get('model')} on {dep.get('gpu')}, tp={dep.get('tp')} pp={dep.get('pp')}, "
                                   f"{dep.get('num_gpu_blocks', 0):,} KV blocks per replica"))
    rows += [(label, _fmt(t, summary.get(key))) for label, key, t in _ROWS if key in summary]
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2el_s", "E2EL"), ("queue_s", "queueing")):
        d = summary.get(key) or {}
        parts = [f"{name} {_fmt('{:,.1f}', None if d.get(name) is None else d[name] * 1000)}"
                 for name in ("mean", "median", "p90", "p99") if name in d]
        rows.append((f"{label} (ms)", " · ".join(parts)))
    reasons = summary.get("not_completed_by_reason") or {}
    if reasons:
        rows.append(("not completed, by reason", ", ".join(f"{k}: {v}" for k, v in reasons.items())))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td class='num'>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _page(title: str, sections: list[str]) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n")


_CAPTIONS = {
    "latency_cdf": "Latency CDFs (completed requests)",
    "latency_over_time": "TTFT and TPOT over time",
    "kv_cache_and_queue": "KV-cache usage and queue length per replica",
    "batch_size": "Batch size per replica",
    "preemptions_failures": "Preemptions and failures over time",
    "arrival_rate": "Arrival rate, bursts marked",
    "sweep_metrics": "Metrics against the swept values (mean over seeds)",
}


def _figure_sections(figures: dict, out_html: Path) -> tuple[list[str], list[Path]]:
    sections, written = [], []
    for stem, fig in figures.items():
        data = _png(fig)
        png_path = out_html.with_name(f"{out_html.stem}_{stem}.png")
        atomic_write_bytes(png_path, data)
        written.append(png_path)
        caption = _CAPTIONS.get(stem, stem)
        sections.append(f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' "
                        f"src='data:image/png;base64,{base64.b64encode(data).decode()}'>")
    return sections, written


def _load_run(source) -> tuple[dict, Any, Any, Optional[str]]:
    """(summary, requests, steps, config YAML or None) from a Result or a run folder."""
    import pandas as pd

    if hasattr(source, "summary") and hasattr(source, "requests"):
        from llmsim.config import config_to_yaml

        return source.summary, source.requests, source.steps, config_to_yaml(source.config)
    folder = Path(source)
    missing = [n for n in ("summary.json", "requests.parquet") if not (folder / n).exists()]
    if missing:
        raise UserError(f"{folder}: not a run folder (missing {', '.join(missing)}); "
                        "expected the output of `llmsim run -o DIR` or `llmsim sweep -o DIR`")
    steps_path = folder / "steps.parquet"
    from llmsim.inputs import read_json, read_parquet

    summary = read_json(folder / "summary.json", "run summary")
    if not isinstance(summary, dict):
        raise UserError(f"{folder / 'summary.json'}: expected a JSON object (the summary of `llmsim run -o`)")
    steps = read_parquet(steps_path, "steps table") if steps_path.exists() else pd.DataFrame()
    return summary, read_parquet(folder / "requests.parquet", "requests table"), steps, None


def write_report(source, out_html: str | Path, *, title: Optional[str] = None) -> Path:
    """Write the HTML report of a run (a :class:`~llmsim.simulation.Result` or a run folder) or of a sweep
    folder, and its figures as PNG beside it. Returns the HTML path."""
    out_html = Path(out_html)
    if not hasattr(source, "summary") and (Path(source) / "results.parquet").exists():
        return write_sweep_report(Path(source), out_html, title=title)
    from llmsim.metrics.plots import run_figures

    summary, requests, steps, config_yaml = _load_run(source)
    interval = 1.0
    figures = run_figures(requests, steps, interval)
    sections = ["<h2>Summary</h2>", summary_table_html(summary),
                "<p class='note'>Latencies follow <code>vllm bench serve</code>: TTFT and E2EL from arrival, TPOT per "
                "request, ITL pooled; percentiles over completed requests. Times are simulated.</p>"]
    figure_sections, _ = _figure_sections(figures, out_html)
    sections += figure_sections
    if config_yaml:
        sections.append(f"<h2>Configuration</h2><pre>{html.escape(config_yaml)}</pre>")
    atomic_write_text(out_html, _page(title or "llmsim run report", sections))
    return out_html


def write_sweep_report(folder: Path, out_html: Path, *, title: Optional[str] = None) -> Path:
    """The sweep's results table and, per swept value, the headline metrics (mean over seeds)."""
    import pandas as pd

    from llmsim.metrics.sweep_plots import swept_columns, sweep_figure

    from llmsim.inputs import read_parquet

    table = read_parquet(folder / "results.parquet", "sweep results table")
    swept = swept_columns(table)
    keep = ["run", *swept, "seed", "status", "completed", "ttft_s.p99", "tpot_s.p99", "e2el_s.p99", "goodput",
            "slo_attainment", "preemptions", "peak_kv_usage", "error"]
    shown = table[[c for c in keep if c in table.columns]]
    sections = [f"<h2>Runs ({len(table)}; {int((table['status'] != 'ok').sum())} failed)</h2>",
                "<div class='wide'>" + shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0,
                                                      na_rep="–") + "</div>"]
    figure_sections, _ = _figure_sections({"sweep_metrics": sweep_figure(table, swept)}, out_html)
    sections += figure_sections
    atomic_write_text(out_html, _page(title or f"llmsim sweep report: {folder.name}", sections))
    return out_html


def report_command(
    results_dir: Path = typer.Argument(..., help="a run folder (llmsim run -o) or a sweep folder (llmsim sweep -o)"),
    out: Path = typer.Option(Path("report.html"), "-o", "--out", help="HTML file to write; PNGs go beside it"),
    title: Optional[str] = typer.Option(None, "--title", help="page title"),
) -> None:
    """Write a self-contained HTML report (plots embedded) and the same plots as PNG files."""
    from llmsim.inputs import check_output_file

    if not results_dir.is_dir():
        raise UserError(f"{results_dir}: " + ("not found" if not results_dir.exists() else "is a file") +
                        "; expected the folder written by `llmsim run -o DIR` or `llmsim sweep -o DIR`")
    check_output_file(out, "-o")
    path = write_report(results_dir, out, title=title)
    pngs = sorted(path.parent.glob(f"{path.stem}_*.png"))
    typer.echo(f"wrote {path} and {len(pngs)} PNG figures beside it")
