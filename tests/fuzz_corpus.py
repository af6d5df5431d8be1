"""A deterministic corpus of hostile inputs, built from real pydicom-written DICOM (issue 21, item 2).

:func:`build_corpus` writes, under one folder, a few good files (uncompressed, RLE and JPEG 2000, written by
``medres.synthetic`` and recompressed by pydicom) and, from them, files broken in every way the issue lists:

- ``trunc/``: each good file cut at many offsets (inside the preamble, the meta header, the dataset, the pixel
  element's header, the pixel data, one byte short);
- ``flip/``: seeded single-byte flips in the header and in the pixel data, plus the VR bytes of the SOP Instance
  UID's element (the byte that stopped a whole scoring job in the issue);
- ``lie/``: header values that lie: Rows/Columns (up to 60000x60000), NumberOfFrames (up to 1000 frames of
  60000x60000), BitsAllocated/BitsStored, SamplesPerPixel, PixelRepresentation, on native and compressed files;
- ``nest/``: a private sequence nested 50 and 5000 levels deep before the pixel data;
- ``empty.dcm`` (zero bytes), ``junk.dcm`` (text);
- ``odd/``: good files under odd names (spaces, unicode, a newline, a leading dash), which must score;
- special entries, not regular files: a FIFO, a symlink loop, a dangling symlink.

Everything is derived from ``seed``: the same seed gives the same bytes (UIDs come from the synthetic writer's
seeded UIDs). Images are 64 px, so reading the whole corpus takes seconds.
"""

from __future__ import annotations

import os
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.uid import JPEG2000Lossless, RLELossless

from medres.synthetic import synth_chest_xray

# Element tags whose values the "lie" category rewrites (group 0028, Image Pixel module, PS3.3 C.7.6.3).
_LIES: list[tuple[str, dict[str, int]]] = [
    ("rows_columns_60000", {"Rows": 60000, "Columns": 60000}),
    ("frames_1000_of_60000", {"Rows": 60000, "Columns": 60000, "NumberOfFrames": 1000}),
    ("frames_1000", {"NumberOfFrames": 1000}),
    ("frames_0", {"NumberOfFrames": 0}),
    ("rows_0", {"Rows": 0}),
    ("rows_double", {"Rows": 128}),
    ("columns_1", {"Columns": 1}),
    ("bits_allocated_7", {"BitsAllocated": 7}),
    ("bits_allocated_64", {"BitsAllocated": 64}),
    ("bits_allocated_0", {"BitsAllocated": 0}),
    ("bits_stored_40", {"BitsStored": 40}),
    ("bits_stored_0", {"BitsStored": 0}),
    ("high_bit_30", {"HighBit": 30}),
    ("samples_3", {"SamplesPerPixel": 3}),
    ("samples_0", {"SamplesPerPixel": 0}),
    ("samples_4_rgb", {"SamplesPerPixel": 4}),
    ("pixel_representation_7", {"PixelRepresentation": 7}),
]


@dataclass
class Corpus:
    """What :func:`build_corpus` wrote.

    Attributes:
        root: The folder.
        good: Files that must be scored (relative POSIX paths), odd names included.
        broken: Regular files built to fail (each must land in the ledger, or be scored if it still decodes).
        special: Entries that are not regular files (FIFO, symlink loop, dangling symlink): relative paths.
        liars: The ``lie/`` files claiming huge images (for the memory bound).
    """

    root: Path
    good: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)
    liars: list[str] = field(default_factory=list)

    @property
    def regular(self) -> list[str]:
        """Every regular file (each must be accounted exactly once)."""
        return sorted(self.good + self.broken)


