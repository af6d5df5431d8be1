"""LightningDataModule over a DICOM archive: index once, join labels, split by patient, load with MONAI.

Stages hand off through files in ``work_dir`` (nnU-Net style): ``manifest.parquet`` (header-only
index), ``index_errors.parquet`` (files that could not be indexed), ``splits.csv`` (patient → split,
written once and reused). ``prepare_data`` writes them on one process; ``setup`` only reads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
from monai.data import DataLoader, Dataset

from medres.data.manifest import index_archive, iter_archive_files, join_labels, read_manifest, write_manifest
from medres.data.splits import load_or_create_splits
from medres.data.transforms import (
    IDENTITY_COLUMNS,
    IMAGE_KEY,
    Augmentation2D,
    Preprocessing,
    eval_transforms,
    train_transforms,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SALT_ENV = "MEDRES_PATIENT_KEY_SALT"
# Used when the site sets no salt: keys stay stable and never show the raw ID, but anyone holding
# the ID list can recompute them. Production sites set MEDRES_PATIENT_KEY_SALT to a secret.
DEFAULT_SALT = "medres-default-salt"


def patient_key_salt() -> str:
    """The salt for pseudonymous patient keys, from ``MEDRES_PATIENT_KEY_SALT`` (never from a logged config)."""
    return os.environ.get(SALT_ENV) or DEFAULT_SALT


def default_work_dir(root: Path) -> Path:
    """``./medres_work/<archive name>-<hash of its absolute path>``: one folder per archive."""
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]
    return Path("medres_work") / f"{root.resolve().name}-{digest}"


class DicomDataModule(pl.LightningDataModule):
    """Multi-label detection data from a DICOM archive and a labels CSV.

    2D samples are DICOM instances; each carries its study's labels (1, 0, NaN unknown, -1 uncertain).

    Args:
        root: Archive folder (DICOM files in any layout below it).
        findings: Label columns to train on, in output order.
        labels: Labels CSV keyed by StudyInstanceUID; default ``root/labels.csv``.
        work_dir: Where the manifest and splits live; default ``./medres_work/<archive>-<hash>``.
        split_fractions: Train/val/test fractions of patients.
        split_seed: Seed of the patient split (the split file records it and refuses another).
        preprocessing: Pixel preprocessing; linked into the model so it travels with it.
        augmentation: Training augmentation; ``null`` for none.
        batch_size: Samples per batch (per device).
        num_workers: Data-loading worker processes.
        index_workers: Processes for the header-only index (0: in this process).
        predict_split: Split that ``medres predict`` runs on.
    """

    def __init__(
        self,
        root: Path,
        findings: list[str],
        labels: Path | None = None,
        work_dir: Path | None = None,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        split_seed: int = 0,
        preprocessing: Preprocessing | None = None,
        augmentation: Augmentation2D | None = None,
        batch_size: int = 32,
        num_workers: int = 4,
        index_workers: int = 0,
        predict_split: str = "test",
    ) -> None:
        super().__init__()
        if not findings:
            raise ValueError("data.findings is empty: name at least one label column")
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size}: must be ≥ 1")
        if predict_split not in SPLITS:
            raise ValueError(f"data.predict_split={predict_split!r}: must be one of {SPLITS}")
        self.root = Path(root)
        self.findings = list(findings)
        self.labels = Path(labels) if labels is not None else self.root / "labels.csv"
        self.work_dir = Path(work_dir) if work_dir is not None else default_work_dir(self.root)
        self.split_fractions = split_fractions
        self.split_seed = split_seed
        self.preprocessing = preprocessing or Preprocessing()
        self.augmentation = augmentation
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.index_workers = index_workers
        self.predict_split = predict_split
        self.samples: dict[str, list[dict[str, Any]]] = {}

    @property
    def manifest_path(self) -> Path:
        """The header-only index of the archive."""
        return self.work_dir / "manifest.parquet"

    @property
    def splits_path(self) -> Path:
        """Patient → split assignment, written once."""
        return self.work_dir / "splits.csv"

    # ---- stages --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Index the archive (again only if it changed) and write the patient split (once)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root={self.root}: no such folder")
        if not self.labels.is_file():
            raise FileNotFoundError(f"data.labels={self.labels}: no such file")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        fingerprint = self._archive_fingerprint()
        stamp_path = self.work_dir / "manifest.json"
        stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else None
        if stamp != fingerprint or not self.manifest_path.is_file():
            log.info("indexing %s (header-only)", self.root)
            manifest, errors = index_archive(
                self.root, salt=patient_key_salt(), num_workers=self.index_workers, progress=True
            )
            write_manifest(manifest, self.manifest_path)
            errors.to_parquet(self.work_dir / "index_errors.parquet", index=False)
            if len(errors):
                log.warning(
                    "%d file(s) under %s are not usable DICOM images; see %s",
                    len(errors),
                    self.root,
                    self.work_dir / "index_errors.parquet",
                )
            stamp_path.write_text(json.dumps(fingerprint))
        labeled = self._labeled_manifest()
        load_or_create_splits(
            labeled["patient_key"].unique(), self.splits_path, fractions=self.split_fractions, seed=self.split_seed
        )

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest, labels and split; build the sample lists (every rank)."""
        labeled = self._labeled_manifest()
        splits = load_or_create_splits(
            labeled["patient_key"].unique(), self.splits_path, fractions=self.split_fractions, seed=self.split_seed
        )
        labeled = labeled.assign(split=labeled["patient_key"].map(splits))
        self.samples = {split: self._records(labeled[labeled["split"] == split]) for split in SPLITS}
        log.info(
            "samples per split: %s; positives per finding (train): %s",
            {s: len(v) for s, v in self.samples.items()},
            {f: int((labeled.loc[labeled["split"] == "train", f] == 1).sum()) for f in self.findings},
        )

    # ---- loaders -------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches."""
        samples = self._split("train")
        dataset = Dataset(samples, transform=train_transforms(self.preprocessing, self.augmentation))
        # A final batch of one sample breaks batch norm; drop it when there is more than one batch.
        return self._loader(dataset, shuffle=True, drop_last=len(samples) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, no augmentation."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches, no augmentation."""
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Batches of ``predict_split``, no augmentation."""
        return self._eval_loader(self.predict_split)

    def has_split(self, split: str) -> bool:
        """Whether ``split`` holds any sample (after :meth:`setup`)."""
        return bool(self.samples.get(split))

    # ---- helpers -------------------------------------------------------------------------------
    def _labeled_manifest(self) -> pd.DataFrame:
        manifest = read_manifest(self.manifest_path)
        labeled = join_labels(manifest, self.labels, self.findings)
        if labeled.empty:
            raise ValueError(f"no DICOM instance under {self.root} has a row in {self.labels}")
        return labeled

    def _archive_fingerprint(self) -> dict[str, Any]:
        """Cheap change detector: file count, bytes and newest mtime, plus the salt's hash (keys depend on it)."""
        count = size = 0
        newest = 0.0
        for path in iter_archive_files(self.root):
            stat = path.stat()
            count, size, newest = count + 1, size + stat.st_size, max(newest, stat.st_mtime)
        salt_hash = hashlib.sha256(patient_key_salt().encode()).hexdigest()[:12]
        return {"root": str(self.root.resolve()), "files": count, "bytes": size, "mtime": newest, "salt": salt_hash}

    def _records(self, rows: pd.DataFrame) -> list[dict[str, Any]]:
        labels = rows[self.findings].to_numpy(dtype="float32")
        identities: list[dict[str, Any]] = rows[list(IDENTITY_COLUMNS)].to_dict("records")  # type: ignore[assignment]
        # The image key starts as the absolute path and becomes the tensor; "path" stays relative.
        return [
            {**identity, IMAGE_KEY: str(self.root / identity["path"]), "label": label}
            for identity, label in zip(identities, labels, strict=True)
        ]

    def _split(self, split: str) -> Sequence[dict[str, Any]]:
        if not self.samples:
            raise RuntimeError("DicomDataModule.setup() has not run")
        samples = self.samples[split]
        if not samples:
            raise ValueError(f"the {split} split of {self.root} is empty; check data.split_fractions")
        return samples

    def _eval_loader(self, split: str) -> DataLoader:
        return self._loader(Dataset(self._split(split), transform=eval_transforms(self.preprocessing)), shuffle=False)

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool = False) -> DataLoader:
        # monai's DataLoader seeds each worker's random transforms reproducibly from the torch seed.
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
