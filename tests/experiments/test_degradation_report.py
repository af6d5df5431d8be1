"""The degradation report over a real SQLite MLflow store holding runs shaped like ``medres fit`` runs."""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from medres.cli import main
from medres.experiments.degradation import (
    PLOT_NAME,
    README_NAME,
    REPORT_ROLE,
    ROLE_TAG,
    NetworkRun,
    report_degradation,
)

CONFIG = {
    "seed_everything": 0,
    "trainer": {"max_epochs": 3, "logger": {"init_args": {"experiment_name": "degradation", "run_name": "x"}}},
    "model": {
        "backbone": "x",
        "backbone_args": {"zero_init_residual": False},
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}},
    },
    "data": {
        "root": "/archive/never/in/the/report",
        "findings": ["nodule", "effusion", "cardiomegaly", "pneumothorax"],
        "preprocessing": {"spatial_dims": 2, "spatial_size": [32, 32], "in_channels": 1},
        "batch_size": 64,
    },
}
# Final losses in the published pattern: plain-56 above plain-20, ResNet-56 below ResNet-20.
HOLDS = {
    "plain20": [0.6, 0.4, 0.30],
    "plain56": [0.7, 0.6, 0.45],
    "resnet20": [0.6, 0.4, 0.25],
    "resnet56": [0.6, 0.3, 0.20],
}


def fake_fit(client: MlflowClient, experiment_id: str, network: str, losses: list[float], **config_changes) -> str:
    """A finished run as `medres fit` leaves it: config.yaml, flattened backbone param, per-epoch metrics."""
    config = copy.deepcopy(CONFIG)
    config["model"]["backbone"] = network
    config["trainer"]["logger"]["init_args"]["run_name"] = network
    for dotted, value in config_changes.items():
        *parents, leaf = dotted.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    run = client.create_run(experiment_id, run_name=network)
    run_id = run.info.run_id
    client.log_text(run_id, yaml.safe_dump(config), "config.yaml")
    client.log_param(run_id, "model.backbone", network)
    for epoch, loss in enumerate(losses):
        step = 11 * (epoch + 1) - 1  # Lightning logs epoch metrics at the global step
        client.log_metric(run_id, "train/loss_epoch", loss, step=step)
        client.log_metric(run_id, "val/auroc_macro", 0.6 + 0.1 * epoch, step=step)
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised SQLite store, made once: creating MLflow's tables takes seconds, copying the file does not."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(empty_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MlflowClient, str, str]:
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("degradation", artifact_location=(tmp_path / "mlartifacts").as_uri())
    return client, experiment_id, uri


def fit_all(client: MlflowClient, experiment_id: str, losses: dict[str, list[float]]) -> dict[str, str]:
    return {network: fake_fit(client, experiment_id, network, values) for network, values in losses.items()}


def test_report_table_verdict_plot_and_summary_run(store, tmp_path):
    client, experiment_id, uri = store
    run_ids = fit_all(client, experiment_id, HOLDS)
    report = report_degradation("degradation", tmp_path / "docs", tracking_uri=uri)

    assert [r.network for r in report.runs] == ["plain20", "plain56", "resnet20", "resnet56"]
    assert [(r.depth, r.residual) for r in report.runs] == [(20, False), (56, False), (20, True), (56, True)]
    assert [r.run_id for r in report.runs] == [run_ids[n] for n in ("plain20", "plain56", "resnet20", "resnet56")]
    plain20, plain56, resnet20, resnet56 = report.runs
    assert plain20.params == resnet20.params and 0.26e6 < resnet20.params < 0.28e6  # shortcut A adds no weights
    assert 0.84e6 < resnet56.params < 0.86e6
    assert plain56.train_loss == ((1, 0.7), (2, 0.6), (3, 0.45))
    assert plain56.final_train_loss == 0.45
    assert math.isclose(resnet56.best_val, 0.8) and math.isclose(resnet56.last_val, 0.8)
    assert report.verdict.holds
    assert math.isclose(report.verdict.plain_gap, 0.15) and math.isclose(report.verdict.residual_gap, -0.05)

    text = report.readme.read_text()
    assert "**The degradation effect holds**" in text
    assert "| plain56 | 56 | no | 0.85M | 0.4500 | 0.800 / 0.800 |" in text
    assert "| resnet20 | 20 | yes | 0.27M | 0.2500 | 0.800 / 0.800 |" in text
    assert "/archive/never" not in text  # nothing about where the data lives
    assert report.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = client.get_run(report.report_run_id)
    assert summary.info.experiment_id == experiment_id and summary.info.status == "FINISHED"
    assert summary.data.tags[ROLE_TAG] == REPORT_ROLE and summary.data.tags["degradation.holds"] == "true"
    assert math.isclose(summary.data.metrics["plain_gap"], 0.15)
    assert {a.path for a in client.list_artifacts(report.report_run_id)} == {README_NAME, PLOT_NAME}
    logged = mlflow.artifacts.load_text(f"{summary.info.artifact_uri}/{README_NAME}")
    assert logged == text


