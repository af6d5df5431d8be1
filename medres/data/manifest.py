"""Header-only archive index (the manifest) and label joining.

One manifest row per DICOM instance with pixel data (see DESIGN.md "Manifest row"); every other file
under the archive root becomes an error-ledger row (``path, kind, message``), so each file lands in
exactly one of the two. Rows carry a salted pseudonymous ``patient_key``, never the raw PatientID.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
from tqdm import tqdm

from medres.data.dicom import DicomReadError, pixel_spacing, read_header

__all__ = [
    "ERROR_COLUMNS",
    "MANIFEST_COLUMNS",
    "MANIFEST_SCHEMA",
    "index_archive",
    "iter_archive_files",
    "join_labels",
    "patient_key",
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
    ]
)
MANIFEST_COLUMNS: tuple[str, ...] = tuple(MANIFEST_SCHEMA.names)
ERROR_COLUMNS: tuple[str, ...] = ("path", "kind", "message")

_STRING_TAGS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "Modality", "BodyPartExamined")
# Everything read_manifest_row looks at. Parsing only these keeps names, dates, institutions out of memory
# and makes the header read cheaper.
_HEADER_TAGS = (
    *_STRING_TAGS,
    "PatientID",
    "ViewPosition",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "PhotometricInterpretation",
    "BitsStored",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SharedFunctionalGroupsSequence",
    "ImagePositionPatient",
    "ImageOrientationPatient",
)
_BATCH = 1024  # paths handed to the pool at a time: bounds memory on huge archives


def patient_key(patient_id: str, salt: str) -> str:
    """Pseudonymous patient key: HMAC-SHA256 of the PatientID keyed by ``salt``, first 16 hex chars.

    The salt is what makes keys non-reversible by dictionary attack on known IDs; keep it secret and
    stable (changing it changes every key, hence every split).
    """
    return hmac.new(salt.encode("utf-8"), patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def iter_archive_files(root: Path) -> Iterator[Path]:
    """Yield every regular file under ``root`` (DICOM or not), depth-first, sorted by name per directory.

    Streaming (``os.scandir``, one directory in memory at a time); hidden files and directories (name
    starting with '.') are skipped; symlinks to directories are not followed (no cycles).
    """
    stack = [Path(root)]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(Path(entry.path))
            elif entry.is_file():
                yield Path(entry.path)
        stack.extend(reversed(subdirs))  # pop() then visits them in sorted order


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _floats_or_none(value: Any, n: int) -> list[float] | None:
    try:
        floats = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return floats if len(floats) == n else None


def read_manifest_row(path: Path, root: Path, salt: str) -> dict[str, Any]:
    """Read one file's header and return its manifest row (keys = ``MANIFEST_COLUMNS``).

    Header only: the pixel data is checked for presence and completeness but not decoded.

    Raises:
        DicomReadError: not DICOM, truncated, no pixel data, malformed header, unreadable.
    """
    ds: pydicom.Dataset = read_header(path, specific_tags=_HEADER_TAGS, require_pixel_data=True)
    pid = _str_or_none(ds.get("PatientID"))
    study = _str_or_none(ds.get("StudyInstanceUID"))
    # Without a PatientID, the study stands in for the patient: it keeps one study's images together
    # (no leakage within a study); it cannot link studies of the same unnamed patient.
    key_source = pid if pid is not None else f"study:{study}"
    spacing = pixel_spacing(ds)
    row: dict[str, Any] = {
        "path": Path(os.path.relpath(path, root)).as_posix(),
        **{tag: _str_or_none(ds.get(tag)) for tag in _STRING_TAGS},
        "patient_key": patient_key(key_source, salt),
        "ViewPosition": _str_or_none(ds.get("ViewPosition")),
        "Rows": _int_or_none(ds.get("Rows")),
        "Columns": _int_or_none(ds.get("Columns")),
        "NumberOfFrames": _int_or_none(ds.get("NumberOfFrames")) or 1,
        "TransferSyntaxUID": _str_or_none(ds.file_meta.get("TransferSyntaxUID")),
        "PhotometricInterpretation": _str_or_none(ds.get("PhotometricInterpretation")),
        "BitsStored": _int_or_none(ds.get("BitsStored")),
        "spacing_row": spacing[0] if spacing else None,
        "spacing_col": spacing[1] if spacing else None,
        "ImagePositionPatient": _floats_or_none(ds.get("ImagePositionPatient"), 3),
        "ImageOrientationPatient": _floats_or_none(ds.get("ImageOrientationPatient"), 6),
    }
    return {name: row[name] for name in MANIFEST_COLUMNS}


def _index_one(path: Path, root: Path, salt: str) -> tuple[bool, dict[str, Any]]:
    """(True, manifest row) or (False, error row); never raises for a bad file."""
    try:
        return True, read_manifest_row(path, root, salt)
    except DicomReadError as exc:
        rel = Path(os.path.relpath(path, root)).as_posix()
        return False, {"path": rel, "kind": str(exc.kind), "message": exc.message}


def _batched(items: Iterable[Path], n: int) -> Iterator[list[Path]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def _manifest_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    return _to_pandas(table)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    # Nullable Int32 keeps integer columns integer even with nulls (plain to_pandas would give float64).
    return table.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)


def index_archive(
    root: Path, salt: str, num_workers: int = 0, progress: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Index every file under ``root``: manifest rows for images, ledger rows for everything else.

    Args:
        root: archive root; manifest/ledger paths are POSIX paths relative to it.
        salt: secret for :func:`patient_key`.
        num_workers: >0 reads headers in a process pool of that size.
        progress: show a tqdm counter.

    Returns:
        ``(manifest, errors)``: manifest columns ``MANIFEST_COLUMNS`` (sorted by path), errors columns
        ``path, kind, message``. Each file is in exactly one of them.
    """
    root = Path(root)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    bar = tqdm(desc=f"index {root}", unit="file", disable=not progress)
    work = partial(_index_one, root=root, salt=salt)
    try:
        if num_workers > 0:
            with ProcessPoolExecutor(max_workers=num_workers) as pool:
                for batch in _batched(iter_archive_files(root), _BATCH * num_workers):
                    chunksize = max(1, len(batch) // (4 * num_workers))
                    for ok, row in pool.map(work, batch, chunksize=chunksize):
                        (rows if ok else errors).append(row)
                    bar.update(len(batch))
        else:
            for path in iter_archive_files(root):
                ok, row = work(path)
                (rows if ok else errors).append(row)
                bar.update(1)
    finally:
        bar.close()
    manifest = _manifest_frame(rows)
    ledger = pd.DataFrame(errors, columns=list(ERROR_COLUMNS)).astype(str) if errors else _empty_errors()
    logger.info("indexed %s: %d images, %d errors", root, len(manifest), len(ledger))
    return manifest, ledger


def _empty_errors() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=str) for c in ERROR_COLUMNS})


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write a manifest to Parquet with the fixed schema (atomically: temporary file + rename)."""
    path = Path(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest for {path} lacks columns {missing}")
    columns = {}
    for field in MANIFEST_SCHEMA:
        values = df[field.name].tolist()
        if pa.types.is_list(field.type):  # numpy arrays (after a round trip) → lists
            values = [None if v is None or (isinstance(v, float) and np.isnan(v)) else list(v) for v in values]
        columns[field.name] = pa.array(values, type=field.type, from_pandas=True)
    table = pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest` (schema enforced)."""
    table = pq.read_table(path, schema=MANIFEST_SCHEMA)
    return _to_pandas(table)


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

    The CSV is keyed by ``path`` if it has that column (instance-level labels; ``StudyInstanceUID`` is
    then not a finding), else by ``StudyInstanceUID``. Values: 1 positive, 0 negative, blank unknown
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
    key = "path" if "path" in labels.columns else "StudyInstanceUID"
    if key not in labels.columns:
        raise ValueError(f"{labels_csv}: no key column: need 'StudyInstanceUID' or 'path'")
    if key not in manifest.columns:
        raise ValueError(f"{labels_csv}: key column {key!r} is not a manifest column")
    key_columns = {"path", "StudyInstanceUID"}
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
