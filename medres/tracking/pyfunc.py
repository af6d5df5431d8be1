"""The registered model as an MLflow pyfunc: DICOM paths in, probabilities and findings out.

MLflow stores this class by reference (it lives in medres), and the weights as a medres package
(safetensors + JSON) among the model's artifacts, so loading executes no pickled code of the
model's own. medres itself reads the package directly and never goes through this class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, Schema, TensorSpec

from medres.data.transforms import IMAGE_KEY, eval_transforms
from medres.package import ModelPackage, finding_column, probability_column

PACKAGE_ARTIFACT = "package"
PATH_COLUMN = "path"


def model_signature(findings: list[str]) -> ModelSignature:
    """Input: a ``path`` column of DICOM file paths. Output: a probability and a boolean call per finding."""
    outputs: list[ColSpec | TensorSpec] = [ColSpec("double", probability_column(f)) for f in findings]
    outputs += [ColSpec("boolean", finding_column(f)) for f in findings]
    return ModelSignature(inputs=Schema([ColSpec("string", PATH_COLUMN)]), outputs=Schema(outputs))


class MedresPyfuncModel(PythonModel):
    """Applies the packaged preprocessing and network to DICOM files named in a ``path`` column."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load the medres package from the model's artifacts."""
        self.package = ModelPackage.load(Path(context.artifacts[PACKAGE_ARTIFACT]))
        self.network = self.package.build_model()
        self.transform = eval_transforms(self.package.preprocessing)

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Probabilities and thresholded findings, one row per input path."""
        paths = [str(p) for p in model_input[PATH_COLUMN]]
        probs = torch.zeros((0, len(self.package.findings)))
        if paths:
            with torch.inference_mode():
                images = torch.stack([self.transform({IMAGE_KEY: p})[IMAGE_KEY] for p in paths])
                probs = torch.sigmoid(self.network(images).float())
        calls = probs >= torch.tensor(self.package.thresholds)
        out: dict[str, Any] = {}
        for j, finding in enumerate(self.package.findings):
            out[probability_column(finding)] = probs[:, j].double().numpy()
        for j, finding in enumerate(self.package.findings):
            out[finding_column(finding)] = calls[:, j].numpy()
        return pd.DataFrame(out)
