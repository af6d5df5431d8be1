"""One fit, one MLflow run: under 2-process DDP (gloo) and across ``fit --ckpt_path`` resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from medres.tracking.resume import MLFLOW_RUN_KEY

from ..test_end_to_end import fit, the_run

pytestmark = pytest.mark.slow


def test_two_process_ddp_fit_logs_exactly_one_run_and_one_version(tiny_archive: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fit(
        tiny_archive,
        tmp_path,
        env={"MLFLOW_TRACKING_URI": uri},
        extra=["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"],
    )
    client = MlflowClient(uri, registry_uri=uri)
    run = the_run(client)  # asserts a single run in the experiment
    assert run.info.status == "FINISHED"
    assert run.data.tags["medres.world_size"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "val/auroc_macro")) == 2
    versions = client.search_model_versions("name='chest_xray'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    assert 0.0 <= run.data.metrics["test/auroc_macro"] <= 1.0


def test_resume_from_a_checkpoint_continues_the_same_run(tiny_archive: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    fit(tiny_archive, tmp_path, env=env, extra=["--trainer.max_epochs", "1", "--register.enabled", "false"])
    client = MlflowClient(uri)
    first = the_run(client)
    last = next(tmp_path.glob(f"medres_work/*/{first.info.run_id}/checkpoints/last.ckpt"))
    assert torch.load(last, map_location="cpu", weights_only=True)[MLFLOW_RUN_KEY]["run_id"] == first.info.run_id

    fit(tiny_archive, tmp_path, env=env, extra=["--trainer.max_epochs", "2", "--ckpt_path", str(last)])
    resumed = the_run(client)  # still exactly one run
    assert resumed.info.run_id == first.info.run_id
    assert resumed.info.status == "FINISHED"
    history = client.get_metric_history(resumed.info.run_id, "val/auroc_macro")
    assert sorted(m.step for m in history) == sorted({m.step for m in history})  # each epoch once
    assert len(history) == 2
    artifacts = {a.path for a in client.list_artifacts(resumed.info.run_id)}
    assert {"config.yaml", "config.resume-1.yaml"} <= artifacts
    assert resumed.data.params["trainer.max_epochs"] == "1"  # MLflow keeps the original params
