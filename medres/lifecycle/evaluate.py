"""Evaluate model packages on labelled held-out data: the same samples for every model, each with its own preprocessing.

The held-out samples come from :class:`~medres.data.datamodule.DicomDataModule` with the candidate's findings and
selection, so the split file training wrote in the work folder is reused and the test split is the one training
held out. Each model then reads those same samples through its own package preprocessing: a candidate trained at
another resolution is compared with the champion on the same patients and instances, not on different inputs.

A lesion detector (a package with ``detector``) is read through :class:`~medres.data.box_datamodule.BoxDataModule`
with the training box file and merge rule, and judged per finding by CPM, sensitivity at 1 FP per image and mAP at
IoU 0.1 and 0.5 (:mod:`medres.evaluation.detection_metrics`) beside the AUROC of its top box score; each model moves
the same true boxes through its own preprocessing.

AUROC per finding counts only known labels (1 and 0); unknown (NaN) and uncertain (-1) labels are left out, and a
finding whose held-out labels hold a single class has no AUROC (NaN), so it never drags the macro mean down.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from monai.data import DataLoader, Dataset

from medres.data.box_datamodule import BoxDataModule
from medres.data.box_samples import collate_boxes
from medres.data.box_transforms import BOX_KEY, BOX_LABEL_KEY, box_eval_transforms
from medres.data.boxes import MergeRule
from medres.data.datamodule import SPLITS, DicomDataModule
from medres.data.transforms import IMAGE_KEY, eval_transforms
from medres.evaluation.detection_metrics import ImageBoxes, detection_metrics, finding_boxes, image_scores
from medres.evaluation.metrics import finding_auroc
from medres.models.detector import detect
from medres.models.inference import predict_probabilities
from medres.package import ModelPackage

log = logging.getLogger(__name__)

HeldOutSplit = Literal["train", "val", "test", "all"]


@dataclass(frozen=True)
class HeldOutData:
    """Labelled data every compared model is evaluated on.

    Settings left unset come from the candidate's training config when it was trained on the same archive, so the
    split that training wrote (``splits.csv`` in the work folder) is found and reused; otherwise from the data
    module's defaults.

    Args:
        root: Archive folder.
        labels: Labels CSV keyed by StudyInstanceUID; default the training config's, else ``root/labels.csv``.
        boxes: A lesion detector's box CSV; default the training config's ``data.boxes``, else ``root/boxes.csv``.
        work_dir: Folder with the manifest and ``splits.csv``; default the training config's, else
            ``./medres_work/<archive>-<hash>`` (where ``medres fit`` run from the same folder wrote them).
        split: Which samples: ``test`` (default: the patients training held out), ``val``, ``train``, or ``all``
            (every labelled sample: an external archive no model was trained on).
        split_fractions: Train/val/test fractions of patients; default the training config's, else (0.7, 0.15, 0.15).
        split_seed: Seed of the patient split; default the training config's, else 0.
        batch_size: Images per forward pass.
        num_workers: Decoding worker processes.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    """

    root: Path
    labels: Path | None = None
    boxes: Path | None = None
    work_dir: Path | None = None
    split: HeldOutSplit = "test"
    split_fractions: tuple[float, float, float] | None = None
    split_seed: int | None = None
    batch_size: int = 32
    num_workers: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class DataFingerprint:
    """What the models were judged on, in numbers safe to log: counts and a hash, no paths, no patient keys.

    ``digest`` is a SHA-256 over the sorted archive-relative sample paths and their labels: two decisions with the
    same digest were taken on the same samples with the same labels.
    """

    split: str
    samples: int
    patients: int
    digest: str


@dataclass(frozen=True)
class HeldOutSamples:
    """The held-out records (data-module samples), the label columns they carry and their fingerprint."""

    records: list[dict[str, Any]]
    findings: list[str]
    fingerprint: DataFingerprint

    def labels(self, finding: str) -> np.ndarray:
        """(N,) labels of ``finding``: 1, 0, NaN unknown, -1 uncertain."""
        column = self.findings.index(finding)
        return np.array([record["label"][column] for record in self.records], dtype=np.float32)


@dataclass(frozen=True)
class Evaluation:
    """Per-finding AUROC of one model on held-out samples.

    Args:
        findings: The evaluated findings, in the model's order.
        auroc: AUROC per finding; NaN where the held-out labels hold one class only.
        positives: Known positive labels per finding.
        negatives: Known negative labels per finding.
    """

    findings: list[str]
    auroc: dict[str, float]
    positives: dict[str, int]
    negatives: dict[str, int]
    detection: dict[str, dict[str, float]] = field(default_factory=dict)
    gate_metric: str = "auroc"

    def scores(self, metric: str | None = None) -> dict[str, float]:
        """Per finding, the value of ``metric`` (default :attr:`gate_metric`).

        ``auroc`` for every model; a detector's ``cpm``, ``sens_at_1fp``, ``map_0.1`` and ``map_0.5`` too.
        """
        metric = metric or self.gate_metric
        if metric == "auroc":
            return self.auroc
        if metric not in self.detection:
            raise ValueError(f"{metric!r} is a lesion-detection metric; this model predicts no boxes")
        return self.detection[metric]

    @property
    def judged(self) -> list[str]:
        """Findings the gate metric judges (AUROC: both classes present; detection: a true box present)."""
        scores = self.scores()
        return [f for f in self.findings if not math.isnan(scores.get(f, math.nan))]

    @property
    def macro(self) -> float:
        """Mean of the gate metric over the judged findings; NaN when none is judged."""
        judged, scores = self.judged, self.scores()
        return float(np.mean([scores[f] for f in judged])) if judged else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (NaN becomes ``None``)."""
        auroc = {f: _finite_or_none(v) for f, v in self.auroc.items()}
        judged = [f for f in self.findings if auroc.get(f) is not None]
        macro_auroc = float(np.mean([self.auroc[f] for f in judged])) if judged else math.nan
        out: dict[str, Any] = {
            "findings": self.findings,
            "auroc": auroc,
            "auroc_macro": _finite_or_none(macro_auroc),
            "positives": self.positives,
            "negatives": self.negatives,
        }
        if self.detection:
            out["detection"] = {m: {f: _finite_or_none(v) for f, v in d.items()} for m, d in self.detection.items()}
            out["gate_metric"] = self.gate_metric
        return out


