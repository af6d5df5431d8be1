"""A scoring job's output folder: Parquet parts per chunk, committed atomically, and the ledger of done chunks.

Layout for ``--output preds.parquet``::

    preds.parquet/part-00000000.parquet          prediction rows of chunk 0 (a Parquet dataset folder)
    preds.errors.parquet/part-00000000.parquet   error-ledger rows of chunk 0
    preds.boxes.parquet/part-00000000.parquet    box rows of chunk 0 (lesion-detection models only)
    preds.studies.parquet                        one row per study (written when the job is complete)
    preds.boxes.parquet/part-00000000.parquet    box rows of chunk 0 (detection models only)
    .preds.parquet.job/job.json                  what the job is: input, model, version, chunking
    .preds.parquet.job/done/00000000.json        chunk 0 is committed: its file-list hash and counts
    .preds.parquet.job/walk.json                 how many chunks and files discovery found

``pd.read_parquet("preds.parquet")`` reads the predictions as one table (pyarrow skips the hidden temporary
names). A chunk's parts are written to hidden temporary names and renamed (atomic on POSIX), then its
done marker is renamed into place: the marker is the commit. A chunk without a marker is scored again and its
parts overwritten under the same names, so a kill at any moment neither loses nor duplicates a row.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

JOB_FORMAT = 1


def errors_dir_for(output: Path) -> Path:
    """The error-ledger dataset beside ``output``: ``preds.parquet`` → ``preds.errors.parquet``."""
    return output.with_suffix(".errors.parquet")


def boxes_dir_for(output: Path) -> Path:
    """The box-row dataset beside ``output`` (detection models): ``preds.parquet`` → ``preds.boxes.parquet``."""
    return output.with_suffix(".boxes.parquet")


def studies_path_for(output: Path) -> Path:
    """The study table beside ``output``: ``preds.parquet`` → ``preds.studies.parquet``."""
    return output.with_suffix(".studies.parquet")


def job_created_at(output: Path) -> dt.datetime:
    """When the job in ``output`` was started: ``job.json`` is written once, when the job is created.

    A resumed or rerun job keeps the time, so what is derived from it (the SRs' content time) stays the same;
    ``--resume false`` starts a new job and a new time.

    Raises:
        FileNotFoundError: ``output`` holds no job.
    """
    return dt.datetime.fromtimestamp((job_dir_for(output) / "job.json").stat().st_mtime).replace(microsecond=0)


def job_dir_for(output: Path) -> Path:
    """The job's bookkeeping folder (hidden, so that an output inside the archive is never walked)."""
    return output.with_name(f".{output.name}.job")


def _write_atomic(path: Path, data: bytes) -> None:
    # pid in the temporary name: two ranks writing the same identical file never interleave.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _part_name(chunk: int) -> str:
    return f"part-{chunk:08d}.parquet"


@dataclass
class ChunkRecord:
    """A committed chunk's marker: which files it held, where they went and which rank scored them."""

    chunk: int
    fingerprint: str
    files: int
    predictions: int
    scored_files: int
    errors: int
    error_kinds: dict[str, int] = field(default_factory=dict)
    rank: int = 0


class ScoringJob:
    """The output folders of one scoring job, shared by every rank and worker.

    Args:
        output: Predictions dataset folder (``.parquet`` name); the ledger, study table and job folder go beside it.
        identity: What makes the job this job (input, model, version, chunking): a rerun with another identity is
            refused rather than mixed into the same outputs.
    """

    def __init__(self, output: Path, identity: dict[str, Any]) -> None:
        self.output = output
        self.errors = errors_dir_for(output)
        self.boxes = boxes_dir_for(output)
        self.studies = studies_path_for(output)
        self.folder = job_dir_for(output)
        self.done = self.folder / "done"
        self.identity = identity

    def open(self, resume: bool) -> None:
        """Create the folders, or check that the existing ones hold this job (``resume=False`` starts afresh).

        Raises:
            ValueError: ``output`` is a file (the pre-parts format), or holds a different job and ``resume`` is set.
        """
        for path in (self.output, self.errors, self.boxes):
            if path.is_file():
                raise ValueError(f"--output {self.output}: {path} is a file; scoring writes a folder of parts there")
        job_file = self.folder / "job.json"
        if not resume:
            for path in (self.output, self.errors, self.boxes, self.folder):
                shutil.rmtree(path, ignore_errors=True)
            self.studies.unlink(missing_ok=True)
        elif job_file.is_file():
            recorded = json.loads(job_file.read_text())
            changed = sorted(k for k in set(recorded) | set(self.identity) if recorded.get(k) != self.identity.get(k))
            if changed:
                raise ValueError(
                    f"--output {self.output} holds another scoring job (differs in {', '.join(changed)}); "
                    "score into a new --output, or pass --resume false to start it over"
                )
        elif self.output.is_dir() and any(self.output.iterdir()):
            raise ValueError(f"--output {self.output}: folder exists without a job record; choose a new --output")
        for path in (self.output, self.errors, self.done):
            path.mkdir(parents=True, exist_ok=True)
        if not job_file.is_file():
            _write_atomic(job_file, json.dumps(self.identity, indent=1, sort_keys=True).encode())

    def record(self, chunk: int) -> ChunkRecord | None:
        """The chunk's marker, or ``None`` when it is not committed."""
        marker = self.done / f"{chunk:08d}.json"
        try:
            return ChunkRecord(**json.loads(marker.read_text()))
        except FileNotFoundError:
            return None

    def commit(
        self,
        record: ChunkRecord,
        predictions: list[dict[str, Any]],
        prediction_schema: pa.Schema,
        ledger: list[dict[str, Any]],
        ledger_schema: pa.Schema,
        boxes: list[dict[str, Any]] | None = None,
        box_schema: pa.Schema | None = None,
    ) -> None:
        """Write the chunk's parts (even empty ones: every part carries the schema) and then its marker.

        A detection model's box rows (``box_schema`` given) are a third part, committed by the same marker.
        """
        name = _part_name(record.chunk)
        parts = [(self.output, predictions, prediction_schema), (self.errors, ledger, ledger_schema)]
        if box_schema is not None:
            self.boxes.mkdir(parents=True, exist_ok=True)
            parts.append((self.boxes, boxes or [], box_schema))
        for folder, rows, schema in parts:
            tmp = folder / f".{name}.tmp"
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
            os.replace(tmp, folder / name)
        _write_atomic(self.done / f"{record.chunk:08d}.json", json.dumps(record.__dict__).encode())

    def write_walk(self, chunks: int, files: int) -> None:
        """Record what discovery found (every walker writes the same numbers)."""
        _write_atomic(self.folder / "walk.json", json.dumps({"chunks": chunks, "files": files}).encode())

    def resumed_files(self) -> int:
        """Input files in chunks committed before this run started."""
        return sum(json.loads(p.read_text())["files"] for p in self.done.glob("*.json"))

    def totals(self) -> tuple[list[ChunkRecord], int]:
        """Every chunk's record and the input file count discovery reported.

        Raises:
            RuntimeError: discovery did not finish, or a chunk it found has no marker (the job is incomplete).
        """
        walk_file = self.folder / "walk.json"
        if not walk_file.is_file():
            raise RuntimeError(f"{self.output}: discovery did not finish; rerun the same command to complete the job")
        walk = json.loads(walk_file.read_text())
        records = [self.record(i) for i in range(walk["chunks"])]
        missing = [i for i, r in enumerate(records) if r is None]
        if missing:
            raise RuntimeError(f"{self.output}: {len(missing)} chunk(s) not scored (first {missing[0]}); rerun it")
        return [r for r in records if r is not None], int(walk["files"])

    def tidy(self, prediction_schema: pa.Schema, ledger_schema: pa.Schema) -> None:
        """Remove temporary leftovers of killed runs; give an empty job one empty part so that it reads as a table."""
        for folder in (self.output, self.errors, self.folder, self.done):
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        self.studies.with_name(f".{self.studies.name}.tmp").unlink(missing_ok=True)
        for folder, schema in ((self.output, prediction_schema), (self.errors, ledger_schema)):
            if not any(folder.glob("part-*.parquet")):
                pq.write_table(schema.empty_table(), folder / _part_name(0))


def sum_kinds(records: list[ChunkRecord]) -> dict[str, int]:
    """Ledger kinds over all chunks."""
    kinds: Counter[str] = Counter()
    for record in records:
        kinds.update(record.error_kinds)
    return dict(kinds)
