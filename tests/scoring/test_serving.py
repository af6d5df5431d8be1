"""The logged pyfunc scores DICOM like ``medres score``: in process, through ``mlflow models serve``, 2D and 3D."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from mlflow import MlflowClient
from mlflow.pyfunc import PythonModelContext
from pydicom.pixels import apply_modality_lut

from medres.data.selection import SeriesSelection
from medres.data.transforms import Preprocessing
from medres.package import CHECKPOINT_KEY, ModelPackage, build_backbone
from medres.scoring import score_archive
from medres.scoring.serving import MedresPyfuncModel
from medres.tracking.defaults import default_artifact_location
from medres.tracking.model_logging import log_model_package

from ..conftest import add_broken_files, dicom_files
from ..scoring import ct_series
from ..services import free_port, stop_process

pytestmark = pytest.mark.slow

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]
# Around the untrained network's outputs (~0.5), so calls of both values occur.
THRESHOLDS = [0.45, 0.5, 0.55, 0.5]
MODEL_NAME = "chest_xray"


def tiny_package(selection: SeriesSelection | None = None) -> ModelPackage:
    """A seeded 1-channel ResNet-18 at 32 px, as a registered chest X-ray model would be packaged."""
    torch.manual_seed(0)
    preprocessing = Preprocessing(spatial_size=(32, 32))
    network = build_backbone("resnet18", {}, preprocessing, len(FINDINGS))
    return ModelPackage(
        backbone="resnet18",
        backbone_args={},
        findings=FINDINGS,
        preprocessing=preprocessing,
        thresholds=THRESHOLDS,
        state_dict=network.state_dict(),
        selection=selection or SeriesSelection(),
    )


def write_checkpoint(package: ModelPackage, path: Path) -> Path:
    """The package as ``medres fit`` embeds it in a checkpoint, so ``score_archive`` can take it without a store."""
    state = {f"backbone.{k}": v for k, v in package.state_dict.items()}
    torch.save({"state_dict": state, CHECKPOINT_KEY: package.contract()}, path)
    return path


def direct_model(package: ModelPackage, folder: Path) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The pyfunc class's predict, loaded from a package folder as MLflow's loader hands it its artifacts."""
    model = MedresPyfuncModel()
    context = PythonModelContext(artifacts={"package": str(package.save(folder))}, model_config={})
    model.load_context(context)
    return lambda frame: model.predict(context, frame)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store with ``chest_xray`` version 1 registered and aliased ``champion``; returns its URI."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("serving", artifact_location=default_artifact_location(uri))
    run = client.create_run(experiment)
    info = log_model_package(tiny_package(), run.info.run_id, uri, registered_model_name=MODEL_NAME)
    client.set_terminated(run.info.run_id)
    client.set_registered_model_alias(MODEL_NAME, "champion", str(info.registered_model_version))
    return uri


