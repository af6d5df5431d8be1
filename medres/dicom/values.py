"""DICOM byte-level constants and header value conversions, written once for the reader, the scan and the planner.

The converters take whatever a header gives (pydicom values, ``MultiValue``, raw strings, or a manifest cell that
pandas made ``NaN``/``NA``) and return a clean Python value or ``None``: a missing or malformed value is never an
exception here, the caller decides what its absence means.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

PathLike = str | os.PathLike[str]

# Tags of the three pixel data elements (Float, Double Float, Pixel Data); pydicom's stop_before_pixels stops at any.
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
# (FFFE,E0DD) Sequence Delimitation Item with zero length, little endian: closes encapsulated pixel data (PS3.5 §A.4).
SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 §7.1.2, Table 7.1-1); covers pixel data VRs.
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"})
# Explicit VRs with a 2-byte length.
SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL"}
    | {b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)


def is_missing(value: Any) -> bool:
    """True for ``None`` and for the missing markers a manifest read through pandas holds (NaN, NA, NaT)."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return value is pd.NA or value is pd.NaT


def text_or_none(value: Any) -> str | None:
    """A string value stripped; a multi-valued one (e.g. ImageType) joined by backslash, as the file stores it."""
    if is_missing(value):
        return None
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, Iterable):  # pydicom MultiValue, a list from a manifest
        text = "\\".join(str(v).strip() for v in value)
    else:
        text = str(value).strip()
    return text or None


def int_or_none(value: Any) -> int | None:
    """An integer value (IS, US, …), ``None`` when missing or not a number."""
    if is_missing(value) or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def float_or_none(value: Any) -> float | None:
    """A finite decimal value (DS, FD, …), ``None`` when missing, not a number or not finite."""
    if is_missing(value) or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def finite_floats(value: Any, n: int) -> np.ndarray | None:
    """Exactly ``n`` finite values (ImagePositionPatient: 3, ImageOrientationPatient: 6), else ``None``."""
    if is_missing(value):
        return None
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and bool(np.isfinite(out).all()) else None


def functional_group_value(ds: Any, sequence: str, keyword: str, frame: int = 0) -> Any:
    """An enhanced multi-frame attribute: Shared Functional Groups first, else the frame's Per-Frame group."""
    for groups, index in (("SharedFunctionalGroupsSequence", 0), ("PerFrameFunctionalGroupsSequence", frame)):
        try:
            value = getattr(ds, groups)[index].get(sequence)[0].get(keyword)
        except (AttributeError, IndexError, TypeError, KeyError):
            continue
        if value is not None:
            return value
    return None


def pixel_spacing(ds: Any) -> tuple[float, float] | None:
    """(row, column) spacing in mm: PixelSpacing, ImagerPixelSpacing, else the shared/first per-frame groups.

    Args:
        ds: A pydicom dataset, or a mapping of keyword → value (the header scan's values; it has no functional
            groups, so only the first two are looked at).
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            return float(value[0]), float(value[1])
    if isinstance(ds, Mapping):
        return None
    value = functional_group_value(ds, "PixelMeasuresSequence", "PixelSpacing")
    if value is not None and len(value) == 2:
        return float(value[0]), float(value[1])
    return None
