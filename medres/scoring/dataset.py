"""Files under an archive → preprocessed images or error records; a broken file never stops a batch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom
import torch
from monai.data import MetaTensor
from torch.utils.data import Dataset

from medres.data.dicom import DicomErrorKind, DicomReadError
from medres.data.transforms import IDENTITY_COLUMNS, IMAGE_KEY, Preprocessing, eval_transforms

UID_KEYS = IDENTITY_COLUMNS[1:]  # the UIDs, without the path
PREPROCESSING_ERROR = "preprocessing_error"  # decoded, but the preprocessing pipeline failed on it


def find_read_error(err: BaseException) -> DicomReadError | None:
    """The :class:`DicomReadError` behind ``err`` (MONAI's ``Compose`` wraps transform errors), if any."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, DicomReadError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def error_record(path: Path, relative_path: str, err: BaseException) -> dict[str, Any]:
    """An error-ledger row: path, the UIDs if the header is readable, kind and a one-line message."""
    read_error = find_read_error(err)
    kind = str(read_error.kind) if read_error is not None else PREPROCESSING_ERROR
    message = read_error.message if read_error is not None else f"{type(err).__name__}: {err}".splitlines()[0]
    uids: dict[str, str | None] = dict.fromkeys(UID_KEYS)
    if read_error is None or read_error.kind != DicomErrorKind.NOT_DICOM:
        # Plain pydicom, UIDs only: a file cut short in its pixel data still has a readable header,
        # and its UIDs are what finds it again in the PACS.
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(UID_KEYS))
            uids = {key: str(header[key].value) if key in header else None for key in UID_KEYS}
        except Exception:  # nothing readable: the path alone identifies the file
            pass
    return {"path": relative_path, **uids, "kind": kind, "message": message}


class ScoringDataset(Dataset[dict[str, Any]]):
    """Each item is ``{"path", "image", "uids"}`` for a scorable file or ``{"path", "error"}`` otherwise.

    Args:
        root: Archive root; paths in the results are relative to it.
        paths: Files to score.
        preprocessing: The model package's preprocessing (the same pipeline training evaluated with).
    """

    def __init__(self, root: Path, paths: Sequence[Path], preprocessing: Preprocessing) -> None:
        self.root = root
        self.paths = list(paths)
        self.transform = eval_transforms(preprocessing, track_meta=True)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        relative = path.relative_to(self.root).as_posix()
        try:
            image = self.transform({IMAGE_KEY: str(path)})[IMAGE_KEY]
        except Exception as err:  # every failure becomes a ledger row; the run goes on
            return {"path": relative, "error": error_record(path, relative, err)}
        meta = image.meta if isinstance(image, MetaTensor) else {}
        tensor = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
        return {"path": relative, "image": tensor, "uids": {key: meta.get(key) for key in UID_KEYS}}


def collate_scoring(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the scorable images; pass error records through untouched."""
    ok = [item for item in items if "error" not in item]
    images = torch.stack([item["image"] for item in ok]) if ok else torch.empty(0)
    return {
        "image": images,  # (n_ok, C, *spatial)
        "rows": [{"path": item["path"], **item["uids"]} for item in ok],
        "errors": [item["error"] for item in items if "error" in item],
    }
