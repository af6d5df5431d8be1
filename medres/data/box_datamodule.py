"""The detection DataModule: the archive, its box labels and the patient split, batched for ``LesionDetection``.

Everything but the labels and the transforms is :class:`~medres.data.datamodule.DicomDataModule`'s: the
header-only index, the selection, the patient split file, the sampler and its per-epoch seeding. The labels
are the box CSV (:mod:`medres.data.boxes`): readers are merged by ``merge`` and the image-level labels derived
from the merged boxes are written to ``<work_dir>/box_image_labels.csv``, the labels file the classification
path joins, so split sizes, positives per finding, the balanced sampler and the data summary mean the same
here. Images the box file does not list are unknown and left out; listed images without a box are negatives.

2D samples are images keyed by ``path`` or ``SOPInstanceUID``, their boxes in stored pixels; 3D samples are series
keyed by ``SeriesInstanceUID`` (the classification path's series planning and selection), their boxes in patient
LPS mm. :mod:`medres.data.box_transforms` moves boxes with every spatial step into network-input voxels, and
batches keep boxes as per-image lists (:func:`collate_boxes`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from monai.transforms import Compose

from medres.data.box_samples import box_lookup, collate_boxes
from medres.data.box_transforms import BOX_KEY, BOX_LABEL_KEY, box_eval_transforms, box_train_transforms
from medres.data.boxes import BoxLabels, MergeRule, merge_readers, read_box_csv, write_image_labels
from medres.data.datamodule import SAMPLE_INDEX_KEY, DicomDataModule
from medres.data.selection import SeriesSelection
from medres.data.transforms import IMAGE_KEY, Augmentation2D, Preprocessing

log = logging.getLogger(__name__)

IMAGE_LABELS_FILE = "box_image_labels.csv"


class BoxDataModule(DicomDataModule):
    """Lesion-detection data: DICOM images with boxes per finding, split by patient.

    Args:
        root: Archive folder (DICOM files in any layout below it).
        findings: Box findings to train on, in label-index order.
        boxes: Box CSV (:mod:`medres.data.boxes` contract, e.g. from ``medres labels import``); default
            ``root/boxes.csv``.
        merge: How several readers' boxes of one image become the training boxes (union, or consensus of k readers
            at an IoU); default union.
        work_dir: Where the manifest, split and derived labels live; default ``./medres_work/<archive>-<hash>``.
        split_fractions: Train/val/test fractions of patients.
        split_seed: Seed of the patient split.
        preprocessing: Pixel preprocessing (2D images, or 3D series with series-keyed boxes); linked into the model.
        augmentation: Training augmentation, applied to image and boxes together (2D); ``null`` for none.
        selection: Which instances to use.
        cache: ``none`` or ``memory`` (MONAI ``CacheDataset``: the decoded, resized image and its moved boxes are
            kept after the first epoch; augmentation still runs every epoch). The disk cache keeps tensors without
            the image geometry the boxes are moved with, so detection does not offer it.
        batch_size: Images per batch (per device).
        num_workers: Data-loading worker processes.
        index_workers: Processes for the header-only index (0: in this process).
        predict_split: Split that ``medres predict`` runs on.
        balanced_sampler: Draw training images weighted so that images with rare findings come up as often as
            common ones (by the derived image-level labels); ``False`` shuffles.
        sampler_seed: Seed of the training order and augmentation; default the run's ``seed_everything``.
    """

    collate_fn = staticmethod(collate_boxes)

    def __init__(
        self,
        root: Path,
        findings: list[str],
        boxes: Path | None = None,
        merge: MergeRule | None = None,
        work_dir: Path | None = None,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        split_seed: int = 0,
        preprocessing: Preprocessing | None = None,
        augmentation: Augmentation2D | None = None,
        selection: SeriesSelection | None = None,
        cache: Literal["none", "memory"] = "memory",
        batch_size: int = 8,
        num_workers: int = 0,
        index_workers: int = 0,
        predict_split: str = "test",
        balanced_sampler: bool = False,
        sampler_seed: int | None = None,
    ) -> None:
        if cache not in ("none", "memory"):
            raise ValueError(
                f"data.cache={cache!r}: detection data caches in memory or not at all (the disk cache keeps no "
                "image geometry to move boxes with)"
            )
        preprocessing = preprocessing or Preprocessing()
        super().__init__(
            root=root,
            findings=findings,
            labels=None,
            work_dir=work_dir,
            split_fractions=split_fractions,
            split_seed=split_seed,
            preprocessing=preprocessing,
            augmentation=augmentation,
            selection=selection,
            cache=cache,
            batch_size=batch_size,
            num_workers=num_workers,
            index_workers=index_workers,
            predict_split=predict_split,
            balanced_sampler=balanced_sampler,
            sampler_seed=sampler_seed,
        )
        self.boxes = Path(boxes) if boxes is not None else self.root / "boxes.csv"
        self.merge = merge or MergeRule()
        # The derived image-level labels: what DicomDataModule joins onto the manifest.
        self.labels = self.work_dir / IMAGE_LABELS_FILE
        self._merged: BoxLabels | None = None

    def merged_boxes(self) -> BoxLabels:
        """The box file with readers merged by :attr:`merge` (read once)."""
        if self._merged is None:
            if not self.boxes.is_file():
                raise FileNotFoundError(f"data.boxes={self.boxes}: no such file")
            labels = read_box_csv(self.boxes)
            dims = self.preprocessing.spatial_dims
            if labels.spatial_dims != dims:
                kind = "series-keyed (3D)" if labels.spatial_dims == 3 else "image-keyed (2D)"
                raise ValueError(f"data.boxes={self.boxes}: {kind} boxes, but data.preprocessing.spatial_dims={dims}")
            unknown = sorted(set(self.findings) - set(labels.findings))
            if unknown:
                raise ValueError(
                    f"data.findings: {unknown} have no box in {self.boxes} (its findings: {sorted(labels.findings)})"
                )
            self._merged = merge_readers(labels, self.merge)
        return self._merged

    def prepare_data(self) -> None:
        """Merge the readers, write the derived image-level labels, then index, split and (no) cache as usual."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        write_image_labels(self.merged_boxes(), self.labels, self.findings)
        super().prepare_data()

    # ---- transforms: the box chains ------------------------------------------------------------
    def _train_transform(self) -> Compose:
        if self.augmentation is not None and not isinstance(self.augmentation, Augmentation2D):
            raise ValueError("data.augmentation: detection augments 2D images (Augmentation2D)")
        return box_train_transforms(self.preprocessing, self.augmentation)

    def _eval_transform(self) -> Compose:
        return box_eval_transforms(self.preprocessing, track_meta=False)

    # ---- helpers -------------------------------------------------------------------------------
    def _records(self, rows: pd.DataFrame) -> list[dict[str, Any]]:
        """The classification records plus each sample's boxes (stored pixels or LPS mm) and finding indices."""
        records = super()._records(rows)
        merged = self.merged_boxes()
        boxes_of = box_lookup(merged, self.findings)
        for record, key in zip(records, rows[merged.key], strict=True):
            record[BOX_KEY], record[BOX_LABEL_KEY] = boxes_of(key)
        return records


__all__ = ["IMAGE_KEY", "IMAGE_LABELS_FILE", "SAMPLE_INDEX_KEY", "BoxDataModule"]
