"""Header-only archive index (the manifest) and label joining.

One manifest row per DICOM instance with pixel data (see DESIGN.md "Manifest row"); every other file
under the archive root becomes an error-ledger row (``path, kind, message``), so each file lands in
exactly one of the two. Rows carry a salted pseudonymous ``patient_key``, never the raw PatientID.

Streaming and resuming (:func:`index_to_parquet`)
    The archive is walked lazily (``os.scandir``, one directory listing in memory at a time, sorted for a
    deterministic order: a single flat folder of a million files is that one listing), headers
    are read in a process pool a batch at a time, and rows go to Parquet *parts* in ``.<out name>.parts/``
    (hidden, beside ``out``) as they come, so memory stays bounded however large the archive. A part is a pair
    ``NNNNNN.errors.parquet`` + ``NNNNNN.manifest.parquet``, each written to a temporary name and renamed
    (atomic on POSIX); the manifest file is renamed last and is the commit mark of the pair. After an
    interruption (even ``kill -9``), rerunning the same command keeps the committed parts, drops
    half-written ones and skips every file they hold; the only per-file state kept for that is a sorted
    array of 8-byte path hashes. The end consolidates the parts, in order, into ``out`` and
    ``<out stem>.errors.parquet`` (again temporary name + rename) and removes the parts folder. Results
    are consumed in walk order, so a resumed run writes the same rows in the same order as an
    uninterrupted one.

Fast header path
    pydicom's ``dcmread`` walks every element of the header in Python (~2 µs per element, a typical CT
    header has 150-300 of them, vendor private groups included) and converting values through its
    ``Dataset`` adds as much again: ~1,000 files/s, below the 1,500 files/s/core the index must reach.
    :func:`_scan_header` reads the few tags the manifest needs straight from the bytes of the common
    layouts (Part 10 preamble, explicit or implicit VR little endian, PS3.5 §7.1) and checks the pixel
    data is complete the same way ``medres.dicom.read_header`` does. Anything unusual (no
    preamble, big endian, deflate, enhanced multi-frame functional groups, non-ASCII text, a value that
    does not parse, a header running past the read buffer inside a sequence, a short file) makes it
    give up, and the file goes through ``read_header`` instead, whose pydicom parse and typed errors are
    the reference. ``tests/data/test_manifest.py`` checks both paths agree on every file that ships with
    pydicom.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
from tqdm import tqdm

from medres.data.keys import patient_key
from medres.dicom.errors import DicomErrorKind, DicomReadError
from medres.dicom.header_scan import GiveUpError, HeaderScan
from medres.dicom.reader import read_header
from medres.dicom.values import finite_floats, float_or_none, int_or_none, pixel_spacing, text_or_none

__all__ = [
    "ERROR_COLUMNS",
    "ERROR_SCHEMA",
    "MANIFEST_COLUMNS",
    "MANIFEST_SCHEMA",
    "ROOT_METADATA_KEY",
    "IndexSummary",
    "errors_path_for",
    "index_archive",
    "index_to_parquet",
    "iter_archive_files",
    "join_labels",
    "manifest_root",
    "read_errors",
    "read_manifest",
    "read_manifest_row",
    "write_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST_SCHEMA = pa.schema(
    [
        ("path", pa.string()),  # POSIX, relative to the archive root
        ("SOPInstanceUID", pa.string()),
        ("SeriesInstanceUID", pa.string()),
        ("StudyInstanceUID", pa.string()),
        ("patient_key", pa.string()),
        ("Modality", pa.string()),
        ("BodyPartExamined", pa.string()),
        ("ViewPosition", pa.string()),
        ("Rows", pa.int32()),
        ("Columns", pa.int32()),
        ("NumberOfFrames", pa.int32()),
        ("TransferSyntaxUID", pa.string()),
        ("PhotometricInterpretation", pa.string()),
        ("BitsStored", pa.int32()),
        ("spacing_row", pa.float64()),  # mm; null when the header has no spacing
        ("spacing_col", pa.float64()),
        ("ImagePositionPatient", pa.list_(pa.float64())),  # [x, y, z] mm; null where absent
        ("ImageOrientationPatient", pa.list_(pa.float64())),  # [6 direction cosines]; null where absent
        ("ImageType", pa.string()),  # values joined by "\\", e.g. "ORIGINAL\\PRIMARY\\AXIAL"
        ("SliceThickness", pa.float64()),  # mm
        ("SpacingBetweenSlices", pa.float64()),  # mm
        ("InstanceNumber", pa.int32()),
        ("SamplesPerPixel", pa.int32()),
        ("SOPClassUID", pa.string()),
        ("FrameOfReferenceUID", pa.string()),
    ]
)
MANIFEST_COLUMNS: tuple[str, ...] = tuple(MANIFEST_SCHEMA.names)
ROOT_METADATA_KEY = "medres.root"  # Parquet key-value metadata of a manifest: the indexed archive's absolute path
ERROR_SCHEMA = pa.schema([("path", pa.string()), ("kind", pa.string()), ("message", pa.string())])
ERROR_COLUMNS: tuple[str, ...] = tuple(ERROR_SCHEMA.names)

_STRING_TAGS = (
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "PhotometricInterpretation",
    "SOPClassUID",
    "FrameOfReferenceUID",
)
_INT_TAGS = ("Rows", "Columns", "NumberOfFrames", "BitsStored", "InstanceNumber", "SamplesPerPixel")
_FLOAT_TAGS = ("SliceThickness", "SpacingBetweenSlices")
# Everything a manifest row is made of. Parsing only these keeps names, dates, institutions out of memory
# and makes the header read cheaper.
_HEADER_TAGS = (
    *_STRING_TAGS,
    *_INT_TAGS,
    *_FLOAT_TAGS,
    "PatientID",
    "ImageType",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SharedFunctionalGroupsSequence",
    "ImagePositionPatient",
    "ImageOrientationPatient",
)

# Functional groups are sequences: the scan skips them and gives up on an enhanced object, pydicom reads them.
_SCAN = HeaderScan(_HEADER_TAGS, single_valued=_FLOAT_TAGS)

_TASK_FILES = 256  # files per pool task: amortises pickling and scheduling
_PART_ROWS = 20_000  # rows per part (and at most per consolidated row group)
_FLUSH_SECONDS = 30.0  # a part at least this often, so an interruption loses little work


def _walk(root: Path) -> Iterator[tuple[str, str]]:
    """(absolute path, POSIX path relative to ``root``) of every input entry; see :func:`iter_archive_files`."""
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            # DirEntry caches the file type from readdir (d_type): no stat per file on local file systems.
            if entry.is_dir(follow_symlinks=False):
                subdirs.append((entry.path, f"{prefix}{entry.name}/"))
            else:  # regular files, and what only looks like one (see iter_archive_files): never opened here
                yield entry.path, prefix + entry.name
        stack.extend(reversed(subdirs))  # pop() then visits them in sorted order


def iter_archive_files(root: Path) -> Iterator[Path]:
    """Yield every input entry under ``root`` (DICOM or not), depth-first, sorted by name per directory.

    Streaming (``os.scandir``, one directory in memory at a time); hidden files and directories (name
    starting with '.') are skipped; symlinks to directories are not followed (no cycles).

    An input entry is anything but a real directory: regular files (directly or through a symlink) and
    also FIFOs, sockets, devices, dangling symlinks, symlink loops and symlinks to directories. Those are
    not regular files: readers never open them (a FIFO blocks its reader forever) and they go to the
    ledger as ``unreadable`` ("not a regular file", issue 21), so every name the archive holds is
    accounted for, rather than some of them vanishing silently.
    """
    for path, _ in _walk(Path(root)):
        yield Path(path)


# ------------------------------------------------------------------------------------------ row values


def _make_row(
    values: Mapping[str, Any], spacing: tuple[float, float] | None, transfer_syntax: Any, rel: str, salt: str
) -> tuple[Any, ...]:
    """The manifest row (in ``MANIFEST_COLUMNS`` order) from header values, whichever path read them."""
    pid = text_or_none(values.get("PatientID"))
    study = text_or_none(values.get("StudyInstanceUID"))
    # Without a PatientID, the study stands in for the patient: it keeps one study's images together
    # (no leakage within a study); it cannot link studies of the same unnamed patient.
    key_source = pid if pid is not None else f"study:{study}"
    row: dict[str, Any] = {
        "path": rel,
        **{tag: text_or_none(values.get(tag)) for tag in _STRING_TAGS},
        **{tag: int_or_none(values.get(tag)) for tag in _INT_TAGS},
        **{tag: float_or_none(values.get(tag)) for tag in _FLOAT_TAGS},
        "patient_key": patient_key(key_source, salt),
        "TransferSyntaxUID": text_or_none(transfer_syntax),
        "spacing_row": spacing[0] if spacing else None,
        "spacing_col": spacing[1] if spacing else None,
        "ImagePositionPatient": _as_list(finite_floats(values.get("ImagePositionPatient"), 3)),
        "ImageOrientationPatient": _as_list(finite_floats(values.get("ImageOrientationPatient"), 6)),
        "ImageType": text_or_none(values.get("ImageType")),
    }
    row["NumberOfFrames"] = row["NumberOfFrames"] or 1
    return tuple(row[name] for name in MANIFEST_COLUMNS)


def _as_list(values: Any) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _row_via_pydicom(path: str, rel: str, salt: str) -> tuple[Any, ...]:
    """The reference path: ``read_header`` (pydicom) and its typed errors."""
    ds: pydicom.Dataset = read_header(path, specific_tags=_HEADER_TAGS, require_pixel_data=True)
    try:
        values = {tag: ds.get(tag) for tag in _HEADER_TAGS}
        return _make_row(values, pixel_spacing(ds), ds.file_meta.get("TransferSyntaxUID"), rel, salt)
    except Exception as exc:
        # pydicom converts a value when it is first used: a damaged element (an unknown VR from one flipped byte
        # raises NotImplementedError, issue 21) fails here, after the parse, and is this file's error only.
        raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"{type(exc).__name__}: {exc}") from exc


def _row_via_scan(path: str, rel: str, salt: str) -> tuple[Any, ...]:
    """The fast path; raises ``GiveUpError`` (or OSError) when the pydicom path must decide."""
    transfer_syntax, values = _SCAN.read(path)
    return _make_row(values, pixel_spacing(values), transfer_syntax, rel, salt)


def _manifest_row(path: str, rel: str, salt: str) -> tuple[Any, ...]:
    _require_regular_file(path)
    try:
        return _row_via_scan(path, rel, salt)
    except (GiveUpError, OSError):
        return _row_via_pydicom(path, rel, salt)


def _require_regular_file(path: str) -> None:
    """Raise ``unreadable`` for an entry that is not a regular file (after symlinks), without opening it."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if not os.path.islink(path):  # a vanished file, no permission on the folder
            message = f"{type(exc).__name__}: {exc.strerror or exc}"
            raise DicomReadError(DicomErrorKind.UNREADABLE, path, message) from exc
        what = "symlink loop" if exc.errno == errno.ELOOP else "dangling symlink"
        raise DicomReadError(DicomErrorKind.UNREADABLE, path, f"not a regular file ({what}); not opened") from exc
    if not stat.S_ISREG(mode):
        what = "FIFO" if stat.S_ISFIFO(mode) else "symlink to a folder" if stat.S_ISDIR(mode) else "socket or device"
        raise DicomReadError(DicomErrorKind.UNREADABLE, path, f"not a regular file ({what}); not opened")


