"""Streaming scoring: chunked parts, resume, refusal of another job, manifest input, study table, MLflow run."""

import json
import multiprocessing
import os
import shutil

import mlflow
import pandas as pd
import pytest
import torch

from medres.data.manifest import index_to_parquet
from medres.scoring import score_archive
from medres.scoring.report import EXPERIMENT, root_hash
from medres.scoring.studies import aggregate_studies

from ..conftest import add_broken_files, dicom_files, find_identifying, identifying_values
from .bulk import FINDINGS, THRESHOLDS, write_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("model") / "tiny.ckpt", backbone="resnet10")


def _score(model, root, output, **kwargs):
    kwargs = {"batch_size": 4, "num_workers": 0, "progress": False, "chunk_files": 7, "log_mlflow": False} | kwargs
    return score_archive(str(model), root, output, **kwargs)


def _table(output):
    return pd.read_parquet(output).sort_values("path").reset_index(drop=True)


def test_parts_per_chunk_read_as_one_table_and_resume_after_a_loss(model, archive_copy, tmp_path):
    add_broken_files(archive_copy)
    output = tmp_path / "preds.parquet"
    first = _score(model, archive_copy, output)
    files = sorted(p.relative_to(archive_copy).as_posix() for p in archive_copy.rglob("*") if p.is_file())
    chunks = -(-len(files) // 7)
    assert (
        len(list(output.glob("part-*.parquet"))) == chunks == len(list((tmp_path / "preds.errors.parquet").glob("*")))
    )
    predictions, errors = _table(output), pd.read_parquet(tmp_path / "preds.errors.parquet")
    assert sorted([*predictions["path"], *errors["path"]]) == files  # each file once
    assert first.files == len(files) and first.predictions == len(predictions) and first.resumed == 0

    # A kill after chunk 2's parts were renamed but before its marker, and in the middle of chunk 4.
    job = tmp_path / ".preds.parquet.job"
    (job / "done" / "00000002.json").unlink()
    (job / "done" / "00000004.json").unlink()
    (output / "part-00000004.parquet").rename(output / ".part-00000004.parquet.tmp")
    again = _score(model, archive_copy, output)
    assert again.resumed == len(files) - 14 and again.files == len(files)
    pd.testing.assert_frame_equal(_table(output), predictions)
    assert not list(output.glob(".*.tmp")) and not list(job.rglob(".*.tmp"))


def test_another_job_in_the_same_output_is_refused(model, tiny_archive, tmp_path):
    output = tmp_path / "preds.parquet"
    _score(model, tiny_archive, output)
    with pytest.raises(ValueError, match="another scoring job .*chunk_files"):
        _score(model, tiny_archive, output, chunk_files=5)
    summary = _score(model, tiny_archive, output, chunk_files=5, resume=False)  # started over
    assert (
        summary.resumed == 0 and json.loads((tmp_path / ".preds.parquet.job/job.json").read_text())["chunk_files"] == 5
    )
    old = tmp_path / "old.parquet"
    old.write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="old.parquet is a file"):
        _score(model, tiny_archive, old)


def test_an_archive_that_changed_under_a_done_chunk_is_refused(model, archive_copy, tmp_path):
    output = tmp_path / "preds.parquet"
    _score(model, archive_copy, output)
    shutil.copy(dicom_files(archive_copy)[0], dicom_files(archive_copy)[0].with_name("0000_inserted.dcm"))
    with pytest.raises(ValueError, match="chunk 0 was scored from other files"):
        _score(model, archive_copy, output)


def test_a_manifest_input_scores_like_the_folder(model, archive_copy, tmp_path):
    add_broken_files(archive_copy)
    folder = _score(model, archive_copy, tmp_path / "folder.parquet")
    manifest = tmp_path / "index" / "manifest.parquet"
    index_to_parquet(archive_copy, manifest, salt="s")
    listed = _score(model, archive_copy, tmp_path / "listed.parquet", manifest=manifest, num_workers=2)
    pd.testing.assert_frame_equal(_table(tmp_path / "listed.parquet"), _table(tmp_path / "folder.parquet"))
    ledger = pd.read_parquet(tmp_path / "listed.errors.parquet").sort_values("path").reset_index(drop=True)
    expected = pd.read_parquet(tmp_path / "folder.errors.parquet").sort_values("path").reset_index(drop=True)
    pd.testing.assert_frame_equal(ledger, expected)
    assert (listed.files, listed.predictions, listed.error_kinds) == (
        folder.files,
        folder.predictions,
        folder.error_kinds,
    )


@pytest.mark.parametrize("method", ["max", "mean"])
def test_the_study_table_aggregates_the_predictions(model, tiny_archive, tmp_path, method):
    summary = _score(model, tiny_archive, tmp_path / "preds.parquet", aggregation=method)
    studies = pd.read_parquet(tmp_path / "preds.studies.parquet")
    expected = aggregate_studies(pd.read_parquet(tmp_path / "preds.parquet"), FINDINGS, THRESHOLDS, method=method)
    pd.testing.assert_frame_equal(studies, expected)
    assert summary.studies == len(studies) == pd.read_parquet(tmp_path / "preds.parquet")["StudyInstanceUID"].nunique()
    assert studies["n_instances"].sum() == summary.predictions


def test_the_scoring_run_holds_counts_and_distributions_and_nothing_identifying(model, planted_archive, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = _score(model, planted_archive, tmp_path / "out" / "preds.parquet", tracking_uri=uri, log_mlflow=True)
    client = mlflow.MlflowClient(uri)
    run = client.get_run(summary.run_id)
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    params, metrics = run.data.params, run.data.metrics
    assert params["scoring.model_name"] == "tiny" and params["scoring.model_version"] == "checkpoint"
    assert params["scoring.input_root_sha256"] == root_hash(planted_archive)
    assert int(params["scoring.input_files"]) == summary.files == len(list(planted_archive.rglob("*.*")))
    assert metrics["predictions"] == summary.predictions and metrics["errors.not_dicom"] == 1  # labels.csv
    assert metrics["files_per_s"] > 0 and metrics["studies"] == summary.studies
    artifacts = tmp_path / "artifacts"
    client.download_artifacts(run.info.run_id, "scoring", str(artifacts))
    assert sorted(p.name for p in (artifacts / "scoring").iterdir()) == ["score_distributions.png", "summary.json"]
    histograms = json.loads((artifacts / "scoring" / "summary.json").read_text())["histograms"]
    assert all(sum(histograms[f]) == summary.predictions for f in FINDINGS)
    texts = [json.dumps(params), json.dumps(run.data.tags), json.dumps(metrics)]
    places = [artifacts, tmp_path / "out"]
    assert find_identifying(identifying_values(planted_archive), places, texts, tmp_path / "scratch") == []
    assert str(planted_archive) not in json.dumps(params)


def _worker_settings(niceness, queue):
    from medres.scoring.score import _decoding_worker

    _decoding_worker(0, niceness=niceness)
    queue.put((os.nice(0), torch.get_num_threads()))


@pytest.mark.parametrize("niceness", [0, 19])
def test_decoding_workers_run_one_thread_at_the_given_priority(niceness):
    context = multiprocessing.get_context("fork")  # a DataLoader worker is forked too
    queue = context.Queue()
    process = context.Process(target=_worker_settings, args=(niceness, queue))
    process.start()
    got = queue.get(timeout=60)
    process.join(timeout=60)
    assert got == (min(19, os.nice(0) + niceness), 1)
