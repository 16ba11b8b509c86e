"""Human-readable rendering of a run summary (the table `llmsim run` prints)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from llmsim.metrics.intervals import plus_minus


def plural(count: int, noun: str) -> str:
    """``1 replica``, ``2 replicas``, ``1,000 requests`` (English plural by adding -s, enough for our nouns)."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def summary_table(summary: dict[str, Any], title: str = "llmsim run summary") -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    dep = summary.get("deployment", {})
    if dep:
        alias = f" (alias {dep['gpu_alias']})" if dep.get("gpu_alias") else ""
        table.add_row("deployment", f"{dep.get('model')} on {dep.get('gpu')}{alias} tp={dep.get('tp')} pp={dep.get('pp')}, "
                                    f"{dep.get('num_gpu_blocks'):,} KV blocks")
    table.add_row("requests (completed / rejected / failed)",
                  f"{summary['num_requests']:,} ({summary['completed']:,} / {summary['rejected']:,} / {summary['failed']:,})")
    table.add_row("duration (s)", f"{summary['duration_s']:,.1f}")
    for key, label, fmt in (("request_throughput", "request throughput (req/s)", "{:.2f}"),
                            ("output_throughput", "output token throughput (tok/s)", "{:,.0f}"),
                            ("total_token_throughput", "total token throughput (tok/s)", "{:,.0f}")):
        value = summary[key]
        table.add_row(label, fmt.format(value) + plus_minus(value, summary.get(f"{key}_interval")))
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2el_s", "E2EL"), ("queue_s", "queueing delay")):
        d = summary[key]
        mean = _ms(d["mean"]) + plus_minus(d["mean"], d.get("mean_interval"))
        table.add_row(f"{label} mean / median / p99 (ms)", f"{mean} / {_ms(d['median'])} / {_ms(d.get('p99'))}")
    server = summary.get("server")
    if server:
        table.add_row("API server mean / p99 (ms)", f"{_ms(server['mean_server_s'])} / {_ms(server['p99_server_s'])} "
                                                    f"({server['processes']} process{'es' if server['processes'] > 1 else ''})")
    table.add_row("preemptions (requests preempted)", f"{summary['preemptions']:,} ({summary.get('preempted_requests', 0):,})")
    table.add_row("peak KV-cache usage", f"{summary.get('peak_kv_usage', 0.0):.1%}")
    table.add_row("max waiting requests", f"{summary.get('max_num_waiting', 0):,}")
    if summary.get("slo_attainment") is not None:
        table.add_row("SLO attainment", f"{summary['slo_attainment']:.1%}")
        table.add_row("goodput (req/s)", f"{summary['goodput']:.2f}")
    cluster = summary.get("cluster") or {}
    if cluster.get("gpu_hours") is not None:
        table.add_row("GPU-hours (cost)", f"{cluster['gpu_hours']:.2f} (${cluster.get('cost_usd', 0.0):.2f})")
    reasons = summary.get("not_completed_by_reason") or {}
    if reasons:
        table.add_row("not completed, by reason", ", ".join(f"{k}: {v}" for k, v in reasons.items()))
    return table


def output_console() -> Console:
    """A console for tables on stdout. Piped into a file or another program, rich would wrap at 80 columns;
    there the table keeps its natural width instead, so every row stays on one line."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=250)


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary table's (metric, value) rows, as printed."""
    table = summary_table(summary)
    metrics, values = (list(column.cells) for column in table.columns)
    return list(zip(metrics, values))


def print_summary(summary: dict[str, Any], console: Console | None = None, plain: bool = False) -> None:
    """The summary as a table, or with ``plain`` as two-column CSV (``metric,value``) for scripts."""
    if plain:
        import csv
        import sys

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["metric", "value"])
        writer.writerows(summary_rows(summary))
        return
    (console or output_console()).print(summary_table(summary))
