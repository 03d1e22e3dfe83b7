"""PNG plots of an evaluation (matplotlib's Agg canvas; no pyplot, no global backend state).

- :func:`plot_pr_curves`: interpolated precision vs recall per class (first threshold);
- :func:`plot_sweep`: AP/AR and TP/FP/FN against the overlap threshold (a :func:`sweep` table);
- :func:`plot_counts`: TP/FP/FN per class.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mdfnet.evaluation.accumulate import REC_THRS
from mdfnet.evaluation.evaluator import EvalResult

if TYPE_CHECKING:
    import pandas as pd


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    return path


def plot_pr_curves(result: EvalResult, path: str | Path) -> Path:
    """Precision-recall curve of every class with ground truth, at ``result.thresholds[0]``."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for k, name in enumerate(result.class_names):
        prec = result.precision[0, :, k]
        if np.isnan(prec).all():
            continue
        ax.plot(REC_THRS, prec, label=f"{name} (AP {100 * prec.mean():.1f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"PR curves, {result.overlap.upper()} >= {result.thresholds[0]:g}")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def plot_sweep(table: pd.DataFrame, path: str | Path, overlap: str = "iobb") -> Path:
    """AP/AR (left) and TP/FP/FN (right) against the overlap threshold; ``table`` from :func:`sweep`."""
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    x = table["threshold"].to_numpy()
    for col in ("ap", "ar"):
        ax1.plot(x, table[col].to_numpy(), marker="o", ms=3, label=col.upper())
    ax1.set(xlabel=f"{overlap.upper()} threshold", ylabel="value", xlim=(0, 1), ylim=(0, 1.02), title="AP / AR")
    ax1.legend()
    ax1.grid(alpha=0.3)
    for col in ("tp", "fp", "fn"):
        ax2.plot(x, table[col].to_numpy(), marker="o", ms=3, label=col.upper())
    ax2.set(xlabel=f"{overlap.upper()} threshold", ylabel="count", xlim=(0, 1), title="TP / FP / FN")
    ax2.legend()
    ax2.grid(alpha=0.3)
    return _save(fig, path)


def plot_counts(result: EvalResult, path: str | Path) -> Path:
    """Grouped bars: TP/FP/FN per class at ``result.thresholds[0]``."""
    fig = Figure(figsize=(max(6, 1.4 * len(result.class_names)), 4))
    ax = fig.add_subplot()
    x = np.arange(len(result.class_names))
    for j, (label, counts) in enumerate((("TP", result.tp[0]), ("FP", result.fp[0]), ("FN", result.fn[0]))):
        ax.bar(x + (j - 1) * 0.27, counts, width=0.27, label=label)
    ax.set_xticks(x, result.class_names, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="count", title=f"TP / FP / FN per class, {result.overlap.upper()} >= {result.thresholds[0]:g}")
    ax.legend()
    return _save(fig, path)


def save_plots(result: EvalResult, out_dir: str | Path, sweep_table: pd.DataFrame | None = None) -> list[Path]:
    """Write ``pr_curves.png``, ``counts.png`` and (with a sweep table) ``sweep.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = [plot_pr_curves(result, out_dir / "pr_curves.png"), plot_counts(result, out_dir / "counts.png")]
    if sweep_table is not None:
        paths.append(plot_sweep(sweep_table, out_dir / "sweep.png", overlap=result.overlap))
    return paths
