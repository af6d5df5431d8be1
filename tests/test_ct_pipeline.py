"""The 3D CT path end to end: `medres synth ct` → `medres fit` with configs/ct_3d.yaml + the CPU profile.

Real CLI in subprocesses, a real SQLite MLflow store; the assertion is on the test AUROC the fit logs.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PATIENTS = 100  # about 115 studies: 80 train, 17 val, 17 test series after selection


def medres(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [sys.executable, "-m", "medres.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"medres {args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("ct_fit")
    archive = work / "ct"
    medres("synth", "ct", "--out", str(archive), "--patients", str(PATIENTS), "--seed", "0", cwd=work)
    start = time.monotonic()
    result = medres(
        "fit",
        "--config",
        str(REPO / "configs/ct_3d.yaml"),
        "--config",
        str(REPO / "configs/profiles/cpu_ct.yaml"),
        "--data.root",
        str(archive),
        cwd=work,
    )
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ct_3d")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return {
        "run": runs[0],
        "client": client,
        "logs": result.stdout + result.stderr,
        "seconds": time.monotonic() - start,
    }


def test_cpu_profile_learns_both_findings(fitted):
    metrics = fitted["run"].data.metrics
    # Measured: 1.0 for both on this archive; the margins absorb thread-count and platform differences.
    assert metrics["test/auroc_effusion"] >= 0.95
    assert metrics["test/auroc_mass"] >= 0.85
    assert metrics["test/auroc_macro"] >= 0.9


def test_run_is_a_3d_series_model(fitted):
    run, client = fitted["run"], fitted["client"]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.backbone"] == "resnet10" and params["data.preprocessing.spatial_dims"] == "3"
    history = client.get_metric_history(run.info.run_id, "val/auroc_macro")
    assert len(history) == int(params["trainer.max_epochs"])
    # Scouts and thicker reconstructions never became samples, and the log says how many files were left out.
    assert "left out by the selection" in fitted["logs"]
