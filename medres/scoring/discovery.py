"""What a scoring job scores, as a deterministic stream of fixed chunks that never holds the archive in memory.

A chunk is ``chunk_files`` consecutive input files of one deterministic order, so chunk ``i`` holds the same files
on every run over an unchanged archive: that is what makes a job resumable by chunk (see
:mod:`medres.scoring.job`). The order is

- a folder: :func:`medres.data.manifest.iter_archive_files`'s walk (``os.scandir``, sorted per directory,
  one directory listing in memory at a time, hidden names skipped);
- a manifest from ``medres index``: its rows in file order (read a chunk at a time with pyarrow), then the
  rows of the index's error ledger beside it, so files the index could not read are accounted for too. The
  manifest's header values are used as they are: no header is read again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from medres.data.manifest import ERROR_COLUMNS, errors_path_for, iter_archive_files
from medres.scoring.samples import ScoringPlan, ScoringSample


@dataclass(frozen=True)
class Chunk:
    """A fixed group of input files.

    Attributes:
        index: Position in the job's chunk order (0, 1, ...).
        paths: The files, POSIX paths relative to the input folder, in discovery order.
        headers: Manifest rows of these files when they came from a manifest (``None``: read the headers).
        settled: Ledger rows known before scoring (``path``, ``kind``, ``message``, UIDs where known), e.g. the
            index's errors.
        samples: Samples already planned (3D jobs plan series up front; ``None``: plan the chunk's files).
    """

    index: int
    paths: tuple[str, ...]
    headers: pd.DataFrame | None = None
    settled: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    samples: tuple[ScoringSample, ...] | None = None

    @property
    def fingerprint(self) -> str:
        """A hash of the chunk's file list: a resumed job checks that chunk ``i`` still holds the same files."""
        return paths_fingerprint(self.paths)


def paths_fingerprint(paths: Iterable[str]) -> str:
    """SHA-256 (first 16 hex digits) of the paths, newline-joined in order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()[:16]


def relative_files(root: Path, exclude: Sequence[str] = ()) -> Iterator[str]:
    """POSIX paths relative to ``root`` of every file under it, in walk order, streamed.

    Args:
        root: The input folder.
        exclude: Relative paths of this job's outputs when they lie inside ``root``: files under them are
            skipped (scoring them would change the job as it runs).
    """
    base = os.fspath(root)
    prefixes = tuple(f"{p.rstrip('/')}/" for p in exclude)
    for path in iter_archive_files(root):
        rel = Path(os.path.relpath(path, base)).as_posix()
        if rel in exclude or rel.startswith(prefixes):
            continue
        yield rel


def folder_chunks(root: Path, chunk_files: int, exclude: Sequence[str] = ()) -> Iterator[Chunk]:
    """The folder's files cut into chunks of ``chunk_files`` (the last one may be shorter)."""
    files = relative_files(root, exclude)
    index = 0
    while paths := tuple(islice(files, chunk_files)):
        yield Chunk(index, paths)
        index += 1


def manifest_chunks(manifest: Path, chunk_files: int) -> Iterator[Chunk]:
    """The manifest's rows, then its error ledger's rows (if the file exists), in chunks of ``chunk_files``.

    Manifest rows come with their header values (``headers``); ledger rows come settled with the index's kind.
    """
    index = 0
    for batch in pq.ParquetFile(manifest).iter_batches(batch_size=chunk_files):
        headers = batch.to_pandas().reset_index(drop=True)
        yield Chunk(index, tuple(str(p) for p in headers["path"]), headers=headers)
        index += 1
    errors = errors_path_for(manifest)
    if not errors.is_file():
        return
    for batch in pq.ParquetFile(errors).iter_batches(batch_size=chunk_files, columns=list(ERROR_COLUMNS)):
        rows = tuple(batch.to_pylist())
        yield Chunk(index, tuple(str(row["path"]) for row in rows), settled=rows)
        index += 1


def count_inputs(root: Path, manifest: Path | None, exclude: Sequence[str] = ()) -> int:
    """How many input files the job has: Parquet metadata for a manifest, a names-only walk for a folder."""
    if manifest is not None:
        errors = errors_path_for(manifest)
        extra = pq.ParquetFile(errors).metadata.num_rows if errors.is_file() else 0
        return int(pq.ParquetFile(manifest).metadata.num_rows) + int(extra)
    return sum(1 for _ in relative_files(root, exclude))


def plan_chunks(plan: ScoringPlan, chunk_samples: int) -> list[Chunk]:
    """A whole-archive plan (3D: series need every file's header first) cut into chunks of ``chunk_samples``.

    Chunk 0 also carries the plan's settled ledger rows; a chunk's ``paths`` are its samples' member files and
    its ledger rows' files, so chunk fingerprints and file counts work as for instance chunks.
    """
    chunks = []
    settled = tuple(plan.ledger)
    for index, start in enumerate(range(0, max(len(plan.samples), 1), chunk_samples)):
        samples = tuple(plan.samples[start : start + chunk_samples])
        ledger = settled if index == 0 else ()
        paths = tuple(m["path"] for s in samples for m in s.members) + tuple(str(r["path"]) for r in ledger)
        chunks.append(Chunk(index, paths, settled=ledger, samples=samples))
    return chunks
