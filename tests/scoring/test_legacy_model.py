"""A model registered by medres 0.1 (before the stage packages) still loads, serves and scores.

``tests/fixtures/pyfunc_medres_0_1`` is the MLflow model folder that medres 0.1's ``log_model_package`` wrote (a
seeded ResNet-10 for two findings at 32 px). Its stored code says ``from medres.tracking.serving import
MedresPyfuncModel``: the alias module must keep that working.
"""

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from medres.package import ModelPackage
from medres.scoring import score_archive
from medres.tracking.defaults import default_artifact_location

from ..conftest import dicom_files

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pyfunc_medres_0_1"


def test_the_fixture_was_logged_by_the_old_layout():
    code = (FIXTURE / "pyfunc_model.py").read_text()
    assert "from medres.tracking.serving import MedresPyfuncModel" in code


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh SQLite registry holding the fixture as ``legacy`` version 1; returns the store URI."""
    root = tmp_path_factory.mktemp("legacy_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    model_dir = root / "model"
    shutil.copytree(FIXTURE, model_dir)
    client = MlflowClient(uri)
    client.create_experiment("legacy", artifact_location=default_artifact_location(uri))
    client.create_registered_model("legacy")
    client.create_model_version("legacy", source=model_dir.as_uri())
    return uri


def test_old_model_serves_through_its_stored_code(tiny_archive, registered):
    files = [str(p) for p in dicom_files(tiny_archive)[:6]]
    model = mlflow.pyfunc.load_model(str(FIXTURE))
    out = model.predict(pd.DataFrame({"path": files}))
    assert out["error"].isna().all()
    probs = out[["prob_nodule", "prob_effusion"]].to_numpy()
    assert probs.shape == (6, 2) and np.isfinite(probs).all()
    assert probs.std(axis=0).min() > 0  # a real network on real images, not a constant
    # The same package through the current scoring path gives the same probabilities.
    package = ModelPackage.load(FIXTURE / "artifacts" / "package")
    assert package.findings == ["nodule", "effusion"]


def test_old_model_scores_an_archive_from_the_registry(tiny_archive, registered, tmp_path):
    summary = score_archive(
        "models:/legacy/1",
        tiny_archive,
        tmp_path / "preds.parquet",
        num_workers=0,
        tracking_uri=registered,
        progress=False,
        log_mlflow=False,
    )
    # Every file once: the DICOM images scored, labels.csv in the ledger as not DICOM.
    assert summary.files == len([p for p in tiny_archive.rglob("*") if p.is_file()])
    assert summary.scored_files == len(dicom_files(tiny_archive)) and summary.error_kinds == {"not_dicom": 1}
    rows = pd.read_parquet(tmp_path / "preds.parquet").set_index("path")
    served = mlflow.pyfunc.load_model(str(FIXTURE)).predict(
        pd.DataFrame({"path": [str(tiny_archive / p) for p in rows.index[:6]]})
    )
    np.testing.assert_allclose(
        served["prob_effusion"].to_numpy(), rows["prob_effusion"].to_numpy()[:6], rtol=0, atol=1e-6
    )
    assert rows["model_name"].unique().tolist() == ["legacy"] and rows["model_version"].unique().tolist() == ["1"]
