"""Lesion localisation end to end (issue 18): a public layout → import → `medres fit` → run, registry → score.

Real CLI in subprocesses, a real SQLite MLflow store, synthetic archives in the RSNA Pneumonia and VinDr-CXR layouts
(the acceptance runs of the issue, at the CPU profile's settings on fewer images).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from medres.evaluation.detection_metrics import ImageBoxes, detection_metrics
from medres.lifecycle.evaluate import HeldOutData, load_held_out, package_detections
from medres.package import ModelPackage
from medres.scoring.sr import read_study_boxes
from medres.tracking.registry import load_model

from .scoring.orthanc import requires_orthanc, running_orthanc
from .scoring.test_dicomweb import CREDENTIALS, _srs_in
from .scoring.test_sr import dciodvfy_errors
from .test_end_to_end import medres

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CORNERS = ["x_min", "y_min", "x_max", "y_max"]


def fit_boxes(root: Path, boxes: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return medres(
        "fit",
        "--config",
        str(REPO / "configs/cxr_boxes.yaml"),
        "--config",
        str(REPO / "configs/profiles/cpu_boxes.yaml"),
        "--data.root",
        str(root),
        "--data.boxes",
        str(boxes),
        "--model.bootstrap_resamples",
        "100",
        *extra,
        cwd=cwd,
    )


def only_run(work: Path, experiment: str = "cxr_boxes"):
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


@pytest.fixture(scope="module")
def rsna(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("rsna")
    medres("synth", "rsna-pneumonia", "--out", "release", "--patients", "160", "--image_size", "192", cwd=work)
    medres("labels", "import", "rsna-pneumonia", "release", "--out", "labels", cwd=work)
    result = fit_boxes(work / "release", work / "labels/boxes.csv", work)
    return {"work": work, "logs": result.stdout + result.stderr}


def test_rsna_fit_reaches_the_acceptance_metrics_with_cis(rsna):
    client, run = only_run(rsna["work"])
    metrics = run.data.metrics
    # The acceptance: test sensitivity at 1 FP/image ≥ 0.85 and mAP@0.1 ≥ 0.7 for the boxed finding.
    assert metrics["test/sens_at_1fp/lung_opacity"] >= 0.85
    assert metrics["test/map_0.1/lung_opacity"] >= 0.7
    for name in ("sens_at_1fp", "map_0.1", "cpm"):
        low, high = metrics[f"test/{name}/lung_opacity_ci_low"], metrics[f"test/{name}/lung_opacity_ci_high"]
        assert (
            low <= metrics[f"test/{name}/lung_opacity"] + 1e-9 and high >= metrics[f"test/{name}/lung_opacity"] - 1e-9
        )
        assert 0.0 <= low <= high <= 1.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "review")}
    assert {"review/froc_lung_opacity.png", "review/box_montage.png", "review/model_card.md"} <= artifacts
    card = Path(client.download_artifacts(run.info.run_id, "review/model_card.md", str(rsna["work"]))).read_text()
    assert "CPM" in card and "mAP@0.1" in card and "lung_opacity" in card


def test_registered_detector_carries_box_contract_and_threshold(rsna):
    mlflow.set_tracking_uri(f"sqlite:///{rsna['work'] / 'mlflow.db'}")
    try:
        path = mlflow.artifacts.download_artifacts("models:/cxr_boxes/1", dst_path=str(rsna["work"] / "model"))
    finally:
        mlflow.set_tracking_uri(None)
    contract = json.loads((Path(path) / "artifacts/package/package.json").read_text())
    assert contract["format_version"] == 3 and contract["threshold_fp_rate"] == 0.25
    assert contract["detector"]["boxes"].startswith("x_min, y_min, x_max, y_max: stored-pixel edges")
    package = ModelPackage.load(Path(path) / "artifacts/package")
    assert package.is_detector and 0.0 < package.thresholds[0] <= 1.0


def test_score_writes_box_rows_in_stored_pixels_and_every_file_once(rsna):
    work = rsna["work"]
    env_uri = f"sqlite:///{work / 'mlflow.db'}"
    medres(
        "score",
        "--model",
        "models:/cxr_boxes/1",
        "--input",
        "release",
        "--output",
        "preds.parquet",
        "--tracking_uri",
        env_uri,
        "--num_workers",
        "0",
        "--progress",
        "false",
        cwd=work,
    )
    predictions = pd.read_parquet(work / "preds.parquet")
    ledger = pd.read_parquet(work / "preds.errors.parquet")
    boxes = pd.read_parquet(work / "preds.boxes.parquet")
    files = {p.relative_to(work / "release").as_posix() for p in (work / "release").rglob("*") if p.is_file()}
    assert set(predictions["path"]) | set(ledger["path"]) == files
    assert not set(predictions["path"]) & set(ledger["path"]) and len(predictions) + len(ledger) == len(files)
    # The image-level probability is the top box score of the image.
    top = boxes.groupby("path")["score"].max()
    joined = predictions.set_index("path")["prob_lung_opacity"]
    assert np.allclose(joined.loc[top.index], top, atol=1e-6)
    assert (joined.drop(top.index) == 0).all()
    threshold = ModelPackage.load(Path(next((work / "model").rglob("package.json")).parent)).thresholds[0]
    assert (boxes["call"] == (boxes["score"] >= np.float32(threshold))).all()
    # Boxes come back in the stored image's pixels: they find the true boxes there (train images included).
    truth = pd.read_csv(work / "labels/boxes.csv")
    images = []
    for path, group in truth.groupby("path"):
        predicted = boxes[boxes["path"] == path]
        images.append(
            ImageBoxes(
                group.dropna(subset=["x_min"])[CORNERS].to_numpy(float),
                predicted[CORNERS].to_numpy(float),
                predicted["score"].to_numpy(float),
            )
        )
    scored = detection_metrics(images)
    assert scored["sens_at_1fp"] >= 0.85 and scored["map_0.1"] >= 0.7


def test_pyfunc_returns_the_scored_boxes(rsna):
    work = rsna["work"]
    boxes = pd.read_parquet(work / "preds.boxes.parquet")
    path = boxes.sort_values("score", ascending=False)["path"].iloc[0]
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model("models:/cxr_boxes/1")
    finally:
        mlflow.set_tracking_uri(None)
    out = model.predict(pd.DataFrame({"path": [str(work / "release" / path), str(work / "nope.dcm")]}))
    served = json.loads(out["boxes"].iloc[0])
    expected = boxes[boxes["path"] == path].sort_values("box")
    assert len(served) == len(expected)
    assert np.allclose([[b[c] for c in CORNERS] for b in served], expected[CORNERS].to_numpy(), atol=1e-3)
    assert np.allclose([b["score"] for b in served], expected["score"], atol=1e-6)
    assert pd.isna(out["boxes"].iloc[1]) and out["error"].iloc[1].startswith("unreadable")


def test_vindr_three_readers_consensus_fit(tmp_path):
    medres("synth", "vindr-cxr", "--out", "release", "--images", "200", "--readers_per_image", "3", cwd=tmp_path)
    medres("labels", "import", "vindr-cxr", "release", "--out", "labels", cwd=tmp_path)
    findings = "[cardiomegaly, lung_opacity, nodule_mass, pleural_effusion]"
    fit_boxes(
        tmp_path / "release",
        tmp_path / "labels/boxes.csv",
        tmp_path,
        "--data.findings",
        findings,
        "--data.merge.kind",
        "consensus",
        "--data.merge.min_readers",
        "2",
        "--register.model_name",
        "vindr_boxes",
    )
    _, run = only_run(tmp_path)
    metrics = run.data.metrics
    assert metrics["test/sens_at_1fp/lung_opacity"] >= 0.85
    assert metrics["test/map_0.1/lung_opacity"] >= 0.7
    assert "test/map_0.1/lung_opacity_ci_low" in metrics
    # Every finding the test split holds has its metrics logged.
    assert {f"test/cpm/{f}" for f in ("cardiomegaly", "lung_opacity", "pleural_effusion")} <= set(metrics)


@requires_orthanc
def test_pacs_gets_one_sr_per_study_with_the_called_boxes(rsna, tmp_path):
    """The acceptance's SR: a study scored from the PACS by the trained detector, stored back, valid, idempotent."""
    work = rsna["work"]
    called = pd.read_parquet(work / "preds.boxes.parquet").query("call")
    chosen = sorted(called["path"].unique())[:4]  # studies with called boxes (one image per RSNA study)
    with running_orthanc(tmp_path / "orthanc") as pacs:
        pacs.upload([work / "release" / p for p in chosen])
        env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **CREDENTIALS}
        command = [sys.executable, "-m", "medres.cli", "score", "--model", "models:/cxr_boxes/1", "--input",
                   pacs.dicomweb, "--output", str(tmp_path / "pacs/preds.parquet"), "--tracking_uri",
                   f"sqlite:///{work / 'mlflow.db'}", "--num_workers", "0",
                   "--sr_dir", str(tmp_path / "sr")]  # fmt: skip

        def score() -> None:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]

        score()
        srs = _srs_in(pacs)
        assert len(srs) == len(chosen) and pacs.count_instances() == 2 * len(chosen)
        boxes = pd.read_parquet(tmp_path / "pacs/preds.boxes.parquet").query("call")
        for sr in srs:
            mine = boxes[boxes["StudyInstanceUID"] == sr.StudyInstanceUID].sort_values("box")
            stated = read_study_boxes(sr, ["lung_opacity"])
            assert len(stated) == len(mine) > 0
            for box, row in zip(sorted(stated, key=lambda b: b.box), mine.itertuples(), strict=True):
                assert box.sop_instance_uid == row.SOPInstanceUID
                np.testing.assert_allclose(box.corners, [row.x_min, row.y_min, row.x_max, row.y_max], atol=1e-3)
            path = tmp_path / "sr" / sr.StudyInstanceUID / f"{sr.SOPInstanceUID}.dcm"
            assert dciodvfy_errors(path) == []
        score()  # a rerun adds none
        assert pacs.count_instances() == 2 * len(chosen)


