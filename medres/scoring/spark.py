"""Scoring on Spark (Databricks and the like): the registered pyfunc under ``mlflow.pyfunc.spark_udf``.

MLflow's own route to batch inference on Spark is :func:`mlflow.pyfunc.spark_udf`: the registered model (the
medres pyfunc, :mod:`medres.scoring.serving`) runs in the executors' Python workers over a DataFrame whose
``path`` column names DICOM files (2D packages) or series folders (3D packages), and returns
``prob_<finding>``, ``finding_<finding>`` and ``error`` per row, the probabilities ``medres score`` gives the
same files (the pyfunc reads, selects, preprocesses and runs the network as ``medres score`` does).

This module turns a folder or a ``medres index`` manifest into that DataFrame (:func:`input_frame`) and writes
what the UDF returns as ``medres score``'s two tables (:func:`score_with_spark`): ``preds.parquet`` with the
prediction columns and ``preds.errors.parquet`` with the ledger columns (see :mod:`medres.scoring.score`), each a
folder of Parquet parts that ``pd.read_parquet`` reads as one table. Every input row lands in exactly one of them
(a ledger row when the UDF's ``error`` holds one, :func:`failed_rows`, a prediction otherwise); Spark's output
committer makes each table appear whole or not at all, and a rerun overwrites both (a Spark job is retried as a
whole, not resumed by chunk: for resumable scoring of a very large archive use ``medres score``, on DDP ranks or
``--engine ray``).

Needs the ``medres[spark]`` extra (pyspark) on the driver and medres on the executors (``env_manager="local"``
uses the executors' installed Python; ``virtualenv``/``conda`` rebuild the model's logged environment).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medres.data.manifest import errors_path_for as index_errors_path_for
from medres.data.transforms import IDENTITY_COLUMNS
from medres.package import finding_column, probability_column
from medres.scoring.discovery import relative_files
from medres.scoring.job import errors_dir_for
from medres.scoring.samples import UID_KEYS, header_uids
from medres.tracking.pyfunc import ERROR_COLUMN, PATH_COLUMN
from medres.tracking.registry import load_model

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

# The input frame's column with the path relative to the input folder: the output tables' ``path``.
FILE_COLUMN = "file"
# Rows per Arrow batch handed to the pyfunc: the pyfunc holds a batch's preprocessed images at once, so Spark's
# default (10,000 rows) would hold 10,000 images per Python worker; 64 keeps it to a few forward passes.
RECORDS_PER_BATCH = 64
# Paths per row group of the staged walk (see input_frame): Spark reads row groups in parallel.
_STAGE_ROWS = 65_536


@dataclass
class SparkScoreSummary:
    """What :func:`score_with_spark` wrote.

    Attributes:
        predictions: Prediction rows.
        errors: Ledger rows.
        output: Predictions folder.
        errors_path: Ledger folder.
        model: ``name/version``.
    """

    predictions: int
    errors: int
    output: Path
    errors_path: Path
    model: str

    def line(self) -> str:
        """One human line for the terminal."""
        return (
            f"scored {self.predictions} file(s) with {self.model} on Spark → {self.output}; "
            f"{self.errors} in the error ledger → {self.errors_path}"
        )


def _require_spark() -> Any:
    try:
        import pyspark.sql
    except ImportError as err:
        raise ImportError("medres.scoring.spark needs PySpark: pip install 'medres[spark]'") from err
    return pyspark.sql


def _stage_walk(root: Path, staging: Path, series: bool, exclude: list[str]) -> Path:
    """Write the walk's relative paths (3D: the folders holding files) to a Parquet file, streamed.

    The driver never holds the archive's path list: Spark reads the staged file in row groups (it must lie on
    storage the executors read, like the input).
    """
    schema = pa.schema([(FILE_COLUMN, pa.string())])
    staging.parent.mkdir(parents=True, exist_ok=True)
    partial = staging.with_name(f".{staging.name}.tmp")
    seen_folders: set[str] = set()
    with pq.ParquetWriter(partial, schema) as writer:
        batch: list[str] = []
        for rel in relative_files(root, exclude):
            if series:  # a series folder once (the walk lists a folder's files together)
                rel = Path(rel).parent.as_posix()
                if rel in seen_folders:
                    continue
                seen_folders.add(rel)
            batch.append(rel)
            if len(batch) == _STAGE_ROWS:
                writer.write_table(pa.table({FILE_COLUMN: batch}, schema=schema))
                batch = []
        writer.write_table(pa.table({FILE_COLUMN: batch}, schema=schema))
    os.replace(partial, staging)
    return staging


def input_frame(
    spark: SparkSession,
    input_dir: Path,
    staging: Path,
    manifest: Path | None = None,
    series: bool = False,
    exclude: tuple[str, ...] = (),
) -> DataFrame:
    """The DataFrame to score: ``path`` (absolute: the UDF's input) and ``file`` (relative to ``input_dir``).

    Args:
        spark: The session.
        input_dir: The input folder (mounted at this path on every executor).
        staging: Where a folder's walk is written as Parquet for Spark to read (beside the outputs is fine).
        manifest: A manifest from ``medres index`` of ``input_dir``: its rows, then its error ledger's, instead of
            a walk (2D packages).
        series: One row per folder holding files (3D packages: a series folder each) instead of per file.
        exclude: Relative paths under ``input_dir`` not to score (this job's outputs when they lie inside it).

    Raises:
        FileNotFoundError: ``input_dir`` or ``manifest`` does not exist.
        ValueError: ``manifest`` with ``series``.
    """
    functions = _require_spark().functions
    if not input_dir.is_dir():
        raise FileNotFoundError(f"--input {input_dir}: no such folder")
    if manifest is not None:
        if series:
            raise ValueError(f"--manifest {manifest}: a 3D package scores series folders; leave --manifest out")
        if not manifest.is_file():
            raise FileNotFoundError(f"--manifest {manifest}: no such file")
        frame = spark.read.parquet(str(manifest)).select(functions.col("path").alias(FILE_COLUMN))
        index_errors = index_errors_path_for(manifest)
        if index_errors.is_file():  # files the index could not read are inputs too (the ledger gets them)
            frame = frame.unionByName(
                spark.read.parquet(str(index_errors)).select(functions.col("path").alias(FILE_COLUMN))
            )
    else:
        frame = spark.read.parquet(str(_stage_walk(input_dir, staging, series, list(exclude))))
    root = str(input_dir.resolve())
    return frame.select(
        functions.concat_ws("/", functions.lit(root), functions.col(FILE_COLUMN)).alias(PATH_COLUMN), FILE_COLUMN
    )


def udf_result_type(findings: Sequence[str]) -> str:
    """``spark_udf``'s ``result_type`` for the medres pyfunc: each ``prob_<finding>`` (double) and ``error``.

    ``spark_udf`` casts a struct's fields with numpy, which has no null (MLflow 3.x), so two of the pyfunc's null
    values do not survive it:

    - ``finding_<finding>`` is null on a failed row, and fails the cast (``cannot convert float NaN to bool`` as
      soon as one row of a batch fails): the calls are left out here; compare the probability with the package's
      threshold in Spark instead, in float32 as ``medres score`` does (:func:`score_with_spark` does);
    - a null ``error`` comes back as text (``<NA>``): a row failed when its error holds ``": "``
      (:func:`failed_rows`), as every error the pyfunc writes does (``kind: message``).
    """
    return ", ".join([*(f"{probability_column(f)} double" for f in findings), f"{ERROR_COLUMN} string"])


def failed_rows(error: Column) -> Column:
    """Whether a ``spark_udf`` result row failed, from its ``error`` field (see :func:`udf_result_type`)."""
    return error.isNotNull() & error.contains(": ")


def _uids(paths: pd.Series) -> pd.DataFrame:
    """The three UIDs of each file (``None`` where unreadable), read header-only as ``medres score``'s ledger does."""
    return pd.DataFrame([header_uids(Path(path)) for path in paths], columns=list(UID_KEYS))


def score_with_spark(
    spark: SparkSession,
    model: str,
    input_dir: Path,
    output: Path,
    manifest: Path | None = None,
    tracking_uri: str | None = None,
    env_manager: str = "local",
    records_per_batch: int = RECORDS_PER_BATCH,
) -> SparkScoreSummary:
    """Score a folder (or a manifest) through ``spark_udf`` and write ``medres score``'s predictions and ledger.

    2D packages: one prediction or ledger row per file, with ``medres score``'s columns and values (paths
    relative to ``input_dir``, the UIDs, ``prob_<finding>`` as float32, ``finding_<finding>``, ``model_name``,
    ``model_version``; the ledger's ``kind`` and ``message`` from the pyfunc's ``error``).

    Args:
        spark: The session (its ``spark.sql.execution.arrow.maxRecordsPerBatch`` is set to ``records_per_batch``).
        model: ``models:/NAME/VERSION``, ``models:/NAME/latest`` or ``models:/NAME@ALIAS`` (resolved once, to a
            version, so every executor scores with the same one).
        input_dir: Folder to score (mounted at this path on every executor).
        output: Predictions folder (e.g. ``preds.parquet``); the ledger goes beside it (``preds.errors.parquet``).
        manifest: A manifest from ``medres index`` of ``input_dir`` to score instead of walking it.
        tracking_uri: Registry (default ``MLFLOW_TRACKING_URI`` or ``./mlflow.db``).
        env_manager: ``spark_udf``'s: ``local`` (the executors' installed medres), ``virtualenv`` or ``conda``.
        records_per_batch: Rows per batch handed to the pyfunc.

    Raises:
        ValueError: ``model`` is not a registry reference, or names a 3D package (score series with
            :func:`input_frame` and ``spark_udf`` directly, or with ``medres score``).
    """
    import mlflow

    sql = _require_spark()
    functions, types = sql.functions, sql.types
    if not model.startswith("models:/"):
        raise ValueError(f"--model {model}: spark_udf runs a registered model; give models:/NAME/VERSION")
    resolved = load_model(model, tracking_uri=tracking_uri)  # also points MLflow at the registry for spark_udf
    package = resolved.package
    if package.is_detector:
        raise ValueError(f"--model {model}: a lesion detector; its box rows are written by medres score")
    if package.preprocessing.spatial_dims != 2:
        raise ValueError(
            f"--model {model}: a 3D package; its series rows need the series plan (medres score, or input_frame(..., "
            "series=True) with spark_udf for probabilities per series folder)"
        )
    errors = errors_dir_for(output)
    # The walk, staged where the executors read it (not a hidden name: Spark skips those).
    staging = output.with_suffix(".inputs.parquet")
    exclude = tuple(
        p.resolve().relative_to(input_dir.resolve()).as_posix()
        for p in (output, errors, staging)
        if p.resolve().is_relative_to(input_dir.resolve())
    )
    frame = input_frame(spark, input_dir, staging, manifest=manifest, exclude=exclude)

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(records_per_batch))
    pinned = f"models:/{resolved.name}/{resolved.version}"
    udf = mlflow.pyfunc.spark_udf(spark, pinned, result_type=udf_result_type(package.findings), env_manager=env_manager)
    uid_type = types.StructType([types.StructField(key, types.StringType()) for key in UID_KEYS])
    uids = functions.pandas_udf(_uids, returnType=uid_type)
    scored = (
        frame.withColumn("result", udf(functions.struct(PATH_COLUMN)))
        .withColumn("uids", uids(PATH_COLUMN))
        .select(FILE_COLUMN, "uids.*", "result.*")
    )
    # Both tables come from one evaluation of the model (kept, not recomputed per write); a lost partition is
    # recomputed to the same rows (the pipeline is deterministic).
    scored = scored.persist()
    # medres score's identity columns, in its order: the path relative to the input folder, then the UIDs.
    identity = [functions.col(FILE_COLUMN).alias(IDENTITY_COLUMNS[0]), *(functions.col(k) for k in UID_KEYS)]
    failed = failed_rows(functions.col(ERROR_COLUMN))
    predictions = scored.where(~failed).select(
        *identity,
        *(functions.col(probability_column(f)).cast("float").alias(probability_column(f)) for f in package.findings),
        # The call as medres score makes it: the float32 probability against the float32 threshold.
        *(
            (functions.col(probability_column(f)).cast("float") >= functions.lit(t).cast("float")).alias(
                finding_column(f)
            )
            for f, t in zip(package.findings, package.thresholds, strict=True)
        ),
        functions.lit(resolved.name).alias("model_name"),
        functions.lit(resolved.version).alias("model_version"),
    )
    parts = functions.split(functions.col(ERROR_COLUMN), ": ", 2)  # the pyfunc's errors are "kind: message"
    ledger = scored.where(failed).select(*identity, parts.getItem(0).alias("kind"), parts.getItem(1).alias("message"))
    try:
        predictions.write.mode("overwrite").parquet(str(output))
        ledger.write.mode("overwrite").parquet(str(errors))
        n_predictions = spark.read.parquet(str(output)).count()
        n_errors = spark.read.parquet(str(errors)).count()
    finally:
        scored.unpersist()
    return SparkScoreSummary(n_predictions, n_errors, output, errors, f"{resolved.name}/{resolved.version}")
