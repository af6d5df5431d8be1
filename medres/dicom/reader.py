"""DICOM reader: one file → float32 pixel array + non-identifying metadata, with typed errors.

Array convention
    The returned array is the pixel matrix *as stored*: axis 0 runs over rows (top to bottom), axis 1
    over columns (left to right); colour images add a last axis of 3 samples in R, G, B order.
    Multi-frame instances put frames first. So: grey ``(rows, columns)``, colour ``(rows, columns, 3)``,
    multi-frame ``(frames, rows, columns)`` or ``(frames, rows, columns, 3)``. No transposition is
    applied (MONAI's own ``PydicomReader`` swaps i/j by default; we do not, so ``array[r, c]`` is the
    DICOM pixel at row ``r``, column ``c``).

Intensities (grey images)
    Stored values go through the modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence,
    PS3.3 C.11.1), so CT comes out in HU. By default that is all (``ReadOptions(voi="none")``).
    ``voi="lut"`` then applies the file's VOI LUT Sequence, else its first window (PS3.3 C.11.2);
    ``voi="window"`` applies ``ReadOptions.window`` (centre, width; LINEAR function), else the file's
    first window with its VOI LUT Function. VOI output is scaled to ``[0, 1]`` by the nominal output
    range of the LUT or window (not by image content). A file that has no VOI LUT / window when one is
    asked for is an ``unsupported_image`` error rather than silently left in other units.
    MONOCHROME1 ("white is zero") is inverted to MONOCHROME2 last, as ``(lo + hi) - x`` where
    ``lo``/``hi`` bound the *possible* values at that stage: the stored range (BitsStored,
    PixelRepresentation) through the modality LUT, or ``[0, 1]`` after VOI. The inversion is then the
    same for every image with the same header and does not depend on image content.

Colour
    RGB, YBR_FULL, YBR_FULL_422 (converted by pydicom, which knows whether a JPEG decoder already
    did it), YBR_ICT/YBR_RCT (JPEG 2000 decoders return RGB) and PALETTE COLOR (through the
    palette LUT) come out as RGB in the stored (or palette LUT entry) units, e.g. 0–255 for 8-bit.
    ``ReadOptions(colour="luminance")`` gives grey instead: ``0.299 R + 0.587 G + 0.114 B``
    (ITU-R BT.601 luma weights, the ones DICOM's YBR_FULL uses, PS3.3 C.7.6.3.1.2). Modality and
    VOI LUTs are grey-only (PS3.3 C.11.1, C.11.2) and are not applied to colour images. Any other
    photometric interpretation (ARGB, CMYK, HSV, unknown) is ``unsupported_image``.

Orientation and affine (MONAI meta, :class:`DicomReader`)
    DICOM gives patient coordinates in LPS (+x to the patient's Left, +y Posterior, +z Superior,
    PS3.3 C.7.6.2.1.1). With ``row_cosine = ImageOrientationPatient[0:3]`` (the direction along a
    row, i.e. of increasing column index), ``column_cosine = ImageOrientationPatient[3:6]`` and
    ``PixelSpacing = [row spacing, column spacing]``, the pixel at row ``i``, column ``j`` lies at
    ``IPP + i * row_spacing * column_cosine + j * column_spacing * row_cosine`` (PS3.3 C.7.6.2.1.1).
    ``DicomReader`` turns that into MONAI's ``affine`` in **RAS** (x and y negated), as MONAI's own
    readers do with ``affine_lps_to_ras=True``:

    - 2D instance with ImageOrientationPatient/ImagePositionPatient: a 4×4 affine whose column 0
      (row index i) is ``column_cosine * row_spacing``, column 1 (column index j) is
      ``row_cosine * column_spacing``, column 2 is the slice normal ``n = row_cosine × column_cosine``
      times SpacingBetweenSlices (else SliceThickness, else 1 mm), column 3 is IPP.
    - multi-frame with geometry (ImageOrientation/PositionPatient at the top level, or Plane
      Orientation/Position in the (shared or per-frame) functional groups of enhanced objects): the
      frame axis comes first, so column 0 is the frame step — the mean step between the first and
      last frame positions when every frame has one, else ``n`` times the frame spacing — and columns
      1, 2 are the in-plane ones above; the origin is the first frame's position.
    - no geometry (most CR/DX radiographs, secondary captures): the image-frame diagonal, ``diag(row
      spacing, column spacing, 1)`` for 2D and ``diag(frame spacing, row spacing, column spacing, 1)``
      for multi-frame, where frame spacing is SpacingBetweenSlices, else SliceThickness, else 1.0.

    Two consequences for 2D images with geometry, both shared with MONAI's ``PydicomReader``: MONAI's
    2D spatial transforms (and ``MetaTensor.pixdim``) read only the x/y rows of the affine, which hold
    the pixel spacing for an axial slice but not for a coronal or sagittal one (use ``meta["spacing"]``
    there); and 2D images with and without geometry have affines of different sizes (4×4 vs 3×3), so
    they do not collate into one batch of MetaTensors with their metadata.

Files without a file meta header
    Old archives and some modalities write a bare dataset: no 128-byte preamble, no ``DICM``, no
    group 0002 (PS3.10 7.1 makes the meta header mandatory, but PS3.5 allows the bare encoding on
    other media). pydicom only reads those with ``force=True``, which will "parse" any file. We read
    one only when it is *safe*: the file starts like a dataset (its first element is in group 0008,
    the lowest group a dataset can begin with, PS3.5 7.1), pydicom parses it without error, it has
    a valid SOP Class UID, and its transfer syntax follows from the encoding pydicom detected:
    implicit VR little endian (the default transfer syntax, PS3.5 10.1), explicit VR big endian, or
    explicit VR little endian with *native* (not encapsulated) pixel data. Anything else is
    ``not_dicom``. A meta header that lacks its Transfer Syntax UID is inferred the same way.

Codecs
    Pixel decoding of compressed transfer syntaxes uses pydicom 3's decoder plugins: pylibjpeg
    (with openjpeg and rle), python-gdcm and Pillow. pydicom tries every available plugin in turn
    and only raises when all fail, which we report as ``decode_error``; a transfer syntax with no
    decoder, or whose plugins are not installed, is ``unsupported_codec``. Without
    pylibjpeg-libjpeg, JPEG baseline/extended/lossless and JPEG-LS go through gdcm (and Pillow for
    8-bit JPEG); 12-bit JPEG extended has no decoder at all (gdcm's wheels and Pillow lack 12-bit
    JPEG) and is ``unsupported_codec``. Native (uncompressed) little- and big-endian grey pixel data
    with 8/16/32 bits per sample skips pydicom's decoder: it is read straight from the file, a
    cache-sized chunk at a time, into the float32 output (see ``_read_native``), the fast path for
    large radiographs (``benchmarks/dicom_reader.py``: ≥5× MONAI's ``PydicomReader``). pydicom's
    plugin order is kept otherwise: gdcm first for JPEG 2000 (on radiograph-like images it decoded
    about 1.5× faster than openjpeg through pylibjpeg here), pylibjpeg-rle before pydicom's
    pure-Python RLE decoder (about 5× faster).

Errors
    Every failure is a :class:`DicomReadError` carrying the path and a :class:`DicomErrorKind`.
    Truncation is detected structurally (declared element lengths vs. the file size, a missing
    sequence delimiter after encapsulated pixel data) because pydicom silently accepts short values
    and drops incomplete encapsulated pixel data. A file cut exactly on an element boundary before
    its pixel data cannot be told apart from a dataset without pixel data and reports
    ``no_pixel_data``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple, cast

import numpy as np
import pydicom
import pydicom.encaps
import pydicom.pixels
from monai.data import ImageReader
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGExtended12Bit,
    RLELossless,
)

from medres.dicom.errors import DicomErrorKind, DicomReadError
from medres.dicom.reduced_decode import decode_reduced
from medres.dicom.values import (
    LONG_VRS,
    PIXEL_DATA,
    PIXEL_TAGS,
    SEQ_DELIMITER,
    UNDEFINED_LENGTH,
    PathLike,
    finite_floats,
    functional_group_value,
    pixel_spacing,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "SAFE_META_KEYS",
    "DicomImage",
    "DicomReader",
    "ReadOptions",
    "instance_affine",
    "read_header",
    "read_image",
    "safe_meta",
]

# How far back from the end of file we look for the sequence delimiter (trailing padding may follow it).
_DELIMITER_SEARCH_BYTES = 64 * 1024
# Native transfer syntaxes whose pixel bytes _read_native reads directly, with their byte order.
_NATIVE_BYTE_ORDER = {ImplicitVRLittleEndian: "<", ExplicitVRLittleEndian: "<", ExplicitVRBigEndian: ">"}

# The only metadata keys that leave this module: no patient/institution tags, so batches and logs are clean.
SAFE_META_KEYS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "Modality", "PhotometricInterpretation")

_GREY = ("MONOCHROME1", "MONOCHROME2")
# Photometric interpretations that come out of pydicom (pixel_array with raw=False) as RGB samples.
_RGB_LIKE = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
_PALETTE = "PALETTE COLOR"
# ITU-R BT.601 luma weights (R, G, B), as in DICOM's YBR_FULL definition, PS3.3 C.7.6.3.1.2.
_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_PixelStatus = Literal["present", "absent", "truncated", "unknown"]


# -------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ReadOptions:
    """How :func:`read_image` turns stored values into output values (see the module docstring).

    Attributes:
        voi: ``"none"`` (modality units, the default), ``"lut"`` (the file's VOI LUT Sequence, else
            its first window) or ``"window"`` (``window``, else the file's first window); VOI output
            is in ``[0, 1]``. Grey images only.
        window: (centre, width) in modality units for ``voi="window"``; width ≥ 1 (PS3.3 C.11.2.1.2.1).
        colour: ``"rgb"`` keeps colour images as ``(..., 3)`` RGB; ``"luminance"`` gives BT.601 grey.
        reduced_longest_side: When set, the caller resizes the image so its longer side is this many pixels, and
            a single-frame grey JPEG 2000 or baseline JPEG instance is decoded at the coarsest resolution that
            still covers that size per axis (:mod:`medres.dicom.reduced_decode`); the array is then smaller than
            Rows × Columns and ``spacing`` and the affine grow to match. Other files decode in full.
    """

    voi: Literal["none", "lut", "window"] = "none"
    window: tuple[float, float] | None = None
    colour: Literal["rgb", "luminance"] = "rgb"
    reduced_longest_side: int | None = None

    def __post_init__(self) -> None:
        if self.reduced_longest_side is not None and self.reduced_longest_side < 1:
            raise ValueError(f"ReadOptions.reduced_longest_side must be ≥ 1, not {self.reduced_longest_side!r}")
        if self.voi not in ("none", "lut", "window"):
            raise ValueError(f"ReadOptions.voi must be 'none', 'lut' or 'window', not {self.voi!r}")
        if self.colour not in ("rgb", "luminance"):
            raise ValueError(f"ReadOptions.colour must be 'rgb' or 'luminance', not {self.colour!r}")
        if self.window is not None:
            if self.voi != "window":
                raise ValueError(f"ReadOptions.window is only used with voi='window' (voi is {self.voi!r})")
            if len(self.window) != 2:
                raise ValueError(f"ReadOptions.window must be (centre, width), not {self.window!r}")
            centre, width = (float(v) for v in self.window)
            if not (np.isfinite(centre) and np.isfinite(width) and width >= 1.0):
                raise ValueError(f"ReadOptions.window needs a finite centre and a width ≥ 1, not {self.window!r}")
            object.__setattr__(self, "window", (centre, width))  # lists from YAML → a hashable tuple


DEFAULT_OPTIONS = ReadOptions()


# --------------------------------------------------------------------------------------------- header


class _PixelElement(NamedTuple):
    """What follows the header: its status and, when present, where the pixel data element's value is."""

    status: _PixelStatus
    tag: int = 0
    offset: int = 0  # file offset of the value
    length: int = 0  # declared value length (UNDEFINED_LENGTH when encapsulated)


def _pixel_element(f: BinaryIO, ds: pydicom.Dataset, size: int) -> _PixelElement:
    """Classify what follows the header that ``dcmread(f, stop_before_pixels=True)`` just parsed.

    pydicom reads short values without complaint, skips (seeks past) unwanted elements even beyond
    EOF, treats a partial element header as end of file and drops encapsulated pixel data whose
    delimiter is missing. So we check the structure ourselves, cheaply: a few small reads. The file
    position is restored, so the caller can go on reading the pixel data from there.
    """
    pos = f.tell()
    try:
        return _pixel_element_at(f, ds, size, pos)
    finally:
        f.seek(pos)


def _pixel_element_at(f: BinaryIO, ds: pydicom.Dataset, size: int, pos: int) -> _PixelElement:
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return _PixelElement("unknown")  # offsets in a deflated stream say nothing about the file
    if pos > size or len(ds) == 0:
        return _PixelElement("truncated")  # seeked past EOF, or 'DICM' with no complete element after the meta
    last = ds.get_item(list(ds.keys())[-1])  # parse order = file order
    last_end = None
    if isinstance(last, RawDataElement) and last.length != UNDEFINED_LENGTH:
        if last.value is not None and len(last.value) < last.length:
            return _PixelElement("truncated")
        last_end = last.value_tell + last.length
    if pos == size:
        # Nothing after the header. If bytes were consumed after the last complete element, pydicom
        # hit a partial element header (its EOF test) — the file was cut there.
        return _PixelElement("truncated" if last_end is not None and last_end < size else "absent")
    _, little = ds.original_encoding
    head = f.read(12)
    if len(head) < 8:
        return _PixelElement("truncated")
    order: Literal["little", "big"] = "little" if little in (True, None) else "big"
    tag = int.from_bytes(head[0:2], order) << 16 | int.from_bytes(head[2:4], order)
    if tag not in PIXEL_TAGS:
        return _PixelElement("absent")
    # Judge the encoding from the element itself: some writers switch to implicit VR in the dataset
    # whatever the transfer syntax says, and pydicom follows them (it checks each element's VR bytes).
    if not (head[4:6].isalpha() and head[4:6].isupper()):
        header_len, length = 8, int.from_bytes(head[4:8], order)
    elif head[4:6] in LONG_VRS:
        if len(head) < 12:
            return _PixelElement("truncated")
        header_len, length = 12, int.from_bytes(head[8:12], order)
    else:
        header_len, length = 8, int.from_bytes(head[6:8], order)
    offset = pos + header_len
    if length != UNDEFINED_LENGTH:
        return _PixelElement("truncated" if offset + length > size else "present", tag, offset, length)
    # Encapsulated: complete only if the sequence delimiter is there (normally the last 8 bytes).
    f.seek(max(pos, size - _DELIMITER_SEARCH_BYTES))
    return _PixelElement("present" if SEQ_DELIMITER in f.read() else "truncated", tag, offset, length)


def _open_header(
    f: BinaryIO, path: PathLike, specific_tags: Sequence[int | str] | None
) -> tuple[pydicom.Dataset, _PixelElement]:
    """Parse the header of an open file and classify its pixel data, mapping failures to kinds."""
    size = os.fstat(f.fileno()).st_size
    ds, pixels = _parse_header(f, path, size, specific_tags)
    if pixels.status in ("absent", "truncated") and specific_tags:
        # With specific_tags the last *kept* element need not be the file's last one, so the
        # end-of-last-element test cannot tell a complete file without pixel data from one cut inside
        # an element header. Such files are rare (SR, DICOMDIR, cut files): re-parse them in full.
        f.seek(0)
        _, pixels = _parse_header(f, path, size, None)
    if pixels.status == "truncated":
        raise DicomReadError(DicomErrorKind.TRUNCATED, path, f"file cut short ({size} bytes)")
    if "TransferSyntaxUID" not in ds.file_meta:
        _infer_transfer_syntax(ds, pixels, path)
    return ds, pixels


def _parse_header(
    f: BinaryIO, path: PathLike, size: int, specific_tags: Sequence[int | str] | None
) -> tuple[pydicom.Dataset, _PixelElement]:
    tags = [Tag(t) for t in specific_tags] if specific_tags else None
    ds: pydicom.Dataset
    try:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=tags)
        except InvalidDicomError as exc:
            ds = _parse_without_meta(f, path, tags, exc)
    except DicomReadError:
        raise
    except (EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a real I/O error: the caller reports it as unreadable
        raise DicomReadError(DicomErrorKind.TRUNCATED, path, f"header cut short: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on malformed headers
        raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"{type(exc).__name__}: {exc}") from exc
    try:
        return ds, _pixel_element(f, ds, size)
    except Exception as exc:
        raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"{type(exc).__name__}: {exc}") from exc