def test_two_process_ddp_fit_judges_every_test_image(tmp_path):
    """Under DDP each rank sees half the test split; the logged FROC and mAP must be those of all of it."""
    medres("synth", "rsna-pneumonia", "--out", "release", "--patients", "60", "--image_size", "128", cwd=tmp_path)
    medres("labels", "import", "rsna-pneumonia", "release", "--out", "labels", cwd=tmp_path)
    fit_boxes(
        tmp_path / "release",
        tmp_path / "labels/boxes.csv",
        tmp_path,
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.max_epochs",
        "4",
        "--data.split_fractions",
        "[0.5, 0.2, 0.3]",
        "--trainer.default_root_dir",
        "work",
        "--data.work_dir",
        "datawork",
    )
    _, run = only_run(tmp_path)
    logged = run.data.metrics
    package = load_model("models:/cxr_boxes/1", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").package
    held_out = HeldOutData(root=tmp_path / "release", boxes=tmp_path / "labels/boxes.csv",
                           work_dir=tmp_path / "datawork", split_fractions=(0.5, 0.2, 0.3))  # fmt: skip
    samples = load_held_out(held_out, package)
    assert samples.fingerprint.samples == 18  # 30 % of 60 patients, one image each
    (images,) = package_detections(package, samples, held_out)
    offline = detection_metrics(images)
    for name in ("cpm", "map_0.1", "sens_at_1fp"):
        assert logged[f"test/{name}/lung_opacity"] == pytest.approx(offline[name], abs=1e-6), name