def resolve_held_out(data: HeldOutData, package: ModelPackage) -> HeldOutData:
    """Fill the settings ``data`` leaves unset from ``package``'s training config (same archive only)."""
    config = _training_data_config(package)
    same_archive = "root" in config and Path(str(config["root"])).resolve() == Path(data.root).resolve()
    updates: dict[str, Any] = {}
    if data.split_fractions is None and config.get("split_fractions") is not None:
        updates["split_fractions"] = tuple(float(f) for f in config["split_fractions"])
    if data.split_seed is None and config.get("split_seed") is not None:
        updates["split_seed"] = int(config["split_seed"])
    if same_archive:
        for key in ("labels", "boxes", "work_dir"):
            if getattr(data, key) is None and config.get(key) is not None:
                updates[key] = Path(str(config[key]))
    return replace(data, **updates)


def load_held_out(data: HeldOutData, package: ModelPackage) -> HeldOutSamples:
    """The held-out samples for ``package``'s findings and selection (the archive is indexed once, then reused).

    Args:
        data: Where the samples are; unset settings must already be resolved (:func:`resolve_held_out`).
        package: The model whose findings, selection and spatial dims choose the samples (the candidate).

    Raises:
        ValueError: If the chosen split holds no sample.
    """
    if data.split not in (*SPLITS, "all"):
        raise ValueError(f"--data.split={data.split!r}: must be one of {[*SPLITS, 'all']}")
    module: DicomDataModule
    common: dict[str, Any] = {
        "root": data.root,
        "findings": package.findings,
        "work_dir": data.work_dir,
        "split_fractions": data.split_fractions or (0.7, 0.15, 0.15),
        "split_seed": 0 if data.split_seed is None else data.split_seed,
        "preprocessing": package.preprocessing,
        "selection": package.selection,
        "num_workers": 0,
    }
    if package.is_detector:
        merge = _training_data_config(package).get("merge")
        rule = MergeRule(**merge) if isinstance(merge, dict) else None  # the readers merged as training merged them
        module = BoxDataModule(boxes=data.boxes, merge=rule, cache="none", **common)
    else:
        module = DicomDataModule(labels=data.labels, **common)
    module.prepare_data()
    module.setup()
    splits = list(SPLITS) if data.split == "all" else [data.split]
    records = [record for split in splits for record in module.samples[split]]
    if not records:
        raise ValueError(
            f"--data.split={data.split}: no labelled sample of {data.root} is in it; check --data.split_fractions"
        )
    patients = {key for split in splits for key in module.patient_keys(split)}
    fingerprint = DataFingerprint(
        split=data.split, samples=len(records), patients=len(patients), digest=_samples_digest(records)
    )
    return HeldOutSamples(records=records, findings=list(package.findings), fingerprint=fingerprint)


def package_probabilities(package: ModelPackage, samples: HeldOutSamples, data: HeldOutData) -> np.ndarray:
    """(N, F) probabilities of ``package`` on the samples, read through the package's own preprocessing."""
    device = _device(data.device)
    # Only the image path(s) travel: each model builds its network input from the same files its own way.
    items = [{IMAGE_KEY: record[IMAGE_KEY]} for record in samples.records]
    loader = DataLoader(
        Dataset(items, transform=eval_transforms(package.preprocessing)),
        batch_size=data.batch_size,
        shuffle=False,
        num_workers=data.num_workers,
    )
    model = package.build_model().to(device)
    return predict_probabilities(model, (batch[IMAGE_KEY] for batch in loader), device).numpy()


