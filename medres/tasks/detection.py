"""Multi-label diagnostic detection: a residual backbone, masked BCE, per-finding AUROC."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.loggers import MLFlowLogger
from torchmetrics.classification import MultilabelAUROC
from torchmetrics.utilities import dim_zero_cat

import medres
from medres.data.datamodule import SAMPLE_INDEX_KEY
from medres.data.sampling import global_seed, seed_epoch
from medres.data.selection import SeriesSelection
from medres.data.summary import DataSummary
from medres.data.transforms import Preprocessing
from medres.evaluation.metrics import finding_auroc
from medres.evaluation.thresholds import OperatingPoint, ThresholdRule, choose_thresholds
from medres.models.weights import load_pretrained
from medres.package import CHECKPOINT_KEY, ModelPackage, build_backbone
from medres.tasks.losses import UncertainPolicy, masked_bce_with_logits, resolve_labels
from medres.tasks.outputs import EpochPredictions, PredictionCollector
from medres.tracking.resume import MLFLOW_RUN_KEY, run_entry

IGNORE_INDEX = -1  # torchmetrics' marker for "leave this label out"
# Checkpoint entries beside Lightning's own: the validation operating points the thresholds were chosen at, and
# the MLflow run that wrote the checkpoint (``medres fit --ckpt_path`` continues it).
OPERATING_POINTS_KEY = "medres_operating_points"

POS_WEIGHT_TAG = "medres.pos_weight"  # the weights ``pos_weight: auto`` chose, "finding=value, ..."
log = logging.getLogger(__name__)


class MaskedMultilabelAUROC(MultilabelAUROC):
    """Per-finding AUROC that is NaN, not torchmetrics' 0.0, for a finding whose labels hold only one class.

    A split with no positive nodule has no nodule AUROC; reporting 0 would drag the macro mean down
    and make a lucky split look like a broken model.
    """

    # The base class's annotation is its precision-recall-curve grandparent's; AUROC returns a tensor.
    def compute(self) -> torch.Tensor:  # type: ignore[override]  # states are already synced here
        """AUROC per finding (:func:`medres.evaluation.metrics.finding_auroc`), NaN where one class is missing.

        torchmetrics keeps and syncs the epoch's predictions across DDP ranks; the AUROC itself is medres's one
        implementation, so training, held-out evaluation and the review report agree to the last digit.
        """
        preds = dim_zero_cat(self.preds).float().cpu().numpy()
        target = dim_zero_cat(self.target).cpu().numpy()
        values = []
        for column in range(preds.shape[1]):
            known = (target[:, column] == 0) | (target[:, column] == 1)  # ignore_index rows left out
            values.append(finding_auroc(preds[known, column], target[known, column]))
        return torch.tensor(values, dtype=torch.float32)


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)


class MultiLabelDetection(pl.LightningModule):
    """Detects several findings per image; each finding is an independent sigmoid output.

    Batches are dicts with ``image`` (N, C, *spatial) and ``label`` (N, F) holding 1, 0, NaN
    (unknown: masked out of loss and metrics) or -1 (uncertain: see ``uncertain_policy``).

    Args:
        findings: Label names in output order (linked from the data module's ``findings``).
        preprocessing: The data module's preprocessing (linked); saved into checkpoints and packages.
        selection: The data module's series selection (linked); saved into packages so scoring picks the same
            instances or series that training did.
        backbone: Registered model name from ``medres.models`` (``resnet50``, ``preact_resnet164``, ...), or any
            ``torch.nn.Module`` class as ``{"class_path": ..., "init_args": {...}}`` (a MONAI network, say); its
            spatial_dims, input channels and outputs are filled in from the data where the config leaves them out.
        backbone_args: Overrides for the backbone's arguments (e.g. ``drop_path_rate``, ``shortcut``).
        pretrained: Local file to initialise the backbone from (torchvision or MedicalNet layout, a medres package
            folder or checkpoint); see ``medres.models.weights.load_pretrained``. Never a URL.
        pretrained_layout: Layout of ``pretrained``; ``auto`` recognises it from the keys.
        uncertain_policy: ``ignore``, ``positive`` or ``negative`` for -1 labels.
        pos_weight: Weight of positives per finding in the loss (imbalance): one value per finding, or ``auto`` for
            negatives / positives of each finding on the train split (unknown and uncertain labels left out; 1.0 for
            a finding with no positive), computed when a fit starts and recorded as the run tag ``medres.pos_weight``.
        threshold_rule: How each finding's operating threshold is chosen on the validation predictions after every
            validation epoch (Youden's J, a target sensitivity or specificity, or fixed); each checkpoint carries
            the thresholds of its own epoch, so the registered best checkpoint brings its own.
        thresholds: Fixed operating thresholds, one per finding; when given, ``threshold_rule`` is not applied.
        optimizer: Optimizer factory, from the config's ``class_path``/``init_args``.
        scheduler: Optional LR scheduler factory, stepped once per epoch.
        channels_last: Keep weights and input batches in channels-last memory format (faster convolutions with
            tensor cores under bf16/16-mixed; NHWC in 2D, NDHWC in 3D).
        compile: Run the backbone through ``torch.compile``; the weights (and checkpoints, packages) stay the plain
            module's.
    """

    pos_weight: torch.Tensor | None  # a buffer: follows the module across devices

    def __init__(
        self,
        findings: list[str],
        preprocessing: Preprocessing | None = None,
        selection: SeriesSelection | None = None,
        backbone: str | dict[str, Any] = "resnet50",
        backbone_args: dict[str, Any] | None = None,
        pretrained: str | None = None,
        pretrained_layout: Literal["auto", "torchvision", "medicalnet", "medres"] = "auto",
        uncertain_policy: Literal["ignore", "positive", "negative"] = "ignore",
        pos_weight: list[float] | Literal["auto"] | None = None,
        threshold_rule: ThresholdRule | None = None,
        thresholds: list[float] | None = None,
        optimizer: OptimizerCallable = _default_optimizer,
        scheduler: LRSchedulerCallable | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not findings:
            raise ValueError("model.findings is empty: name at least one finding")
        if isinstance(pos_weight, str) and pos_weight != "auto":
            raise ValueError(f"model.pos_weight={pos_weight!r}: give one number per finding or 'auto'")
        if isinstance(pos_weight, list) and len(pos_weight) != len(findings):
            raise ValueError(f"model.pos_weight has {len(pos_weight)} values for {len(findings)} findings")
        if thresholds is not None and len(thresholds) != len(findings):
            raise ValueError(f"model.thresholds has {len(thresholds)} values for {len(findings)} findings")
        self.findings = list(findings)
        self.preprocessing = preprocessing or Preprocessing()
        self.selection = selection or SeriesSelection()
        self.backbone_name = backbone
        self.backbone_args = dict(backbone_args or {})
        self.uncertain_policy = UncertainPolicy(uncertain_policy)
        self.threshold_rule = threshold_rule or ThresholdRule()
        self.fixed_thresholds = thresholds is not None
        self.thresholds = (
            [float(t) for t in thresholds] if thresholds is not None else [self.threshold_rule.fixed] * len(findings)
        )
        self.operating_points: list[OperatingPoint] = []
        self.test_predictions: EpochPredictions | None = None
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.backbone = build_backbone(backbone, self.backbone_args, self.preprocessing, len(findings))
        if pretrained is not None:
            # Before training, never when scoring: packages and checkpoints carry the trained weights themselves.
            load_pretrained(self.backbone, pretrained, layout=pretrained_layout)
        self.auto_pos_weight = pos_weight == "auto"
        # "auto" starts at 1.0 and is filled in from the train split in setup(); a buffer either way, so that a
        # checkpoint holds the weights the fit used and a resumed fit keeps them.
        initial = [1.0] * len(findings) if isinstance(pos_weight, str) else pos_weight
        self.register_buffer("pos_weight", torch.tensor(initial, dtype=torch.float32) if initial is not None else None)
        self.channels_last = channels_last
        self.compile_backbone = compile
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        # Plain values only, so checkpoints load with torch.load(weights_only=True); the resolved
        # config is logged by the CLI, so these are not sent to the logger a second time.
        self.save_hyperparameters(
            {
                "findings": self.findings,
                "preprocessing": self.preprocessing.to_dict(),
                "selection": self.selection.to_dict(),
                "backbone": backbone,
                "backbone_args": self.backbone_args,
                "uncertain_policy": str(self.uncertain_policy),
            },
            logger=False,
        )
        self.val_auroc = self._auroc()
        self.test_auroc = self._auroc()
        self.val_outputs = PredictionCollector()
        self.test_outputs = PredictionCollector()

    def _auroc(self) -> MaskedMultilabelAUROC:
        return MaskedMultilabelAUROC(num_labels=len(self.findings), average=None, ignore_index=IGNORE_INDEX)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, *spatial) images → (N, F) logits."""
        if self.channels_last:
            images = images.contiguous(memory_format=_channels_last_format(images.ndim))
        logits: torch.Tensor = self._backbone_fn()(images)
        if logits.ndim != 2 or logits.shape[1] != len(self.findings):
            # A class_path backbone may ignore the sizing medres fills in; say so instead of a loss shape error.
            raise ValueError(
                f"backbone {self.backbone_name!r} returns shape {tuple(logits.shape)}, expected (N, "
                f"{len(self.findings)}) for findings {self.findings}"
            )
        return logits

    # ---- set-up ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Fill in ``pos_weight: auto`` from the train split's counts when a fit starts."""
        if stage != "fit" or not self.auto_pos_weight or self.pos_weight is None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not callable(getattr(datamodule, "summary", None)):
            raise ValueError("model.pos_weight=auto needs a data module with summary() (DicomDataModule)")
        weights = auto_pos_weight(datamodule.summary(), self.findings)
        self.pos_weight.copy_(torch.tensor(weights, dtype=torch.float32))
        text = ", ".join(f"{f}={w:.4g}" for f, w in zip(self.findings, weights, strict=True))
        log.info("pos_weight (auto, train split negatives/positives): %s", text)
        for logger in self.trainer.loggers:
            if isinstance(logger, MLFlowLogger) and logger.run_id is not None and self.trainer.is_global_zero:
                logger.experiment.set_tag(logger.run_id, POS_WEIGHT_TAG, text)

    def configure_model(self) -> None:
        """Channels-last weights when asked (the input batches follow in ``forward``).

        Lightning calls this before the strategy moves the model (``to`` keeps the layout) and wraps it in DDP,
        whose gradient buckets must see the final layout.
        """
        if self.channels_last:
            memory_format = _channels_last_format(self.preprocessing.spatial_dims + 2)
            self.backbone.to(memory_format=memory_format)  # type: ignore[call-overload]  # torch's stubs omit it

    # ---- training --------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        """Reseed torch from (seed, epoch, rank): dropout and stochastic depth replay exactly after a resume."""
        seed_epoch(global_seed(), self.current_epoch, self.global_rank)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Masked BCE on one batch."""
        loss, _, _, _ = self._shared_step(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    # ---- validation / test ---------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Loss, AUROC state and the epoch's predictions."""
        self._evaluate(batch, batch_idx, "val", self.val_auroc, self.val_outputs)

    def on_validation_epoch_end(self) -> None:
        """Per-finding and macro AUROC for the epoch, and the operating thresholds chosen on its predictions.

        ``ModelCheckpoint`` saves after this hook, so every checkpoint holds the thresholds of its own epoch.
        """
        self._log_auroc("val", self.val_auroc)
        predictions = self.val_outputs.compute()
        self.val_outputs.reset()
        if self.trainer.sanity_checking or len(predictions) == 0 or self.fixed_thresholds:
            return
        self.operating_points = choose_thresholds(predictions.probs, predictions.targets, self.threshold_rule)
        self.thresholds = [point.threshold for point in self.operating_points]
        for finding, point in zip(self.findings, self.operating_points, strict=True):
            self.log(f"val/threshold_{finding}", point.threshold, sync_dist=False)
            self.log(f"val/sensitivity_{finding}", point.sensitivity, sync_dist=False)
            self.log(f"val/specificity_{finding}", point.specificity, sync_dist=False)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Loss, AUROC state and the predictions (kept for the run's review artifacts)."""
        self._evaluate(batch, batch_idx, "test", self.test_auroc, self.test_outputs)

    def on_test_epoch_end(self) -> None:
        """Per-finding and macro AUROC on the test split; the predictions stay in ``test_predictions``."""
        self._log_auroc("test", self.test_auroc)
        self.test_predictions = self.test_outputs.compute()
        self.test_outputs.reset()

    # ---- predict -------------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """(N, F) probabilities."""
        return torch.sigmoid(self(batch["image"]).float())

    # ---- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """The configured optimizer, and the scheduler stepped per epoch if one is configured."""
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ---- checkpoint and package ----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Embed the model contract (a checkpoint path scores like a registered model) and the MLflow run."""
        checkpoint[CHECKPOINT_KEY] = self.to_package().contract()
        checkpoint[OPERATING_POINTS_KEY] = [asdict(point) for point in self.operating_points]
        run = run_entry(self.trainer.loggers)
        if run is not None:
            checkpoint[MLFLOW_RUN_KEY] = run

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the checkpoint's thresholds, so testing or registering it uses the ones chosen with it."""
        contract = checkpoint.get(CHECKPOINT_KEY)
        if contract is not None and len(contract.get("thresholds", [])) == len(self.findings):
            self.thresholds = [float(t) for t in contract["thresholds"]]
        self.operating_points = [OperatingPoint(**point) for point in checkpoint.get(OPERATING_POINTS_KEY, [])]

    def to_package(self, training_config: str | None = None) -> ModelPackage:
        """The current weights and contract as a :class:`~medres.package.ModelPackage`."""
        return ModelPackage(
            backbone=self.backbone_name,
            backbone_args=self.backbone_args,
            findings=self.findings,
            preprocessing=self.preprocessing,
            selection=self.selection,
            thresholds=self.thresholds,
            state_dict={k: v.detach().cpu() for k, v in self.backbone.state_dict().items()},
            medres_version=medres.__version__,
            training_config=training_config,
        )

    # ---- helpers -------------------------------------------------------------------------------
    def _backbone_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if not self.compile_backbone:
            return self.backbone
        if self._compiled is None:
            # Compile the bound forward, not the module: torch.compile's wrapper module would prefix every
            # state_dict key with ``_orig_mod.`` and checkpoints would no longer load into a plain backbone.
            self._compiled = torch.compile(self.backbone.forward)
        return self._compiled

    def _shared_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        targets, mask = resolve_labels(batch["label"].float(), self.uncertain_policy)
        loss = masked_bce_with_logits(logits, targets, mask, self.pos_weight)
        return loss, logits, targets, mask

    def _evaluate(
        self,
        batch: dict[str, Any],
        batch_idx: int,
        stage: str,
        auroc: MultilabelAUROC,
        outputs: PredictionCollector,
    ) -> None:
        loss, logits, targets, mask = self._shared_step(batch)
        batch_size = len(batch["image"])
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=True)
        probs = torch.sigmoid(logits.float())
        metric_targets = torch.where(mask, targets.long(), torch.full_like(targets, IGNORE_INDEX, dtype=torch.long))
        auroc.update(probs, metric_targets)
        index = batch.get(SAMPLE_INDEX_KEY)
        if index is None:  # a data module of the user's own: batches in loader order (exact on one process)
            index = torch.arange(batch_size, device=probs.device) + batch_idx * batch_size
        outputs.update(probs, torch.where(mask, targets.float(), torch.full_like(probs, float("nan"))), index)

    def _log_auroc(self, stage: str, auroc: MultilabelAUROC) -> None:
        per_finding = auroc.compute()
        auroc.reset()
        valid = ~torch.isnan(per_finding)
        for name, value in zip(self.findings, per_finding, strict=True):
            self.log(f"{stage}/auroc_{name}", value, sync_dist=False)
        macro = per_finding[valid].mean() if bool(valid.any()) else torch.tensor(float("nan"))
        self.log(f"{stage}/auroc_macro", macro, prog_bar=True, sync_dist=False)


def auto_pos_weight(summary: DataSummary, findings: list[str]) -> list[float]:
    """Negatives / positives of each finding on the train split; 1.0 for a finding with no positive label.

    Unknown and uncertain labels count as neither (they are masked or policy-mapped in the loss).
    """
    counts = summary.counts["train"]
    weights = []
    for finding in findings:
        finding_counts = counts[finding]
        if finding_counts.positive == 0:
            log.warning("pos_weight auto: no positive %r in the train split; its weight stays 1.0", finding)
            weights.append(1.0)
        else:
            weights.append(finding_counts.negative / finding_counts.positive)
    return weights


def _channels_last_format(ndim: int) -> torch.memory_format:
    """Channels-last for (N, C, H, W) and (N, C, D, H, W) tensors."""
    return torch.channels_last_3d if ndim == 5 else torch.channels_last