def _sources(scratch: Path, seed: int) -> tuple[dict[str, bytes], list[bytes]]:
    """Good 64 px files: one uncompressed, one RLE, one JPEG 2000 (recompressed from the uncompressed one), and
    the synthetic archive's other files (as written: some compressed) for the odd names."""
    synth_chest_xray(scratch, patients=3, seed=seed, image_size=64)
    files = sorted(scratch.rglob("*.dcm"))
    native = next(p for p in files if not _compressed(p))
    out = {"native": native.read_bytes()}
    for name, syntax in (("rle", RLELossless), ("j2k", JPEG2000Lossless)):
        ds = pydicom.dcmread(native)
        ds.compress(syntax, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        path = scratch / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out[name] = path.read_bytes()
    return out, [p.read_bytes() for p in files if p != native]


def _compressed(path: Path) -> bool:
    return bool(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed)


def _pixel_offset(data: bytes) -> int:
    """Offset of the top-level Pixel Data element's tag (explicit VR little endian: 'OB'/'OW' follows it)."""
    for vr in (b"OW", b"OB"):
        at = data.rfind(b"\xe0\x7f\x10\x00" + vr)
        if at >= 0:
            return at
    raise ValueError("no pixel data element")


def _element_offset(data: bytes, tag: int, vr: bytes) -> int:
    """Offset of an explicit-VR little-endian element's tag in the dataset (first occurrence after the meta)."""
    key = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    at = data.find(key, 132)
    if at < 0:
        raise ValueError(f"no element {tag:08X} {vr!r}")
    return at


def _rewrite(data: bytes, changes: dict[str, int], scratch: Path) -> bytes:
    """The file with Image Pixel values replaced (written by pydicom, pixel data untouched)."""
    src = scratch / "lie_src.dcm"
    src.write_bytes(data)
    ds = pydicom.dcmread(src)
    for keyword, value in changes.items():
        setattr(ds, keyword, str(value) if keyword == "NumberOfFrames" else value)
    out = scratch / "lie_out.dcm"
    ds.save_as(out)  # no enforce_file_format: keep what was read, lies included
    return out.read_bytes()


def _nested(data: bytes, depth: int) -> bytes:
    """``data`` with a private sequence (7FDF,1000) nested ``depth`` levels deep right before its pixel data.

    Written as bytes (undefined-length sequences and items, PS3.5 7.5), because pydicom's writer recurses once per
    level; group 7FDF sorts just before the pixel data's 7FE0, so the dataset stays in tag order.
    """
    sq = struct.pack("<HH", 0x7FDF, 0x1000) + b"SQ\x00\x00" + b"\xff\xff\xff\xff"
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    blob = (sq + item) * depth + (item_end + seq_end) * depth
    at = _pixel_offset(data)
    return data[:at] + blob + data[at:]


def _write(root: Path, rel: str, data: bytes, into: list[str]) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    into.append(rel)


def build_corpus(root: Path, scratch: Path, seed: int = 0, flips: int = 12, cuts: int = 10) -> Corpus:
    """Write the corpus under ``root`` (see the module docstring); ``scratch`` is for the synthetic sources.

    Args:
        root: Folder to write (created).
        scratch: A folder outside ``root`` for the source archive and temporary files.
        seed: Seeds the synthetic sources, the flip positions and values and the cut offsets.
        flips: Random byte flips per source in the header and as many in the pixel data.
        cuts: Random truncation offsets per source, on top of the fixed structural ones.
    """
    rng = random.Random(seed)
    corpus = Corpus(root)
    root.mkdir(parents=True, exist_ok=True)
    sources, others = _sources(scratch / "sources", seed)
    for name, data in sources.items():
        _write(root, f"good/{name}.dcm", data, corpus.good)
        pixel_at = _pixel_offset(data)
        # Truncation: structural offsets, then seeded ones anywhere.
        fixed = {1, 64, 128, 131, 132, 140, 200, pixel_at - 1, pixel_at + 4, pixel_at + 10, pixel_at + 16}
        fixed |= {(pixel_at + len(data)) // 2, len(data) - 8, len(data) - 1}
        offsets = sorted(fixed | {rng.randrange(1, len(data)) for _ in range(cuts)})
        for offset in offsets:
            _write(root, f"trunc/{name}_{offset:06d}.dcm", data[:offset], corpus.broken)
        # Byte flips: the SOP Instance UID's VR (the file), then seeded ones in the header and pixel data.
        uid_at = _element_offset(data, 0x00080018, b"UI")
        for label, position, value in ((f"sop_uid_vr_{name}", uid_at + 4, ord("Q")),):
            _write(root, f"flip/{label}.dcm", data[:position] + bytes([value]) + data[position + 1 :], corpus.broken)
        regions = (("header", 132, pixel_at), ("pixels", pixel_at + 12, len(data)))
        for region, start, stop in regions:
            for _ in range(flips):
                position = rng.randrange(start, stop)
                value = data[position] ^ (1 << rng.randrange(8))
                flipped = data[:position] + bytes([value]) + data[position + 1 :]
                _write(root, f"flip/{name}_{region}_{position:06d}_{value:02x}.dcm", flipped, corpus.broken)
        # Lies about the image's size and encoding.
        for label, changes in _LIES:
            rel = f"lie/{name}_{label}.dcm"
            _write(root, rel, _rewrite(data, changes, scratch), corpus.broken)
            if max(changes.get("Rows", 0), changes.get("NumberOfFrames", 0)) >= 1000:
                corpus.liars.append(rel)
    native = sources["native"]
    for depth in (50, 5000):
        _write(root, f"nest/depth_{depth}.dcm", _nested(native, depth), corpus.broken)
    _write(root, "empty.dcm", b"", corpus.broken)
    _write(root, "junk.dcm", b"not a DICOM file\n" * 16, corpus.broken)
    odd = ("with space.dcm", "ünïcødé 画像.dcm", "new\nline.dcm", "-leading-dash.dcm", "--help")
    if len(others) < len(odd):
        raise ValueError(f"the synthetic source archive has {len(others)} spare files, need {len(odd)}")
    for name, data in zip(odd, others, strict=False):
        _write(root, f"odd/{name}", data, corpus.good)
    # Not regular files: never opened (a FIFO would block a reader forever), each ledgered once by its path.
    special = root / "special"
    special.mkdir()
    os.mkfifo(special / "fifo.dcm")
    os.symlink("loop_b.dcm", special / "loop_a.dcm")
    os.symlink("loop_a.dcm", special / "loop_b.dcm")
    os.symlink("does_not_exist.dcm", special / "dangling.dcm")
    corpus.special = ["special/dangling.dcm", "special/fifo.dcm", "special/loop_a.dcm", "special/loop_b.dcm"]
    return corpus
