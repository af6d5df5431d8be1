"""DICOM reader: one file → float32 pixel array + non-identifying metadata, with typed errors.

Array convention
    The returned array is the pixel matrix *as stored*: axis 0 runs over rows (top to bottom), axis 1
    over columns (left to right). Multi-frame instances put frames first: ``(frames, rows, columns)``.
    No transposition is applied (MONAI's own ``PydicomReader`` swaps i/j by default; we do not, so
    ``array[r, c]`` is the DICOM pixel at row ``r``, column ``c``).

Intensities
    Stored values go through the modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence),
    so CT comes out in HU. MONOCHROME1 ("white is zero") is inverted to MONOCHROME2 as
    ``(lo + hi) - x`` where ``lo``/``hi`` bound the *possible* stored values (from BitsStored and
    PixelRepresentation) mapped through the modality LUT, so the inversion is the same for every
    image with the same header and does not depend on image content. No VOI LUT/windowing is applied
    here; that belongs to the transform presets.

Colour
    RGB, palette and YBR images raise ``unsupported_image`` for now (a later issue adds colour).

Affine (MONAI meta)
    ``DicomReader`` gives an affine in the *image* frame, not patient LPS/RAS: index axis 0 (rows)
    maps to ``row spacing`` mm, axis 1 (columns) to ``column spacing`` mm (DICOM PixelSpacing is
    ``[row spacing, column spacing]``), and for multi-frame the frame axis comes first with
    SpacingBetweenSlices (else SliceThickness, else 1.0). Geometry in patient space is the series →
    volume issue's job.

Errors
    Every failure is a :class:`DicomReadError` carrying the path and a :class:`DicomErrorKind`.
    Truncation is detected structurally (declared element lengths vs. the file size, a missing
    sequence delimiter after encapsulated pixel data) because pydicom silently accepts short values
    and drops incomplete encapsulated pixel data. A file cut exactly on an element boundary before
    its pixel data cannot be told apart from a dataset without pixel data and reports
    ``no_pixel_data``. Pixel decoding uses pydicom 3's decoder plugins (pylibjpeg, openjpeg, rle,
    gdcm, pillow): pydicom tries every available plugin in turn and only raises when all fail,
    which we report as ``decode_error``; a transfer syntax with no decoder, or whose plugins are
    not installed, is ``unsupported_codec``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pydicom
import pydicom.pixels
from monai.data import ImageReader
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

__all__ = [
    "SAFE_META_KEYS",
    "DicomErrorKind",
    "DicomImage",
    "DicomReadError",
    "DicomReader",
    "pixel_spacing",
    "read_header",
    "read_image",
    "safe_meta",
]

PathLike = str | os.PathLike[str]

# Tags of the three pixel data elements; pydicom's stop_before_pixels stops at any of them.
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
# (FFFE,E0DD) Sequence Delimitation Item with zero length, little endian: closes encapsulated pixel data.
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
# How far back from the end of file we look for that delimiter (trailing padding may follow it).
_DELIMITER_SEARCH_BYTES = 64 * 1024
# Explicit VRs whose element header is 12 bytes (2-byte reserved + 4-byte length) — covers pixel data VRs.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}

# The only metadata keys that leave this module: no patient/institution tags, so batches and logs are clean.
SAFE_META_KEYS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "Modality", "PhotometricInterpretation")

_PixelStatus = Literal["present", "absent", "truncated", "unknown"]


class DicomErrorKind(StrEnum):
    """Why a file could not be read; the values are the error-ledger ``kind`` strings."""

    NOT_DICOM = "not_dicom"
    NO_PIXEL_DATA = "no_pixel_data"
    UNSUPPORTED_CODEC = "unsupported_codec"
    TRUNCATED = "truncated"
    UNSUPPORTED_IMAGE = "unsupported_image"
    DECODE_ERROR = "decode_error"
    UNREADABLE = "unreadable"  # OS-level failure: missing file, permission denied, I/O error


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


# --------------------------------------------------------------------------------------------- header


def _pixel_status(f: BinaryIO, ds: pydicom.Dataset, size: int) -> _PixelStatus:
    """Classify what follows the header that ``dcmread(f, stop_before_pixels=True)`` just parsed.

    pydicom reads short values without complaint, skips (seeks past) unwanted elements even beyond
    EOF, treats a partial element header as end of file and drops encapsulated pixel data whose
    delimiter is missing. So we check the structure ourselves, cheaply: a few small reads. The file
    position is restored, so the caller can go on reading the pixel data from there.
    """
    pos = f.tell()
    try:
        return _pixel_status_at(f, ds, size, pos)
    finally:
        f.seek(pos)


def _pixel_status_at(f: BinaryIO, ds: pydicom.Dataset, size: int, pos: int) -> _PixelStatus:
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return "unknown"  # offsets in a deflated stream say nothing about the file; let decoding judge
    if pos > size or len(ds) == 0:
        return "truncated"  # seeked past EOF, or 'DICM' with no complete element after the meta
    last = ds.get_item(list(ds.keys())[-1])  # parse order = file order
    last_end = None
    if isinstance(last, RawDataElement) and last.length != 0xFFFFFFFF:
        if last.value is not None and len(last.value) < last.length:
            return "truncated"
        last_end = last.value_tell + last.length
    if pos == size:
        # Nothing after the header. If bytes were consumed after the last complete element, pydicom
        # hit a partial element header (its EOF test) — the file was cut there.
        return "truncated" if last_end is not None and last_end < size else "absent"
    implicit, little = ds.original_encoding
    head = f.read(12)
    if len(head) < 8:
        return "truncated"
    order: Literal["little", "big"] = "little" if little in (True, None) else "big"
    group, elem = int.from_bytes(head[0:2], order), int.from_bytes(head[2:4], order)
    if (group << 16 | elem) not in _PIXEL_TAGS:
        return "absent"
    if implicit:
        header_len, length = 8, int.from_bytes(head[4:8], order)
    elif head[4:6] in _LONG_VRS:
        if len(head) < 12:
            return "truncated"
        header_len, length = 12, int.from_bytes(head[8:12], order)
    else:
        header_len, length = 8, int.from_bytes(head[6:8], order)
    if length != 0xFFFFFFFF:
        return "truncated" if pos + header_len + length > size else "present"
    # Encapsulated: complete only if the sequence delimiter is there (normally the last 8 bytes).
    f.seek(max(pos, size - _DELIMITER_SEARCH_BYTES))
    return "present" if _SEQ_DELIMITER in f.read() else "truncated"


def _open_header(
    f: BinaryIO, path: PathLike, specific_tags: Sequence[int | str] | None
) -> tuple[pydicom.Dataset, _PixelStatus]:
    """Parse the header of an open file and classify its pixel data, mapping failures to kinds."""
    size = os.fstat(f.fileno()).st_size
    ds, status = _parse_header(f, path, size, specific_tags)
    if status in ("absent", "truncated") and specific_tags:
        # With specific_tags the last *kept* element need not be the file's last one, so the
        # end-of-last-element test cannot tell a complete file without pixel data from one cut inside
        # an element header. Such files are rare (SR, DICOMDIR, cut files): re-parse them in full.
        f.seek(0)
        _, status = _parse_header(f, path, size, None)
    if status == "truncated":
        raise DicomReadError(DicomErrorKind.TRUNCATED, path, f"file cut short ({size} bytes)")
    return ds, status


def _parse_header(
    f: BinaryIO, path: PathLike, size: int, specific_tags: Sequence[int | str] | None
) -> tuple[pydicom.Dataset, _PixelStatus]:
    try:
        ds = pydicom.dcmread(
            f, stop_before_pixels=True, specific_tags=[Tag(t) for t in specific_tags] if specific_tags else None
        )
    except InvalidDicomError as exc:
        raise DicomReadError(DicomErrorKind.NOT_DICOM, path, str(exc) or "not a DICOM file") from exc
    except (EOFError, OSError) as exc:
        raise DicomReadError(DicomErrorKind.TRUNCATED, path, f"header cut short: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on malformed headers
        raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"{type(exc).__name__}: {exc}") from exc
    try:
        return ds, _pixel_status(f, ds, size)
    except Exception as exc:
        raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"{type(exc).__name__}: {exc}") from exc


def read_header(
    path: PathLike, *, specific_tags: Sequence[int | str] | None = None, require_pixel_data: bool = False
) -> pydicom.Dataset:
    """Read the header only (everything before the pixel data) and check the file is complete.

    The completeness check covers the pixel data too (a few small reads, no decoding), so a file cut
    short anywhere raises ``truncated`` here already.

    Args:
        path: the file.
        specific_tags: only parse these tags (keywords or ints) — faster, and keeps unwanted
            (e.g. identifying) elements out of memory.
        require_pixel_data: raise ``no_pixel_data`` for a complete file that has no pixel data
            (a DICOMDIR, a structured report, ...).

    Returns:
        The dataset without pixel data (``file_meta`` included).

    Raises:
        DicomReadError: ``not_dicom``, ``truncated``, ``no_pixel_data`` (if required),
            ``decode_error`` for a malformed header, ``unreadable`` for OS errors.
    """
    try:
        with open(path, "rb") as f:
            ds, status = _open_header(f, path, specific_tags)
    except OSError as exc:
        raise DicomReadError(DicomErrorKind.UNREADABLE, path, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    if require_pixel_data and status == "absent":
        raise DicomReadError(DicomErrorKind.NO_PIXEL_DATA, path, "no Pixel Data element")
    return ds


# ---------------------------------------------------------------------------------------------- image


def pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm: PixelSpacing, else ImagerPixelSpacing, else the shared functional groups."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            return float(value[0]), float(value[1])
    try:  # enhanced multi-frame objects keep it in Shared Functional Groups > Pixel Measures
        value = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        return float(value[0]), float(value[1])
    except (AttributeError, IndexError, TypeError, KeyError):
        return None


def _frame_spacing(ds: pydicom.Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        if value not in (None, ""):
            return float(value)
    return 1.0


def _stored_range(ds: pydicom.Dataset) -> tuple[int, int]:
    """Smallest and largest value the header allows a stored pixel to take."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _apply_modality(arr: np.ndarray, ds: pydicom.Dataset) -> tuple[np.ndarray, float, float]:
    """Stored values → modality units as float32, plus the (lo, hi) output range of the LUT."""
    smin, smax = _stored_range(ds)
    if "ModalityLUTSequence" in ds:
        item = ds.ModalityLUTSequence[0]
        n_entries, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
        # The LUT clamps inputs outside its domain to the first/last entry, so its output range is
        # exactly the range of its entries: evaluate it over its domain.
        lut_out = pydicom.pixels.apply_modality_lut(np.arange(first, first + n_entries), ds)
        out = pydicom.pixels.apply_modality_lut(arr, ds).astype(np.float32, copy=False)
        return out, float(lut_out.min()), float(lut_out.max())
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    out = arr.astype(np.float32)  # the one copy: also makes a read-only view on file bytes writeable
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    a, b = smin * slope + intercept, smax * slope + intercept
    return out, min(a, b), max(a, b)