@pytest.fixture(scope="module")
def scored(registry: str, tiny_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """``medres score`` of a copy of the tiny archive with two broken files added: (archive, predictions)."""
    archive = tmp_path_factory.mktemp("scored") / "cxr"
    shutil.copytree(tiny_archive, archive)
    add_broken_files(archive)
    output = archive.parent / "preds.parquet"
    score_archive(
        f"models:/{MODEL_NAME}@champion", archive, output, batch_size=4, num_workers=0, tracking_uri=registry,
        progress=False,
    )  # fmt: skip
    return archive, pd.read_parquet(output).set_index("path")


def assert_matches_scoring(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Probabilities within 1e-6 and identical calls, row by row."""
    for finding in FINDINGS:
        np.testing.assert_allclose(
            result[f"prob_{finding}"].to_numpy(float), expected[f"prob_{finding}"].to_numpy(float), rtol=0, atol=1e-6
        )
        assert result[f"finding_{finding}"].tolist() == expected[f"finding_{finding}"].tolist()


def test_logged_model_is_code_and_safetensors_not_a_pickle(registry: str, tmp_path: Path) -> None:
    mlflow.set_tracking_uri(registry)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@champion", dst_path=str(tmp_path)))
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))], files
    assert "pyfunc_model.py" in files  # the models-from-code file, run on load
    assert {"artifacts/package/package.json", "artifacts/package/weights.safetensors"} <= set(files)
    mlmodel = (local / "MLmodel").read_text()
    assert "model_code_path" in mlmodel and "python_model.pkl" not in mlmodel


def test_loaded_pyfunc_scores_like_medres_score(registry: str, scored: tuple[Path, pd.DataFrame]) -> None:
    archive, expected = scored
    mlflow.set_tracking_uri(registry)
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    files = [p for p in dicom_files(archive) if p.relative_to(archive).as_posix() in expected.index]
    result = loaded.predict(pd.DataFrame({"path": [str(p) for p in files]}))

    assert len(result) == len(files) == len(expected)
    assert result["error"].isna().all()
    assert_matches_scoring(result, expected.loc[[p.relative_to(archive).as_posix() for p in files]])
    calls = result[[f"finding_{f}" for f in FINDINGS]].to_numpy(bool)
    assert calls.any() and not calls.all()  # the thresholds split the calls, so the comparison means something


def test_broken_and_missing_rows_carry_their_ledger_error_in_place(scored: tuple[Path, pd.DataFrame], tmp_path: Path):
    archive, expected = scored
    model = direct_model(tiny_package(), tmp_path / "package")
    good = archive / expected.index[0]
    paths = [archive / "junk.dcm", good, archive / "patient_9999" / "truncated.dcm", archive / "nowhere.dcm"]
    result = model(pd.DataFrame({"path": [str(p) for p in paths]}, index=[7, 3, 5, 1]))

    ledger = pd.read_parquet(archive.parent / "preds.errors.parquet").set_index("path")
    assert result["error"].iloc[0] == f"not_dicom: {ledger.loc['junk.dcm', 'message']}"
    assert result["error"].iloc[2] == f"truncated: {ledger.loc['patient_9999/truncated.dcm', 'message']}"
    assert result["error"].iloc[3] == f"unreadable: {archive / 'nowhere.dcm'}: no such file"
    assert pd.isna(result["error"].iloc[1])
    assert_matches_scoring(result.iloc[[1]], expected.loc[[good.relative_to(archive).as_posix()]])
    failed = result.iloc[[0, 2, 3]]
    assert failed[[f"prob_{f}" for f in FINDINGS]].isna().all().all()
    assert failed[[f"finding_{f}" for f in FINDINGS]].isna().all().all()  # null, not a made-up False


def test_selection_rejects_rows_as_scoring_does(tiny_archive: Path, tmp_path: Path) -> None:
    package = tiny_package(SeriesSelection(view_positions=["PA", "AP"]))
    output = tmp_path / "preds.parquet"
    score_archive(str(write_checkpoint(package, tmp_path / "m.ckpt")), tiny_archive, output, num_workers=0,
                  progress=False)  # fmt: skip
    ledger = pd.read_parquet(tmp_path / "preds.errors.parquet")
    laterals = ledger[ledger["kind"] == "not_selected"]
    predictions = pd.read_parquet(output).set_index("path")
    assert len(laterals) > 0

    model = direct_model(package, tmp_path / "package")
    paths = list(laterals["path"]) + list(predictions.index[:3])
    result = model(pd.DataFrame({"path": [str(tiny_archive / p) for p in paths]}))
    n = len(laterals)
    assert result["error"].iloc[:n].tolist() == [f"not_selected: {m}" for m in laterals["message"]]
    assert "ViewPosition 'LL' not in selection.view_positions" in result["error"].iloc[0]
    assert result["error"].iloc[n:].isna().all()
    assert_matches_scoring(result.iloc[n:], predictions.iloc[:3])


def test_pixels_in_modality_units_score_like_the_file(tiny_archive: Path, tmp_path: Path) -> None:
    model = direct_model(tiny_package(), tmp_path / "package")
    files = [p for p in dicom_files(tiny_archive) if pydicom.dcmread(p).PhotometricInterpretation == "MONOCHROME2"]
    file = files[0]
    ds = pydicom.dcmread(file)
    pixels = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)  # what a client's own reader gives
    frame = pd.DataFrame(
        {"path": [str(file), None, None, None], "pixels": [None, pixels.tolist(), [[1.0, 2.0, 3.0]], [1.0, 2.0]]}
    )
    result = model(frame)

    np.testing.assert_allclose(
        result.loc[1, [f"prob_{f}" for f in FINDINGS]].to_numpy(float),
        result.loc[0, [f"prob_{f}" for f in FINDINGS]].to_numpy(float),
        rtol=0,
        atol=1e-6,
    )
    assert result.loc[2, "error"] is pd.NA or pd.isna(result.loc[2, "error"])  # a 1-row image is still an image
    assert result.loc[3, "error"].startswith("bad_input: pixels: expected a (rows, columns) array")
    both = model(pd.DataFrame({"path": [str(file)], "pixels": [pixels.tolist()]}))
    assert both.loc[0, "error"] == "bad_input: give exactly one of 'path' and 'pixels' per row"


def test_series_package_scores_a_folder_or_a_file_of_it(tmp_path: Path) -> None:
    archive = tmp_path / "ct"
    series_a, _ = ct_series.write_series(archive / "a", study=ct_series.uid(), seed=1)
    series_b, files_b = ct_series.write_series(archive / "b", study=ct_series.uid(), seed=2)
    # Two series in one folder: the folder is ambiguous, each file names its own series.
    series_x, _ = ct_series.write_series(archive / "both", study=ct_series.uid(), seed=3)
    names = [f"other_{k:02d}.dcm" for k in range(8)]
    series_y, _ = ct_series.write_series(archive / "both", study=ct_series.uid(), seed=4, names=names)
    checkpoint, _ = ct_series.write_checkpoint(tmp_path / "ct.ckpt")
    output = tmp_path / "ct.parquet"
    score_archive(str(checkpoint), archive, output, batch_size=2, num_workers=0, progress=False)
    expected = pd.read_parquet(output).set_index("SeriesInstanceUID")
    assert len(expected) == 4

    model = direct_model(ModelPackage.from_checkpoint(checkpoint), tmp_path / "package")
    requests = [archive / "a", files_b[3], archive / "both", archive / "both" / "other_02.dcm", archive / "none"]
    result = model(pd.DataFrame({"path": [str(p) for p in requests]}))

    for row, series in [(0, series_a), (1, series_b), (3, series_y)]:
        assert pd.isna(result.loc[row, "error"])
        for finding in ct_series.FINDINGS:
            assert abs(result.loc[row, f"prob_{finding}"] - expected.loc[series, f"prob_{finding}"]) <= 1e-6
            assert result.loc[row, f"finding_{finding}"] == expected.loc[series, f"finding_{finding}"]
    assert expected.loc[series_x, "prob_nodule"] != expected.loc[series_y, "prob_nodule"]
    assert result.loc[2, "error"].startswith(f"bad_input: {archive / 'both'} holds 2 selected series")
    assert result.loc[4, "error"] == f"unreadable: {archive / 'none'}: no such file or folder"


# ---- the REST server ------------------------------------------------------------------------------------


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the model server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"the model server did not answer {url} within {timeout:.0f}s:\n{log.read_text()[-4000:]}")


def post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_mlflow_models_serve_answers_with_scoring_results(
    registry: str, scored: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    archive, expected = scored
    port = free_port()
    log = tmp_path / "serve.log"
    bin_dir = Path(sys.executable).parent  # mlflow starts `uvicorn` by name: the environment's bin must be on PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}@champion"]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", process, log)
        relative = list(expected.index[:2])
        paths = [str(archive / relative[0]), str(archive / "junk.dcm"), str(archive / relative[1])]
        body = {"dataframe_split": {"columns": ["path"], "data": [[p] for p in paths]}}
        answer = post_json(f"http://127.0.0.1:{port}/invocations", body)
    finally:
        stop_process(process)

    result = pd.DataFrame(answer["predictions"])
    assert len(result) == 3
    assert result.loc[1, "error"].startswith("not_dicom: ")
    assert result.loc[1, [f"prob_{f}" for f in FINDINGS]].isna().all()
    assert result.loc[[0, 2], "error"].isna().all()
    assert_matches_scoring(result.loc[[0, 2]], expected.loc[relative])
