"""Reduced-resolution decoding: decode only the pixels the model will see (issue 19).

A radiograph of 2,000–3,000 pixels a side that the model sees at 224–512 does not need a full decode:

- **JPEG 2000** (lossless, lossy, HTJ2K) stores a wavelet pyramid. Its resolution level ``r`` is the image at
  ``ceil(size / 2**r)`` per axis (ISO/IEC 15444-1 B.5, for an image origin at 0), and decoding it skips the
  inverse transform and the code-blocks of the finer levels: OpenJPEG's ``reduce``.
- **Baseline JPEG** (8-bit DCT) can be decoded at 1/2, 1/4 or 1/8 scale in the DCT domain: libjpeg's
  ``scale_num/scale_denom``, which Pillow's ``Image.draft`` drives.

Every other syntax (uncompressed, RLE, JPEG lossless, JPEG-LS, 12-bit JPEG) decodes in full.

Codec choice: **Pillow** for both (its bundled OpenJPEG 2.5 and libjpeg-turbo). Measured on the 2-core VM, one
2048² 12-bit lossless JPEG 2000 written by pydicom's pylibjpeg encoder (5 decomposition levels;
``benchmarks/decode_reduced.py`` prints the same table on every run):

- Pillow ``Image.reduce``: full 1306 ms, reduce=1 281 ms, reduce=2 65 ms, reduce=3 23 ms. It reads from memory and
  is already a dependency (pydicom's JPEG plugin). It has no OpenJPEG threads, and returns 9–15-bit samples
  scaled up to 16 bits (``I;16``, value << (16 - precision): shifted back exactly here) and signed samples wrongly
  (so signed codestreams decode in full).
- imagecodecs 2026.3 (``jpeg2k_decode``): full 1146 ms with 1 thread, 451 ms with 2: its threads help a full
  decode, but it has no ``reduce`` at all, so it cannot do the one thing this module is for.
- pylibjpeg-openjpeg 2.6 (pydicom's plugin): full 961 ms; exposes neither ``reduce`` nor threads.
- glymur: ``reduce`` (slicing) and threads, but it opens files only (a DICOM frame would go through a temporary
  file) and needs a system libopenjp2, which no wheel carries.

Threads therefore do not come from the codec here: scoring and the cache fill already run one decoding worker per
core, and a reduced decode is short enough (65 ms) that intra-image threads would buy little.
Baseline JPEG also goes through Pillow: ``Image.draft`` drives libjpeg-turbo's ``scale_num/scale_denom`` and picks
by itself the coarsest scale that still covers the requested size, which is the rule we want.

Why Pillow's ``reduce=2`` raised "broken data stream" on pydicom-data's ``RG1_J2KR.dcm`` (issue 19): OpenJPEG only
decodes ``reduce`` 0 to ``n`` for a codestream with ``n`` decomposition levels (``n + 1`` resolutions; beyond that
``opj_decode`` fails: "the number of resolutions to remove is higher than the number of resolutions of this
component"), and Pillow turns any decoder failure into "broken data stream". The encoder chooses ``n``: it is the
COD marker's SPcod (ISO/IEC 15444-1 A.6.1; a COC marker may lower it for one component). pydicom's pylibjpeg encoder
writes 5; a codestream written with ``n = 1`` reproduces the issue exactly: ``reduce=1`` decodes, ``reduce=2`` is
"broken data stream" (``tests/dicom/test_reduced_decode.py``). RG1_J2KR itself is not on this machine (pydicom-data
downloads it), so its ``n`` was not read, but the symptom fits ``n = 1``. So :func:`j2k_codestream_info` reads ``n``
from the main header and :func:`j2k_level` never asks for more; when even that fails, the file decodes in full.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
)

log = logging.getLogger(__name__)

J2K_SYNTAXES = frozenset({JPEG2000Lossless, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K})
JPEG_SYNTAXES = frozenset({JPEGBaseline8Bit})

# JPEG 2000 codestream markers (ISO/IEC 15444-1 A.2); every one but SOC/SOD/EOC carries a 2-byte length.
_SOC, _SIZ, _COD, _COC, _SOT = 0xFF4F, 0xFF51, 0xFF52, 0xFF53, 0xFF90


class ReducedDecodeError(Exception):
    """This file's codestream cannot (or need not) be decoded at a reduced resolution; decode it in full."""


