"""``medres predict``: the predict split's probabilities and calls, written as prediction rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from medres.data.transforms import IDENTITY_COLUMNS
from medres.scoring.writers import ParquetStream, prediction_rows, prediction_schema


class DetectionPredictionWriter(BasePredictionWriter):
    """Streams ``Trainer.predict`` output of a detection model to Parquet, batch by batch.

    Rows follow the scoring contract (path, UIDs, ``prob_*``, ``finding_*``, model name/version); the
    model is named after the checkpoint predicted with. Under DDP each rank writes ``<stem>.rank<N>``.

    Args:
        output: Predictions Parquet file.
    """

    def __init__(self, output: Path = Path("predictions.parquet")) -> None:
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.stream: ParquetStream | None = None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Open this rank's output file."""
        output = self.output
        if trainer.world_size > 1:
            output = output.with_name(f"{output.stem}.rank{trainer.global_rank}{output.suffix}")
        self.stream = ParquetStream(output, prediction_schema(self._findings(pl_module)))

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