def safe_meta(ds: pydicom.Dataset) -> dict[str, Any]:
    """Non-identifying metadata: ``SAFE_META_KEYS``, ``spacing`` and, for multi-frame, ``frame_spacing``."""
    meta: dict[str, Any] = {}
    for keyword in SAFE_META_KEYS:
        value = ds.get(keyword)
        meta[keyword] = None if value is None else str(value)
    meta["spacing"] = pixel_spacing(ds) or (1.0, 1.0)
    if int(ds.get("NumberOfFrames") or 1) > 1:
        meta["frame_spacing"] = _frame_spacing(ds)
    return meta


def _decode(ds: pydicom.Dataset, path: PathLike) -> np.ndarray:
    tsyntax = UID(ds.file_meta.get("TransferSyntaxUID", ""))
    try:
        decoder = pydicom.pixels.get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise DicomReadError(
            DicomErrorKind.UNSUPPORTED_CODEC, path, f"no decoder for transfer syntax {tsyntax} ({tsyntax.name})"
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise DicomReadError(
            DicomErrorKind.UNSUPPORTED_CODEC, path, f"no decoding plugin installed for {tsyntax.name}: {missing}"
        )
    try:
        # view_only: native data comes back as a view on the file bytes; _apply_modality makes the copy.
        # Not when Bits Stored < Bits Allocated: the unused high bits may hold garbage (old overlays)
        # that pydicom must mask, which needs a copy (asking for a view then only earns a warning).
        full_width = ds.get("BitsStored") == ds.get("BitsAllocated")
        return pydicom.pixels.pixel_array(ds, view_only=full_width)
    except Exception as exc:
        raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"{type(exc).__name__}: {exc}") from exc


