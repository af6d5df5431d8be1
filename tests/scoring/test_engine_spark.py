"""The registered pyfunc under ``mlflow.pyfunc.spark_udf`` on a local Spark (``local[2]``) scores like medres score."""

import os
import shutil
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from medres.scoring import score_archive
from medres.tracking.defaults import default_artifact_location
from medres.tracking.model_logging import log_model_package
from medres.tracking.registry import load_model

from .engine_support import BATCH_SIZE, CHUNK_FILES, assert_same_job, build_archive, require

pyspark_sql = require("pyspark.sql", "spark")

pytestmark = pytest.mark.slow
FILES = 120  # the UDF is the same code per file; a few chunks' worth shows the tables match
MODEL = "engine_cxr"


@pytest.fixture(scope="module")
def spark():
    if shutil.which("java") is None:
        pytest.skip("Spark needs a Java runtime (.ci/run installs Debian's openjdk-17-jre-headless)")
    # The Python workers' interpreter: this venv's, which has medres (read when the session's context starts).
    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        pyspark_sql.SparkSession.builder.master("local[2]")
        .appName("medres-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    yield session
    session.stop()
    if previous is None:
        os.environ.pop("PYSPARK_PYTHON", None)
    else:
        os.environ["PYSPARK_PYTHON"] = previous


@pytest.fixture(scope="module")
def registered(tiny_archive, tmp_path_factory):
    """The archive, a store with the tiny model registered as version 1, and medres score's predictions with it."""
    root = tmp_path_factory.mktemp("engine_spark")
    archive, checkpoint, _ = build_archive(tiny_archive, root, FILES)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(client.create_experiment("engines", artifact_location=default_artifact_location(uri)))
    log_model_package(load_model(str(checkpoint)).package, run.info.run_id, uri, registered_model_name=MODEL)
    client.set_terminated(run.info.run_id)
    reference = root / "reference_registered" / "preds.parquet"
    score_archive(
        f"models:/{MODEL}/1", archive, reference, batch_size=BATCH_SIZE, num_workers=0, chunk_files=CHUNK_FILES,
        tracking_uri=uri, progress=False, log_mlflow=False,
    )  # fmt: skip
    return archive, uri, reference


def test_spark_udf_returns_medres_score_probabilities(spark, registered):
    from medres.scoring.spark import input_frame, udf_result_type

    archive, uri, reference = registered
    mlflow.set_tracking_uri(uri)
    findings = load_model(f"models:/{MODEL}/1", tracking_uri=uri).package.findings
    udf = mlflow.pyfunc.spark_udf(
        spark, f"models:/{MODEL}/1", result_type=udf_result_type(findings), env_manager="local"
    )
    frame = input_frame(spark, archive, reference.parent / "inputs.parquet")
    functions = pyspark_sql.functions
    got = frame.withColumn("out", udf(functions.struct("path"))).select("file", "out.*").toPandas()
    assert len(got) == FILES and got["file"].is_unique
    expected = pd.read_parquet(reference).set_index("path")
    failed = got["error"].str.contains(": ", regex=False).fillna(False).astype(bool)  # see udf_result_type
    scored = got[~failed].set_index("file").loc[expected.index]
    probs = [c for c in expected.columns if c.startswith("prob_")]
    np.testing.assert_allclose(scored[probs].to_numpy(float), expected[probs].to_numpy(float), rtol=0, atol=1e-6)
    assert failed.sum() == FILES // 97 and got[failed]["error"].str.startswith("not_dicom: ").all()
    assert got[failed][probs].isna().all().all()


def test_score_with_spark_writes_medres_score_tables(spark, registered, tmp_path):
    from medres.scoring.spark import score_with_spark

    archive, uri, reference = registered
    output = tmp_path / "preds.parquet"
    summary = score_with_spark(spark, f"models:/{MODEL}/1", archive, output, tracking_uri=uri)
    assert summary.predictions + summary.errors == FILES
    assert_same_job(output, reference, FILES, tidy=False, studies=False)
    predictions, expected = pd.read_parquet(output), pd.read_parquet(reference)
    assert list(predictions.columns) == list(expected.columns)
    assert dict(predictions.dtypes) == dict(expected.dtypes)
    ledger, expected_ledger = (
        pd.read_parquet(tmp_path / "preds.errors.parquet"),
        pd.read_parquet(reference.with_suffix(".errors.parquet")),
    )
    assert list(ledger.columns) == list(expected_ledger.columns)
    by_path = ledger.set_index("path").sort_index()
    expected_by_path = expected_ledger.set_index("path").sort_index()
    pd.testing.assert_frame_equal(by_path.drop(columns="message"), expected_by_path.drop(columns="message"))
    assert summary.model == f"{MODEL}/1"
