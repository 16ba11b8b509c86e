"""The figure of a sweep report: headline metrics against the swept values, averaged over seeds."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

METRICS = (("ttft_s.p99", "p99 TTFT (s)"), ("tpot_s.p99", "p99 TPOT (s)"), ("goodput", "goodput (req/s)"),
           ("preemptions", "preemptions"))


def swept_columns(table: pd.DataFrame) -> list[str]:
    """The config-path columns a sweep varied (they sit between ``run_key`` and ``seed``)."""
    columns = list(table.columns)
    if "run_key" not in columns or "seed" not in columns:
        return []
    return [c for c in columns[columns.index("run_key") + 1: columns.index("seed")] if table[c].nunique() > 1]


def sweep_figure(table: pd.DataFrame, swept: list[str]):
    """x = the first swept value; one line per combination of the others (up to 8)."""
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), constrained_layout=True)
    ok = table[table["status"] == "ok"]
    if not swept or ok.empty:
        for ax in axes.flat:
            ax.text(0.5, 0.5, "nothing swept" if not swept else "no successful runs", ha="center", transform=ax.transAxes)
        return fig
    x, others = swept[0], swept[1:]
    groups = list(ok.groupby(others, dropna=False)) if others else [((), ok)]
    for ax, (metric, label) in zip(axes.flat, METRICS):
        if metric not in ok.columns:
            continue
        for key, group in groups[:8]:
            means = group.groupby(x)[metric].mean().sort_index()
            name = ", ".join(f"{o}={v}" for o, v in zip(others, key if isinstance(key, tuple) else (key,)))
            ax.plot(means.index.astype(str) if means.index.dtype == object else means.index, means.to_numpy(),
                    marker="o", label=name or None)
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if others:
            ax.legend(fontsize=7)
    return fig
