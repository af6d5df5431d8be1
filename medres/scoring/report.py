"""A finished scoring job as an MLflow run: counts, error kinds, throughput, score distributions, model version.

The run goes to the ``medres-scoring`` experiment. Nothing read from a DICOM header reaches it: the input folder
is logged as a hash of its absolute path with the file count (a path may name a patient or a ward), the model as
its registered name and version, and the score distributions as a histogram per finding (counts only). Param
keys live under ``scoring.`` and artifacts under ``scoring/``, both on the allow-list of
:mod:`medres.tracking.privacy`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.dataset as ds
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medres.package import probability_column
from medres.tracking.defaults import default_artifact_location, disable_telemetry, resolve_tracking_uri
from medres.tracking.privacy import allowed_params, allowed_tags, is_allowed_artifact

if TYPE_CHECKING:
    from medres.scoring.summary import ScoreSummary

EXPERIMENT = "medres-scoring"
HISTOGRAM_BINS = 50


def root_hash(root: Path) -> str:
    """SHA-256 (16 hex digits) of the input folder's absolute path: names the archive without its path."""
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]


def score_histograms(predictions: Path, findings: Sequence[str]) -> np.ndarray:
    """Counts of each finding's probabilities in ``HISTOGRAM_BINS`` equal bins over [0, 1], shape (F, bins).

    Streamed a record batch at a time, so the histogram costs no memory per prediction row.
    """
    counts = np.zeros((len(findings), HISTOGRAM_BINS), dtype=np.int64)
    columns = [probability_column(f) for f in findings]
    for batch in ds.dataset(predictions, format="parquet").to_batches(columns=columns):
        for j, column in enumerate(columns):
            values = batch.column(column).to_numpy(zero_copy_only=False)
            counts[j] += np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0]
    return counts


def _histogram_figure(counts: np.ndarray, findings: Sequence[str], thresholds: Sequence[float]) -> Figure:
    figure = Figure(figsize=(4 * len(findings), 3.2), layout="constrained")
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    for j, (finding, threshold) in enumerate(zip(findings, thresholds, strict=True)):
        axes = figure.add_subplot(1, len(findings), j + 1)
        axes.stairs(counts[j], edges, fill=True)
        axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
        axes.set(title=finding, xlabel="probability", ylabel="prediction rows", xlim=(0, 1))
        axes.legend(loc="upper right", fontsize="small")
    return figure


def log_scoring_run(
    summary: ScoreSummary,
    root: Path,
    findings: Sequence[str],
    thresholds: Sequence[float],
    params: dict[str, str],
    tracking_uri: str | None = None,
) -> str:
    """Log the job as a run of the ``medres-scoring`` experiment and return its run id.

    Args:
        summary: The finished job.
        root: The input folder (logged as :func:`root_hash` only).
        findings: The package's label names.
        thresholds: Its operating thresholds.
        params: Job settings to log (``scoring.`` is prefixed to each key).
        tracking_uri: Tracking store (default ``MLFLOW_TRACKING_URI`` or ``./mlflow.db``).
    """
    import mlflow  # imported here: scoring without a tracking store never loads MLflow

    disable_telemetry()
    uri = resolve_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(EXPERIMENT, artifact_location=default_artifact_location(uri))
    )
    tags = allowed_tags({"medres.run_type": "scoring", "medres.model": summary.model})
    run = client.create_run(experiment_id, tags=tags, run_name=f"score {summary.model}")
    run_id: str = run.info.run_id
    logged = {
        "model_name": summary.model_name,
        "model_version": summary.model_version,
        "input_root_sha256": root_hash(root),
        "input_files": str(summary.files),
        **params,
    }
    for key, value in allowed_params({f"scoring.{k}": v for k, v in logged.items()}).items():
        client.log_param(run_id, key, value)
    metrics: dict[str, float] = {
        "files": summary.files,
        "predictions": summary.predictions,
        "scored_files": summary.scored_files,
        "errors": summary.errors,
        "studies": summary.studies,
        "seconds": summary.seconds,
        "files_per_s": summary.files_per_second,
        "instances_per_s": summary.scored_files / summary.seconds if summary.seconds > 0 else 0.0,
        "resumed_files": summary.resumed,
        **{f"errors.{kind}": n for kind, n in summary.error_kinds.items()},
    }
    for key, number in metrics.items():
        client.log_metric(run_id, key, float(number))
    counts = score_histograms(summary.output, findings)
    with tempfile.TemporaryDirectory(prefix="medres-scoring-") as tmp:
        folder = Path(tmp) / "scoring"
        folder.mkdir()
        FigureCanvasAgg(_histogram_figure(counts, findings, thresholds)).print_png(folder / "score_distributions.png")
        histograms = {f: counts[j].tolist() for j, f in enumerate(findings)}
        (folder / "summary.json").write_text(json.dumps({"metrics": metrics, "histograms": histograms}, indent=1))
        assert all(is_allowed_artifact(f"scoring/{p.name}") for p in folder.iterdir()), "scoring/ is allow-listed"
        client.log_artifacts(run_id, str(folder), artifact_path="scoring")
    client.set_terminated(run_id)
    return run_id
