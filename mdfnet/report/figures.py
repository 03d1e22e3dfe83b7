"""The report's figures (matplotlib, no display): the IoBB-threshold sweep, the FROC curves, train vs validation AP
per epoch, the feature–lesion correlation heatmap and the clinical attribution bars. Each function writes one PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mdfnet.evaluation.plots import _save


def sweep_figure(curves: Mapping[str, pd.DataFrame], path: str | Path) -> Path:
    """Test AP against the IoBB threshold, one line per cell (the paper's Fig. 6b); ``curves``: label → sweep
    table (``threshold``, ``ap``)."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for label, table in curves.items():
        ax.plot(table["threshold"].to_numpy(), 100 * table["ap"].to_numpy(), marker="o", ms=3, label=label)
    ax.set(xlabel="IoBB threshold", ylabel="test AP %", xlim=(0, 1), ylim=(0, 100),
           title="AP over IoBB thresholds (test split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def froc_figure(curves: Mapping[str, Any], path: str | Path) -> Path:
    """Lesion sensitivity against false positives per image (log scale), one step curve per cell, its readings at
    the FROC rates marked; ``curves``: label → :class:`~mdfnet.evaluation.FROCResult` (its pooled curve is drawn)."""
    from mdfnet.evaluation.froc import OVERALL

    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    rates: tuple[float, ...] = ()
    for j, (label, res) in enumerate(curves.items()):
        fps, sens = res.curves[OVERALL]
        rates = res.fp_rates
        top = max(rates[-1], float(fps[-1])) * 2  # the curve stays at its last sensitivity past its last point
        x = np.r_[fps, top].clip(min=rates[0] / 2)
        ax.step(x, 100 * np.r_[sens, sens[-1]], where="post", color=f"C{j}",
                label=f"{label} (mean {100 * res.mean[-1]:.1f} %)")
        ax.plot(rates, 100 * res.sensitivity[-1], "o", ms=3, color=f"C{j}")
    ax.set_xscale("log", base=2)
    if rates:
        ax.set_xticks(rates, [f"{r:g}" for r in rates])
        ax.set_xlim(rates[0] / 2, rates[-1] * 2)
    ax.set(xlabel="false positives per image", ylabel="lesion sensitivity % (IoBB 0.5)", ylim=(0, 100),
           title="FROC, all lesion classes pooled (test split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def generalisation_figure(series: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]], path: str | Path) -> Path:
    """Train (dashed) and validation (solid) AP per epoch per cell (the paper's Fig. 6a); ``series``: label →
    ``{"train": [(epoch, ap)], "val": [...]}``."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for j, (label, s) in enumerate(series.items()):
        colour = f"C{j}"
        for split, style in (("train", "--"), ("val", "-")):
            pts = s.get(split) or []
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, 100 * np.asarray(y), style, color=colour, label=f"{label} {split}")
    ax.set(xlabel="epoch", ylabel="AP % (IoBB 0.5)", ylim=(0, 100), title="Train vs validation AP")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def correlation_figure(corr: pd.DataFrame, path: str | Path) -> Path:
    """Heatmap of ``corr`` (features × lesions, values in [-1, 1], annotated; the paper's Fig. 5b)."""
    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.add_subplot()
    values = corr.to_numpy(dtype=float)
    im = ax.imshow(values, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(corr.shape[1]), corr.columns, rotation=25, ha="right", fontsize=8)
    ax.set_yticks(range(corr.shape[0]), corr.index, fontsize=8)
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="Pearson r")
    ax.set_title("Clinical features vs lesion presence (train split)")
    return _save(fig, path)


def attribution_figure(att: Mapping[str, Any], path: str | Path) -> Path:
    """Permutation importance (AP drop, mean ± sd) per clinical feature, with the medians control in the title."""
    feats = att["features"]
    names = sorted(feats, key=lambda f: -feats[f]["importance_mean"])
    fig = Figure(figsize=(6.5, 0.35 * len(names) + 1.6))
    ax = fig.add_subplot()
    y = np.arange(len(names))
    ax.barh(y, [100 * feats[f]["importance_mean"] for f in names],
            xerr=[100 * feats[f]["importance_sd"] for f in names], color="C0")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set(xlabel=f"{att['split']} AP drop when permuted, % points ({att['repeats']} repeats)",
           title=f"AP {100 * att['ap']:.1f} %; clinical input at train medians: {100 * att['ap_train_medians']:.1f} %")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
