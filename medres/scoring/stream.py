"""Chunks → batches, in DataLoader workers: header-first selection, then decoding, a batch-sized slice at a time.

:class:`ChunkStream` is an ``IterableDataset`` whose items are ready batches (use it with ``batch_size=None``).
Each rank takes the chunks ``i % world_size == rank``; each chunk is cut by position into slices of ``batch_size``
files, and the rank's DataLoader workers take its slices in turn, so no file is scored twice and the workers stay
balanced to within one batch. The DataLoader returns the workers' items round-robin, hence in slice order. Each
batch says how many slices its chunk has: the writer commits a chunk once it has them all. Chunks already
committed by an earlier run are skipped after checking they still hold the same files.

Per 2D chunk, before any pixel is decoded: each file's header is read (the index's fast header path,
:func:`medres.data.manifest.read_manifest_row`, or the manifest's row), unreadable files become ledger rows
with the reader's kind, and the package's selection (:func:`medres.data.selection.select`, as in training)
sends the files it rejects to the ledger as ``not_selected``. Only the rest are decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from torch.utils.data import IterableDataset, get_worker_info

from medres.data.keys import patient_key_salt
from medres.data.manifest import MANIFEST_COLUMNS, read_manifest_row
from medres.data.selection import SeriesSelection, select
from medres.data.transforms import Preprocessing
from medres.dicom import DicomErrorKind, DicomReadError
from medres.scoring.dataset import ScoringDataset, collate_scoring
from medres.scoring.discovery import Chunk
from medres.scoring.job import ScoringJob
from medres.scoring.samples import UID_KEYS, ScoringSample, header_uids, ledger_row, member_of


def plan_instances(
    root: Path, chunk: Chunk, selection: SeriesSelection, salt: str
) -> tuple[list[ScoringSample], list[dict[str, Any]]]:
    """A 2D chunk's samples (selected instances) and the ledger rows of its other files, headers only.

    Args:
        root: The input folder.
        chunk: Files to plan (with their manifest rows when they came from a manifest).
        selection: The package's selection rules.
        salt: Patient-key salt: the key is computed as the index computes it, and dropped here (rows carry UIDs).
    """
    ledger: list[dict[str, Any]] = []
    for settled_row in chunk.settled:
        kind, path = str(settled_row["kind"]), str(settled_row["path"])
        known = {key: settled_row.get(key) for key in UID_KEYS}
        uids = known if any(known.values()) or kind == DicomErrorKind.NOT_DICOM else header_uids(root / path)
        ledger.append({"path": path, **uids, "kind": kind, "message": str(settled_row["message"])})
    if chunk.headers is not None:
        headers = chunk.headers
    else:
        rows = []
        settled = {row["path"] for row in chunk.settled}
        for rel in (p for p in chunk.paths if p not in settled):
            try:
                rows.append(read_manifest_row(root / rel, root, salt))
            except DicomReadError as err:  # the file goes to the ledger; the chunk goes on
                uids = header_uids(root / rel) if err.kind != DicomErrorKind.NOT_DICOM else dict.fromkeys(UID_KEYS)
                ledger.append({"path": rel, **uids, "kind": str(err.kind), "message": err.message})
        headers = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    kept, rejected = select(headers, selection, 2)
    ledger += [ledger_row(member_of(row), str(row.kind), str(row.message)) for row in rejected.itertuples()]
    samples = []
    for row in kept.itertuples(index=False):
        member = member_of(row)
        samples.append(ScoringSample(str(root / member["path"]), member, (member,)))
    return samples, ledger


class ChunkStream(IterableDataset[dict[str, Any]]):
    """Batches of this rank's chunks, spread over the DataLoader workers a slice at a time, each tagged with its chunk.

    A chunk is cut into slices of ``batch_size`` files (3D: planned series) by position, before any header is read,
    so the number of slices is known up front; each slice becomes exactly one batch, and the workers take the
    rank's slices in turn (balanced to within one batch, however the chunks fall). A batch is
    :func:`medres.scoring.dataset.collate_scoring`'s dict plus ``chunk`` (index), ``fingerprint`` (its file list's
    hash), ``chunk_files`` (input files in the chunk) and ``slices`` (batches the chunk comes as): the writer
    commits a chunk once it has all of them. The chunk's settled ledger rows ride on its first slice.

    Args:
        root: The input folder.
        chunks: Makes the job's chunk sequence (called once per worker: each walks the archive lazily).
        job: The output folders (committed chunks are skipped; discovery totals are recorded there).
        spatial_dims: The package's; 3D chunks come planned (``Chunk.samples``).
        selection: The package's selection rules.
        preprocessing: The package's preprocessing.
        batch_size: Files (2D) or volumes (3D) per batch.
        keep_geometry: Keep each image's affines (a detection model's boxes are mapped back with them).
    """

    def __init__(
        self,
        root: Path,
        chunks: Callable[[], Iterator[Chunk]],
        job: ScoringJob,
        spatial_dims: int,
        selection: SeriesSelection,
        preprocessing: Preprocessing,
        batch_size: int,
        keep_geometry: bool = False,
    ) -> None:
        self.root = root
        self.chunks = chunks
        self.job = job
        self.spatial_dims = spatial_dims
        self.selection = selection
        self.loader = SliceLoader(root, selection, preprocessing, keep_geometry)
        self.batch_size = batch_size
        self.rank, self.world_size = 0, 1  # set per rank once the strategy knows them (see score.py)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        n_chunks = n_files = 0
        turn = 0  # the rank's slices in order; this worker takes every workers-th
        for chunk in self.chunks():
            n_chunks, n_files = n_chunks + 1, n_files + len(chunk.paths)
            if chunk.index % self.world_size != self.rank:
                continue
            record = self.job.record(chunk.index)
            if record is not None:
                if record.fingerprint != chunk.fingerprint:
                    raise ValueError(
                        f"--output {self.job.output}: chunk {chunk.index} was scored from other files than the input "
                        "holds now (the archive changed); score into a new --output"
                    )
                continue
            slices = self._slices(chunk)
            for n in range(slices):
                if (turn + n) % workers == worker:
                    yield self._batch(chunk, n, slices)
            turn += slices
        self.job.write_walk(n_chunks, n_files)

    def _slices(self, chunk: Chunk) -> int:
        return chunk_slices(chunk, self.batch_size)

    def _batch(self, chunk: Chunk, n: int, slices: int) -> dict[str, Any]:
        batch = self.loader.load(slice_of(chunk, n, self.batch_size))
        return {**batch, **slice_tag(chunk, slices)}


def chunk_slices(chunk: Chunk, batch_size: int) -> int:
    """How many batches (slices of ``batch_size`` files or planned series) the chunk comes as; at least one."""
    units = len(chunk.samples) if chunk.samples is not None else len(chunk.paths) - len(chunk.settled)
    return max(1, -(-units // batch_size))


def slice_of(chunk: Chunk, n: int, batch_size: int) -> Chunk:
    """The chunk's ``n``-th slice as a chunk of its own (same index): its files or series; the settled rows on slice 0.

    Cut by position before any header is read, so that any process can cut the same slice from the same chunk.
    """
    part = slice(n * batch_size, (n + 1) * batch_size)
    settled = chunk.settled if n == 0 else ()
    if chunk.samples is not None:
        samples = chunk.samples[part]
        paths = tuple(m["path"] for s in samples for m in s.members) + tuple(str(r["path"]) for r in settled)
        return Chunk(chunk.index, paths, settled=settled, samples=samples)
    done = {row["path"] for row in chunk.settled}
    pending = [p for p in chunk.paths if p not in done]
    headers = chunk.headers.iloc[part] if chunk.headers is not None else None
    return Chunk(chunk.index, tuple(pending[part]), headers=headers, settled=settled)


def slice_tag(chunk: Chunk, slices: int) -> dict[str, Any]:
    """What a batch says about its chunk: index, file-list hash, input files and how many batches it comes as."""
    return {"chunk": chunk.index, "fingerprint": chunk.fingerprint, "chunk_files": len(chunk.paths), "slices": slices}


class SliceLoader:
    """One slice (see :func:`slice_of`) → a batch: headers and selection (2D), then decoding and preprocessing.

    Used by :class:`ChunkStream` in DataLoader workers and by the Ray engine's CPU tasks
    (:mod:`medres.scoring.engines.ray`), so both engines plan and decode a file the same way.

    Args:
        root: The input folder.
        selection: The package's selection rules.
        preprocessing: The package's preprocessing.
        keep_geometry: Keep each image's affines (for a detection model's boxes).
    """

    def __init__(
        self, root: Path, selection: SeriesSelection, preprocessing: Preprocessing, keep_geometry: bool = False
    ) -> None:
        self.root = root
        self.selection = selection
        self.dataset = ScoringDataset(root, [], preprocessing, keep_geometry)
        self.salt = patient_key_salt()

    def load(self, piece: Chunk) -> dict[str, Any]:
        """:func:`medres.scoring.dataset.collate_scoring`'s dict for the slice, its settled rows leading the ledger."""
        if piece.samples is not None:
            samples, ledger = list(piece.samples), [dict(row) for row in piece.settled]
        else:
            samples, ledger = plan_instances(self.root, piece, self.selection, self.salt)
        batch = collate_scoring([self.dataset.load(sample) for sample in samples])
        batch["errors"] = ledger + batch["errors"]
        return batch
