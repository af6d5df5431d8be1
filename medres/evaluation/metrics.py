"""Per-finding detection metrics with bootstrap confidence intervals, and calibration error.

Point estimates come from scikit-learn. The bootstrap re-weights samples instead of copying them: a resample is a
vector of counts (how often each sample, or each patient's samples, was drawn), and every metric is a weighted
count over the data sorted once. That keeps 1000 resamples of a few hundred samples to milliseconds per finding,
where calling scikit-learn 1000 times would take seconds. Weighted AUROC and average precision here equal
scikit-learn's with ``sample_weight`` set to the counts (the tests check it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from medres.evaluation.thresholds import as_predictions, labelled

__all__ = [
    "CI_METRICS",
    "BootstrapResult",
    "CalibrationBins",
    "EvaluationReport",
    "FindingMetrics",
    "bootstrap_ci",
    "calibration_bins",
    "evaluate",
]

# Metrics that get a bootstrap interval, in table order.
CI_METRICS = ("auroc", "average_precision", "sensitivity", "specificity", "ppv", "npv")

# Bootstrap resamples are weighted in blocks of about this many (resample, sample) cells, to bound memory on large
# validation sets (2e6 float64 cells = 16 MB per array).
_BLOCK_CELLS = 2_000_000


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class CalibrationBins:
    """A reliability diagram's numbers for one finding (equal-width bins over [0, 1]).

    Attributes:
        edges: ``(bins + 1,)`` bin edges.
        counts: ``(bins,)`` labelled samples per bin.
        mean_predicted: ``(bins,)`` mean probability per bin (NaN where empty).
        fraction_positive: ``(bins,)`` share of positives per bin (NaN where empty).
        ece: Expected calibration error: the count-weighted mean of ``|mean_predicted - fraction_positive|``.
    """

    edges: np.ndarray
    counts: np.ndarray
    mean_predicted: np.ndarray
    fraction_positive: np.ndarray
    ece: float


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class BootstrapResult:
    """Percentile intervals of every metric in ``CI_METRICS``, per finding.

    Attributes:
        low: Lower bound per metric, ``(F,)`` each.
        high: Upper bound per metric, ``(F,)`` each.
        skipped: ``(F,)`` resamples left out per finding because they drew a single class of it.
        resamples: Resamples drawn.
        clusters: Units resampled: patients when groups were given, otherwise samples.
        confidence: Coverage of the intervals, e.g. 0.95.
        seed: Seed of the generator.
    """

    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    skipped: np.ndarray
    resamples: int
    clusters: int
    confidence: float
    seed: int


@dataclass(frozen=True)
class FindingMetrics:
    """One finding's metrics at its operating threshold, with bootstrap intervals.

    Rates are NaN where undefined (no positives for sensitivity, no calls for PPV, ...); an interval is
    ``(nan, nan)`` when no resample could estimate it.
    """

    finding: str
    threshold: float
    positives: int
    negatives: int
    unknown: int
    auroc: float
    average_precision: float
    sensitivity: float
    specificity: float
    ppv: float
    npv: float
    ece: float
    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int
    auroc_ci: tuple[float, float] = (math.nan, math.nan)
    average_precision_ci: tuple[float, float] = (math.nan, math.nan)
    sensitivity_ci: tuple[float, float] = (math.nan, math.nan)
    specificity_ci: tuple[float, float] = (math.nan, math.nan)
    ppv_ci: tuple[float, float] = (math.nan, math.nan)
    npv_ci: tuple[float, float] = (math.nan, math.nan)
    bootstrap_skipped: int = 0


@dataclass(frozen=True)
class EvaluationReport:
    """Every finding's metrics on one split, and how the intervals were drawn.

    Attributes:
        findings: Per-finding metrics, in column order.
        samples: Rows evaluated.
        resamples: Bootstrap resamples (0: no intervals).
        clusters: Units resampled (patients when grouped, otherwise samples).
        grouped: Whether resampling was by group (patient) rather than by sample.
        confidence: Interval coverage.
        seed: Bootstrap seed.
        calibration: Reliability-diagram bins per finding, for plots.
    """

    findings: list[FindingMetrics]
    samples: int
    resamples: int
    clusters: int
    grouped: bool
    confidence: float
    seed: int
    calibration: list[CalibrationBins] = field(default_factory=list, repr=False, compare=False)

    def __getitem__(self, finding: str) -> FindingMetrics:
        for metrics in self.findings:
            if metrics.finding == finding:
                return metrics
        raise KeyError(f"no finding {finding!r}; findings are {', '.join(m.finding for m in self.findings)}")

    @property
    def macro_auroc(self) -> float:
        """Mean AUROC over the findings that have one."""
        values = [m.auroc for m in self.findings if not math.isnan(m.auroc)]
        return float(np.mean(values)) if values else math.nan

    def to_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for MLflow: ``{prefix}auroc_nodule``, ``{prefix}auroc_nodule_ci_low``, ...

        Args:
            prefix: Put before every key, e.g. ``"test/"``.

        Returns:
            Metric name to value; undefined values stay NaN (MLflow stores NaN).
        """
        out: dict[str, float] = {}
        for m in self.findings:
            name = m.finding
            for metric in (*CI_METRICS, "ece", "threshold"):
                out[f"{prefix}{metric}_{name}"] = float(getattr(m, metric))
            for metric in CI_METRICS:
                low, high = getattr(m, f"{metric}_ci")
                if self.resamples:
                    out[f"{prefix}{metric}_{name}_ci_low"] = float(low)
                    out[f"{prefix}{metric}_{name}_ci_high"] = float(high)
            for count in ("positives", "negatives", "unknown"):
                out[f"{prefix}{count}_{name}"] = float(getattr(m, count))
            if self.resamples:
                out[f"{prefix}bootstrap_skipped_{name}"] = float(m.bootstrap_skipped)
        out[f"{prefix}auroc_macro"] = self.macro_auroc
        return out