@dataclass(frozen=True)
class J2KInfo:
    """What the main header of a JPEG 2000 codestream says (ISO/IEC 15444-1 A.5.1, A.6.1, A.6.2).

    Attributes:
        rows: Image height (Ysiz - YOsiz).
        columns: Image width (Xsiz - XOsiz).
        components: Csiz.
        precision: Bits of the first component.
        signed: Whether the first component is signed.
        levels: Decomposition levels available in every component (COD, lowered by any COC).
        origin: (YOsiz, XOsiz): a non-zero origin changes how levels round, so we only reduce at (0, 0).
    """

    rows: int
    columns: int
    components: int
    precision: int
    signed: bool
    levels: int
    origin: tuple[int, int]


def j2k_codestream_info(data: bytes) -> J2KInfo:
    """Parse the main header of a JPEG 2000 codestream (a JP2 file is searched for its ``jp2c`` box).

    Raises:
        ReducedDecodeError: If it is not a codestream or its SIZ/COD markers are missing or malformed.
    """
    start = data.find(b"\xff\x4f\xff\x51")  # SOC then SIZ: the start of a codestream, raw or inside a JP2 box
    if start < 0:
        raise ReducedDecodeError("no JPEG 2000 codestream (SOC, SIZ) in the frame")
    pos = start + 2
    size: tuple[int, ...] | None = None
    levels: int | None = None
    while pos + 4 <= len(data):
        marker, length = int.from_bytes(data[pos : pos + 2], "big"), int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if marker == _SOT or length < 2 or len(body) != length - 2:
            break  # the main header ends at the first tile-part
        if marker == _SIZ and len(body) >= 36 + 3:
            # Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz (4 each) Csiz(2), then Ssiz XRsiz YRsiz per comp.
            xsiz, ysiz, xo, yo = (int.from_bytes(body[2 + 4 * i : 6 + 4 * i], "big") for i in range(4))
            csiz = int.from_bytes(body[34:36], "big")
            ssiz = body[36]
            size = (ysiz - yo, xsiz - xo, csiz, (ssiz & 0x7F) + 1, ssiz >> 7, yo, xo)
        elif marker == _COD and len(body) >= 6:
            # Scod(1) SGcod: progression(1) layers(2) MCT(1); SPcod: decomposition levels(1) ...
            levels = body[5] if levels is None else min(levels, body[5])
        elif marker == _COC and size is not None and len(body) >= 3:
            # Ccoc is 1 byte when Csiz < 257, else 2; then Scoc(1), then SPcoc starting with the levels.
            offset = 1 if size[2] < 257 else 2
            if len(body) > offset + 1:
                levels = body[offset + 1] if levels is None else min(levels, body[offset + 1])
        pos += 2 + length
    if size is None or levels is None:
        raise ReducedDecodeError("JPEG 2000 main header lacks SIZ or COD")
    rows, columns, components, precision, signed, yo, xo = size
    return J2KInfo(rows, columns, components, precision, bool(signed), levels, (yo, xo))


def level_shape(shape: tuple[int, int], level: int) -> tuple[int, int]:
    """The size of resolution level ``level`` (each halving rounds up, ISO/IEC 15444-1 B.5 with origin 0)."""
    return (math.ceil(shape[0] / 2**level), math.ceil(shape[1] / 2**level))


# A level must be this many times the resize's output per axis. At 1.0 (a level just covering the output) the demo's
# 320-px radiographs decoded at 160 px for its 128-px model moved probabilities by up to 0.13 (p99 0.047) against the
# full decode: the wavelet low-pass and the area resize average differently when the resize has little left to
# average. At 1.5 such small images decode in full, and a 2048-px image for a 320-px model still decodes at 512 px.
LEVEL_MARGIN = 1.5


def covering_targets(shape: tuple[int, int], longest_side: int) -> tuple[int, int]:
    """Per axis, the size a decoded level must reach: the resize's output times :data:`LEVEL_MARGIN`, rounded up.

    The resize's output has its longer side ``longest_side``, aspect kept; the target is at most the stored size.
    Rounding up keeps the area resize a downscale (or the identity) on both axes, never an upscale.
    """
    scale = min(1.0, LEVEL_MARGIN * longest_side / max(shape))
    return (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale))