def _parse_without_meta(
    f: BinaryIO, path: PathLike, tags: list[Any] | None, invalid: InvalidDicomError
) -> pydicom.Dataset:
    """Parse a file with no preamble/meta header when that is safe (see the module docstring), else not_dicom."""
    f.seek(0)
    head = f.read(8)
    # A bare dataset starts with its lowest group, 0008 (PS3.5 7.1: elements in ascending tag order;
    # groups 0000-0006 are command/meta/reserved). Anything else is not worth a forced parse.
    if len(head) < 8 or head[0:2] not in (b"\x08\x00", b"\x00\x08"):
        raise DicomReadError(DicomErrorKind.NOT_DICOM, path, str(invalid) or "not a DICOM file")
    f.seek(0)
    wanted = None if tags is None else [*tags, Tag("SOPClassUID")]
    try:
        ds = pydicom.dcmread(f, force=True, stop_before_pixels=True, specific_tags=wanted)
        sop_class = UID(str(ds.get("SOPClassUID", "")))
    except Exception as exc:
        raise DicomReadError(DicomErrorKind.NOT_DICOM, path, f"no file meta header and not parseable: {exc}") from exc
    if not sop_class.is_valid:
        raise DicomReadError(DicomErrorKind.NOT_DICOM, path, "no file meta header and no valid SOP Class UID")
    return ds


