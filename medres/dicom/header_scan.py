"""A byte-level scan of a DICOM header: the few top-level values an index needs, about ten times faster than pydicom.

pydicom builds every element of a header; an archive index wants a dozen tags of millions of files. The scan reads the
Part 10 preamble, the file meta group and the top-level elements of the dataset until the pixel data, keeping the raw
bytes of the wanted tags and skipping sequences by their delimiters. It checks the pixel data element is complete.
Anything it cannot read with certainty (big endian, deflate, enhanced functional groups, multi-valued text where one
value is expected, non-ASCII text, an element out of order, a cut file) raises :class:`GiveUpError`, and the caller
asks pydicom, which decides, with typed errors, what the file is. The scan never guesses.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import UID, AllTransferSyntaxes, ImplicitVRLittleEndian

from medres.dicom.values import LONG_VRS, PIXEL_TAGS, SEQ_DELIMITER, SHORT_VRS, UNDEFINED_LENGTH

__all__ = ["GiveUpError", "HeaderScan"]

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")
_ITEM = struct.Struct("<HHI")
_CHUNK = 64 * 1024  # first read; CT/MR/CR headers are a few kB
# Dataset encodings the scan reads: explicit VR little endian (also every encapsulated syntax,
# PS3.5 §A.4) and implicit VR little endian. Big endian and deflate go to pydicom.
_EXPLICIT_LE = frozenset(
    str(uid)
    for uid in map(UID, AllTransferSyntaxes)
    if uid.is_little_endian and not uid.is_implicit_VR and not uid.is_deflated
)
_ENHANCED_GROUP = 0x5200  # Shared/Per-frame Functional Groups: geometry lives in sequences → pydicom


class GiveUpError(Exception):
    """The scan cannot read this file with certainty; pydicom decides."""


class HeaderScan:
    """Reads the values of top-level ``keywords`` from a complete image file's header, without pydicom.

    Args:
        keywords: Top-level data element keywords to keep (sequences are skipped, never read).
        single_valued: Keywords of DS elements that must hold one value (a multi-valued one gives up).
    """

    def __init__(self, keywords: Sequence[str], single_valued: Collection[str] = ()) -> None:
        self.wanted: dict[int, tuple[str, bytes]] = {}
        for keyword in keywords:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"HeaderScan: {keyword!r} is not a DICOM keyword")
            if dictionary_VR(keyword) != "SQ":
                self.wanted[tag] = (keyword, dictionary_VR(keyword).encode())
        self.vr_of = {keyword: vr for keyword, vr in self.wanted.values()}
        self.single_valued = frozenset(single_valued)

    def read(self, path: str) -> tuple[str, dict[str, Any]]:
        """(transfer syntax UID, keyword → value) of the file at ``path``.

        Raises:
            GiveUpError: not a layout the scan reads with certainty, or not a complete file with pixel data.
            OSError: the file cannot be opened or read.
        """
        try:
            transfer_syntax, found = _scan(path, self.wanted)
            return transfer_syntax, _decode_values(found, self.vr_of, self.single_valued)
        except OSError:
            raise
        except Exception as exc:  # malformed bytes, or deep nesting (RecursionError, issue 21): pydicom decides
            raise GiveUpError from exc


def _skip_sequence(buf: bytes, i: int, explicit: bool) -> int:
    """Index just past the undefined-length sequence whose first item starts at ``buf[i]``."""
    while i + 8 <= len(buf):
        group, elem, length = _ITEM.unpack_from(buf, i)
        i += 8
        if group != 0xFFFE:
            raise GiveUpError
        if elem == 0xE0DD:  # sequence delimitation item
            return i
        if elem != 0xE000:
            raise GiveUpError
        i = _skip_item(buf, i, explicit) if length == UNDEFINED_LENGTH else i + length
    raise GiveUpError  # runs past the buffer


def _skip_item(buf: bytes, i: int, explicit: bool) -> int:
    """Index just past the undefined-length item whose first element starts at ``buf[i]``."""
    while i + 8 <= len(buf):
        group, elem = _TAG.unpack_from(buf, i)
        if group == 0xFFFE and elem == 0xE00D:  # item delimitation item
            return i + 8
        if explicit:
            vr = buf[i + 4 : i + 6]
            if vr in LONG_VRS:
                length, i = _U32.unpack_from(buf, i + 8)[0], i + 12
            elif vr in SHORT_VRS:
                length, i = _U16.unpack_from(buf, i + 6)[0], i + 8
            else:
                raise GiveUpError
            if length == UNDEFINED_LENGTH and vr != b"SQ":
                raise GiveUpError  # UN of undefined length switches to implicit VR inside (PS3.5 §6.2.2)
        else:
            length, i = _U32.unpack_from(buf, i + 4)[0], i + 8
        i = _skip_sequence(buf, i, explicit) if length == UNDEFINED_LENGTH else i + length
    raise GiveUpError


def _scan(path: str, wanted: Mapping[int, tuple[str, bytes]]) -> tuple[str, dict[str, bytes]]:
    """(transfer syntax, raw values of the wanted top-level tags) of a complete image file.

    Raises:
        GiveUpError: not a layout this reads with certainty, or not a complete file with pixel data.
        OSError: the file cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        buf = os.pread(fd, _CHUNK, 0)
        base = 0  # file offset of buf[0]
        if len(buf) < 132 or buf[128:132] != b"DICM":
            raise GiveUpError  # no Part 10 preamble (PS3.10 §7.1)
        # File meta information: group 0002, always explicit VR little endian (PS3.10 §7.1).
        i, ts = 132, ""
        while True:
            if i + 8 > len(buf):
                raise GiveUpError
            group, elem = _TAG.unpack_from(buf, i)
            if group != 0x0002:
                break
            vr = buf[i + 4 : i + 6]
            if vr in LONG_VRS:
                length, i = _U32.unpack_from(buf, i + 8)[0], i + 12
            else:
                length, i = _U16.unpack_from(buf, i + 6)[0], i + 8
            if length == UNDEFINED_LENGTH or i + length > len(buf):
                raise GiveUpError
            if elem == 0x0010:
                ts = buf[i : i + length].decode("ascii").rstrip("\0 ")
            i += length
        if ts == ImplicitVRLittleEndian:
            explicit = False
        elif ts in _EXPLICIT_LE:
            explicit = True
        else:
            raise GiveUpError
        found: dict[str, bytes] = {}
        previous = 0
        while True:  # i: offset in buf; base + i: offset in the file
            if i + 12 > len(buf):
                if base + i + 8 > size:
                    raise GiveUpError  # end of file without pixel data, or cut short: pydicom tells which
                buf, base, i = os.pread(fd, _CHUNK, base + i), base + i, 0
            pos = base + i
            group, elem = _TAG.unpack_from(buf, i)
            tag = group << 16 | elem
            if tag <= previous or group == _ENHANCED_GROUP:
                raise GiveUpError
            previous = tag
            if explicit:
                vr = buf[i + 4 : i + 6]
                if vr in LONG_VRS:
                    length, header = _U32.unpack_from(buf, i + 8)[0], 12
                elif vr in SHORT_VRS:
                    length, header = _U16.unpack_from(buf, i + 6)[0], 8
                else:
                    raise GiveUpError
            else:
                vr, length, header = b"", _U32.unpack_from(buf, i + 4)[0], 8
            end = pos + header + length  # file offset after this element
            if tag in PIXEL_TAGS:
                if length == UNDEFINED_LENGTH:
                    # Encapsulated: complete only if the sequence delimiter is there (normally the last
                    # 8 bytes; trailing padding may follow it).
                    tail = max(pos + header, size - _CHUNK)
                    if SEQ_DELIMITER not in os.pread(fd, size - tail, tail):
                        raise GiveUpError
                elif end > size:
                    raise GiveUpError
                return ts, found
            if tag > 0x7FE00010:
                raise GiveUpError  # past where pixel data would be: pydicom decides between absent and cut
            if length == UNDEFINED_LENGTH:
                if tag in wanted or (explicit and vr != b"SQ"):
                    raise GiveUpError
                if len(buf) - i < _CHUNK // 4 and base + len(buf) < size:
                    buf, base, i = os.pread(fd, _CHUNK, pos), pos, 0  # room to walk the sequence in buf
                i = _skip_sequence(buf, i + header, explicit)
                continue
            if end > size:
                raise GiveUpError
            keyword_vr = wanted.get(tag)
            if keyword_vr is not None:
                if explicit and vr != keyword_vr[1]:
                    raise GiveUpError
                if end > base + len(buf):
                    buf, base, i = os.pread(fd, header + length, pos), pos, 0
                found[keyword_vr[0]] = buf[i + header : i + header + length]
            i = end - base
    finally:
        os.close(fd)