def read_image(path: PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode one DICOM instance to float32 in modality units, MONOCHROME1 inverted to MONOCHROME2.

    Args:
        path: the file.

    Returns:
        ``(array, meta)``: array ``(rows, columns)`` or ``(frames, rows, columns)``, float32; meta has
        only ``SOPInstanceUID, SeriesInstanceUID, StudyInstanceUID, Modality,
        PhotometricInterpretation`` (as stored, before inversion), ``spacing`` (row, col) in mm
        (1.0, 1.0 when the header has none) and, for multi-frame only, ``frame_spacing`` (mm, see the
        module docstring).

    Raises:
        DicomReadError: any failure, typed (see :class:`DicomErrorKind`).
    """
    try:
        with open(path, "rb") as f:
            ds, status = _open_header(f, path, None)
            if status == "absent":
                raise DicomReadError(DicomErrorKind.NO_PIXEL_DATA, path, "no Pixel Data element")
            photometric = str(ds.get("PhotometricInterpretation", "")).strip()
            if photometric not in ("MONOCHROME1", "MONOCHROME2") or int(ds.get("SamplesPerPixel", 1)) != 1:
                raise DicomReadError(
                    DicomErrorKind.UNSUPPORTED_IMAGE,
                    path,
                    f"photometric interpretation {photometric or '(missing)'!r} not supported yet",
                )
            # Continue from where the header stopped: one pass over the file, no re-parse.
            try:
                if status == "unknown":  # deflated: let pydicom inflate and parse the whole thing
                    f.seek(0)
                    ds = pydicom.dcmread(f)
                else:
                    implicit, little = ds.original_encoding
                    ds.update(read_dataset(f, bool(implicit), little in (True, None)))
            except Exception as exc:
                raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise DicomReadError(DicomErrorKind.UNREADABLE, path, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise DicomReadError(DicomErrorKind.NO_PIXEL_DATA, path, "no Pixel Data element")

    stored = _decode(ds, path)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames == 1 and stored.ndim == 3:  # pydicom keeps a frame axis only when NumberOfFrames > 1
        stored = stored[0]
    out, lo, hi = _apply_modality(stored, ds)
    if photometric == "MONOCHROME1":
        np.subtract(np.float32(lo + hi), out, out=out)
    return out, safe_meta(ds)


# ---------------------------------------------------------------------------------------- MONAI reader

_SUFFIXES = {".dcm", ".dicom"}


class DicomImage:
    """What :meth:`DicomReader.read` returns: the decoded array, its safe metadata and the path."""

    __slots__ = ("array", "meta", "path")

    def __init__(self, array: np.ndarray, meta: dict[str, Any], path: str) -> None:
        self.array = array
        self.meta = meta
        self.path = path


class DicomReader(ImageReader):
    """MONAI ``ImageReader`` over :func:`read_image`, for ``LoadImage(d)(reader=DicomReader())``.

    ``get_data`` gives an array without a channel axis (``original_channel_dim = nan``, MONAI's
    "no channel" marker, so ``ensure_channel_first=True`` adds one) and an image-frame affine from the
    pixel spacing (see the module docstring). A sequence of paths is stacked on a new first axis, which
    MONAI then treats as the channel axis (``original_channel_dim = 0``), as its own readers do.
    """

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Accept ``.dcm``/``.dicom`` (any case) and extensionless files."""
        names = [filename] if isinstance(filename, str | os.PathLike) else list(filename)
        return bool(names) and all(Path(n).suffix.lower() in _SUFFIXES | {""} for n in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> DicomImage | list[DicomImage]:
        """Decode one file (→ one image) or a sequence of files (→ list; one-element sequence → one image)."""
        names = [data] if isinstance(data, str | os.PathLike) else list(data)
        images = [DicomImage(*read_image(n), path=str(n)) for n in names]
        return images[0] if len(images) == 1 else images

    def get_data(self, img: DicomImage | Sequence[DicomImage]) -> tuple[np.ndarray, dict[str, Any]]:
        """Return ``(array, meta)`` with MONAI's meta keys (affine, spatial_shape, original_channel_dim, ...)."""
        images = [img] if isinstance(img, DicomImage) else list(img)
        first = images[0]
        spatial_shape = np.asarray(first.array.shape)
        for other in images[1:]:
            if other.array.shape != first.array.shape:
                raise ValueError(f"cannot stack {other.path} {other.array.shape} with {first.path} {first.array.shape}")
        row, col = first.meta["spacing"]
        diag = [row, col] if first.array.ndim == 2 else [first.meta.get("frame_spacing", 1.0), row, col]
        affine = np.diag([*diag, 1.0]).astype(np.float64)
        meta: dict[str, Any] = {k: ("none" if v is None else v) for k, v in first.meta.items()}
        meta["spacing"] = np.asarray(first.meta["spacing"], dtype=np.float64)  # arrays collate into tensors
        meta["affine"] = affine
        meta["original_affine"] = affine.copy()
        meta["spatial_shape"] = spatial_shape
        meta["filename_or_obj"] = first.path
        if len(images) == 1:
            meta["original_channel_dim"] = float("nan")
            return first.array, meta
        meta["original_channel_dim"] = 0
        return np.stack([i.array for i in images], axis=0), meta