def read_manifest_row(path: Path, root: Path, salt: str) -> dict[str, Any]:
    """Read one file's header and return its manifest row (keys = ``MANIFEST_COLUMNS``).

    Header only: the pixel data is checked for presence and completeness but not decoded.

    Raises:
        DicomReadError: not DICOM, truncated, no pixel data, malformed header, unreadable.
    """
    rel = Path(os.path.relpath(path, root)).as_posix()
    return dict(zip(MANIFEST_COLUMNS, _manifest_row(os.fspath(path), rel, salt), strict=True))


def _index_batch(
    batch: Sequence[tuple[str, str]], salt: str
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]]:
    """Manifest rows and error rows of a batch of (path, relative path); never raises for a bad file."""
    rows, errors = [], []
    for path, rel in batch:
        try:
            rows.append(_manifest_row(path, rel, salt))
        except DicomReadError as exc:
            errors.append((rel, str(exc.kind), exc.message))
    return rows, errors


# ------------------------------------------------------------------------------------ streaming index


def errors_path_for(out: Path) -> Path:
    """The error ledger beside a manifest: ``manifest.parquet`` → ``manifest.errors.parquet``."""
    return Path(out).with_suffix(".errors.parquet")


def _parts_folder(out: Path) -> Path:
    # Hidden, so that an output folder inside the archive is not indexed (the walk skips dot-names).
    return out.with_name(f".{out.name}.parts")


