"""DICOM in: the reader, series planning, the byte-level header scan and header value conversions.

The lowest stage of medres: it imports no other medres package, so anything above may use it.
"""

from medres.dicom.errors import DicomErrorKind, DicomReadError
from medres.dicom.reader import (
    DEFAULT_OPTIONS,
    SAFE_META_KEYS,
    DicomImage,
    DicomReader,
    ReadOptions,
    instance_affine,
    read_header,
    read_image,
    safe_meta,
)
from medres.dicom.series import SeriesPlan, SeriesReader, plan_series, plan_series_files, read_series
from medres.dicom.values import pixel_spacing

__all__ = [
    "DEFAULT_OPTIONS",
    "SAFE_META_KEYS",
    "DicomErrorKind",
    "DicomImage",
    "DicomReadError",
    "DicomReader",
    "ReadOptions",
    "SeriesPlan",
    "SeriesReader",
    "instance_affine",
    "pixel_spacing",
    "plan_series",
    "plan_series_files",
    "read_header",
    "read_image",
    "read_series",
    "safe_meta",
]
