"""Scoring samples → preprocessed images or ledger rows; a broken file never stops a batch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch.utils.data import Dataset

from medres.data.box_transforms import BOX_KEY, BOX_LABEL_KEY, box_eval_transforms
from medres.data.transforms import IMAGE_KEY, Preprocessing, eval_transforms
from medres.dicom import DicomErrorKind, DicomReadError
from medres.scoring.samples import ScoringSample, ledger_row

PREPROCESSING_ERROR = "preprocessing_error"  # decoded, but the preprocessing pipeline failed on it
SERIES_ERROR = "series_error"  # a readable file whose series could not be scored because another member failed
# Kinds that describe the series as a whole: every member file gets them.
_SERIES_KINDS = {DicomErrorKind.INCONSISTENT_SERIES, DicomErrorKind.MISSING_GEOMETRY}


def find_read_error(err: BaseException) -> DicomReadError | None:
    """The :class:`DicomReadError` behind ``err`` (MONAI's ``Compose`` wraps transform errors), if any."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, DicomReadError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def failure_rows(sample: ScoringSample, root: Path, err: BaseException) -> list[dict[str, Any]]:
    """Ledger rows for a sample that could not be scored: one per member file, each with a one-line message.

    A single instance gets the error's kind. In a series, a file-level failure (truncated, decode_error, ...)
    gives the failing file that kind and its sibling files ``series_error`` naming it; a series-level failure
    (inconsistent_series, missing_geometry, a preprocessing error) gives every file the same kind.
    """
    read_error = find_read_error(err)
    if read_error is None:
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        return [ledger_row(member, PREPROCESSING_ERROR, message) for member in sample.members]
    if len(sample.members) == 1 or read_error.kind in _SERIES_KINDS:
        return [ledger_row(member, str(read_error.kind), read_error.message) for member in sample.members]
    failing = os.path.relpath(read_error.path, root)  # the samples' paths are root-joined, so this is theirs
    sibling = f"series not scored: {Path(failing).as_posix()}: {read_error.kind}"
    return [
        ledger_row(member, str(read_error.kind), read_error.message)
        if os.path.normpath(member["path"]) == failing
        else ledger_row(member, SERIES_ERROR, sibling)
        for member in sample.members
    ]


class ScoringDataset(Dataset[dict[str, Any]]):
    """Each item is ``{"image", "identity", "files"}`` for a scorable sample or ``{"errors"}`` otherwise.

    Args:
        root: The input folder (ledger paths are relative to it).
        samples: What to score (see :func:`medres.scoring.samples.plan_scoring`).
        preprocessing: The package's preprocessing (the same pipeline training evaluated with).
        keep_geometry: Run the detection chain (:func:`medres.data.box_transforms.box_eval_transforms`, the same
            image steps with metadata kept) and give each item ``geometry``: the network input's affine and the
            stored image's, with which a detection model's boxes map back to stored pixels.
    """

    def __init__(
        self, root: Path, samples: Sequence[ScoringSample], preprocessing: Preprocessing, keep_geometry: bool = False
    ) -> None:
        self.root = root
        self.samples = list(samples)
        self.keep_geometry = keep_geometry
        self.box_width = 2 * preprocessing.spatial_dims
        self.transform = box_eval_transforms(preprocessing) if keep_geometry else eval_transforms(preprocessing)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.load(self.samples[index])

    def load(self, sample: ScoringSample) -> dict[str, Any]:
        """Decode and preprocess one sample (any sample, not only this dataset's): an item as ``__getitem__``'s."""
        data: dict[str, Any] = {IMAGE_KEY: sample.image}
        if self.keep_geometry:  # the detection chain carries boxes; a scored image has none yet
            data |= {BOX_KEY: np.zeros((0, self.box_width), np.float32), BOX_LABEL_KEY: np.zeros(0, np.int64)}
        try:
            image = self.transform(data)[IMAGE_KEY]
        except Exception as err:  # every failure becomes ledger rows; the run goes on
            return {"errors": failure_rows(sample, self.root, err)}
        tensor = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
        item = {"image": tensor, "identity": sample.identity, "files": len(sample.members)}
        if self.keep_geometry and isinstance(image, MetaTensor):
            # 2D boxes map back to stored pixels through both affines; 3D boxes to patient mm through the first.
            stored = image.meta.get("original_affine")
            item["geometry"] = (image.affine.numpy().copy(), None if stored is None else np.asarray(stored).copy())
        return item


def collate_scoring(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the scorable images; pass ledger rows through untouched."""
    ok = [item for item in items if "errors" not in item]
    images = torch.stack([item["image"] for item in ok]) if ok else torch.empty(0)
    return {
        "image": images,  # (n_ok, C, *spatial)
        "rows": [item["identity"] for item in ok],
        "files": sum(item["files"] for item in ok),  # input files these images stand for
        "errors": [row for item in items for row in item.get("errors", [])],
        # Detection models: (network affine, stored affine) per scorable image.
        "geometry": [item["geometry"] for item in ok if "geometry" in item],
    }
