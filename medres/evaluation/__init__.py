"""Evaluation of detection outputs: thresholds, metrics with bootstrap CIs, review plots, Grad-CAM, model cards.

Pure functions over numpy arrays (or tensors) and output paths; no MLflow, no Lightning. Targets are ``(N, F)``
with 1 positive, 0 negative and NaN unknown (left out for that finding); probabilities ``(N, F)`` in [0, 1].

The plotting modules are not imported here, so that importing thresholds or metrics (as the training task does)
does not load matplotlib: use ``medres.evaluation.plots`` and ``medres.evaluation.gradcam`` directly.
"""

from medres.evaluation.metrics import (
    CI_METRICS,
    BootstrapResult,
    CalibrationBins,
    EvaluationReport,
    FindingMetrics,
    bootstrap_ci,
    calibration_bins,
    evaluate,
)
from medres.evaluation.model_card import render_model_card
from medres.evaluation.thresholds import OperatingPoint, ThresholdRule, as_predictions, choose_thresholds

__all__ = [
    "CI_METRICS",
    "BootstrapResult",
    "CalibrationBins",
    "EvaluationReport",
    "FindingMetrics",
    "OperatingPoint",
    "ThresholdRule",
    "as_predictions",
    "bootstrap_ci",
    "calibration_bins",
    "choose_thresholds",
    "evaluate",
    "render_model_card",
]
