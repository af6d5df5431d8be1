"""3D lesion localisation end to end (issue 18): LUNA16 layout → import → `medres fit` (CPU profile) → score in mm.

Real CLI in subprocesses and a real SQLite MLflow store; the acceptance of the issue (CPM ≥ 0.6 on a synthetic CT
archive with nodules in LUNA16 layout) at the CPU profile's settings on fewer scans and epochs.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from medres.evaluation.detection_metrics import HitRule, ImageBoxes, froc

from .test_end_to_end import medres

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CORNERS = ["x_min", "y_min", "z_min", "x_max", "y_max", "z_max"]


@pytest.fixture(scope="module")
def nodules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("luna")
    medres("synth", "luna16", "--out", "release", "--scans", "60", "--seed", "0", cwd=work)
    medres("labels", "import", "luna16", "release", "--out", "labels", cwd=work)
    medres(
        "fit",
        "--config",
        str(REPO / "configs/ct_nodules.yaml"),
        "--config",
        str(REPO / "configs/profiles/cpu_nodules.yaml"),
        "--data.root",
        "release",
        "--data.boxes",
        "labels/boxes.csv",
        "--trainer.max_epochs",
        "14",
        "--model.bootstrap_resamples",
        "100",
        cwd=work,
    )
    return work


def test_fit_reaches_cpm_with_luna16_hit_rule(nodules: Path) -> None:
    client = MlflowClient(f"sqlite:///{nodules / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ct_nodules")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    metrics = run.data.metrics
    assert metrics["test/cpm/nodule"] >= 0.6, metrics
    assert metrics["test/cpm/nodule_ci_low"] <= metrics["test/cpm/nodule"] <= metrics["test/cpm/nodule_ci_high"]
    assert run.data.params["model.hit_kind"] == "centre"


def test_score_reports_series_boxes_in_patient_mm(nodules: Path) -> None:
    medres("score", "--model", "models:/ct_nodules/1", "--input", "release", "--output", "preds.parquet",
           "--tracking_uri", f"sqlite:///{nodules / 'mlflow.db'}", "--num_workers", "0", "--progress", "false",
           cwd=nodules)  # fmt: skip
    predictions = pd.read_parquet(nodules / "preds.parquet")
    ledger = pd.read_parquet(nodules / "preds.errors.parquet")
    boxes = pd.read_parquet(nodules / "preds.boxes.parquet")
    files = {p.relative_to(nodules / "release").as_posix() for p in (nodules / "release").rglob("*") if p.is_file()}
    # Every input file once: a series row stands for its n_instances files; the rest are in the ledger.
    assert int(predictions["n_instances"].sum()) + len(ledger) == len(files)
    assert boxes["SOPInstanceUID"].isna().all() and set(CORNERS) <= set(boxes.columns)
    # The boxes are in patient mm: scored against the LUNA16 truth with its own hit rule, the whole archive's FROC
    # (training scans included) finds most nodules.
    truth = pd.read_csv(nodules / "labels/boxes.csv")
    images = []
    for uid, group in truth.groupby("SeriesInstanceUID"):
        predicted = boxes[boxes["SeriesInstanceUID"] == uid]
        images.append(
            ImageBoxes(
                group.dropna(subset=["x_min"])[CORNERS].to_numpy(float),
                predicted[CORNERS].to_numpy(float),
                predicted["score"].to_numpy(float),
            )
        )
    assert froc(images, HitRule("centre")).cpm >= 0.6
    top = boxes.groupby("SeriesInstanceUID")["score"].max()
    scored = predictions.set_index("SeriesInstanceUID")["prob_nodule"]
    assert np.allclose(scored.loc[top.index], top, atol=1e-6)


def test_pyfunc_returns_the_series_boxes_in_mm(nodules: Path) -> None:
    import json

    import mlflow

    boxes = pd.read_parquet(nodules / "preds.boxes.parquet")
    top = boxes.sort_values("score", ascending=False).iloc[0]
    folder = (nodules / "release" / top["path"]).parent
    mlflow.set_tracking_uri(f"sqlite:///{nodules / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model("models:/ct_nodules/1")
    finally:
        mlflow.set_tracking_uri(None)
    out = model.predict(pd.DataFrame({"path": [str(folder)]}))
    served = json.loads(out["boxes"].iloc[0])
    expected = boxes[boxes["SeriesInstanceUID"] == top["SeriesInstanceUID"]].sort_values("box")
    assert len(served) == len(expected)
    np.testing.assert_allclose([[b[c] for c in CORNERS] for b in served], expected[CORNERS].to_numpy(), atol=1e-3)
