"""``medres score``: apply a model package to every file under a folder.

Every file ends up in exactly one of the predictions (``OUTPUT``) or the error ledger
(``OUTPUT`` with suffix ``.errors.parquet``); a broken or non-DICOM file never stops the run. The
network runs through ``Trainer.predict`` so the accelerator and precision are Trainer settings.

Before any pixel is decoded the folder is indexed header-only and the package's series selection is
applied (:mod:`medres.scoring.samples`): a 2D package writes one prediction row per instance, a 3D
package one row per series, which stands for the ``n_instances`` files it was built from (see
:func:`medres.scoring.writers.prediction_schema`). Ledger rows stay one per file.

Prediction row columns
    ``path`` (relative to the input folder; a series row names its first file in slice order),
    ``SOPInstanceUID`` (null in a series row), ``SeriesInstanceUID``, ``StudyInstanceUID``,
    ``n_instances`` (series rows only: files scored as that series), ``prob_<finding>`` (float32),
    ``finding_<finding>`` (probability ≥ the package's threshold), ``model_name``, ``model_version``.

Ledger row columns
    ``path``, ``SOPInstanceUID``, ``SeriesInstanceUID``, ``StudyInstanceUID`` (null where unreadable),
    ``kind``, ``message`` (one line). Kinds: the reader's (``not_dicom``, ``no_pixel_data``,
    ``unsupported_codec``, ``truncated``, ``unsupported_image``, ``decode_error``, ``unreadable``,
    ``inconsistent_series``, ``missing_geometry``), ``preprocessing_error``, ``not_selected`` (the
    selection rules or a dropped localizer; the message is the reason), ``duplicate`` (a repeated slice
    position), ``series_error`` (a readable file whose series failed on another member, named in the message).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from medres.package import ModelPackage
from medres.scoring.dataset import ScoringDataset, collate_scoring
from medres.scoring.samples import plan_scoring
from medres.scoring.writers import LEDGER_SCHEMA, ParquetStream, prediction_rows, prediction_schema
from medres.tracking.registry import ResolvedModel, load_model

log = logging.getLogger(__name__)


@dataclass
class ScoreSummary:
    """What a scoring run did.

    Attributes:
        predictions: Prediction rows (instances for a 2D model, series for a 3D one).
        scored_files: Input files those rows stand for.
        errors: Ledger rows (one per file).
        series: Whether a prediction row stands for a series (3D model) rather than one file.
    """

    predictions: int
    scored_files: int
    errors: int
    error_kinds: dict[str, int]
    output: Path
    errors_path: Path
    seconds: float
    model: str = ""
    series: bool = False

    def line(self) -> str:
        """One human line for the terminal."""
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.error_kinds.items())) or "none"
        unit = f"series ({self.scored_files} file(s))" if self.series else "file(s)"
        return (
            f"scored {self.predictions} {unit} with {self.model} in {self.seconds:.1f}s → {self.output}; "
            f"{self.errors} in the error ledger ({kinds}) → {self.errors_path}"
        )


def errors_path_for(output: Path) -> Path:
    """The error ledger beside ``output``: ``preds.parquet`` → ``preds.errors.parquet``."""
    return output.with_suffix(".errors.parquet")


class _ScoringModule(pl.LightningModule):
    """Wraps the packaged network for ``Trainer.predict``; batches may hold zero scorable images."""

    def __init__(self, package: ModelPackage) -> None:
        super().__init__()
        self.network = package.build_model()
        self.num_findings = len(package.findings)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        images = batch["image"]
        # (n_ok, F); a batch whose files all went to the ledger has no image to run
        probs = torch.sigmoid(self.network(images).float()) if batch["rows"] else torch.zeros((0, self.num_findings))
        return {"probs": probs.cpu(), "rows": batch["rows"], "files": batch["files"], "errors": batch["errors"]}


class _ParquetPredictionWriter(BasePredictionWriter):
    """Writes each batch's rows as it is produced, so memory stays flat over the archive."""

    def __init__(self, model: ResolvedModel, predictions: ParquetStream, ledger: ParquetStream) -> None:
        super().__init__(write_interval="batch")
        self.model = model
        self.predictions = predictions
        self.ledger = ledger
        self.model_label = (model.name, model.version)
        self.error_kinds: Counter[str] = Counter()
        self.scored_files = 0

    def write_errors(self, rows: list[dict[str, Any]]) -> None:
        """Append ledger rows and count their kinds."""
        self.ledger.write(rows)
        self.error_kinds.update(row["kind"] for row in rows)

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        package = self.model.package
        rows = prediction_rows(
            prediction["rows"], prediction["probs"], package.findings, package.thresholds, *self.model_label
        )
        self.predictions.write(rows)
        self.scored_files += prediction["files"]
        self.write_errors(prediction["errors"])


def score_archive(
    model: str,
    input_dir: Path,
    output: Path,
    batch_size: int = 32,
    num_workers: int = 2,
    accelerator: str = "auto",
    precision: str = "32-true",
    tracking_uri: str | None = None,
    progress: bool = True,
) -> ScoreSummary:
    """Score every file under ``input_dir`` with a registered model or a checkpoint.

    The package decides the unit: a 2D model scores each selected instance, a 3D model each selected series.

    Args:
        model: ``models:/NAME/VERSION``, ``models:/NAME/latest``, ``models:/NAME@ALIAS`` or a ``.ckpt`` path.
        input_dir: Folder to score (every file below it, hidden ones excepted).
        output: Predictions Parquet file; the error ledger goes beside it (``.errors.parquet``).
        batch_size: Images (2D) or volumes (3D) per forward pass.
        num_workers: Header-index and decoding worker processes.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        precision: Lightning precision (``32-true``, ``bf16-mixed``, …).
        tracking_uri: Registry to resolve ``models:/`` references against.
        progress: Show a progress bar.
    """
    started = time.perf_counter()
    if not input_dir.is_dir():
        raise FileNotFoundError(f"--input {input_dir}: no such folder")
    resolved = load_model(model, tracking_uri=tracking_uri)
    package = resolved.package
    spatial_dims = package.preprocessing.spatial_dims
    plan = plan_scoring(input_dir, spatial_dims, package.selection, num_workers=num_workers, progress=progress)
    dataset = ScoringDataset(input_dir, plan.samples, package.preprocessing)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_scoring, shuffle=False
    )
    errors_path = errors_path_for(output)
    with (
        ParquetStream(output, prediction_schema(package.findings, series=spatial_dims == 3)) as predictions,
        ParquetStream(errors_path, LEDGER_SCHEMA) as ledger,
    ):
        writer = _ParquetPredictionWriter(resolved, predictions, ledger)
        writer.write_errors(plan.ledger)  # settled from headers alone: unreadable, not selected, dropped slices
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=1,
            precision=precision,  # type: ignore[arg-type]
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            callbacks=[writer],
        )
        if plan.samples:  # nothing to run when every file went to the ledger
            trainer.predict(_ScoringModule(package), dataloaders=loader, return_predictions=False)
    if writer.scored_files + ledger.rows != plan.n_files:  # the contract: every input in exactly one place
        raise RuntimeError(f"scored {writer.scored_files} + ledgered {ledger.rows} ≠ {plan.n_files} input files")
    return ScoreSummary(
        predictions=predictions.rows,
        scored_files=writer.scored_files,
        errors=ledger.rows,
        error_kinds=dict(writer.error_kinds),
        output=output,
        errors_path=errors_path,
        seconds=time.perf_counter() - started,
        model=f"{resolved.name}/{resolved.version}",
        series=spatial_dims == 3,
    )