def j2k_level(shape: tuple[int, int], longest_side: int, available: int) -> int:
    """The coarsest resolution level (0 = full) that covers the resize's output per axis, at most ``available``."""
    targets = covering_targets(shape, longest_side)
    level = 0
    while level < available:
        smaller = level_shape(shape, level + 1)
        if smaller[0] < targets[0] or smaller[1] < targets[1]:
            break
        level += 1
    return level


def decode_j2k_reduced(frame: bytes, rows: int, columns: int, longest_side: int) -> np.ndarray:
    """Decode a grey, unsigned JPEG 2000 frame at the coarsest level that covers ``longest_side``.

    Args:
        frame: The codestream (or JP2 file) of one frame.
        rows: The dataset's Rows, which the codestream must match.
        columns: The dataset's Columns.
        longest_side: The longer side of the resize that follows.

    Returns:
        The stored samples, ``(ceil(rows / 2**r), ceil(columns / 2**r))``, uint8 or uint16 in stored units.

    Raises:
        ReducedDecodeError: The codestream does not match the header, is colour or signed, has a non-zero image
            origin, would decode at full resolution anyway, or OpenJPEG refused it.
    """
    from PIL import Image  # pydicom's JPEG plugin; imported where needed like pydicom imports its codecs

    info = j2k_codestream_info(frame)
    if (info.rows, info.columns) != (rows, columns):
        raise ReducedDecodeError(f"codestream is {info.rows}×{info.columns}, the header says {rows}×{columns}")
    if info.components != 1 or info.signed or info.precision > 16:
        raise ReducedDecodeError(f"{info.components} component(s), {info.precision}-bit, signed={info.signed}")
    if info.origin != (0, 0):
        raise ReducedDecodeError(f"image origin {info.origin} (levels would not halve from the top left)")
    level = j2k_level((rows, columns), longest_side, info.levels)
    if level == 0:
        raise ReducedDecodeError(f"no level below full covers {longest_side} px ({info.levels} levels)")
    try:
        with Image.open(io.BytesIO(frame)) as image:
            image.reduce = level  # type: ignore[method-assign,assignment]  # Pillow's JPEG 2000 attribute, not the method
            image.load()
            array = np.asarray(image)
    except Exception as exc:  # OSError "broken data stream", PIL.UnidentifiedImageError
        raise ReducedDecodeError(f"OpenJPEG refused reduce={level}: {type(exc).__name__}: {exc}") from exc
    expected = level_shape((rows, columns), level)
    if array.shape != expected:
        raise ReducedDecodeError(f"OpenJPEG gave {array.shape} at reduce={level}, expected {expected}")
    if array.dtype == np.uint16 and info.precision < 16:
        array = array >> np.uint16(16 - info.precision)  # Pillow's I;16 scales samples up to 16 bits
    return align_to_block_centres(array, level)


def align_to_block_centres(array: np.ndarray, level: int) -> np.ndarray:
    """Move a wavelet level's samples to the centres of the blocks that an area resize of the full image averages.

    The low-pass samples of each wavelet step sit on the even input samples (ISO/IEC 15444-1 F.3.8, F.4.8: the
    lifting writes low-pass at even indices), so sample ``k`` of level ``r`` is centred on full-resolution pixel
    ``2**r * k``, while the area resize that follows treats it as the block ``[2**r * k, 2**r * (k + 1))``, centred
    ``(2**r - 1) / 2`` pixels further on. Left alone, the reduced image is shifted by 1.5 full pixels at level 2:
    a third of an output pixel at 2048 → 320, which moved sharp edges of the network input by up to 0.28 (of [0, 1])
    in ``tests/dicom/test_reduced_decode.py``. A linear interpolation at ``k + (1 - 2**-r) / 2`` (edge sample
    repeated) brings level-2 samples of a lossless radiograph to a median of 0.1 % of the range from the block means
    (p99 307 → 50 of 4095). Values are rounded back to the stored integer type, which the modality LUT may index by.
    """
    if level == 0:
        return array
    shift = (1.0 - 2.0**-level) / 2.0
    out: np.ndarray = array.astype(np.float32)
    for axis in (0, 1):
        following = np.concatenate([out.take(range(1, out.shape[axis]), axis), out.take([-1], axis)], axis)
        out = np.add((1.0 - shift) * out, shift * following, dtype=np.float32)
    return np.rint(out).astype(array.dtype)


