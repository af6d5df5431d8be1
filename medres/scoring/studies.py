"""Study-level results: a study's prediction rows (instances or series) aggregated into one row per study."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd

from medres.data.samples import N_INSTANCES
from medres.package import finding_column, probability_column

Aggregation = Literal["max", "mean"]
STUDY_KEY = "StudyInstanceUID"


def aggregate_studies(
    predictions: pd.DataFrame,
    findings: Sequence[str],
    thresholds: Sequence[float],
    method: Aggregation = "max",
) -> pd.DataFrame:
    """One row per study: the study's probabilities aggregated over its scored rows, and the calls they make.

    ``max`` says "some image of the study shows it" (the usual reading rule: one view is enough); ``mean``
    smooths a single noisy image out. Calls are re-made on the aggregated probability with the same
    operating thresholds as the rows, so a study's call is never an OR of instance calls.

    Args:
        predictions: Prediction rows (see :func:`medres.scoring.writers.prediction_schema`): ``StudyInstanceUID``,
            ``prob_<finding>`` per finding, ``model_name``, ``model_version``; series rows (3D models) carry
            ``n_instances``, which is summed.
        findings: Label names, in the order of ``thresholds``.
        thresholds: Operating threshold per finding.
        method: ``max`` or ``mean`` over a study's rows.

    Returns:
        Columns ``StudyInstanceUID``, ``n_instances`` (input files scored for the study), ``prob_<finding>``
        (float32), ``finding_<finding>`` (bool), ``model_name``, ``model_version``; sorted by study UID.
        Rows without a study UID are left out: they cannot be attributed to a study.

    Raises:
        ValueError: ``method`` is unknown, ``thresholds`` does not match ``findings``, a column is missing, or
            one study was scored by two model versions (the aggregate would mix them).
    """
    if method not in ("max", "mean"):
        raise ValueError(f"study aggregation method {method!r}: expected 'max' or 'mean'")
    if len(thresholds) != len(findings):
        raise ValueError(f"{len(thresholds)} threshold(s) for {len(findings)} finding(s): one per finding")
    probs = [probability_column(f) for f in findings]
    missing = [c for c in [STUDY_KEY, *probs, "model_name", "model_version"] if c not in predictions.columns]
    if missing:
        raise ValueError(f"prediction rows lack column(s) {missing}")
    rows = predictions[predictions[STUDY_KEY].notna()]
    models = rows.groupby(STUDY_KEY, sort=True)[["model_name", "model_version"]].nunique()
    mixed = models.index[(models > 1).any(axis=1)]
    if len(mixed):
        raise ValueError(f"{len(mixed)} study(ies) scored by more than one model version; aggregate each separately")
    grouped = rows.groupby(STUDY_KEY, sort=True)
    result = grouped[probs].agg(method).astype("float32")
    counts = grouped[N_INSTANCES].sum() if N_INSTANCES in rows.columns else grouped.size()
    result.insert(0, N_INSTANCES, counts.astype("int64"))
    for finding, threshold in zip(findings, thresholds, strict=True):
        result[finding_column(finding)] = result[probability_column(finding)] >= threshold
    result[["model_name", "model_version"]] = grouped[["model_name", "model_version"]].first()
    return result.reset_index()