def calibration_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> CalibrationBins:
    """Equal-width reliability bins and the expected calibration error of one finding.

    scikit-learn's ``calibration_curve`` drops empty bins and returns no counts, which the ECE weights by; the
    binning is a few lines of numpy.

    Args:
        probs: ``(n,)`` probabilities of labelled samples.
        labels: ``(n,)`` 0/1 labels.
        bins: Number of bins over [0, 1].

    Returns:
        The bins; all NaN with ECE NaN when there are no samples.
    """
    if bins < 1:
        raise ValueError(f"calibration bins must be at least 1, got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds [edge_i, edge_i+1); a probability of exactly 1.0 goes in the last bin.
    index = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(index, weights=probs, minlength=bins) / counts
        fraction_positive = np.bincount(index, weights=labels, minlength=bins) / counts
    filled = counts > 0
    ece = (
        float(np.sum(counts[filled] * np.abs(mean_predicted[filled] - fraction_positive[filled])) / counts.sum())
        if counts.sum()
        else math.nan
    )
    return CalibrationBins(edges, counts, mean_predicted, fraction_positive, ece)


def bootstrap_ci(
    probs: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    thresholds: Sequence[float],
    groups: Sequence[object] | np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Percentile bootstrap intervals of AUROC, AP, sensitivity, specificity, PPV and NPV for every finding.

    With ``groups`` (one key per row, e.g. the pseudonymous patient key) whole groups are drawn with replacement,
    so several images of one patient move together and do not narrow the interval as if they were independent.
    All findings share the same resamples. A resample that draws a single class of a finding is skipped for that
    finding (``skipped``); a rate undefined in a resample (PPV with no calls) is left out of that rate's interval.

    Args:
        probs: ``(N, F)`` probabilities.
        targets: ``(N, F)`` labels: 1, 0, NaN for unknown.
        thresholds: ``(F,)`` operating thresholds (``prob >= threshold`` is a call).
        groups: ``(N,)`` cluster key per row, or None to resample rows.
        resamples: Number of resamples.
        seed: Seed of the random generator.
        confidence: Interval coverage.

    Returns:
        Lower and upper bounds per metric and finding.
    """
    p, t = as_predictions(probs, targets)
    n, num_findings = p.shape
    if len(thresholds) != num_findings:
        raise ValueError(f"{len(thresholds)} thresholds for {num_findings} findings")
    if resamples < 1:
        raise ValueError(f"bootstrap resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap confidence must be in (0, 1), got {confidence}")
    cluster = _cluster_index(groups, n)
    clusters = int(cluster.max()) + 1 if n else 0

    rng = np.random.default_rng(seed)
    # Drawing `clusters` units with replacement = multinomial counts per unit; a row's weight is its unit's count.
    counts = rng.multinomial(clusters, np.full(clusters, 1.0 / clusters), size=resamples) if clusters else None
    values = {metric: np.full((resamples, num_findings), np.nan) for metric in CI_METRICS}
    skipped = np.zeros(num_findings, dtype=np.int64)
    for column in range(num_findings):
        keep = ~np.isnan(t[:, column])
        scores, labels = p[keep, column], t[keep, column].astype(bool)  # scores keep their precision
        if counts is None or len(scores) == 0:
            skipped[column] = resamples
            continue
        block = max(1, _BLOCK_CELLS // len(scores))
        for start in range(0, resamples, block):
            weights = counts[start : start + block][:, cluster[keep]].astype(np.float64)  # (B, n_labelled)
            for metric, value in _weighted_metrics(scores, labels, float(thresholds[column]), weights).items():
                values[metric][start : start + block, column] = value
        skipped[column] = int(np.isnan(values["auroc"][:, column]).sum())

    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = {}, {}
    for metric, array in values.items():
        bounds = np.full((2, num_findings), np.nan)
        for column in range(num_findings):
            finite = array[:, column][~np.isnan(array[:, column])]
            if len(finite):
                bounds[:, column] = np.percentile(finite, [tail, 100.0 - tail])
        low[metric], high[metric] = bounds[0], bounds[1]
    return BootstrapResult(low, high, skipped, resamples, clusters, confidence, seed)


def evaluate(
    probs: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    findings: Sequence[str],
    thresholds: Sequence[float],
    groups: Sequence[object] | np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    bins: int = 10,
) -> EvaluationReport:
    """Every finding's metrics at its threshold, with bootstrap intervals and calibration error.

    Args:
        probs: ``(N, F)`` probabilities.
        targets: ``(N, F)`` labels: 1, 0, NaN for unknown.
        findings: ``(F,)`` finding names.
        thresholds: ``(F,)`` operating thresholds.
        groups: ``(N,)`` patient key (or other cluster) per row for a clustered bootstrap; None resamples rows.
        resamples: Bootstrap resamples; 0 skips the intervals.
        seed: Bootstrap seed.
        confidence: Interval coverage.
        bins: Calibration bins.

    Returns:
        The report.
    """
    p, t = as_predictions(probs, targets)
    if len(findings) != p.shape[1] or len(thresholds) != p.shape[1]:
        raise ValueError(
            f"{len(findings)} findings and {len(thresholds)} thresholds for predictions with {p.shape[1]} columns"
        )
    ci = bootstrap_ci(p, t, thresholds, groups, resamples, seed, confidence) if resamples else None
    results, calibration = [], []
    for column, (name, threshold) in enumerate(zip(findings, thresholds, strict=True)):
        scores, labels = labelled(p, t, column)
        bins_ = calibration_bins(scores.astype(np.float64), labels.astype(np.float64), bins)
        calibration.append(bins_)
        point = _point_metrics(scores, labels, float(threshold))
        intervals: dict[str, object] = {}
        if ci is not None:
            intervals = {f"{m}_ci": (float(ci.low[m][column]), float(ci.high[m][column])) for m in CI_METRICS}
            intervals["bootstrap_skipped"] = int(ci.skipped[column])
        results.append(
            FindingMetrics(
                finding=name,
                threshold=float(threshold),
                unknown=int(np.isnan(t[:, column]).sum()),
                ece=bins_.ece,
                **point,  # type: ignore[arg-type]
                **intervals,  # type: ignore[arg-type]
            )
        )
    return EvaluationReport(
        findings=results,
        samples=p.shape[0],
        resamples=resamples,
        clusters=ci.clusters if ci else 0,
        grouped=groups is not None,
        confidence=confidence,
        seed=seed,
        calibration=calibration,
    )


def _cluster_index(groups: Sequence[object] | np.ndarray | None, n: int) -> np.ndarray:
    """Row → cluster number (0..G-1); every row its own cluster without groups."""
    if groups is None:
        return np.arange(n)
    keys = np.asarray(groups)
    if keys.shape != (n,):
        raise ValueError(f"bootstrap groups must hold one key per row: {keys.shape} for {n} rows")
    _, index = np.unique(keys, return_inverse=True)
    return index.reshape(-1)


def _ratio(numerator: float | int, denominator: float | int) -> float:
    return float(numerator / denominator) if denominator else math.nan


def finding_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of one finding on its labelled samples; NaN, not 0 or 0.5, where the labels hold one class only.

    The one AUROC of medres (training's epoch metric, held-out evaluation and the review report all call it): a split
    with no positive nodule has no nodule AUROC, and reporting a number would drag a macro mean for a lucky split.

    Args:
        scores: Probabilities of the finding.
        labels: 1 or 0 for each score (unknown and uncertain samples already left out).
    """
    both = bool((labels == 1).any() and (labels == 0).any())
    return float(roc_auc_score(labels, scores)) if both else math.nan


def _point_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float | int]:
    """Unweighted metrics of one finding on its labelled samples (scikit-learn for AUROC and AP)."""
    positive = labels == 1
    called = scores >= scores.dtype.type(threshold)  # the comparison scoring makes, in the probabilities' precision
    tp, fp = int((called & positive).sum()), int((called & ~positive).sum())
    fn, tn = int((~called & positive).sum()), int((~called & ~positive).sum())
    both = tp + fn > 0 and fp + tn > 0
    return {
        "positives": tp + fn,
        "negatives": fp + tn,
        "auroc": finding_auroc(scores, labels),
        "average_precision": float(average_precision_score(labels, scores)) if both else math.nan,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "true_positives": tp,
        "false_positives": fp,
        "true_negatives": tn,
        "false_negatives": fn,
    }


def _weighted_metrics(
    scores: np.ndarray, labels: np.ndarray, threshold: float, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Every ``CI_METRICS`` value of one finding for a block of resamples.

    Args:
        scores: ``(n,)`` probabilities of the labelled samples.
        labels: ``(n,)`` booleans, True for positive.
        threshold: Operating threshold.
        weights: ``(B, n)`` draw counts per resample.

    Returns:
        ``(B,)`` per metric, NaN where a resample cannot define it (a single class: every metric NaN).
    """
    order = np.argsort(scores, kind="stable")  # ascending
    sorted_scores = scores[order]
    pos_w = weights[:, order] * labels[order]  # (B, n)
    neg_w = weights[:, order] * ~labels[order]
    # Tied scores form one cut point: sum the weights of each run of equal scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    pos_u = np.add.reduceat(pos_w, starts, axis=1)  # (B, U), unique scores ascending
    neg_u = np.add.reduceat(neg_w, starts, axis=1)
    total_pos, total_neg = pos_u.sum(axis=1), neg_u.sum(axis=1)
    valid = (total_pos > 0) & (total_neg > 0)

    with np.errstate(invalid="ignore", divide="ignore"):
        # AUROC (Mann-Whitney): each positive beats the negatives below its score and half-ties those at it.
        neg_below = np.cumsum(neg_u, axis=1) - neg_u
        auroc = (pos_u * (neg_below + 0.5 * neg_u)).sum(axis=1) / (total_pos * total_neg)
        # Average precision as scikit-learn defines it: sum over cut points (high to low) of the recall gained times
        # the precision there. At a unique score s the cut `score >= s` keeps everything from s upwards.
        tp_at = total_pos[:, None] - (np.cumsum(pos_u, axis=1) - pos_u)  # (B, U)
        fp_at = total_neg[:, None] - (np.cumsum(neg_u, axis=1) - neg_u)
        precision = np.where(tp_at + fp_at > 0, tp_at / (tp_at + fp_at), 0.0)
        average_precision = (pos_u / total_pos[:, None] * precision).sum(axis=1)

        called = scores[order] >= scores.dtype.type(threshold)
        tp, fp = pos_w[:, called].sum(axis=1), neg_w[:, called].sum(axis=1)
        fn, tn = total_pos - tp, total_neg - fp
        out = {
            "auroc": auroc,
            "average_precision": average_precision,
            "sensitivity": tp / total_pos,
            "specificity": tn / total_neg,
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }
    for value in out.values():
        value[~valid] = np.nan
    return out
