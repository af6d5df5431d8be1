"""Exact resume: a fit SIGKILLed after an epoch and rerun with ``--ckpt_path last`` ends as an uninterrupted one does.

Real CLI subprocesses, real SQLite MLflow stores, the tiny archive with the experiment's augmentation on. The
interrupted fit is started the way a requeued job would be, with the same ``--ckpt_path last`` command both times
(the first finds no checkpoint and starts a new run). It loads with two workers while the uninterrupted reference
loads in-process: order and augmentation depend on (seed, epoch, sample) only, not on the process that loads them,
and the workers' prefetch at a resumed epoch's start is what a stale sampler epoch would show up in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from .conftest import RUN_TO_RUN

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 5
KILL_AFTER_EPOCH = 1  # SIGKILL once last.ckpt holds this epoch (0-based), leaving EPOCHS - 2 epochs to replay


def fit_args(archive: Path, num_workers: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "medres.cli",
        "fit",
        "--config",
        str(REPO / "configs/chest_xray.yaml"),
        "--config",
        str(REPO / "configs/profiles/cpu_demo.yaml"),
        "--data.root",
        str(archive),
        "--data.preprocessing.spatial_size",
        "[32, 32]",
        "--trainer.max_epochs",
        str(EPOCHS),
        "--model.scheduler.init_args.T_max",
        str(EPOCHS),
        "--data.batch_size",
        "8",
        "--data.num_workers",
        str(num_workers),
        "--model.backbone",
        "resnet20",  # small checkpoints: written and polled in milliseconds
        "--review.enabled",  # review plots and registration are not what this tests; they cost seconds per fit
        "false",
        "--register.enabled",
        "false",
        *extra,
    ]


def environment(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    return env


def run_fit(archive: Path, work: Path, num_workers: int, *extra: str) -> None:
    result = subprocess.run(
        fit_args(archive, num_workers, *extra),
        cwd=work,
        env=environment(work),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"fit failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint was saved at, or None while it is missing or half-written."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # the file may be mid-write: poll again
        return None


def fit_and_kill(archive: Path, work: Path, num_workers: int) -> int:
    """Start a fit, SIGKILL it once its last.ckpt holds epoch ≥ KILL_AFTER_EPOCH; the checkpoint's epoch."""
    process = subprocess.Popen(
        fit_args(archive, num_workers, "--ckpt_path", "last"),
        cwd=work,
        env=environment(work),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its loader workers are killed with it
    )
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and process.poll() is None:
            for path in work.glob("medres_work/*/*/checkpoints/last.ckpt"):
                epoch = checkpoint_epoch(path)
                if epoch is not None and epoch >= KILL_AFTER_EPOCH:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    return epoch
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    pytest.fail(f"the fit ended (rc {process.returncode}) before a last.ckpt of epoch {KILL_AFTER_EPOCH} appeared")


def only_run(work: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("chest_xray")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "a resumed fit continues its run"
    return client, runs[0].info.run_id


def final_metrics(work: Path) -> dict[str, float]:
    client, run_id = only_run(work)
    metrics = client.get_run(run_id).data.metrics
    return {k: v for k, v in metrics.items() if k.startswith(("val/", "test/", "train/loss_epoch"))}


def last_weights(work: Path) -> dict[str, torch.Tensor]:
    (path,) = work.glob("medres_work/*/*/checkpoints/last.ckpt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == EPOCHS - 1
    return dict(checkpoint["state_dict"])


@pytest.fixture(scope="module")
def uninterrupted(tiny_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("uninterrupted")
    run_fit(tiny_archive, work, num_workers=0)
    return work


def test_killed_fit_resumes_to_the_same_metrics_and_weights(
    uninterrupted: Path, tiny_archive: Path, tmp_path: Path
) -> None:
    num_workers = 2
    killed_at = fit_and_kill(tiny_archive, tmp_path, num_workers)
    assert killed_at < EPOCHS - 1, "killed too late to test anything"
    _, run_before = only_run(tmp_path)

    run_fit(tiny_archive, tmp_path, num_workers, "--ckpt_path", "last")

    client, run_after = only_run(tmp_path)
    assert run_after == run_before
    history = client.get_metric_history(run_after, "val/auroc_macro")
    assert len({m.step for m in history}) == EPOCHS

    expected, got = final_metrics(uninterrupted), final_metrics(tmp_path)
    assert "test/auroc_macro" in expected and "val/loss" in expected
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, nan_ok=True, **RUN_TO_RUN), key

    reference, resumed = last_weights(uninterrupted), last_weights(tmp_path)
    assert reference.keys() == resumed.keys()
    for key, tensor in reference.items():
        torch.testing.assert_close(resumed[key], tensor, atol=1e-5, rtol=RUN_TO_RUN["rel"], msg=key)