def _infer_transfer_syntax(ds: pydicom.Dataset, pixels: _PixelElement, path: PathLike) -> None:
    """Set file_meta.TransferSyntaxUID from the encoding pydicom detected, where that is unambiguous."""
    implicit, little = ds.original_encoding
    syntax = None
    if implicit and little:
        syntax = ImplicitVRLittleEndian
    elif implicit is False and little is False:
        syntax = ExplicitVRBigEndian
    elif implicit is False and little and pixels.length != UNDEFINED_LENGTH:
        # Explicit VR little endian is also the encoding of every compressed syntax; only native
        # pixel data (a defined length) pins it down.
        syntax = ExplicitVRLittleEndian
    if syntax is None:
        raise DicomReadError(
            DicomErrorKind.NOT_DICOM, path, "no Transfer Syntax UID and it cannot be inferred from the encoding"
        )
    if not isinstance(ds.file_meta, FileMetaDataset):
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax


def read_header(
    path: PathLike, *, specific_tags: Sequence[int | str] | None = None, require_pixel_data: bool = False
) -> pydicom.Dataset:
    """Read the header only (everything before the pixel data) and check the file is complete.

    The completeness check covers the pixel data too (a few small reads, no decoding), so a file cut
    short anywhere raises ``truncated`` here already. Files without a file meta header are read
    where that is safe (module docstring); their ``file_meta.TransferSyntaxUID`` is then inferred.

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
            ds, pixels = _open_header(f, path, specific_tags)
    except OSError as exc:
        raise DicomReadError(DicomErrorKind.UNREADABLE, path, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    if require_pixel_data and pixels.status == "absent":
        raise DicomReadError(DicomErrorKind.NO_PIXEL_DATA, path, "no Pixel Data element")
    return ds


# ---------------------------------------------------------------------------------------------- image


def _frame_spacing(ds: pydicom.Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        if value not in (None, ""):
            return float(value)
    value = functional_group_value(ds, "PixelMeasuresSequence", "SpacingBetweenSlices")
    value = value if value not in (None, "") else functional_group_value(ds, "PixelMeasuresSequence", "SliceThickness")
    return float(value) if value not in (None, "") else 1.0


def _stored_range(ds: pydicom.Dataset) -> tuple[int, int]:
    """Smallest and largest value the header allows a stored pixel to take."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _slope_intercept(item: pydicom.Dataset) -> tuple[float, float]:
    """An item's (or a dataset's) RescaleSlope and RescaleIntercept, defaulting to the identity."""
    return float(item.get("RescaleSlope", 1.0) or 1.0), float(item.get("RescaleIntercept", 0.0) or 0.0)


