"""medres's MLflow logger: metrics are buffered, then all sent, in order, with their steps."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from medres.tasks.callbacks.mlflow_logger import MLflowLogger


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_metrics_wait_in_the_buffer_until_due_then_all_arrive(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger(experiment_name="buffer", tracking_uri=uri, log_model=False, metrics_flush_seconds=3600)
    for step in range(5):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
    client = MlflowClient(uri)
    assert client.get_run(logger.run_id).data.metrics == {}  # not due yet: nothing sent
    logger.finalize("success")
    assert history(client, logger.run_id, "train/loss") == [(s, 1.0 / (s + 1)) for s in range(5)]
    assert len(history(client, logger.run_id, "lr")) == 5
    assert client.get_run(logger.run_id).info.status == "FINISHED"


def test_a_zero_interval_sends_every_step_and_names_are_cleaned(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger(experiment_name="now", tracking_uri=uri, log_model=False, metrics_flush_seconds=0)
    logger.log_metrics({"val/auroc[macro]": 0.75, "note": "text"}, step=3)  # type: ignore[dict-item]
    metrics = MlflowClient(uri).get_run(logger.run_id).data.metrics
    assert metrics == {"val/aurocmacro": 0.75}


def test_more_than_a_request_holds_goes_in_several(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger(experiment_name="many", tracking_uri=uri, log_model=False, metrics_flush_seconds=3600)
    for step in range(1500):
        logger.log_metrics({"m": float(step)}, step=step)
    logger.flush_metrics()
    assert [v for _, v in history(MlflowClient(uri), logger.run_id, "m")] == [float(s) for s in range(1500)]
