"""The spine, end to end on a tiny archive: synth → fit → MLflow run + registered model → score.

Runs the real CLI in subprocesses with a real SQLite MLflow store, as a user would.
"""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from medres.package import ModelPackage

from .conftest import RUN_TO_RUN, add_broken_files, dicom_files, find_identifying, identifying_values

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 2
TINY = [
    "--data.preprocessing.spatial_size",
    "[32, 32]",
    "--trainer.max_epochs",
    str(EPOCHS),
    "--model.scheduler.init_args.T_max",
    str(EPOCHS),
    "--data.batch_size",
    "8",
    "--data.num_workers",
    "0",
]


def medres(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "medres.cli", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"medres {args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def fit(
    archive: Path, cwd: Path, env: dict[str, str] | None = None, extra: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return medres(
        "fit",
        "--config",
        str(REPO / "configs/chest_xray.yaml"),
        "--config",
        str(REPO / "configs/profiles/cpu_demo.yaml"),
        "--data.root",
        str(archive),
        *TINY,
        *(extra or []),
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def fitted(planted_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One fit with no MLFLOW_TRACKING_URI: the store must default to ./mlflow.db in the working directory.

    The archive carries identifying values in extra header fields (see ``planted_archive``).
    """
    work = tmp_path_factory.mktemp("fit")
    result = fit(planted_archive, work)
    return {"work": work, "uri": f"sqlite:///{work / 'mlflow.db'}", "logs": result.stdout + result.stderr}


def the_run(client: MlflowClient):
    experiment = client.get_experiment_by_name("chest_xray")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "every fit is exactly one MLflow run"
    return runs[0]


def test_fit_defaults_to_a_local_sqlite_store(fitted):
    assert (fitted["work"] / "mlflow.db").is_file()
    assert (fitted["work"] / "mlartifacts").is_dir()


def test_run_holds_config_params_metrics_checkpoint(fitted):
    client = MlflowClient(fitted["uri"])
    run = the_run(client)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.backbone"] == "resnet18"
    assert params["data.batch_size"] == "8"
    assert params["trainer.max_epochs"] == str(EPOCHS)
    config_text = client.download_artifacts(run.info.run_id, "config.yaml", str(fitted["work"]))
    assert "backbone: resnet18" in Path(config_text).read_text()
    for name in ("val/auroc_macro", "val/loss", "train/loss_epoch", "val/auroc_nodule"):
        history = client.get_metric_history(run.info.run_id, name)
        assert len(history) == EPOCHS, name
    for name in ("test/auroc_macro", "test/loss"):
        assert name in run.data.metrics
    assert 0.0 <= run.data.metrics["test/auroc_macro"] <= 1.0
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    best = [path for path in artifacts if path.startswith("best")]
    assert len(best) == 1, artifacts
    files = [a.path for a in client.list_artifacts(run.info.run_id, best[0])]
    assert f"{best[0]}/{best[0]}.ckpt" in files


def test_fit_registers_a_model_version_with_contract(fitted):
    client = MlflowClient(fitted["uri"], registry_uri=fitted["uri"])
    run = the_run(client)
    versions = client.search_model_versions("name='chest_xray'")
    assert [str(v.version) for v in versions] == ["1"]
    assert versions[0].run_id == run.info.run_id
    mlflow.set_tracking_uri(fitted["uri"])
    model_info = mlflow.models.get_model_info("models:/chest_xray/1")
    outputs = [spec.name for spec in model_info.signature.outputs.inputs]
    assert "prob_nodule" in outputs and "finding_pneumothorax" in outputs
    contract = model_info.metadata["medres"]
    assert contract["findings"] == ["nodule", "effusion", "cardiomegaly", "pneumothorax"]
    assert contract["preprocessing"]["spatial_size"] == [32, 32]


def test_score_every_file_once_and_nothing_identifying(fitted, tiny_archive, planted_archive, archive_copy, tmp_path):
    add_broken_files(archive_copy)
    output = tmp_path / "out" / "preds.parquet"
    result = medres(
        "score",
        "--model",
        "models:/chest_xray/latest",
        "--input",
        str(archive_copy),
        "--output",
        str(output),
        "--num_workers",
        "0",
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": fitted["uri"]},
    )
    predictions = pd.read_parquet(output)
    errors = pd.read_parquet(output.with_suffix(".errors.parquet"))
    dicoms = {p.relative_to(archive_copy).as_posix() for p in dicom_files(archive_copy)}
    good = dicoms - {"junk.dcm", "patient_9999/truncated.dcm"}
    assert set(predictions["path"]) == good and len(predictions) == len(good)
    kinds = dict(zip(errors["path"], errors["kind"], strict=True))
    assert kinds == {"junk.dcm": "not_dicom", "patient_9999/truncated.dcm": "truncated", "labels.csv": "not_dicom"}
    assert set(predictions["model_version"]) == {"1"} and set(predictions["model_name"]) == {"chest_xray"}
    assert predictions["prob_nodule"].between(0, 1).all()
    assert predictions["SOPInstanceUID"].notna().all() and predictions["StudyInstanceUID"].notna().all()

    # Privacy: no identifying value anywhere in the store, artifacts, work files, outputs or logs.
    secrets = identifying_values(tiny_archive) | identifying_values(planted_archive)
    assert len(secrets) > 10 + 4 * 12
    leaks = find_identifying(
        secrets,
        [fitted["work"], output.parent],
        [fitted["logs"], result.stdout, result.stderr],
        tmp_path / "scan",
    )
    assert leaks == []
    # and the scan does find a value where one is
    planted = tmp_path / "planted"
    planted.mkdir()
    predictions.assign(note=sorted(secrets)[0]).to_parquet(planted / "leaky.parquet")
    assert find_identifying(secrets, [planted], [], tmp_path / "scan2")


# Lightning's cloud-service tips (issue 21, item 6): what a user sees must not invite them to upload anywhere.
ADVERTS = ("litlogger", "litmodels", "Lightning Experiments", "💡")


def test_fit_and_score_print_no_advert(fitted, tiny_archive, tmp_path):
    scored = medres(
        "score",
        "--model",
        "models:/chest_xray/1",
        "--input",
        str(tiny_archive),
        "--output",
        str(tmp_path / "preds.parquet"),
        "--num_workers",
        "0",
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": fitted["uri"]},
    )
    assert len(pd.read_parquet(tmp_path / "preds.parquet")) == len(dicom_files(tiny_archive))
    # The fit did run Lightning (its device lines are there), so the check is on real Trainer output.
    assert "GPU available" in fitted["logs"]
    for name, text in (("fit", fitted["logs"]), ("score", scored.stdout + scored.stderr)):
        shown = [line for line in text.splitlines() if any(word in line for word in ADVERTS)]
        assert shown == [], f"medres {name} printed: {shown}"


def test_same_seed_same_split_and_metrics(tiny_archive, fitted, tmp_path):
    fit(tiny_archive, tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'again.db'}"})
    first = next((fitted["work"] / "medres_work").glob("*/splits.csv")).read_text()
    second = next((tmp_path / "medres_work").glob("*/splits.csv")).read_text()
    assert first == second
    metrics = []
    for uri in (fitted["uri"], f"sqlite:///{tmp_path / 'again.db'}"):
        run = the_run(MlflowClient(uri))
        metrics.append({k: v for k, v in run.data.metrics.items() if "loss" in k or "auroc" in k})
    assert metrics[0].keys() == metrics[1].keys()
    for key, value in metrics[0].items():
        assert metrics[1][key] == pytest.approx(value, nan_ok=True, **RUN_TO_RUN), key


def test_predict_writes_prediction_rows_for_the_test_split(fitted, tiny_archive):
    work = fitted["work"]
    checkpoint = next(work.glob("medres_work/*/*/checkpoints/best*.ckpt"))
    output = work / "predict" / "test_split.parquet"
    medres(
        "predict",
        "--config",
        str(REPO / "configs/chest_xray.yaml"),
        "--config",
        str(REPO / "configs/profiles/cpu_demo.yaml"),
        "--data.root",
        str(tiny_archive),
        *TINY,
        "--ckpt_path",
        str(checkpoint),
        "--predictions.output",
        str(output),
        cwd=work,
        env={"MLFLOW_TRACKING_URI": fitted["uri"]},
    )
    predictions = pd.read_parquet(output)
    splits = pd.read_csv(next(work.glob("medres_work/*/splits.csv")))
    manifest = pd.read_parquet(next(work.glob("medres_work/*/manifest.parquet")))
    test_patients = set(splits.loc[splits["split"] == "test", "patient_key"])
    expected = set(manifest.loc[manifest["patient_key"].isin(test_patients), "path"])
    assert set(predictions["path"]) == expected and len(predictions) == len(expected)
    assert predictions["prob_effusion"].between(0, 1).all()
    package = ModelPackage.from_checkpoint(checkpoint)  # the operating thresholds chosen on validation
    threshold = package.thresholds[package.findings.index("effusion")]
    assert (predictions["finding_effusion"] == (predictions["prob_effusion"] >= threshold)).all()
    assert set(predictions["model_name"]) == {checkpoint.stem}