def _text(raw: bytes, strip_nul: bool = False) -> str:
    """A single ASCII value; non-ASCII bytes (UnicodeDecodeError) go to pydicom, which knows the character set."""
    text = raw.decode("ascii").rstrip("\0") if strip_nul else raw.decode("ascii")
    if "\\" in text or "\0" in text:
        raise GiveUpError  # multi-valued, or NUL padding where only UI may have it (PS3.5 §6.2)
    return text


def _int_text(raw: bytes) -> int | None:
    text = _text(raw).strip()
    return int(text) if text else None  # ValueError → pydicom's IS rules decide


def _float_texts(raw: bytes) -> list[float] | None:
    if not raw.isascii():
        raise GiveUpError
    text = raw.decode("ascii").strip()
    return [float(v) for v in text.split("\\")] if text else None


def _decode_values(
    found: Mapping[str, bytes], vr_of: Mapping[str, bytes], single_valued: frozenset[str]
) -> dict[str, Any]:
    """Raw bytes → Python values as pydicom would give them, or ``GiveUpError`` where pydicom could differ."""
    values: dict[str, Any] = {}
    for keyword, raw in found.items():
        vr = vr_of[keyword]
        if vr == b"US":
            values[keyword] = _U16.unpack(raw)[0] if len(raw) == 2 else None
        elif vr == b"IS":
            values[keyword] = _int_text(raw)
        elif vr == b"DS":
            floats = _float_texts(raw)
            if keyword in single_valued:
                if floats is not None and len(floats) != 1:
                    raise GiveUpError
                values[keyword] = floats[0] if floats else None
            else:
                values[keyword] = floats
        elif keyword == "ImageType":
            if not raw.isascii():
                raise GiveUpError
            values[keyword] = raw.decode("ascii").split("\\")
        else:
            values[keyword] = _text(raw, strip_nul=vr == b"UI")
    return values
