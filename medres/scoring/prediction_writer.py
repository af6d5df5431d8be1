"""``medres predict``: the predict split's probabilities and calls, written as prediction rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from medres.data.transforms import IDENTITY_COLUMNS
from medres.scoring.writers import N_INSTANCES, ParquetStream, prediction_rows, prediction_schema


class DetectionPredictionWriter(BasePredictionWriter):
    """Streams ``Trainer.predict`` output of a detection model to Parquet, batch by batch.

    Rows follow the scoring contract (path, UIDs, ``prob_*``, ``finding_*``, model name/version); the
    model is named after the checkpoint predicted with. Under DDP each rank writes ``<stem>.rank<N>``.
    A 3D model (``preprocessing.spatial_dims == 3``) writes series rows as scoring does: SOPInstanceUID
    null and ``n_instances`` from the batch (null where the batch does not carry it).

    Args:
        output: Predictions Parquet file.
    """

    def __init__(self, output: Path = Path("predictions.parquet")) -> None:
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.stream: ParquetStream | None = None
        self.series = False

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Open this rank's output file."""
        output = self.output
        if trainer.world_size > 1:
            output = output.with_name(f"{output.stem}.rank{trainer.global_rank}{output.suffix}")
        preprocessing = getattr(pl_module, "preprocessing", None)
        self.series = getattr(preprocessing, "spatial_dims", 2) == 3
        self.stream = ParquetStream(output, prediction_schema(self._findings(pl_module), series=self.series))

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
        """Append the batch's rows."""
        assert self.stream is not None, "on_predict_start opens the stream"
        identities = [
            dict(zip(IDENTITY_COLUMNS, values, strict=True))
            for values in zip(*(batch[c] for c in IDENTITY_COLUMNS), strict=True)
        ]
        if self.series:
            counts = batch.get(N_INSTANCES)
            for i, identity in enumerate(identities):
                identity["SOPInstanceUID"] = None  # a series has none (batches carry "" so that they collate)
                identity[N_INSTANCES] = int(counts[i]) if counts is not None else None
        name = Path(trainer.ckpt_path).stem if trainer.ckpt_path else "untrained"
        thresholds = getattr(pl_module, "thresholds", [0.5] * prediction.shape[1])
        rows = prediction_rows(identities, prediction.cpu(), self._findings(pl_module), thresholds, name, "checkpoint")
        self.stream.write(rows)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Finish the file."""
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    @staticmethod
    def _findings(pl_module: pl.LightningModule) -> list[str]:
        findings = getattr(pl_module, "findings", None)
        if not findings:
            raise TypeError(f"{type(pl_module).__name__} has no findings; DetectionPredictionWriter needs them")
        return list(findings)
