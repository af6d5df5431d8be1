"""The splits as MLflow datasets: digests that follow the data, counts as profiles, no path or key in the store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from medres.data.summary import DataSummary
from medres.tracking.datasets import (
    ArchiveSource,
    SplitDataset,
    archive_path_hash,
    log_split_datasets,
    split_datasets,
)

FINDINGS = ["nodule", "effusion"]
SECRET_DIR = "St_Elsewhere_Doe_John"  # an archive folder named after a site and a patient: must never be logged


def labeled() -> pd.DataFrame:
    rows = []
    for i in range(12):
        split = ["train", "train", "val", "test"][i % 4]
        nodule = [1.0, 0.0, np.nan, -1.0][i % 3]
        rows.append(
            {"path": f"{SECRET_DIR}/p{i}/img{i}.dcm", "patient_key": f"key{i // 2}", "split": split,
             "nodule": nodule, "effusion": float(i % 2)}
        )  # fmt: skip
    return pd.DataFrame(rows)


def test_each_split_is_a_dataset_with_its_counts_and_own_digest(tmp_path: Path) -> None:
    table = labeled()
    summary = DataSummary.from_samples(table, FINDINGS)
    datasets = {d.name: d for d in split_datasets(summary, tmp_path / SECRET_DIR)}
    assert sorted(datasets) == ["test", "train", "val"]
    train = datasets["train"]
    assert train.context == "training" and datasets["val"].context == "validation"
    assert train.profile["samples"] == 6 and train.profile["patients"] == int(
        table.loc[table["split"] == "train", "patient_key"].nunique()
    )
    rows = table[table["split"] == "train"]
    assert train.profile["labels.nodule"] == {
        "positive": int((rows["nodule"] == 1).sum()),
        "negative": int((rows["nodule"] == 0).sum()),
        "unknown": int(rows["nodule"].isna().sum()),
        "uncertain": int((rows["nodule"] == -1).sum()),
    }
    assert train.digest == summary.digests["train"][:16]
    # A changed label in the test split changes only the test digest (and the overall fingerprint).
    changed = table.copy()
    changed.loc[changed.index[changed["split"] == "test"][0], "effusion"] = (
        1 - changed.loc[changed.index[changed["split"] == "test"][0], "effusion"]
    )
    other = DataSummary.from_samples(changed, FINDINGS)
    assert other.digests["train"] == summary.digests["train"] and other.digests["val"] == summary.digests["val"]
    assert other.digests["test"] != summary.digests["test"] and other.fingerprint != summary.fingerprint
    assert summary.to_dict()["digests"] == summary.digests


def test_an_empty_split_is_left_out_and_a_bad_split_is_refused(tmp_path: Path) -> None:
    table = labeled()
    summary = DataSummary.from_samples(table[table["split"] != "val"], FINDINGS)
    assert [d.name for d in split_datasets(summary, tmp_path)] == ["train", "test"]
    with pytest.raises(ValueError, match="split 'holdout'"):
        SplitDataset(summary, "holdout", ArchiveSource("0" * 16))


def test_logged_inputs_round_trip_and_hold_no_path_or_key(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("datasets", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    archive = tmp_path / SECRET_DIR
    summary = DataSummary.from_samples(labeled(), FINDINGS)
    log_split_datasets(client, run_id, summary, archive)
    log_split_datasets(client, run_id, summary, archive)  # a resumed fit logs again: no duplicates
    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in inputs) == ["test", "train", "val"]
    for item in inputs:
        dataset = item.dataset
        assert json.loads(dataset.source) == {"archive_path_sha256": archive_path_hash(archive)}
        assert ArchiveSource.from_json(dataset.source).path_sha256 == archive_path_hash(archive)
        assert json.loads(dataset.profile)["samples"] == summary.samples[dataset.name]
        assert [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]] == FINDINGS
    with pytest.raises(ValueError, match="hash of its path"):
        ArchiveSource(archive_path_hash(archive)).load()
    dump = "\n".join(sqlite3.connect(tmp_path / "mlflow.db").iterdump())
    for secret in (SECRET_DIR, "key0", "img0.dcm"):  # (tmp_path itself is in the artifact location)
        assert secret not in dump, secret