def _rescale(ds: pydicom.Dataset) -> tuple[float, float]:
    """(slope, intercept): top level, else an enhanced object's shared Pixel Value Transformation.

    Enhanced CT/MR (PS3.3 C.7.6.16.2.9) keep rescale in functional groups; without them HU would be stored values.
    """
    if "RescaleSlope" not in ds and "RescaleIntercept" not in ds:
        for group in ds.get("SharedFunctionalGroupsSequence") or []:
            for item in group.get("PixelValueTransformationSequence") or []:
                return _slope_intercept(item)
    return _slope_intercept(ds)


def _per_frame_rescale(ds: pydicom.Dataset) -> list[tuple[float, float]] | None:
    """Each frame's (slope, intercept) when an enhanced object puts them in its per-frame functional groups."""
    groups = ds.get("PerFrameFunctionalGroupsSequence") or []
    if "RescaleSlope" in ds or not groups or "PixelValueTransformationSequence" not in groups[0]:
        return None
    pairs = []
    for group in groups:
        items = group.get("PixelValueTransformationSequence") or []
        if not items:
            return None  # partial per-frame groups: fall back to the shared/top-level values
        pairs.append(_slope_intercept(items[0]))
    return pairs


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
    per_frame = _per_frame_rescale(ds)
    if per_frame is not None and arr.ndim >= 3 and arr.shape[0] == len(per_frame):
        out = arr.astype(np.float32)  # frames with their own slope/intercept: no in-place shortcut
        ends = []
        for frame, (slope, intercept) in zip(out, per_frame, strict=True):
            frame *= np.float32(slope)
            frame += np.float32(intercept)
            ends += [smin * slope + intercept, smax * slope + intercept]
        return out, min(ends), max(ends)
    slope, intercept = per_frame[0] if per_frame is not None and len(per_frame) == 1 else _rescale(ds)
    if arr.dtype == np.float32 and arr.flags.writeable:
        out = arr  # already our own float32 copy (from _read_native): rescale in place
        if slope != 1.0:
            out *= np.float32(slope)
    else:
        # The one copy (stored values → float32): it also makes a read-only view on file bytes writeable.
        # With a slope, the multiply does the conversion in the same pass.
        out = np.empty(arr.shape, dtype=np.float32)
        if slope != 1.0:
            np.multiply(arr, np.float32(slope), out=out, casting="unsafe")
        else:
            np.copyto(out, arr, casting="unsafe")
    if intercept != 0.0:
        out += np.float32(intercept)
    a, b = smin * slope + intercept, smax * slope + intercept
    return out, min(a, b), max(a, b)


def _apply_voi(arr: np.ndarray, ds: pydicom.Dataset, options: ReadOptions, path: PathLike) -> np.ndarray:
    """Modality units → VOI output scaled to [0, 1] (PS3.3 C.11.2), per ``options.voi``."""
    if options.voi == "lut" and ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        depth = int(item.LUTDescriptor[2])  # nominal output bits, 8 or 10-16 (PS3.3 C.11.2.1.1)
        # The LUT is indexed by integers; modality output of an integer-valued LUT/rescale is integral.
        lut_out = pydicom.pixels.apply_voi(np.rint(arr).astype(np.int64), ds, index=0)
        return (lut_out.astype(np.float32) / np.float32((1 << depth) - 1)).astype(np.float32)
    if options.window is not None:
        centre, width = options.window
        function = "LINEAR"
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        centre, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction") or "LINEAR")
    else:
        what = "VOI LUT Sequence or window" if options.voi == "lut" else "WindowCenter/WindowWidth"
        raise DicomReadError(
            DicomErrorKind.UNSUPPORTED_IMAGE, path, f"voi={options.voi!r} asked for but the file has no {what}"
        )
    # pydicom's windowing maps onto the output range [y_min, y_max] it derives from the header; a
    # minimal header with a 16-bit unsigned range gives [0, 65535], which we divide down to [0, 1].
    window = pydicom.Dataset()
    window.PhotometricInterpretation = "MONOCHROME2"
    window.PixelRepresentation, window.BitsStored = 0, 16
    window.WindowCenter, window.WindowWidth, window.VOILUTFunction = centre, width, function
    try:
        out = pydicom.pixels.apply_windowing(arr, window)
    except ValueError as exc:  # width below the function's minimum, unknown VOI LUT Function
        raise DicomReadError(DicomErrorKind.UNSUPPORTED_IMAGE, path, f"window: {exc}") from exc
    return (out / 65535.0).astype(np.float32)


