"""What the logged MLflow model is: its artifacts, its code file and its signature.

The model is logged as MLflow "models from code": MLflow stores :data:`MODEL_CODE` (a short file that
builds :class:`medres.scoring.serving.MedresPyfuncModel` from the installed medres) instead of a
cloudpickle, and the weights as a medres package (safetensors + JSON) in the model's ``artifacts/package``.
Loading runs that file and reads the package; nothing of ours is unpickled.

This module is the contract only and imports nothing of scoring: the registry and ``medres score`` import
these names, and the model class itself (which reuses scoring's functions) lives in
:mod:`medres.scoring.serving`. Models logged before medres 0.2 name ``medres.tracking.serving`` in their stored
code; that module stays as an alias.

Input (one row per request item)
    ``path``: a DICOM file for a 2D package; for a 3D package a folder holding one series, or one file of the
    series (its folder is planned and the series holding that file is scored).
    ``pixels``: instead of ``path``, 2D packages only: a (rows, columns) array of floats in modality units
    (Rescale Slope/Intercept applied, MONOCHROME2: bright is dense), i.e. what medres's DICOM reader yields.

Output (same rows, same order)
    ``prob_<finding>`` (float; NaN where the row failed), ``finding_<finding>`` (probability ≥ the package's
    threshold; null where the row failed), ``error`` (null, or ``kind: message``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema, TensorSpec
from mlflow.types.schema import Array

from medres.package import finding_column, probability_column

PACKAGE_ARTIFACT = "package"
PATH_COLUMN = "path"
PIXELS_COLUMN = "pixels"
ERROR_COLUMN = "error"
# A lesion detector's boxes per row: a JSON list of {finding, score, call, x_min, y_min, x_max, y_max} (stored pixels).
BOXES_COLUMN = "boxes"
# The models-from-code file MLflow copies into each logged model and runs to load it. A file path, not an import:
# the model class lives in the scoring stage, above tracking, and only the file's text travels with the model.
MODEL_CODE = Path(__file__).parents[1] / "scoring" / "pyfunc_model.py"


def model_signature(findings: Sequence[str], boxes: bool = False) -> ModelSignature:
    """Inputs: optional ``path`` and ``pixels`` columns. Outputs: probability and call per finding, and ``error``."""
    inputs = Schema(
        [
            ColSpec(DataType.string, PATH_COLUMN, required=False),
            ColSpec(Array(Array(DataType.double)), PIXELS_COLUMN, required=False),
        ]
    )
    outputs: list[ColSpec | TensorSpec] = [ColSpec(DataType.double, probability_column(f)) for f in findings]
    outputs += [ColSpec(DataType.boolean, finding_column(f)) for f in findings]
    if boxes:
        outputs.append(ColSpec(DataType.string, BOXES_COLUMN, required=False))
    outputs.append(ColSpec(DataType.string, ERROR_COLUMN, required=False))
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))
