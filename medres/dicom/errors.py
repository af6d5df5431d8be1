"""Typed DICOM read failures: the error-ledger ``kind`` of every file medres could not use."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from medres.dicom.values import PathLike

__all__ = ["DicomErrorKind", "DicomReadError"]


class DicomErrorKind(StrEnum):
    """Why a file could not be read; the values are the error-ledger ``kind`` strings."""

    NOT_DICOM = "not_dicom"
    NO_PIXEL_DATA = "no_pixel_data"
    UNSUPPORTED_CODEC = "unsupported_codec"
    TRUNCATED = "truncated"
    UNSUPPORTED_IMAGE = "unsupported_image"
    DECODE_ERROR = "decode_error"
    UNREADABLE = "unreadable"  # OS-level failure: missing file, permission denied, I/O error, not a regular file
    INCONSISTENT_SERIES = "inconsistent_series"  # slices that do not form one volume (medres.dicom.series)
    MISSING_GEOMETRY = "missing_geometry"  # no ImageOrientation/ImagePositionPatient where a volume needs them


class DicomReadError(Exception):
    """A typed failure to read one DICOM file.

    Attributes:
        kind: what went wrong (ledger ``kind``).
        path: the file.
        message: one-line detail (newlines from underlying libraries are collapsed).
    """

    def __init__(self, kind: DicomErrorKind, path: PathLike, message: str) -> None:
        self.kind = DicomErrorKind(kind)
        self.path = str(path)
        # pydicom's multi-plugin failures span several lines; ledgers and logs want one.
        self.message = " ".join(str(message).split())
        super().__init__(f"{self.path}: {self.kind}: {self.message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Default exception pickling replays __init__ with .args (one string); process pools need this.
        return (self.__class__, (self.kind, self.path, self.message))
