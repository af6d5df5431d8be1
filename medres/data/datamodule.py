"""LightningDataModule over a DICOM archive: index once, select, join labels, split by patient, load with MONAI.

Stages hand off through files in ``work_dir`` (nnU-Net style): ``manifest.parquet`` (header-only
index), ``index_errors.parquet`` (files that could not be indexed), ``selection_rejected.parquet``
(indexed files the series selection left out, or whose series cannot become a volume, each with a
kind and a reason), ``splits.csv`` (patient → split, written once and reused). ``prepare_data``
writes them on one process; ``setup`` only reads the manifest and the split.

2D samples are instances. 3D samples are series: the manifest rows pass
:func:`medres.data.selection.select` (the function scoring calls too), are grouped by
SeriesInstanceUID, planned header-only (:func:`medres.dicom.series.plan_series`) and loaded as
volumes by :class:`~medres.dicom.series.SeriesReader`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from monai.data import CacheDataset, DataLoader, Dataset
from monai.transforms import Compose

from medres.data.cache import CachedDataset, TensorCache
from medres.data.keys import patient_key_salt
from medres.data.manifest import index_archive, iter_archive_files, join_labels, read_manifest, write_manifest
from medres.data.samples import N_INSTANCES, series_sample
from medres.data.sampling import EpochSampler, EpochSeededDataset, balanced_weights, global_seed
from medres.data.selection import REJECTED_COLUMNS, SeriesSelection, select
from medres.data.splits import load_or_create_splits
from medres.data.summary import DataSummary
from medres.data.transforms import (
    IDENTITY_COLUMNS,
    IMAGE_KEY,
    Augmentation2D,
    Augmentation3D,
    Preprocessing,
    augment_transforms,
    eval_transforms,
    train_transforms,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SAMPLE_INDEX_KEY = "sample_index"


def default_work_dir(root: Path) -> Path:
    """``./medres_work/<archive name>-<hash of its absolute path>``: one folder per archive."""
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]
    return Path("medres_work") / f"{root.resolve().name}-{digest}"


class DicomDataModule(pl.LightningDataModule):
    """Multi-label detection data from a DICOM archive and a labels CSV.

    2D samples are DICOM instances, 3D samples (``preprocessing.spatial_dims=3``) series; each carries
    its study's labels (1, 0, NaN unknown, -1 uncertain).

    Args:
        root: Archive folder (DICOM files in any layout below it).
        findings: Label columns to train on, in output order.
        labels: Labels CSV keyed by StudyInstanceUID; default ``root/labels.csv``.
        work_dir: Where the manifest and splits live; default ``./medres_work/<archive>-<hash>``.
        split_fractions: Train/val/test fractions of patients.
        split_seed: Seed of the patient split (the split file records it and refuses another).
        preprocessing: Pixel preprocessing; linked into the model so it travels with it.
        augmentation: Training augmentation: :class:`Augmentation2D` for 2D, :class:`Augmentation3D` for 3D;
            ``null`` for none.
        selection: Which instances (2D) or series (3D) to use; 3D defaults to every series that forms a
            volume. Rejected files are written to ``selection_rejected.parquet`` and counted in the log.
        cache: Where preprocessed tensors are kept after their first decode (augmentation still runs every
            epoch): ``none``; ``memory`` (MONAI ``CacheDataset``, per process; for volumes that fit in RAM); or
            ``disk`` (:class:`~medres.data.cache.TensorCache`: decoded once in ``prepare_data``, then shared by
            DDP ranks, workers and later runs; keyed by file content and preprocessing). ``true``/``false`` are
            the older spellings of ``memory``/``none``.
        cache_dir: The disk cache's folder; default ``<work_dir>/tensor_cache``. Entries are keyed by content,
            so one folder (on a fast local disk) can serve several archives and runs.
        batch_size: Samples per batch (per device).
        num_workers: Data-loading worker processes.
        index_workers: Processes for the header-only index (0: in this process).
        predict_split: Split that ``medres predict`` runs on.
        balanced_sampler: Draw training samples with replacement, weighted so that rare findings come up about as
            often as common ones (see :func:`medres.data.sampling.balanced_weights`); ``False`` shuffles.
        sampler_seed: Seed of the training order and augmentation; default the run's ``seed_everything``. Order and
            augmentation of epoch e depend only on (seed, e), so a fit resumed from a checkpoint replays exactly.
    """

    # Batch collation; None: MONAI's list_data_collate (stacked tensors). Detection keeps box lists per image.
    collate_fn: Callable[[Sequence[dict[str, Any]]], dict[str, Any]] | None = None

    def __init__(
        self,
        root: Path,
        findings: list[str],
        labels: Path | None = None,
        work_dir: Path | None = None,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        split_seed: int = 0,
        preprocessing: Preprocessing | None = None,
        augmentation: Augmentation2D | Augmentation3D | None = None,
        selection: SeriesSelection | None = None,
        cache: Literal["none", "memory", "disk"] | bool = "none",
        cache_dir: Path | None = None,
        batch_size: int = 32,
        num_workers: int = 4,
        index_workers: int = 0,
        predict_split: str = "test",
        balanced_sampler: bool = False,
        sampler_seed: int | None = None,
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
        augment_transforms(self.preprocessing, augmentation, [IMAGE_KEY])  # a 2D/3D mismatch fails here, not later
        self.augmentation = augmentation
        self.selection = selection
        if cache not in (True, False, "none", "memory", "disk"):
            raise ValueError(f"data.cache={cache!r}: must be none, memory or disk")
        self.cache: Literal["none", "memory", "disk"] = (
            ("memory" if cache else "none") if isinstance(cache, bool) else cache
        )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.work_dir / "tensor_cache"
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.index_workers = index_workers
        self.predict_split = predict_split
        self.balanced_sampler = balanced_sampler
        self.sampler_seed = sampler_seed
        self.samples: dict[str, list[dict[str, Any]]] = {}
        self._labeled: pd.DataFrame | None = None

    @property
    def manifest_path(self) -> Path:
        """The header-only index of the archive."""
        return self.work_dir / "manifest.parquet"

    @property
    def rejected_path(self) -> Path:
        """Indexed files the selection left out or whose series cannot be read, with kind and reason."""
        return self.work_dir / "selection_rejected.parquet"

    @property
    def splits_path(self) -> Path:
        """Patient → split assignment, written once."""
        return self.work_dir / "splits.csv"

    # ---- stages --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Index the archive (again only if it changed), write the patient split (once), fill the disk cache."""
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
        samples, rejected = self._sample_table()
        rejected.to_parquet(self.rejected_path, index=False)
        if len(rejected):
            log.warning(
                "%d indexed file(s) left out by the selection or unreadable as a series %s; see %s",
                len(rejected),
                rejected["kind"].value_counts().to_dict(),
                self.rejected_path,
            )
        load_or_create_splits(
            samples["patient_key"].unique(), self.splits_path, fractions=self.split_fractions, seed=self.split_seed
        )
        if self.cache == "disk":
            # Here, on local rank 0 only, while the other ranks wait at Lightning's barrier: each entry is
            # decoded once, and ranks never race to write it.
            images = [record[IMAGE_KEY] for record in self._records(samples)]
            cache = TensorCache(self.cache_dir, self.preprocessing)
            estimate = cache.fill(images, num_workers=self.num_workers, progress=True)
            # Files that index but do not decode: recorded (no identifying value: paths, kinds, messages), and the
            # fit goes on without their samples (setup leaves them out, see _sample_table).
            pd.DataFrame(list(estimate.failed), columns=["path", "kind", "message"]).to_parquet(
                self.work_dir / "cache_errors.parquet", index=False
            )

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest, labels and split; build the sample lists (every rank)."""
        labeled, _ = self._sample_table()
        splits = load_or_create_splits(
            labeled["patient_key"].unique(), self.splits_path, fractions=self.split_fractions, seed=self.split_seed
        )
        labeled = labeled.assign(split=labeled["patient_key"].map(splits))
        self._labeled = labeled
        self.samples = {split: self._records(labeled[labeled["split"] == split]) for split in SPLITS}
        log.info(
            "samples per split: %s; positives per finding (train): %s",
            {s: len(v) for s, v in self.samples.items()},
            {f: int((labeled.loc[labeled["split"] == "train", f] == 1).sum()) for f in self.findings},
        )

    # ---- loaders -------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """Shuffled (or balanced), augmented training batches; order and augmentation a function of (seed, epoch)."""
        samples = self._split("train")
        transform = self._train_transform()
        sampler = self._epoch_sampler(samples)
        dataset = EpochSeededDataset(self._dataset(samples, transform), transform, sampler.seed)
        # A final batch of one sample breaks batch norm; drop it when there is more than one batch.
        return self._loader(dataset, sampler=sampler, drop_last=len(samples) > self.batch_size)

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

    def summary(self) -> DataSummary:
        """Split sizes, label counts per finding and a fingerprint of the samples (after :meth:`setup`).

        Only counts, pseudonymous keys' hash and the labels' hash: safe to log to a tracking server.
        """
        if self._labeled is None:
            raise RuntimeError("DicomDataModule.setup() has not run")
        return DataSummary.from_samples(self._labeled, self.findings)

    def patient_keys(self, split: str) -> list[str]:
        """Pseudonymous patient key of each sample of ``split``, in loader order (for clustered bootstrap CIs)."""
        if self._labeled is None:
            raise RuntimeError("DicomDataModule.setup() has not run")
        return [str(k) for k in self._labeled.loc[self._labeled["split"] == split, "patient_key"]]

    # ---- helpers -------------------------------------------------------------------------------
    def _sample_table(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Labelled samples (one row per instance in 2D, per series in 3D) and the rejected files.

        3D rows carry ``files`` (the series' paths in slice order, relative) and ``path`` (its first slice).
        """
        manifest = read_manifest(self.manifest_path)
        spatial_dims = self.preprocessing.spatial_dims
        rejected = pd.DataFrame({c: pd.Series([], dtype=object) for c in REJECTED_COLUMNS})
        if self.selection is not None or spatial_dims == 3:
            manifest, rejected = select(manifest, self.selection or SeriesSelection(), spatial_dims, root=self.root)
        labeled = join_labels(manifest, self.labels, self.findings)
        if labeled.empty:
            raise ValueError(f"no selected DICOM instance under {self.root} has a row in {self.labels}")
        if spatial_dims == 3:
            labeled, dropped = self._series_rows(labeled)
            rejected = pd.concat([rejected, dropped], ignore_index=True) if len(dropped) else rejected
        cache_errors = self.work_dir / "cache_errors.parquet"
        if self.cache == "disk" and cache_errors.is_file():
            # Samples whose files the cache fill could not decode (issue 21): left out, with the fill's reason.
            failed = pd.read_parquet(cache_errors)
            failed["path"] = [Path(os.path.relpath(p, self.root)).as_posix() for p in failed["path"]]
            files = labeled["files"] if spatial_dims == 3 else labeled["path"].map(lambda p: [p])
            bad = files.map(lambda fs: not set(fs).isdisjoint(failed["path"]))
            if bad.any():
                labeled = labeled[~bad.to_numpy()]
                frame = failed.reindex(columns=list(REJECTED_COLUMNS)).astype(object)  # UIDs unknown: None
                rejected = pd.concat([rejected, frame], ignore_index=True)
        return labeled, rejected

    def _series_rows(self, labeled: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """One row per series, its files in slice order; files the plan drops (localizers, duplicates) apart."""
        rows, dropped = [], []
        for uid, group in labeled.groupby("SeriesInstanceUID", sort=True):
            values = group[self.findings].drop_duplicates()
            if len(values) > 1:
                raise ValueError(f"{self.labels}: series {uid} has files with different labels; label 3D by study")
            # Header-only (multi-frame files' headers aside); select() has already rejected fatal series.
            sample = series_sample(group, self.root)
            first = group.set_index("path").loc[sample.files[0]]
            rows.append(
                {**sample.identity, "patient_key": first["patient_key"], "files": sample.files, **values.iloc[0]}
            )
            if sample.dropped:
                frame = pd.DataFrame([record for record, _, _ in sample.dropped])
                dropped.append(
                    frame.assign(
                        kind=[kind for _, kind, _ in sample.dropped],
                        message=[f"series {uid}: {message}" for _, _, message in sample.dropped],
                    ).reindex(columns=list(REJECTED_COLUMNS))
                )
        series = pd.DataFrame(rows)
        for finding in self.findings:
            series[finding] = series[finding].astype("float32")
        return series, pd.concat(dropped, ignore_index=True) if dropped else pd.DataFrame(columns=REJECTED_COLUMNS)

    def _archive_fingerprint(self) -> dict[str, Any]:
        """Cheap change detector: file count, bytes and newest mtime, plus the salt's hash (keys depend on it)."""
        count = size = 0
        newest = 0.0
        for path in iter_archive_files(self.root):
            try:
                stat = path.stat()
            except OSError:  # a dangling symlink or a symlink loop is an input too (the ledger's): its link's stat
                stat = path.lstat()
            count, size, newest = count + 1, size + stat.st_size, max(newest, stat.st_mtime)
        salt_hash = hashlib.sha256(patient_key_salt().encode()).hexdigest()[:12]
        return {"root": str(self.root.resolve()), "files": count, "bytes": size, "mtime": newest, "salt": salt_hash}

    def _records(self, rows: pd.DataFrame) -> list[dict[str, Any]]:
        labels = rows[self.findings].to_numpy(dtype="float32")
        identities: list[dict[str, Any]] = rows[list(IDENTITY_COLUMNS)].to_dict("records")  # type: ignore[assignment]
        # The image key starts as the absolute path(s) and becomes the tensor; "path" stays relative.
        if self.preprocessing.spatial_dims == 3:
            images: list[Any] = [[str(self.root / f) for f in files] for files in rows["files"]]
            for identity, files in zip(identities, rows["files"], strict=True):
                identity[N_INSTANCES] = len(files)  # the prediction writer's series rows carry it, as scoring's do
                # A series has no SOPInstanceUID (None in its sample); "" collates in a batch, and the prediction
                # writer writes it as null again.
                identity["SOPInstanceUID"] = ""
        else:
            images = [str(self.root / identity["path"]) for identity in identities]
        # sample_index: the row's place in its split, so predictions gathered across DDP ranks can be put back in order.
        return [
            {**identity, IMAGE_KEY: image, "label": label, SAMPLE_INDEX_KEY: i}
            for i, (identity, image, label) in enumerate(zip(identities, images, labels, strict=True))
        ]

    def _train_transform(self) -> Compose:
        """Preprocessing plus augmentation (subclasses that carry more than the image override it)."""
        return train_transforms(self.preprocessing, self.augmentation)

    def _eval_transform(self) -> Compose:
        """Preprocessing only."""
        return eval_transforms(self.preprocessing)

    def _epoch_sampler(self, samples: Sequence[dict[str, Any]]) -> EpochSampler:
        """The training order: a function of (seed, epoch), balanced by the samples' labels if configured."""
        seed = self.sampler_seed if self.sampler_seed is not None else global_seed()
        weights = balanced_weights(np.stack([s["label"] for s in samples])) if self.balanced_sampler else None
        sampler = EpochSampler(len(samples), seed, weights=weights)
        trainer = self.trainer
        if trainer is not None:
            # Lightning creates the loader's first iterator before its set_epoch call, and workers prefetch from it
            # at once: a resumed fit would start with epoch 0's order. Start at the epoch the fit loop will run.
            progress = trainer.fit_loop.epoch_progress.current  # a _ProcessedTracker, annotated as its base class
            sampler.set_epoch(progress.processed)  # type: ignore[attr-defined]
        return sampler

    def _split(self, split: str) -> Sequence[dict[str, Any]]:
        if not self.samples:
            raise RuntimeError("DicomDataModule.setup() has not run")
        samples = self.samples[split]
        if not samples:
            raise ValueError(f"the {split} split of {self.root} is empty; check data.split_fractions")
        return samples

    def _eval_loader(self, split: str) -> DataLoader:
        return self._loader(self._dataset(self._split(split), self._eval_transform()))

    def _dataset(self, samples: Sequence[dict[str, Any]], transform: Compose) -> Dataset:
        if self.cache == "disk":
            return CachedDataset(samples, transform, TensorCache(self.cache_dir, self.preprocessing))
        if self.cache == "memory":
            # MONAI caches the output of the transforms before the first random one; augmentation still
            # runs on every access.
            return CacheDataset(samples, transform=transform, progress=False, num_workers=0)
        return Dataset(samples, transform=transform)

    def _loader(
        self, dataset: Dataset | EpochSeededDataset, sampler: EpochSampler | None = None, drop_last: bool = False
    ) -> DataLoader:
        # No `shuffle` argument: evaluation keeps dataset order, training order is the EpochSampler's, and Lightning
        # then shards it under DDP (DistributedSamplerWrapper) instead of replacing it with a RandomSampler's.
        extra: dict[str, Any] = {} if self.collate_fn is None else {"collate_fn": self.collate_fn}
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **extra,
        )
