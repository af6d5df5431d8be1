"""One series → one sample: the function training and scoring both build their 3D samples with.

A 3D sample is a series: its manifest rows are planned header-only (:func:`medres.dicom.series.plan_series`), the files
the plan keeps become the sample in slice order, and each file it leaves out (a localizer, a slice of another
orientation, a duplicate position) gets the reason :func:`medres.data.selection.dropped_reason` gives it. Training
writes those reasons to ``selection_rejected.parquet``, scoring to its error ledger: the same kinds and messages.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medres.data.selection import dropped_reason
from medres.dicom.errors import DicomErrorKind, DicomReadError
from medres.dicom.series import SeriesIssue, plan_series

__all__ = ["N_INSTANCES", "SeriesSample", "series_sample"]

# A series sample's file count: a column of prediction rows, a key of training records.
N_INSTANCES = "n_instances"


@dataclass(frozen=True)
class SeriesSample:
    """A series as one network input.

    Attributes:
        files: The kept files, relative to the archive root as the manifest has them, in slice order (a multi-frame
            file once).
        identity: ``path`` (the first slice), ``SOPInstanceUID`` (``None``: a series has none), ``SeriesInstanceUID``,
            ``StudyInstanceUID`` and ``n_instances``.
        dropped: Manifest rows (as dicts) of the files the plan left out, each with its ledger kind and message.
    """

    files: list[str]
    identity: dict[str, Any]
    dropped: list[tuple[dict[Hashable, Any], str, str]]


def series_sample(rows: pd.DataFrame, root: Path) -> SeriesSample:
    """Plan one series' manifest rows (header-only) into a sample.

    Args:
        rows: The series' manifest rows; ``path`` relative to ``root``.
        root: The archive root.

    Raises:
        DicomReadError: the series cannot become a volume (kind ``inconsistent_series`` or ``missing_geometry``,
            every issue in the message), or a multi-frame header the planner needs cannot be read.
    """
    records = {str(record["path"]): record for record in rows.sort_values("path").to_dict("records")}
    first_path = next(iter(records))
    plan = plan_series(rows, root=root)
    if plan.fatal_issues:
        kind, message = _fatal_reason(plan.fatal_issues)
        raise DicomReadError(kind, first_path, message)
    relative = {str(root / path): path for path in records}  # the plan's paths are joined to root
    files = list(dict.fromkeys(relative[str(p)] for p in plan.paths))
    kept = set(files)
    first = records[files[0]]
    identity = {
        "path": files[0],
        "SOPInstanceUID": None,
        "SeriesInstanceUID": _text(first.get("SeriesInstanceUID")),
        "StudyInstanceUID": _text(first.get("StudyInstanceUID")),
        N_INSTANCES: len(files),
    }
    dropped = [(record, *dropped_reason(record, plan)) for path, record in records.items() if path not in kept]
    return SeriesSample(files, identity, dropped)


def _text(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def _fatal_reason(issues: Sequence[SeriesIssue]) -> tuple[DicomErrorKind, str]:
    """Ledger kind and message for a series that cannot become a volume (every file of it gets them)."""
    missing = any(issue.kind == DicomErrorKind.MISSING_GEOMETRY for issue in issues)
    kind = DicomErrorKind.MISSING_GEOMETRY if missing else DicomErrorKind.INCONSISTENT_SERIES
    return kind, "; ".join(f"{issue.kind}: {issue.message}" for issue in issues)