def package_detections(package: ModelPackage, samples: HeldOutSamples, data: HeldOutData) -> list[list[ImageBoxes]]:
    """Per finding, each sample's true and predicted boxes, both on the package's own network grid."""
    device = _device(data.device)
    items = [
        {IMAGE_KEY: record[IMAGE_KEY], BOX_KEY: record[BOX_KEY], BOX_LABEL_KEY: record[BOX_LABEL_KEY]}
        for record in samples.records
    ]
    loader = DataLoader(
        Dataset(items, transform=box_eval_transforms(package.preprocessing, track_meta=False)),
        batch_size=data.batch_size,
        shuffle=False,
        num_workers=data.num_workers,
        collate_fn=collate_boxes,
    )
    network = package.build_model().to(device)
    per_finding: list[list[ImageBoxes]] = [[] for _ in package.findings]
    for batch in loader:
        outputs = detect(network, batch[IMAGE_KEY].to(device))  # type: ignore[arg-type]
        for output, truth, classes in zip(outputs, batch[BOX_KEY], batch[BOX_LABEL_KEY], strict=True):
            for f, image in enumerate(finding_boxes(output, truth, classes, len(package.findings))):
                per_finding[f].append(image)
    return per_finding


def evaluate_package(
    package: ModelPackage,
    samples: HeldOutSamples,
    data: HeldOutData,
    findings: list[str] | None = None,
    gate_metric: str = "auroc",
) -> Evaluation:
    """Per-finding AUROC of ``package`` on ``samples``.

    Args:
        package: The model.
        samples: Held-out samples (labels for every finding evaluated).
        data: Batch size, workers and device.
        findings: Findings to evaluate (default: the package's findings that the samples carry labels for).
        gate_metric: The metric promotion gates read (``auroc``; for a detector also ``cpm``, ``sens_at_1fp``,
            ``map_0.1``, ``map_0.5``).

    Raises:
        ValueError: If a requested finding is not an output of the package or has no labels in the samples.
    """
    chosen = findings if findings is not None else [f for f in package.findings if f in samples.findings]
    missing = [f for f in chosen if f not in package.findings or f not in samples.findings]
    if missing:
        raise ValueError(f"findings {missing} are not both outputs of the model and labelled in {data.root}")
    detection: dict[str, dict[str, float]] = {}
    if package.is_detector:
        per_finding = package_detections(package, samples, data)
        # The image-level probability of a detector is its top box score (as medres score writes it).
        probabilities = np.stack([image_scores(images) for images in per_finding], axis=1)
        for finding in chosen:
            images = per_finding[package.findings.index(finding)]
            values = detection_metrics(images) if any(len(i.truth) for i in images) else {}
            for metric in ("cpm", "sens_at_1fp", "map_0.1", "map_0.5"):
                detection.setdefault(metric, {})[finding] = float(values.get(metric, math.nan))
    elif gate_metric != "auroc":
        raise ValueError(f"--gates.metric={gate_metric}: the model is not a lesion detector (it predicts no boxes)")
    else:
        probabilities = package_probabilities(package, samples, data)
    auroc, positives, negatives = {}, {}, {}
    for finding in chosen:
        labels = samples.labels(finding)
        known = (labels == 0) | (labels == 1)  # NaN (unknown) and -1 (uncertain) are left out
        targets = labels[known]
        positives[finding] = int((targets == 1).sum())
        negatives[finding] = int((targets == 0).sum())
        auroc[finding] = finding_auroc(probabilities[known, package.findings.index(finding)], targets)
    return Evaluation(
        findings=list(chosen),
        auroc=auroc,
        positives=positives,
        negatives=negatives,
        detection=detection,
        gate_metric=gate_metric,
    )


# ---- helpers -------------------------------------------------------------------------------------
def _training_data_config(package: ModelPackage) -> dict[str, Any]:
    """The ``data`` section of the package's training config (empty when there is none or it is unreadable)."""
    if not package.training_config:
        return {}
    try:
        config = yaml.safe_load(package.training_config)
    except yaml.YAMLError:
        log.warning("the candidate's training config is not valid YAML; held-out settings use their defaults")
        return {}
    data = config.get("data") if isinstance(config, dict) else None
    return data if isinstance(data, dict) else {}


def _samples_digest(records: list[dict[str, Any]]) -> str:
    """SHA-256 over the sorted (archive-relative path, labels) pairs: identifies the samples without naming them."""
    rows = sorted(
        ((str(record["path"]), [None if math.isnan(v) else float(v) for v in record["label"]]) for record in records),
        key=lambda row: row[0],
    )
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--data.device={name!r}: {err}") from err


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value
