"""Review plots as PNG files for the MLflow UI: ROC and precision-recall, confusion matrices, reliability diagram.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas, never through pyplot: no
display is needed, no global figure registry keeps them alive, and a training process (or a thread in one) can draw
without touching the interactive backend state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from medres.evaluation.metrics import calibration_bins
from medres.evaluation.thresholds import as_predictions, labelled

__all__ = ["DPI", "plot_calibration", "plot_confusion", "plot_roc_pr", "safe_name"]

DPI = 110  # sharp in the MLflow artifact viewer without multi-MB files


def safe_name(finding: str) -> str:
    """A finding name usable in a file name (anything but letters, digits, ``-``, ``_`` and ``.`` becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", finding) or "finding"


def plot_roc_pr(
    probs: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    findings: Sequence[str],
    out_dir: str | Path,
    thresholds: Sequence[float] | None = None,
) -> list[Path]:
    """One PNG per finding with its ROC curve and precision-recall curve side by side.

    Args:
        probs: ``(N, F)`` probabilities.
        targets: ``(N, F)`` labels: 1, 0, NaN for unknown (left out).
        findings: ``(F,)`` finding names, used in titles and file names (``roc_pr_<finding>.png``).
        out_dir: Folder to write into (created).
        thresholds: ``(F,)`` operating thresholds to mark on both curves, or None.

    Returns:
        The PNG paths, in finding order.
    """
    p, t = as_predictions(probs, targets)
    _check_findings(findings, p.shape[1], thresholds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for column, finding in enumerate(findings):
        scores, labels = labelled(p, t, column)
        fig = Figure(figsize=(10, 4.6), dpi=DPI)
        roc_ax, pr_ax = fig.subplots(1, 2)
        positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
        fig.suptitle(f"{finding}: {positives} positive, {negatives} negative")
        roc_ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
        if positives and negatives:
            fpr, tpr, _ = roc_curve(labels, scores)
            roc_ax.plot(fpr, tpr, color="C0", label=f"AUROC {roc_auc_score(labels, scores):.3f}")
            precision, recall, _ = precision_recall_curve(labels, scores)
            # A step plot: precision is constant between recall levels, as average precision sums it.
            pr_ax.step(recall, precision, where="post", color="C1")
            pr_ax.lines[-1].set_label(f"AP {average_precision_score(labels, scores):.3f}")
            pr_ax.axhline(positives / len(labels), linestyle=":", color="grey", label="prevalence")
            if thresholds is not None:
                _mark_operating_point(roc_ax, pr_ax, scores, labels, float(thresholds[column]))
        else:
            for ax in (roc_ax, pr_ax):
                ax.text(0.5, 0.5, "needs positive and negative labels", ha="center", va="center")
        roc_ax.set(title="ROC", xlabel="1 - specificity (false-positive rate)", ylabel="sensitivity", xlim=(0, 1))
        pr_ax.set(title="Precision-recall", xlabel="recall (sensitivity)", ylabel="precision (PPV)", xlim=(0, 1))
        for ax in (roc_ax, pr_ax):
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize=9)
        paths.append(_save(fig, out / f"roc_pr_{safe_name(finding)}.png"))
    return paths


def plot_confusion(
    probs: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    findings: Sequence[str],
    thresholds: Sequence[float],
    out_path: str | Path,
) -> Path:
    """A 2×2 confusion matrix per finding at its threshold, counts and row percentages, in one figure.

    Rows are the labels (negative, positive), columns the calls; each row's percentages sum to 100 (the
    specificity and sensitivity sit on the diagonal). Unknown labels are left out.

    Args:
        probs: ``(N, F)`` probabilities.
        targets: ``(N, F)`` labels.
        findings: ``(F,)`` names.
        thresholds: ``(F,)`` operating thresholds.
        out_path: PNG to write.

    Returns:
        ``out_path``.
    """
    p, t = as_predictions(probs, targets)
    _check_findings(findings, p.shape[1], thresholds)
    columns = min(len(findings), 4)
    rows = math.ceil(len(findings) / columns)
    fig = Figure(figsize=(3.4 * columns, 3.3 * rows + 0.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    fig.suptitle("Confusion matrices at the operating thresholds (rows: label, columns: call)")
    for column, (ax, finding) in enumerate(zip(axes, findings, strict=False)):
        scores, labels = labelled(p, t, column)
        called = scores >= scores.dtype.type(thresholds[column])
        matrix = np.array(
            [
                [np.sum(~called & (labels == 0)), np.sum(called & (labels == 0))],
                [np.sum(~called & (labels == 1)), np.sum(called & (labels == 1))],
            ]
        )
        totals = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (row, col), count in np.ndenumerate(matrix):
            colour = "white" if share[row, col] > 0.6 else "black"
            text = f"{count}\n{100 * share[row, col]:.1f}%" if totals[row, 0] else f"{count}\n–"
            ax.text(col, row, text, ha="center", va="center", color=colour, fontsize=11)
        ax.set_xticks([0, 1], ["called −", "called +"])
        ax.set_yticks([0, 1], ["label −", "label +"])
        ax.set_title(f"{finding} (≥ {float(thresholds[column]):.3f})", fontsize=10)
    for ax in axes[len(findings) :]:
        ax.set_axis_off()
    return _save(fig, Path(out_path))


def plot_calibration(
    probs: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    findings: Sequence[str],
    out_path: str | Path,
    bins: int = 10,
) -> Path:
    """Reliability diagram of every finding, with the distribution of predicted probabilities below.

    Each finding's line joins (mean predicted probability, observed share of positives) of its non-empty bins; the
    legend gives its expected calibration error (``medres.evaluation.metrics.calibration_bins``).

    Args:
        probs: ``(N, F)`` probabilities.
        targets: ``(N, F)`` labels.
        findings: ``(F,)`` names.
        out_path: PNG to write.
        bins: Equal-width bins over [0, 1].

    Returns:
        ``out_path``.
    """
    p, t = as_predictions(probs, targets)
    _check_findings(findings, p.shape[1], None)
    fig = Figure(figsize=(6.4, 7.2), dpi=DPI, layout="constrained")
    curve_ax, hist_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    curve_ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    edges = np.linspace(0.0, 1.0, bins + 1)
    for column, finding in enumerate(findings):
        scores, labels = labelled(p, t, column)
        result = calibration_bins(scores.astype(np.float64), labels.astype(np.float64), bins)
        filled = result.counts > 0
        colour = f"C{column % 10}"
        curve_ax.plot(
            result.mean_predicted[filled],
            result.fraction_positive[filled],
            marker="o",
            color=colour,
            label=f"{finding} (ECE {result.ece:.3f})",
        )
        hist_ax.hist(scores, bins=edges, histtype="step", color=colour, linewidth=1.5)
    curve_ax.set(title="Calibration (reliability diagram)", ylabel="observed share of positives", ylim=(-0.02, 1.02))
    curve_ax.legend(loc="upper left", fontsize=9)
    curve_ax.grid(alpha=0.3)
    hist_ax.set(xlabel="predicted probability", ylabel="samples", xlim=(0, 1))
    hist_ax.grid(alpha=0.3)
    return _save(fig, Path(out_path))


def _mark_operating_point(roc_ax: Axes, pr_ax: Axes, scores: np.ndarray, labels: np.ndarray, threshold: float) -> None:
    """Mark ``score >= threshold`` on the ROC (sens, 1 - spec) and PR (recall, precision) axes."""
    called = scores >= scores.dtype.type(threshold)
    positive = labels == 1
    sensitivity = called[positive].mean()
    false_positive_rate = called[~positive].mean()
    label = f"threshold {threshold:.3f}"
    roc_ax.plot([false_positive_rate], [sensitivity], "o", color="C3", markersize=8, label=label)
    if called.any():
        precision = positive[called].mean()
        pr_ax.plot([sensitivity], [precision], "o", color="C3", markersize=8, label=label)


def _check_findings(findings: Sequence[str], columns: int, thresholds: Sequence[float] | None) -> None:
    if len(findings) != columns:
        raise ValueError(f"{len(findings)} finding names for predictions with {columns} columns")
    if thresholds is not None and len(thresholds) != columns:
        raise ValueError(f"{len(thresholds)} thresholds for predictions with {columns} columns")


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # render with Agg whatever backend matplotlib is configured with
    fig.savefig(path, dpi=DPI, format="png")
    return path