@dataclass(frozen=True)
class IndexSummary:
    """What an index run wrote.

    Attributes:
        root: the archive.
        manifest_path: the manifest Parquet file.
        errors_path: the error ledger Parquet file.
        images: manifest rows.
        errors: ledger rows.
        error_kinds: ledger rows per kind.
        resumed: files already indexed by an interrupted run, skipped this time.
        seconds: wall time of this run.
    """

    root: Path
    manifest_path: Path
    errors_path: Path
    images: int
    errors: int
    error_kinds: dict[str, int] = field(default_factory=dict)
    resumed: int = 0
    seconds: float = 0.0

    @property
    def files(self) -> int:
        """Every file of the archive (each is in exactly one of manifest and ledger)."""
        return self.images + self.errors

    def line(self) -> str:
        """The one-line summary printed at the end of ``medres index``."""
        read = self.files - self.resumed
        rate = read / self.seconds if self.seconds > 0 else 0.0
        resumed = f", {self.resumed} from the interrupted run" if self.resumed else ""
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.error_kinds.items()))
        return (
            f"indexed {self.files} file(s) in {self.seconds:.1f}s ({rate:.0f} files/s{resumed}): "
            f"{self.images} image(s) → {self.manifest_path}; {self.errors} to the ledger"
            f"{f' ({kinds})' if kinds else ''} → {self.errors_path}"
        )


