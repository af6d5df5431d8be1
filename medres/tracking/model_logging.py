"""Log a model package to an MLflow run as a pyfunc model and register it as a new version."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
from mlflow.models.model import ModelInfo

import medres
from medres.package import ModelPackage
from medres.tracking.pyfunc import MODEL_CODE, PACKAGE_ARTIFACT, model_signature

MODEL_ARTIFACT = "model"
CONFIG_ARTIFACT = "config.yaml"


def log_model_package(
    package: ModelPackage, run_id: str, tracking_uri: str, registered_model_name: str | None = None
) -> ModelInfo:
    """Log ``package`` as the run's MLflow model (a pyfunc) and optionally register a new version.

    The pyfunc is logged as "models from code" (:data:`~medres.tracking.pyfunc.MODEL_CODE`), not as a
    cloudpickle, so loading it unpickles nothing of ours; the weights travel as the medres package
    (safetensors + JSON) in the model's ``artifacts/package``.

    Args:
        package: Weights and contract to log.
        run_id: The fit's run.
        tracking_uri: Store holding the run.
        registered_model_name: Registry name for a new version; ``None`` logs without registering.
    """
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
        package_dir = package.save(Path(tmp) / PACKAGE_ARTIFACT)
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(MODEL_CODE),
            artifacts={PACKAGE_ARTIFACT: str(package_dir)},
            signature=model_signature(package.findings, boxes=package.is_detector),
            # Given explicitly: inferring them would import-trace the model, slow and network-prone.
            pip_requirements=[f"medres=={medres.__version__}"],
            metadata={"medres": {k: v for k, v in package.contract().items() if k != "training_config"}},
            registered_model_name=registered_model_name,
        )