def decode_jpeg_scaled(frame: bytes, rows: int, columns: int, longest_side: int) -> np.ndarray:
    """Decode a grey 8-bit baseline JPEG frame at the coarsest DCT scale (1/2, 1/4, 1/8) that covers ``longest_side``.

    Raises:
        ReducedDecodeError: Not an 8-bit grey JPEG of the header's size, no scale below 1 covers the target,
            or libjpeg refused it.
    """
    from PIL import Image  # pydicom's JPEG plugin; imported here like the other codecs

    targets = covering_targets((rows, columns), longest_side)
    try:
        with Image.open(io.BytesIO(frame)) as image:
            if image.mode != "L" or image.size != (columns, rows):
                raise ReducedDecodeError(f"JPEG is {image.mode} {image.size}, expected L ({columns}, {rows})")
            # draft: the largest libjpeg scale-down whose output is still at least the requested size.
            image.draft("L", (targets[1], targets[0]))
            if image.size == (columns, rows):
                raise ReducedDecodeError(f"no DCT scale below 1 covers {longest_side} px")
            array = np.asarray(image)
    except ReducedDecodeError:
        raise
    except Exception as exc:  # PIL.UnidentifiedImageError, OSError ("broken data stream", truncated)
        raise ReducedDecodeError(f"libjpeg refused scaled decoding: {type(exc).__name__}: {exc}") from exc
    if array.shape[0] < targets[0] or array.shape[1] < targets[1]:
        raise ReducedDecodeError(f"DCT scaling gave {array.shape}, smaller than {targets}")
    return array


def decode_reduced(ds: Any, longest_side: int) -> np.ndarray | None:
    """The stored samples of a single-frame grey JPEG 2000 or baseline JPEG instance at reduced resolution.

    Args:
        ds: The pydicom dataset with its (encapsulated) Pixel Data.
        longest_side: The longer side of the resize that follows the read.

    Returns:
        The reduced array in stored units, or ``None`` when this file decodes in full (other syntax, colour,
        multi-frame, a codestream that refuses); the reason goes to the debug log only: a full decode is a correct
        result, not an error for the ledger.
    """
    syntax = UID(ds.file_meta.get("TransferSyntaxUID", ""))
    if syntax not in J2K_SYNTAXES and syntax not in JPEG_SYNTAXES:
        return None
    path = getattr(ds, "filename", None) or "<dataset>"
    try:
        if int(ds.get("NumberOfFrames") or 1) != 1 or int(ds.get("SamplesPerPixel") or 1) != 1:
            raise ReducedDecodeError("multi-frame or colour")
        from pydicom.encaps import get_frame

        frame = get_frame(ds.PixelData, 0, number_of_frames=1)
        rows, columns = int(ds.Rows), int(ds.Columns)
        if syntax in JPEG_SYNTAXES:
            return decode_jpeg_scaled(frame, rows, columns, longest_side)
        info = j2k_codestream_info(frame)
        if info.precision != int(ds.get("BitsStored") or info.precision) or int(ds.get("PixelRepresentation") or 0):
            # pydicom's full decode reconciles a header/codestream mismatch and signed data; we do not second-guess it.
            raise ReducedDecodeError(
                f"codestream {info.precision}-bit signed={info.signed} vs header BitsStored="
                f"{ds.get('BitsStored')} PixelRepresentation={ds.get('PixelRepresentation')}"
            )
        array = decode_j2k_reduced(frame, rows, columns, longest_side)
        return array
    except ReducedDecodeError as why:
        log.debug("%s: decoding in full: %s", path, why)
        return None
    except Exception as exc:  # a malformed fragment table etc.: the full decode reports it properly, if it fails
        log.debug("%s: decoding in full: %s: %s", path, type(exc).__name__, exc)
        return None