def _path_hashes(rel_paths: Iterable[str]) -> np.ndarray:
    """8-byte BLAKE2b of each relative path: the compact done-set (8 bytes per file).

    With 64-bit hashes a million-file archive has a ~3e-8 chance of one collision (which would skip one
    file on resume).
    """
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(p.encode("utf-8"), digest_size=8).digest(), "little") for p in rel_paths),
        dtype=np.uint64,
    )


def _table(rows: Sequence[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    columns: Iterable[Sequence[Any]] = zip(*rows, strict=True) if rows else ([] for _ in schema)
    return pa.Table.from_arrays(
        [pa.array(list(values), type=f.type) for values, f in zip(columns, schema, strict=True)], schema=schema
    )


class _Parts:
    """The ``.<out name>.parts`` folder of one index run: numbered, atomically committed (manifest, errors) pairs."""

    def __init__(self, out: Path, root: Path, salt: str, resume: bool) -> None:
        self.folder = _parts_folder(out)
        # What makes parts reusable: the same archive and the same salt (an HMAC, so the salt is not stored).
        stamp = {"format": 1, "root": os.fspath(root.resolve()), "salt_check": patient_key("medres-index", salt)}
        stamp_path = self.folder / "index.json"
        if self.folder.exists() and (not resume or not stamp_path.is_file()):
            shutil.rmtree(self.folder)  # no stamp: killed before anything was committed
        if self.folder.exists():
            if json.loads(stamp_path.read_text()) != stamp:
                raise ValueError(
                    f"{self.folder} holds an interrupted index of another archive or salt; "
                    "rerun with --no-resume to start over"
                )
            for path in self.folder.iterdir():
                # Half-written files, and errors halves whose manifest half (the commit mark) never landed.
                orphan = path.name.endswith(".errors.parquet") and not self._path(path.name[:6], "manifest").exists()
                if path.name.startswith(".") or orphan:
                    path.unlink()
        else:
            self.folder.mkdir(parents=True)
            tmp = self.folder / ".index.json.tmp"
            tmp.write_text(json.dumps(stamp))
            os.replace(tmp, stamp_path)
        self.numbers = sorted(int(p.name[:6]) for p in self.folder.glob("*.manifest.parquet"))
        hashes = [
            _path_hashes(pq.read_table(self._path(f"{n:06d}", kind), columns=["path"]).column("path").to_pylist())
            for n in self.numbers
            for kind in ("manifest", "errors")
        ]
        self.done = np.sort(np.concatenate(hashes)) if hashes else np.empty(0, dtype=np.uint64)

    def _path(self, number: str, kind: str) -> Path:
        return self.folder / f"{number}.{kind}.parquet"

    def is_done(self, rel_paths: Sequence[str]) -> np.ndarray:
        """Boolean mask: which of these files an earlier run already recorded."""
        if self.done.size == 0:
            return np.zeros(len(rel_paths), dtype=bool)
        hashes = _path_hashes(rel_paths)
        at = np.minimum(np.searchsorted(self.done, hashes), self.done.size - 1)
        return np.asarray(self.done[at] == hashes)

    def commit(self, rows: Sequence[tuple[Any, ...]], errors: Sequence[tuple[str, str, str]]) -> None:
        """Write the next part: both halves to temporary names, then rename errors, then manifest (the mark).

        No fsync: this survives the process being killed (the page cache outlives it), not a power cut.
        """
        number = f"{(self.numbers[-1] + 1) if self.numbers else 0:06d}"
        halves = (("errors", _table(errors, ERROR_SCHEMA)), ("manifest", _table(rows, MANIFEST_SCHEMA)))
        for kind, table in halves:
            pq.write_table(table, self.folder / f".{number}.{kind}.parquet.tmp")
        for kind, _ in halves:
            os.replace(self.folder / f".{number}.{kind}.parquet.tmp", self._path(number, kind))
        self.numbers.append(int(number))

    def consolidate(self, kind: str, schema: pa.Schema, dest: Path, row_group_rows: int) -> Counter[str]:
        """Concatenate one half of every part, in order, into ``dest`` (temporary name + rename).

        Returns:
            Row count per ``kind`` value for the error ledger; ``{"": rows}`` for the manifest.
        """
        counts: Counter[str] = Counter()
        tmp = dest.with_name(f".{dest.name}.tmp")
        with pq.ParquetWriter(tmp, schema) as writer:
            pending: list[pa.Table] = []
            for number in self.numbers:
                table = pq.read_table(self._path(f"{number:06d}", kind), schema=schema)
                counts.update(table.column("kind").to_pylist() if kind == "errors" else {"": table.num_rows})
                pending.append(table)
                if sum(t.num_rows for t in pending) >= row_group_rows:
                    writer.write_table(pa.concat_tables(pending))
                    pending = []
            if pending:
                writer.write_table(pa.concat_tables(pending))
        os.replace(tmp, dest)
        return counts

    def remove(self) -> None:
        """Delete the parts once both outputs are in place.

        The stamp goes first: a run killed while deleting then finds no stamp and starts over cleanly,
        instead of resuming from a partly deleted set of parts.
        """
        (self.folder / "index.json").unlink()
        shutil.rmtree(self.folder)


def _tasks(
    root: Path, parts: _Parts, size: int, skipped: list[int], own: frozenset[str]
) -> Iterator[list[tuple[str, str]]]:
    """Batches of (path, relative path) still to index, walking lazily; ``skipped[0]`` counts resumed files.

    ``own``: relative paths of this run's outputs, when they lie inside the archive (never indexed).
    """
    walk = _walk(root)
    while batch := list(islice(walk, size)):
        if own:
            batch = [item for item in batch if item[1] not in own]
        done = parts.is_done([rel for _, rel in batch])
        if done.any():
            skipped[0] += int(done.sum())
            batch = [item for item, seen in zip(batch, done, strict=True) if not seen]
        if batch:
            yield batch


def _inside(root: Path, out: Path) -> frozenset[str]:
    """Relative paths of the manifest and ledger that lie under ``root`` (a rerun must not index them)."""
    base = root.resolve()
    paths = (out.resolve(), errors_path_for(out).resolve())
    return frozenset(p.relative_to(base).as_posix() for p in paths if p.is_relative_to(base))


def _results(
    tasks: Iterable[list[tuple[str, str]]], salt: str, num_workers: int
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]]]:
    """Index the tasks in this process or a pool, yielding results in task order with bounded look-ahead."""
    if num_workers <= 0:
        for task in tasks:
            yield _index_batch(task, salt)
        return
    with ProcessPoolExecutor(max_workers=num_workers) as pool:
        pending: deque[Future[tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]]]] = deque()
        for task in tasks:
            pending.append(pool.submit(_index_batch, task, salt))
            if len(pending) >= 4 * num_workers:  # enough queued to keep workers busy, never the whole archive
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def index_to_parquet(
    root: Path,
    out: Path,
    salt: str,
    num_workers: int = 0,
    resume: bool = True,
    progress: bool = False,
    *,
    part_rows: int = _PART_ROWS,
    flush_seconds: float = _FLUSH_SECONDS,
) -> IndexSummary:
    """Index every file under ``root`` into ``out`` (manifest) and ``<out stem>.errors.parquet`` (ledger).

    Streaming and resumable (see the module docstring): memory does not grow with the archive, and
    rerunning after an interruption finishes the job with every file recorded exactly once.

    Args:
        root: archive root; paths in both outputs are POSIX paths relative to it.
        out: manifest Parquet file.
        salt: secret for :func:`patient_key`.
        num_workers: >0 reads headers in a process pool of that size; 0 in this process.
        resume: continue an interrupted run of the same archive and salt (``.<out name>.parts``); False
            discards it.
        progress: show a tqdm bar with the rate.
        part_rows: rows per part (a smaller part loses less on interruption and costs more files).
        flush_seconds: write a part at least this often.

    Returns:
        Counts and paths; :meth:`IndexSummary.line` is the one-line report.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: ``.<out name>.parts`` belongs to another archive or salt and ``resume`` is set.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such archive folder")
    if part_rows < 1:
        raise ValueError(f"part_rows={part_rows}: must be at least 1")
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = _Parts(out, root, salt, resume)
    skipped = [0]
    rows: list[tuple[Any, ...]] = []
    errors: list[tuple[str, str, str]] = []
    last_flush = time.monotonic()
    with tqdm(desc=f"index {root.name}", unit=" files", disable=not progress, dynamic_ncols=True) as bar:
        tasks = _tasks(root, parts, max(1, min(_TASK_FILES, part_rows)), skipped, _inside(root, out))
        for task_rows, task_errors in _results(tasks, salt, num_workers):
            rows += task_rows
            errors += task_errors
            bar.update(len(task_rows) + len(task_errors))
            if skipped[0]:
                bar.set_postfix(resumed=skipped[0], refresh=False)
            if len(rows) + len(errors) >= part_rows or time.monotonic() - last_flush >= flush_seconds:
                parts.commit(rows, errors)
                rows, errors, last_flush = [], [], time.monotonic()
        if rows or errors or not parts.numbers:
            parts.commit(rows, errors)
    errors_path = errors_path_for(out)
    # The archive root travels in the file's metadata, for tools that need to open the files (medres qc).
    manifest_schema = MANIFEST_SCHEMA.with_metadata({ROOT_METADATA_KEY: os.fspath(root.resolve())})
    images = parts.consolidate("manifest", manifest_schema, out, part_rows)[""]
    kinds = parts.consolidate("errors", ERROR_SCHEMA, errors_path, part_rows)
    parts.remove()
    summary = IndexSummary(
        root=root,
        manifest_path=out,
        errors_path=errors_path,
        images=images,
        errors=sum(kinds.values()),
        error_kinds=dict(kinds),
        resumed=skipped[0],
        seconds=time.perf_counter() - start,
    )
    logger.debug(summary.line())
    return summary


def index_archive(
    root: Path, salt: str, num_workers: int = 0, progress: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Index every file under ``root`` into memory: manifest rows for images, ledger rows for everything else.

    :func:`index_to_parquet` into a temporary folder, read back; use that one directly for archives
    too large for memory.

    Args:
        root: archive root; manifest/ledger paths are POSIX paths relative to it.
        salt: secret for :func:`patient_key`.
        num_workers: >0 reads headers in a process pool of that size.
        progress: show a tqdm bar.

    Returns:
        ``(manifest, errors)``: manifest columns ``MANIFEST_COLUMNS``, errors columns ``path, kind,
        message``, both in archive walk order. Each file is in exactly one of them.
    """
    with tempfile.TemporaryDirectory(prefix="medres-index-") as tmp:
        out = Path(tmp) / "manifest.parquet"
        index_to_parquet(root, out, salt, num_workers=num_workers, resume=False, progress=progress)
        return read_manifest(out), read_errors(errors_path_for(out))


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    # Nullable Int32 keeps integer columns integer even with nulls (plain to_pandas would give float64).
    return table.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write a manifest to Parquet with the fixed schema (atomically: temporary file + rename)."""
    path = Path(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest for {path} lacks columns {missing}")
    columns = {}
    for field_ in MANIFEST_SCHEMA:
        values = df[field_.name].tolist()
        if pa.types.is_list(field_.type):  # numpy arrays (after a round trip) → lists
            values = [None if v is None or (isinstance(v, float) and np.isnan(v)) else list(v) for v in values]
        columns[field_.name] = pa.array(values, type=field_.type, from_pandas=True)
    table = pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest (schema enforced; columns added since it was written come back null)."""
    table = pq.read_table(path)
    for field_ in MANIFEST_SCHEMA:
        if field_.name not in table.column_names:
            table = table.append_column(field_, pa.nulls(table.num_rows, type=field_.type))
    return _to_pandas(table.select(list(MANIFEST_COLUMNS)).cast(MANIFEST_SCHEMA))