def test_verdict_flips_with_the_numbers_and_latest_runs_win(store, tmp_path):
    client, experiment_id, uri = store
    fit_all(client, experiment_id, HOLDS)
    assert report_degradation(out=tmp_path / "a", tracking_uri=uri).verdict.holds
    # A rerun where the deep plain network trains as well as the shallow one: no degradation.
    fake_fit(client, experiment_id, "plain56", [0.7, 0.5, 0.30])
    report = report_degradation(out=tmp_path / "b", tracking_uri=uri)
    assert not report.verdict.holds and not report.verdict.plain_degrades and report.verdict.residual_holds
    assert "**The degradation effect does not hold**" in report.readme.read_text()
    # …and one where depth hurts the residual network too.
    fake_fit(client, experiment_id, "plain56", [0.7, 0.6, 0.45])
    fake_fit(client, experiment_id, "resnet56", [0.7, 0.5, 0.26])
    report = report_degradation(out=tmp_path / "c", tracking_uri=uri)
    assert report.verdict.plain_degrades and not report.verdict.residual_holds and not report.verdict.holds
    assert math.isclose(report.verdict.residual_gap, 0.01)


def test_missing_runs_are_refused_by_name(store, tmp_path):
    client, experiment_id, uri = store
    fit_all(client, experiment_id, {k: v for k, v in HOLDS.items() if k != "resnet56"})
    with pytest.raises(ValueError, match=r"no finished run for resnet56"):
        report_degradation(out=tmp_path / "docs", tracking_uri=uri)
    assert not (tmp_path / "docs").exists()


def test_fits_with_different_budgets_are_refused(store, tmp_path):
    client, experiment_id, uri = store
    fit_all(client, experiment_id, {k: v for k, v in HOLDS.items() if k != "plain56"})
    fake_fit(client, experiment_id, "plain56", HOLDS["plain56"], trainer__max_epochs=30)
    with pytest.raises(ValueError, match=r"differ in trainer\.max_epochs"):
        report_degradation(out=tmp_path / "docs", tracking_uri=uri)


def test_cli_reports_and_refuses_in_one_line(store, tmp_path, capsys):
    client, experiment_id, _ = store
    with pytest.raises(SystemExit) as exit_info:
        main(["report-degradation", "--experiment", "nothing_here", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("medres report-degradation: error: no MLflow experiment 'nothing_here'")
    assert "\n" not in error

    fit_all(client, experiment_id, HOLDS)
    main(["report-degradation", "--experiment", "degradation", "--out", str(tmp_path / "docs")])
    assert "effect holds" in capsys.readouterr().out
    assert (tmp_path / "docs" / README_NAME).is_file() and (tmp_path / "docs" / PLOT_NAME).is_file()


def test_final_training_loss_averages_the_last_tenth_of_the_epochs():
    losses = tuple((epoch, 1.0 / epoch) for epoch in range(1, 41))  # 40 epochs → the last 4 are averaged
    run = NetworkRun("resnet20", 20, True, 1, losses, (), 1.0, "id")
    assert run.final_epochs == 4
    assert math.isclose(run.final_train_loss, (1 / 37 + 1 / 38 + 1 / 39 + 1 / 40) / 4)
    short = NetworkRun("resnet20", 20, True, 1, losses[:3], (), 1.0, "id")
    assert short.final_epochs == 1 and math.isclose(short.final_train_loss, 1 / 3)
