"""Resuming a fit in its own MLflow run: which checkpoint ``--ckpt_path last`` means, and which run wrote it.

A medres checkpoint records the MLflow run that wrote it (:data:`MLFLOW_RUN_KEY`), so ``medres fit --ckpt_path FILE``
continues that run instead of starting a new one, and a preempted job that reruns the same command with
``--ckpt_path last`` finds the newest ``last.ckpt`` of its experiment (Lightning's own "last" looks only in the new
run's checkpoint folder, which a fresh run id leaves empty).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mlflow import MlflowClient

from medres.tracking.defaults import resolve_tracking_uri

__all__ = ["MLFLOW_RUN_KEY", "Resume", "checkpoint_mlflow_run", "last_checkpoint", "resolve_resume", "run_entry"]

# The checkpoint entry (beside Lightning's own) naming the MLflow run that wrote it: {"run_id": ...}.
MLFLOW_RUN_KEY = "medres_mlflow_run"
log = logging.getLogger(__name__)


def run_entry(loggers: Iterable[Any]) -> dict[str, str] | None:
    """The :data:`MLFLOW_RUN_KEY` entry a task writes into its checkpoints: the first logger with an MLflow run.

    Read by duck type (``run_id``, ``experiment_id``): this stage does not import Lightning's logger class.
    """
    for logger in loggers:
        run_id = getattr(logger, "run_id", None)
        if run_id is not None:
            return {"run_id": str(run_id), "experiment_id": str(logger.experiment_id)}
    return None


def checkpoint_mlflow_run(ckpt_path: str | Path | None) -> str | None:
    """The MLflow run id a medres checkpoint was written under, if ``ckpt_path`` is such a file."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return None  # "last"/"best" and missing files are Lightning's to resolve or refuse
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    run = checkpoint.get(MLFLOW_RUN_KEY) if isinstance(checkpoint, dict) else None
    return str(run["run_id"]) if run else None


def last_checkpoint(root_dir: str | Path, experiment_id: str) -> Path | None:
    """The newest ``last*.ckpt`` of an MLflow experiment's fits under a trainer's ``default_root_dir``.

    Checkpoints live in ``<root_dir>/<experiment_id>/<run_id>/checkpoints/`` (Lightning's layout for an MLflow logger).
    """
    found = [p for p in Path(root_dir).glob(f"{experiment_id}/*/checkpoints/last*.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


@dataclass(frozen=True)
class Resume:
    """Where a fit starts: the checkpoint to load (``None``: from scratch) and the run to continue (``None``: new)."""

    ckpt_path: str | None
    run_id: str | None


def resolve_resume(
    ckpt_path: str | None, experiment_name: str | None, tracking_uri: str | None, root_dir: str | Path
) -> Resume:
    """Resolve ``--ckpt_path`` (a file, ``last``, or Lightning's ``best``/``None``) and the run it continues.

    Args:
        ckpt_path: What the user gave.
        experiment_name: The logger's MLflow experiment (``None``: no MLflow logger; ``last`` stays Lightning's).
        tracking_uri: The logger's store; default ``MLFLOW_TRACKING_URI``, else ``./mlflow.db``.
        root_dir: The trainer's ``default_root_dir``, where the checkpoints live.
    """
    if ckpt_path == "last" and experiment_name is not None:
        experiment = MlflowClient(resolve_tracking_uri(tracking_uri)).get_experiment_by_name(experiment_name)
        found = None if experiment is None else last_checkpoint(root_dir, experiment.experiment_id)
        if found is None:
            log.warning(
                "--ckpt_path last: no last.ckpt of experiment %r under %s; starting a new fit",
                experiment_name,
                root_dir,
            )
        ckpt_path = None if found is None else str(found)
        log.info("--ckpt_path last → %s", ckpt_path)
    return Resume(ckpt_path, checkpoint_mlflow_run(ckpt_path))