def manifest_root(path: Path) -> Path | None:
    """The archive root recorded in a manifest written by :func:`index_to_parquet` (None if absent)."""
    root = (pq.read_schema(path).metadata or {}).get(ROOT_METADATA_KEY.encode())
    return Path(root.decode("utf-8")) if root else None


def read_errors(path: Path) -> pd.DataFrame:
    """Read an error ledger written by :func:`index_to_parquet` (columns ``path, kind, message``)."""
    return pq.read_table(path, schema=ERROR_SCHEMA).to_pandas()


# --------------------------------------------------------------------------------------------- labels


def _parse_label(raw: str) -> float | None:
    """'1'/'0'/'-1' (also '1.0' etc.) → float, '' → NaN, anything else → None (invalid)."""
    text = raw.strip()
    if text == "":
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value in (1.0, 0.0, -1.0) else None


def join_labels(manifest: pd.DataFrame, labels_csv: Path, findings: Sequence[str] | None = None) -> pd.DataFrame:
    """Attach per-finding labels to manifest rows.

    The CSV is keyed by the first of ``path``, ``SOPInstanceUID``, ``SeriesInstanceUID`` and
    ``StudyInstanceUID`` it has (no key column is ever a finding). Values: 1 positive, 0 negative, blank unknown
    (NaN: masked out of loss/metrics), -1 uncertain (kept as -1.0; the uncertainty policy is config).
    ``1.0``/``0.0``/``-1.0`` spellings are accepted too.

    Manifest rows whose key has no labels row are dropped, and the count is logged (WARNING) and put in
    ``result.attrs["unlabelled_dropped"]``: a row with no labels at all contributes nothing to a
    loss, and keeping it as all-NaN would silently inflate dataset sizes. (A *blank* value in a labels
    row is different: the study is labelled, that finding is unknown.) Labels rows whose key is not in
    the manifest are ignored (the CSV may cover a larger archive).

    Args:
        manifest: manifest rows.
        labels_csv: the labels file.
        findings: finding columns to take; ``None`` = all non-key columns.

    Returns:
        The labelled manifest rows with one float32 column per finding, in ``findings`` order.

    Raises:
        ValueError: missing key column, missing finding, duplicate key, bad value (one line, naming the
            file, column and row).
    """
    labels_csv = Path(labels_csv)
    labels = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    # Image- and series-level keys come from labels derived from boxes (medres.data.boxes.image_labels).
    key_columns = ("path", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
    key = next((k for k in key_columns if k in labels.columns), "StudyInstanceUID")
    if key not in labels.columns:
        raise ValueError(f"{labels_csv}: no key column: need one of {list(key_columns)}")
    if key not in manifest.columns:
        raise ValueError(f"{labels_csv}: key column {key!r} is not a manifest column")
    available = [c for c in labels.columns if c not in key_columns]
    if findings is None:
        findings = available
    else:
        missing = [f for f in findings if f not in labels.columns or f in key_columns]
        if missing:
            raise ValueError(f"{labels_csv}: finding column(s) {missing} not found (columns: {available})")
    findings = list(findings)
    clash = [f for f in findings if f in manifest.columns]
    if clash:
        raise ValueError(f"{labels_csv}: finding column(s) {clash} clash with manifest columns")
    keys = labels[key].str.strip()
    duplicated = keys[keys.duplicated()]
    if len(duplicated):
        raise ValueError(f"{labels_csv}: {key} {duplicated.iloc[0]!r} appears in more than one row")

    parsed = pd.DataFrame({key: keys})
    for finding in findings:
        values = np.empty(len(labels), dtype=np.float32)
        for i, raw in enumerate(labels[finding]):
            value = _parse_label(raw)
            if value is None:
                # Line number = data row + 2 (header line, 1-based).
                raise ValueError(
                    f"{labels_csv}: column {finding!r}, line {i + 2} ({key}={keys.iloc[i]}): "
                    f"value {raw!r} is not 1, 0, -1 or blank"
                )
            values[i] = value
        parsed[finding] = values

    merged = manifest.merge(parsed, on=key, how="inner", validate="many_to_one")
    dropped = len(manifest) - len(merged)
    if dropped:
        logger.warning("join_labels: %d manifest rows have no labels in %s and were dropped", dropped, labels_csv)
    merged.attrs["unlabelled_dropped"] = dropped
    return merged
