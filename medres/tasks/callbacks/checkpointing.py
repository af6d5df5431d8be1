"""The fit's checkpoint callback: Lightning's ``ModelCheckpoint`` with a ``last.ckpt`` refreshed every epoch.

Lightning 2.6 writes ``last.ckpt`` at a validation end only when a top-k checkpoint was written at that step, so
once the monitored metric stops improving ``last.ckpt`` stays at the best epoch. A preempted fit resumed with
``--ckpt_path last`` would then redo every epoch since the best one (and the epochs it redoes are not the ones it
lost). Here ``last.ckpt`` always holds the end of the latest validated epoch.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (same arguments) whose ``save_last`` saves at the end of every epoch."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning's saving, then ``last.ckpt`` if it skipped it (validation ran earlier in this epoch)."""
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning's saving, then ``last.ckpt`` if it skipped it (validation more or less often than per epoch)."""
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        # The private helpers are those ModelCheckpoint uses for the same decision; reusing them keeps its skip rules
        # (sanity check, fast_dev_run, not fitting, already saved at this step) and its file naming.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
