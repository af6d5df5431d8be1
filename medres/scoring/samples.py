"""What a scoring run scores: header index → series selection → samples, and the files that go to the ledger.

Before a pixel is decoded, every file under the input folder is indexed header-only (the same
:func:`~medres.data.manifest.index_archive` training uses), the package's
:class:`~medres.data.selection.SeriesSelection` is applied with the same
:func:`~medres.data.selection.select` training used, and what is left becomes samples:

- a 2D package scores one sample per instance;
- a 3D package scores one sample per series: the series' manifest rows are planned header-only with
  :func:`~medres.dicom.series.plan_series`; files the plan leaves out (localizers, duplicate positions) and every
  file of a series with a fatal issue go to the ledger instead.

Each input file is accounted for exactly once: as a member of a sample, or as a ledger row.

Ledger kinds settled here (beside the reader's :class:`~medres.dicom.errors.DicomErrorKind` values from the
index, and the ``inconsistent_series``/``missing_geometry`` rejections of :func:`~medres.data.selection.select`):
``not_selected`` (the package's selection rules, or a localizer or other-orientation slice the series plan
dropped; the message is the reason) and ``duplicate`` (a second instance at a slice position the series
already has).
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom

from medres.data.keys import patient_key_salt
from medres.data.manifest import index_archive
from medres.data.samples import series_sample
from medres.data.selection import SeriesSelection, select
from medres.data.transforms import IDENTITY_COLUMNS
from medres.dicom.errors import DicomErrorKind, DicomReadError

log = logging.getLogger(__name__)

UID_KEYS = IDENTITY_COLUMNS[1:]  # the UIDs, without the path


@dataclass(frozen=True)
class ScoringSample:
    """One network input and the input files it stands for.

    Attributes:
        image: What the package's eval transforms load, absolute: one file path (2D), or the files of the
            series the plan keeps, in slice order (3D).
        identity: The prediction row's identity columns: ``path`` and the UIDs, plus ``n_instances`` for a series.
        members: Per input file: ``path`` (relative to the input folder) and its UIDs, as the ledger writes them
            if the sample fails.
    """

    image: str | list[str]
    identity: dict[str, Any]
    members: tuple[dict[str, Any], ...]


@dataclass
class ScoringPlan:
    """Samples to run through the network and ledger rows settled before any pixel is read.

    Attributes:
        samples: In a stable order (path order for instances, first-slice path order for series).
        ledger: Rows with ``path``, the UIDs, ``kind`` and ``message``.
        n_files: Files found under the input folder (each is in a sample's members or in the ledger).
    """

    samples: list[ScoringSample] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    n_files: int = 0


def header_uids(path: Path) -> dict[str, str | None]:
    """The three UIDs from ``path``'s header, or ``None`` each where unreadable.

    Plain pydicom, UIDs only: a file cut short in its pixel data still has a readable header, and its UIDs
    are what finds it again in the PACS. Each UID is recovered on its own: pydicom converts a value when it is
    first used, so one damaged element (a flipped VR byte raises ``NotImplementedError``, issue 21) costs that
    UID only. Never raises, and never opens what is not a regular file (a FIFO would block).
    """
    uids: dict[str, str | None] = dict.fromkeys(UID_KEYS)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return uids
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(UID_KEYS))
    except Exception:  # nothing readable: the path alone identifies the file
        return uids
    for key in UID_KEYS:
        try:
            value = str(header[key].value) if key in header else ""
        except Exception:  # a damaged element: this UID stays unknown
            continue
        # One line of printable text, or nothing: a ledger cell must not carry a flipped byte's control character.
        uids[key] = value if value and value.isprintable() else None
    return uids


def ledger_row(member: dict[str, Any], kind: str, message: str) -> dict[str, Any]:
    """A ledger row for one input file (``member`` holds its path and UIDs)."""
    return {"path": member["path"], **{key: member.get(key) for key in UID_KEYS}, "kind": kind, "message": message}


def member_of(row: Any) -> dict[str, Any]:
    """Path and UIDs of a manifest row (a pandas namedtuple or a mapping), nulls as ``None``."""
    get = row.get if isinstance(row, dict) else lambda key: getattr(row, key)
    return {key: None if pd.isna(value := get(key)) else str(value) for key in IDENTITY_COLUMNS}


def plan_scoring(root: Path, selection: SeriesSelection, num_workers: int = 0, progress: bool = False) -> ScoringPlan:
    """Index ``root`` header-only, apply a 3D package's ``selection`` and cut what is left into series samples.

    A 3D package plans the whole folder first: a series' files may lie anywhere in it. (A 2D package streams
    instances chunk by chunk instead, :func:`medres.scoring.stream.plan_instances`.)

    Args:
        root: The input folder.
        selection: The package's selection rules.
        num_workers: Processes for the header index (0: this process).
        progress: Show the index progress bar.
    """
    # The salted patient key is computed as training computes it, but it never leaves this function:
    # prediction and ledger rows carry UIDs and paths only.
    manifest, index_errors = index_archive(root, salt=patient_key_salt(), num_workers=num_workers, progress=progress)
    plan = ScoringPlan(n_files=len(manifest) + len(index_errors))
    for error in index_errors.to_dict("records"):
        path, kind = str(error["path"]), str(error["kind"])
        uids = header_uids(root / path) if kind != DicomErrorKind.NOT_DICOM else dict.fromkeys(UID_KEYS)
        plan.ledger.append({"path": path, **uids, "kind": kind, "message": str(error["message"])})
    # select() also rejects series whose plan is fatal, with that error kind (inconsistent_series, ...).
    kept, rejected = select(manifest, selection, 3, root=root)
    plan.ledger += [ledger_row(member_of(row), str(row.kind), str(row.message)) for row in rejected.itertuples()]
    for _, rows in kept.groupby("SeriesInstanceUID", sort=False, dropna=False):
        sample, ledger = _series_sample(root, rows)
        plan.ledger += ledger
        if sample is not None:
            plan.samples.append(sample)
    plan.samples.sort(key=lambda sample: sample.identity["path"])
    log.info("scoring %s: %d sample(s); %d file(s) settled in the ledger", root, len(plan.samples), len(plan.ledger))
    return plan


def _series_sample(root: Path, rows: pd.DataFrame) -> tuple[ScoringSample | None, list[dict[str, Any]]]:
    """One series' sample (``None`` when it cannot be scored) and the ledger rows of files it leaves out.

    Built by :func:`medres.data.samples.series_sample`, as training builds its samples: the same files in the same
    order, and the same reason for each file left out.
    """
    members = {str(record["path"]): member_of(record) for record in rows.to_dict("records")}
    try:
        sample = series_sample(rows, root)
    except DicomReadError as err:  # no volume: every file of the series goes to the ledger with the reason
        return None, [ledger_row(m, str(err.kind), err.message) for m in members.values()]
    ledger = [ledger_row(members[str(record["path"])], kind, message) for record, kind, message in sample.dropped]
    image = [str(root / path) for path in sample.files]
    return ScoringSample(image, sample.identity, tuple(members[path] for path in sample.files)), ledger
