"""Evaluation of detection outputs: thresholds, metrics with bootstrap CIs, review plots, Grad-CAM, model cards.

Pure functions over numpy arrays (or tensors) and output paths; no MLflow, no Lightning.
"""

from medres.evaluation.thresholds import OperatingPoint, ThresholdRule, as_predictions, choose_thresholds

__all__ = ["OperatingPoint", "ThresholdRule", "as_predictions", "choose_thresholds"]