def _first(value: Any) -> float:
    """The first value of a possibly multi-valued DS element (several windows: PS3.3 C.11.2.1.2)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return float(value)
    return float(value[0])


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


def _check_image_pixel_module(ds: pydicom.Dataset, path: PathLike) -> str:
    """The photometric interpretation, after checking the Image Pixel module allows decoding it (PS3.3 C.7.6.3)."""
    required = ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation")
    missing = [k for k in required if ds.get(k) in (None, "")]
    if missing:
        raise DicomReadError(DicomErrorKind.UNSUPPORTED_IMAGE, path, f"Image Pixel module lacks {', '.join(missing)}")
    empty = [k for k in ("Rows", "Columns", "BitsAllocated") if int(ds.get(k)) < 1]  # US: 0 is the only bad value
    if empty:
        raise DicomReadError(DicomErrorKind.UNSUPPORTED_IMAGE, path, f"{', '.join(empty)} of 0: an empty image")
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    expected = 3 if photometric in _RGB_LIKE else 1 if photometric in (*_GREY, _PALETTE) else None
    if expected is None:
        raise DicomReadError(
            DicomErrorKind.UNSUPPORTED_IMAGE, path, f"photometric interpretation {photometric!r} not supported"
        )
    if samples != expected:
        raise DicomReadError(
            DicomErrorKind.UNSUPPORTED_IMAGE,
            path,
            f"{photometric} with SamplesPerPixel {samples} (expected {expected})",
        )
    return photometric


def _native_dtype(ds: pydicom.Dataset) -> np.dtype[Any] | None:
    """The dtype of native grey pixel data that ``_read_native`` can read directly, else None."""
    order = _NATIVE_BYTE_ORDER.get(UID(ds.file_meta.get("TransferSyntaxUID", "")))
    bits = int(ds.get("BitsAllocated") or 0)
    if order is None or bits not in (8, 16, 32) or int(ds.get("SamplesPerPixel") or 1) != 1:
        return None
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    return np.dtype(f"{order}{'i' if signed else 'u'}{bits // 8}")


def _read_native(
    f: BinaryIO, ds: pydicom.Dataset, pixels: _PixelElement, dtype: np.dtype[Any], to_float: bool
) -> np.ndarray | None:
    """Read native grey pixel data straight from the file, or None to leave it to pydicom.

    This is pydicom's native decoding (``pixel_array``) without its copies: pydicom reads the
    element's bytes into a ``bytes`` object, copies again to clear the unused high bits (Bits Stored
    < Bits Allocated, PS3.5 8.1.1), and we would then copy to float32. With ``to_float`` the bytes
    go to float32 through a cache-sized buffer (:func:`_read_into_float32`); otherwise into an array
    of the stored type, bits cleared in place.

    Returns:
        The stored values (Bits Stored significant bits), float32 with ``to_float``, else the file's
        integer dtype; None when pydicom should decode instead.
    """
    frames = int(ds.get("NumberOfFrames") or 1)
    shape = (frames, int(ds.Rows), int(ds.Columns)) if frames > 1 else (int(ds.Rows), int(ds.Columns))
    count = int(np.prod(shape))
    if pixels.tag != PIXEL_DATA or pixels.length == UNDEFINED_LENGTH or pixels.length < count * dtype.itemsize:
        return None  # float pixel data, or a short element: pydicom gives the precise error
    bits_stored = int(ds.get("BitsStored") or dtype.itemsize * 8)
    unused = dtype.itemsize * 8 - bits_stored if 0 < bits_stored < dtype.itemsize * 8 else 0
    f.seek(pixels.offset)
    if to_float:
        out = _read_into_float32(f, count, dtype, unused)
        return None if out is None else out.reshape(shape)
    arr = np.empty(shape, dtype=dtype)
    if f.readinto(arr.data.cast("B")) != arr.nbytes:  # type: ignore[attr-defined]  # BinaryIO lacks readinto
        return None
    _clear_unused_bits(arr, unused)
    return arr


def _clear_unused_bits(arr: np.ndarray, unused: int) -> None:
    """Keep the low Bits Stored bits in place: mask unsigned values, sign-extend signed ones (as pydicom does)."""
    if unused == 0:
        return
    if arr.dtype.kind == "u":
        np.bitwise_and(arr, np.array((1 << (arr.dtype.itemsize * 8 - unused)) - 1, dtype=arr.dtype), out=arr)
    else:
        np.left_shift(arr, unused, out=arr, casting="unsafe")
        np.right_shift(arr, unused, out=arr, casting="unsafe")


# Values read and converted per step in _read_into_float32: 256 Ki values (0.5 MiB in for 16-bit, 1 MiB
# out) stay in a 2 MiB L2 cache; of 32 Ki-256 Ki, the largest was fastest (1.8 vs 2.7 ms on 2000×2000).
_CHUNK = 1 << 18


def _read_into_float32(f: BinaryIO, count: int, dtype: np.dtype[Any], unused: int) -> np.ndarray | None:
    """Read ``count`` stored values from ``f`` into a new float32 array, a cache-sized chunk at a time.

    Each chunk is read into a small scratch buffer that stays in the CPU cache and is converted (bits
    cleared) from there, so the stored values never make a round trip through main memory: on a
    2000×2000 16-bit radiograph, read in turn with MONAI's reader, this takes 1.8-2.3 ms where reading
    everything into one array first took 2.9-3.3 ms. (Mapping the file instead of reading it would save
    the copy too, but a file truncated or failing underneath a mapping kills the process with SIGBUS
    instead of raising an error.)
    """
    out = np.empty(count, dtype=np.float32)
    scratch = np.empty(min(count, _CHUNK), dtype=dtype)
    buffer = scratch.data.cast("B")
    mask = np.array((1 << (dtype.itemsize * 8 - unused)) - 1, dtype=dtype) if unused and dtype.kind == "u" else None
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        if f.readinto(buffer[: n * dtype.itemsize]) != n * dtype.itemsize:  # type: ignore[attr-defined]
            return None
        chunk = scratch[:n]
        if mask is not None:  # clear the bits and convert in one pass
            np.bitwise_and(chunk, mask, out=out[start : start + n], casting="unsafe")
        else:
            _clear_unused_bits(chunk, unused)
            np.copyto(out[start : start + n], chunk, casting="unsafe")
    return out


# RLE (PS3.5 G.3.1, PackBits): at best a 2-byte replicate run gives 128 bytes, so a segment decodes to at most 64×
# its length. A header that promises more than that cannot be true.
_RLE_MAX_EXPANSION = 64
# Start-of-frame markers whose segment holds the frame's height and width (ITU-T T.81 B.2.2, T.87 for JPEG-LS's
# FFF7): every SOFn except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
# JPEG 2000 codestream start (SOC) followed by the image and tile size marker (SIZ), ITU-T T.800 A.5.1.
_J2K_SIZ = b"\xff\x4f\xff\x51"


def _codestream_size(fragment: bytes, tsyntax: UID) -> tuple[int, int] | None:
    """(rows, columns) a JPEG or JPEG 2000 frame's codestream declares, or None where it is not found.

    A few bytes of marker parsing (pydicom's own parameter helpers are private and do not return the size).
    """
    if tsyntax in JPEG2000TransferSyntaxes:
        at = fragment.find(_J2K_SIZ)
        if at < 0 or len(fragment) < at + 24:
            return None
        x, y, x0, y0 = (int.from_bytes(fragment[at + 8 + 4 * i : at + 12 + 4 * i], "big") for i in range(4))
        return y - y0, x - x0
    i = 2 if fragment[:2] == b"\xff\xd8" else len(fragment)  # SOI, then marker segments up to the SOF
    while i + 9 <= len(fragment) and fragment[i] == 0xFF:
        marker, length = fragment[i + 1], int.from_bytes(fragment[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF:
            return int.from_bytes(fragment[i + 5 : i + 7], "big"), int.from_bytes(fragment[i + 7 : i + 9], "big")
        i += 2 + length
    return None


def _check_encapsulated(ds: pydicom.Dataset, path: PathLike, tsyntax: UID) -> None:
    """Refuse compressed pixel data whose header promises more than its fragments can hold, before decoding.

    Decoders allocate (and some zero-fill) the output the header declares before they look at the data: a flipped
    byte in Rows or Columns of a 64 px RLE file made pylibjpeg-rle fill 7 GB (issue 21). Three checks, each a
    property of valid data: a frame needs at least one fragment (PS3.5 A.4); an RLE frame cannot decode to more
    than 64× its bytes; a JPEG or JPEG 2000 codestream states the frame size, which must be Rows × Columns.
    """
    data = ds.get("PixelData")
    if not isinstance(data, bytes | bytearray):
        return  # float pixel data or nothing: pydicom reports it
    try:
        fragments = list(pydicom.encaps.generate_fragments(data))[1:]  # the first item is the offset table
    except Exception as exc:
        raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"encapsulated pixel data: {exc}") from exc
    frames = int(ds.get("NumberOfFrames") or 1)
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if frames > len(fragments):
        raise DicomReadError(
            DicomErrorKind.DECODE_ERROR,
            path,
            f"NumberOfFrames {frames} but the pixel data holds {len(fragments)} fragment(s) (a frame needs one)",
        )
    if tsyntax == RLELossless:
        per_frame = rows * columns * int(ds.get("SamplesPerPixel") or 1) * -(-int(ds.get("BitsAllocated") or 8) // 8)
        if per_frame > _RLE_MAX_EXPANSION * max(len(f) for f in fragments):
            raise DicomReadError(
                DicomErrorKind.DECODE_ERROR,
                path,
                f"Rows {rows} × Columns {columns} cannot come out of RLE fragments of at most "
                f"{max(len(f) for f in fragments)} bytes",
            )
        return
    size = _codestream_size(bytes(fragments[0][:65536]), tsyntax) if fragments else None
    if size is not None and size != (rows, columns):
        raise DicomReadError(
            DicomErrorKind.DECODE_ERROR,
            path,
            f"Rows {rows} × Columns {columns} in the header but the codestream is {size[0]} × {size[1]}",
        )


def _decode(ds: pydicom.Dataset, path: PathLike) -> np.ndarray:
    """Decode the pixel data through pydicom, as stored samples (YBR → RGB done by pydicom, ``raw=False``)."""
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
    if (
        tsyntax == JPEGExtended12Bit
        and int(ds.get("BitsStored") or 8) > 8
        and "pylibjpeg" not in decoder.available_plugins
    ):
        # gdcm (python-gdcm wheels) and Pillow both refuse 12-bit JPEG; only pylibjpeg-libjpeg decodes it.
        raise DicomReadError(
            DicomErrorKind.UNSUPPORTED_CODEC,
            path,
            "12-bit JPEG Extended needs pylibjpeg-libjpeg, which is not installed",
        )
    if tsyntax.is_encapsulated:
        _check_encapsulated(ds, path, tsyntax)
    # view_only: native data comes back as a view on the file bytes; the modality step makes the copy.
    # Not when Bits Stored < Bits Allocated: the unused high bits may hold garbage (old overlays)
    # that pydicom must mask, which needs a copy (asking for a view then only earns a warning).
    full_width = ds.get("BitsStored") == ds.get("BitsAllocated")
    try:
        return pydicom.pixels.pixel_array(ds, view_only=full_width)
    except Exception as exc:
        raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"{type(exc).__name__}: {exc}") from exc


def _read_instance(path: PathLike, options: ReadOptions) -> tuple[np.ndarray, pydicom.Dataset, str]:
    """Decode one instance per ``options``: the output array, the dataset (pixel data dropped), the photometric."""
    try:
        with open(path, "rb") as f:
            ds, pixels = _open_header(f, path, None)
            if pixels.status == "absent":
                raise DicomReadError(DicomErrorKind.NO_PIXEL_DATA, path, "no Pixel Data element")
            photometric = _check_image_pixel_module(ds, path)
            # The fast path is for grey images; palette indices and colour samples go through pydicom.
            dtype = _native_dtype(ds) if pixels.status == "present" and photometric in _GREY else None
            # Straight to float32 unless a Modality LUT Sequence has to index by the stored integers.
            to_float = "ModalityLUTSequence" not in ds
            stored = _read_native(f, ds, pixels, dtype, to_float) if dtype is not None else None
            if stored is None:
                # Continue from where the header stopped: one pass over the file, no re-parse.
                try:
                    if pixels.status == "unknown":  # deflated: let pydicom inflate and parse the whole thing
                        f.seek(0)
                        ds = pydicom.dcmread(f, force=True)
                    else:
                        implicit, little = ds.original_encoding
                        ds.update(read_dataset(f, bool(implicit), little in (True, None)))
                except Exception as exc:
                    raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise DicomReadError(DicomErrorKind.UNREADABLE, path, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    if stored is None:
        if not any(tag in ds for tag in PIXEL_TAGS):
            raise DicomReadError(DicomErrorKind.NO_PIXEL_DATA, path, "no Pixel Data element")
        if options.reduced_longest_side is not None:  # None: another syntax, or a codestream that refused
            stored = decode_reduced(ds, options.reduced_longest_side)
        if stored is None:
            stored = _decode(ds, path)
        for tag in PIXEL_TAGS:  # the dataset goes on to metadata and geometry; free the encoded bytes
            if tag in ds:
                del ds[tag]
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = 3 if photometric in _RGB_LIKE else 1
    if frames == 1 and stored.ndim == (3 if samples == 1 else 4):  # keep a frame axis only for multi-frame
        stored = stored[0]

    if photometric in _GREY:
        out, lo, hi = _apply_modality(stored, ds)
        if options.voi != "none":
            out, lo, hi = _apply_voi(out, ds, options, path), 0.0, 1.0
        if photometric == "MONOCHROME1":
            np.subtract(np.float32(lo + hi), out, out=out)
        return out, ds, photometric
    if photometric == _PALETTE:
        try:
            rgb = pydicom.pixels.apply_color_lut(stored, ds)
        except Exception as exc:  # missing/malformed palette descriptors or data
            raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"palette: {type(exc).__name__}: {exc}") from exc
    else:
        rgb = stored
    if options.colour == "luminance":
        return np.tensordot(rgb, _BT601, axes=([-1], [0])).astype(np.float32, copy=False), ds, photometric
    return rgb.astype(np.float32), ds, photometric


class DicomImage:
    """What :meth:`DicomReader.read` returns: the decoded array, its safe metadata, path and geometry.

    Attributes:
        array: the output of :func:`read_image`.
        meta: its metadata (:func:`safe_meta`).
        path: the file.
        affine: from :func:`instance_affine`; None means the image-frame diagonal from ``meta["spacing"]``.
        rgb: whether the array's last axis holds R, G, B (colour image read with ``colour="rgb"``).
    """

    __slots__ = ("affine", "array", "meta", "path", "rgb")

    def __init__(
        self,
        array: np.ndarray,
        meta: dict[str, Any],
        path: str,
        affine: np.ndarray | None = None,
        rgb: bool = False,
    ) -> None:
        self.array = array
        self.meta = meta
        self.path = path
        self.affine = affine
        self.rgb = rgb

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The array's shape without the RGB axis."""
        return tuple(self.array.shape[:-1] if self.rgb else self.array.shape)


def _load(path: PathLike, options: ReadOptions, with_affine: bool) -> DicomImage:
    """Read one file into a :class:`DicomImage`; every failure becomes a typed :class:`DicomReadError`."""
    try:
        array, ds, photometric = _read_instance(path, options)
        image = DicomImage(array, safe_meta(ds), str(path), rgb=photometric not in _GREY and options.colour == "rgb")
        if with_affine:
            image.affine = instance_affine(ds, image.spatial_shape)
        if options.reduced_longest_side is not None:
            _rescale_geometry(image, (int(ds.Rows), int(ds.Columns)))
        return image
    except (DicomReadError, MemoryError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        # pydicom converts values lazily: a malformed one surfaces wherever it is first used. BaseException: a
        # Rust decoder's panic arrives as pyo3's PanicException, which derives from it (pylibjpeg-rle on an RLE
        # file whose Columns lie, issue 21).
        raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"{type(exc).__name__}: {exc}") from exc


def _rescale_geometry(image: DicomImage, stored_shape: tuple[int, int]) -> None:
    """After a reduced decode, spacing and affine describe the smaller grid (the same anatomy, bigger pixels)."""
    shape = image.spatial_shape
    if len(shape) != 2 or tuple(shape) == stored_shape:
        return
    factors = (stored_shape[0] / shape[0], stored_shape[1] / shape[1])
    row, col = image.meta["spacing"]
    image.meta["spacing"] = (row * factors[0], col * factors[1])
    if image.affine is not None:
        image.affine = image.affine.copy()
        image.affine[:, 0] *= factors[0]  # column 0 steps along rows (index i), column 1 along columns (j)
        image.affine[:, 1] *= factors[1]


def read_image(path: PathLike, options: ReadOptions = DEFAULT_OPTIONS) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode one DICOM instance to float32: modality units (or VOI output), MONOCHROME1 inverted, colour as RGB.

    Args:
        path: the file.
        options: VOI and colour handling (default: modality units, RGB); see :class:`ReadOptions`.

    Returns:
        ``(array, meta)``: array ``(rows, columns)``, ``(rows, columns, 3)`` for colour, with a leading
        frame axis for multi-frame, float32; meta has only ``SOPInstanceUID, SeriesInstanceUID,
        StudyInstanceUID, Modality, PhotometricInterpretation`` (as stored, before inversion or colour
        conversion), ``spacing`` (row, col) in mm (1.0, 1.0 when the header has none) and, for
        multi-frame only, ``frame_spacing`` (mm, see the module docstring).

    Raises:
        DicomReadError: any failure, typed (see :class:`DicomErrorKind`).
    """
    image = _load(path, options, with_affine=False)
    return image.array, image.meta


# ------------------------------------------------------------------------------------------- geometry

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _frame_positions(ds: pydicom.Dataset, frames: int) -> list[np.ndarray | None]:
    """ImagePositionPatient per frame (top level for single-frame, Plane Position per frame for enhanced)."""
    top = finite_floats(ds.get("ImagePositionPatient"), 3)
    if frames == 1 or top is not None:
        return [top] + [None] * (frames - 1)
    return [
        finite_floats(functional_group_value(ds, "PlanePositionSequence", "ImagePositionPatient", i), 3)
        for i in range(frames)
    ]


def instance_affine(ds: pydicom.Dataset, spatial_shape: Sequence[int]) -> np.ndarray:
    """MONAI affine (RAS) of one instance's array; see the module docstring for the convention.

    Args:
        ds: the instance's header (pixel data not needed).
        spatial_shape: the array's spatial shape, ``(rows, columns)`` or ``(frames, rows, columns)``.

    Returns:
        4×4 float64 for images with geometry and for multi-frame; 3×3 image-frame diagonal for 2D
        images without ImageOrientationPatient/ImagePositionPatient.
    """
    row, col = pixel_spacing(ds) or (1.0, 1.0)
    frames = int(spatial_shape[0]) if len(spatial_shape) == 3 else 1
    orientation = finite_floats(ds.get("ImageOrientationPatient"), 6)
    if orientation is None:
        orientation = finite_floats(
            functional_group_value(ds, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
        )
    positions = _frame_positions(ds, frames)
    if orientation is None or positions[0] is None:
        diag = [row, col] if len(spatial_shape) == 2 else [_frame_spacing(ds), row, col]
        return np.diag([*diag, 1.0])
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    first = cast(np.ndarray, positions[0])
    last = positions[-1]
    if frames > 1 and last is not None and all(p is not None for p in positions):
        slice_step = (last - first) / (frames - 1)
    else:
        slice_step = normal * _frame_spacing(ds)
    affine = np.eye(4)
    in_plane = [column_cosine * row, row_cosine * col]  # i (rows) along the column cosine, j along the row cosine
    columns = [*in_plane, slice_step] if len(spatial_shape) == 2 else [slice_step, *in_plane]
    affine[:3, :3] = np.stack(columns, axis=1)
    affine[:3, 3] = first
    return _LPS_TO_RAS @ affine


# ---------------------------------------------------------------------------------------- MONAI reader

_SUFFIXES = {".dcm", ".dicom"}


class DicomReader(ImageReader):
    """MONAI ``ImageReader`` over :func:`read_image`, for ``LoadImage(d)(reader=DicomReader())``.

    ``get_data`` gives an array without a channel axis for grey images (``original_channel_dim = nan``,
    MONAI's "no channel" marker, so ``ensure_channel_first=True`` adds one) and with the RGB axis last
    for colour ones (``original_channel_dim = -1``), and the affine of :func:`instance_affine` (see the
    module docstring). A sequence of grey images is stacked on a new first axis, which MONAI then
    treats as the channel axis (``original_channel_dim = 0``), as its own readers do.

    Args:
        options: passed to :func:`read_image` for every file.
    """

    def __init__(self, options: ReadOptions = DEFAULT_OPTIONS) -> None:
        super().__init__()
        self.options = options

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Accept ``.dcm``/``.dicom`` (any case) and extensionless files."""
        names = [filename] if isinstance(filename, str | os.PathLike) else list(filename)
        return bool(names) and all(Path(n).suffix.lower() in _SUFFIXES | {""} for n in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> DicomImage | list[DicomImage]:
        """Decode one file (→ one image) or a sequence of files (→ list; one-element sequence → one image)."""
        names = [data] if isinstance(data, str | os.PathLike) else list(data)
        images = [_load(name, self.options, with_affine=True) for name in names]
        return images[0] if len(images) == 1 else images

    def get_data(self, img: DicomImage | Sequence[DicomImage]) -> tuple[np.ndarray, dict[str, Any]]:
        """Return ``(array, meta)`` with MONAI's meta keys (affine, spatial_shape, original_channel_dim, ...)."""
        images = [img] if isinstance(img, DicomImage) else list(img)
        first = images[0]
        if len(images) > 1 and any(i.rgb for i in images):
            raise ValueError(f"cannot stack colour images ({first.path} and {len(images) - 1} more) on a channel axis")
        for other in images[1:]:
            if other.array.shape != first.array.shape:
                raise ValueError(f"cannot stack {other.path} {other.array.shape} with {first.path} {first.array.shape}")
        if first.affine is not None:
            affine = first.affine.astype(np.float64)
        else:
            row, col = first.meta["spacing"]
            diag = [row, col] if len(first.spatial_shape) == 2 else [first.meta.get("frame_spacing", 1.0), row, col]
            affine = np.diag([*diag, 1.0])
        meta: dict[str, Any] = {k: ("none" if v is None else v) for k, v in first.meta.items()}
        meta["spacing"] = np.asarray(first.meta["spacing"], dtype=np.float64)  # arrays collate into tensors
        meta["affine"] = affine
        meta["original_affine"] = affine.copy()
        meta["spatial_shape"] = np.asarray(first.spatial_shape)
        meta["filename_or_obj"] = first.path
        if len(images) == 1:
            meta["original_channel_dim"] = -1 if first.rgb else float("nan")
            return first.array, meta
        meta["original_channel_dim"] = 0
        return np.stack([i.array for i in images], axis=0), meta
