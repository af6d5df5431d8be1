"""Series selection rules: which manifest rows training and scoring use. Both call :func:`select`.

Rules (all optional; an unset rule keeps everything):

- ``modalities``, ``body_parts``, ``view_positions``: Modality, BodyPartExamined and ViewPosition must be one
  of the listed values. Matching ignores case and surrounding spaces. A null (or absent) column never
  matches an explicit rule: a row whose header does not say it is a chest is not taken for one.
- ``orientation`` (3D): ``axial``, ``coronal`` or ``sagittal`` by the dominant LPS axis of the slice normal
  (:func:`medres.dicom.series.orientation_label`).
- ``min_slices`` (3D): at least this many slices after localizers and duplicates are dropped.
- ``prefer`` (3D): keep one series per study — ``thinnest`` (smallest slice step, then most slices) or
  ``largest`` (most slices, then smallest step); remaining ties go to the smallest SeriesInstanceUID, so
  the choice is the same on every run.

For ``spatial_dims=2`` a sample is an instance and only the first three rules apply. For ``spatial_dims=3``
a sample is a series: the rules apply to the series (its most common non-null value per column), the
series is planned header-only with :func:`medres.dicom.series.plan_series`, and a series whose plan has a
fatal issue is rejected with that issue's error kind (``inconsistent_series`` or ``missing_geometry``)
rather than ``not_selected``, so it lands in the error ledger for what it is. A localizer-only series is
``not_selected``. Kept series keep all their rows; the plan drops localizers and duplicates again when the
series is read.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from medres.dicom import DicomErrorKind, DicomReadError
from medres.dicom.series import ORIENTATION_TOLERANCE, SeriesPlan, plan_series

__all__ = ["DUPLICATE", "NOT_SELECTED", "REJECTED_COLUMNS", "SeriesSelection", "dropped_reason", "select"]

Orientation = Literal["axial", "coronal", "sagittal"]
Prefer = Literal["thinnest", "largest"]
REJECTED_COLUMNS: tuple[str, ...] = (
    "path",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "kind",
    "message",
)
NOT_SELECTED = "not_selected"
DUPLICATE = "duplicate"
# Series issue kind → error-ledger kind for series rejected because they cannot be read.
_FATAL_KIND = {"missing_geometry": str(DicomErrorKind.MISSING_GEOMETRY), "localizer_only": NOT_SELECTED}
# Rule name → manifest column.
_COLUMN_RULES = (("modalities", "Modality"), ("body_parts", "BodyPartExamined"), ("view_positions", "ViewPosition"))


def _values(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise ValueError(f"selection.{name}={value!r}: need a non-empty list of non-empty strings, or null")
    return items


@dataclass(frozen=True)
class SeriesSelection:
    """Which instances (2D) or series (3D) to use; saved with the model so scoring selects the same way.

    Args:
        modalities: allowed Modality values (e.g. ``["CT"]``); None: any.
        body_parts: allowed BodyPartExamined values; None: any.
        view_positions: allowed ViewPosition values (e.g. ``["PA", "AP"]``); None: any.
        orientation: 3D only: ``axial``, ``coronal`` or ``sagittal``; None: any.
        min_slices: 3D only: fewest slices a series may have.
        prefer: 3D only: ``thinnest`` or ``largest`` keeps one series per study; None keeps them all.
    """

    modalities: tuple[str, ...] | None = None
    body_parts: tuple[str, ...] | None = None
    view_positions: tuple[str, ...] | None = None
    orientation: Orientation | None = None
    min_slices: int = 1
    prefer: Prefer | None = None

    def __post_init__(self) -> None:
        # Configs give lists (or a lone string); a frozen dataclass still gets hashable tuples.
        for name, _ in _COLUMN_RULES:
            object.__setattr__(self, name, _values(name, getattr(self, name)))
        if self.orientation is not None and self.orientation not in get_args(Orientation):
            raise ValueError(f"selection.orientation={self.orientation!r}: must be one of {get_args(Orientation)}")
        if self.prefer is not None and self.prefer not in get_args(Prefer):
            raise ValueError(f"selection.prefer={self.prefer!r}: must be one of {get_args(Prefer)} or null")
        if isinstance(self.min_slices, bool) or not isinstance(self.min_slices, int) or self.min_slices < 1:
            raise ValueError(f"selection.min_slices={self.min_slices!r}: must be an integer ≥ 1")

    @property
    def series_rules(self) -> list[str]:
        """The rules that only make sense for series (set ones only)."""
        rules = []
        if self.orientation is not None:
            rules.append("orientation")
        if self.min_slices != 1:
            rules.append("min_slices")
        if self.prefer is not None:
            rules.append("prefer")
        return rules

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        data = asdict(self)
        for name, _ in _COLUMN_RULES:
            if data[name] is not None:
                data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SeriesSelection:
        """Rebuild from :meth:`to_dict` output (None: no rules); unknown keys are an error naming them."""
        data = data or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown selection setting(s) {unknown}; this medres knows {sorted(known)}")
        return cls(**data)


def _norm(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text.upper() or None


def _column_rejection(values: Mapping[Any, Any], selection: SeriesSelection) -> str | None:
    """Why a row (2D) or series (3D) fails the column rules, or None."""
    for name, column in _COLUMN_RULES:
        allowed: tuple[str, ...] | None = getattr(selection, name)
        if allowed is None:
            continue
        value = _norm(values.get(column))
        if value is None:
            return f"{column} is missing; selection.{name} wants {list(allowed)}"
        if value not in {a.strip().upper() for a in allowed}:
            return f"{column} {value!r} not in selection.{name} {list(allowed)}"
    return None


def _rejected(rows: pd.DataFrame, kind: str, message: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            column: (
                [None if pd.isna(v) else v for v in rows[column].astype(object)]
                if column in rows
                else [kind if column == "kind" else message if column == "message" else None] * len(rows)
            )
            for column in REJECTED_COLUMNS
        }
    )


def _empty_rejected() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in REJECTED_COLUMNS})


def _select_instances(manifest: pd.DataFrame, selection: SeriesSelection) -> tuple[pd.DataFrame, pd.DataFrame]:
    reasons = [_column_rejection(row, selection) for row in manifest.to_dict("records")]
    keep = [r is None for r in reasons]
    rejected_rows = manifest.loc[[not k for k in keep]]
    rejected = _rejected(rejected_rows, NOT_SELECTED, "")
    rejected["message"] = [r for r in reasons if r is not None]
    return manifest.loc[keep].reset_index(drop=True), rejected


def _series_values(rows: pd.DataFrame) -> dict[str, Any]:
    """Per column of the rules, the series' most common non-null value."""
    values: dict[str, Any] = {}
    for _, column in _COLUMN_RULES:
        if column in rows:
            counts = rows[column].dropna().map(_norm).dropna().value_counts()
            values[column] = counts.index[0] if len(counts) else None
    return values


def _preference_key(plan: SeriesPlan, prefer: Prefer) -> tuple[Any, ...]:
    if prefer == "thinnest":
        return plan.slice_spacing, -plan.n_slices, plan.series_uid
    return -plan.n_slices, plan.slice_spacing, plan.series_uid


def _describe(plan: SeriesPlan) -> str:
    return f"{plan.series_uid} ({plan.n_slices} slices, {plan.slice_spacing:.3g} mm)"


def _select_series(
    manifest: pd.DataFrame, selection: SeriesSelection, root: str | os.PathLike[str] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rejected: list[pd.DataFrame] = []
    if "SeriesInstanceUID" not in manifest:
        raise ValueError("select: the manifest has no SeriesInstanceUID column; 3D selection needs it")
    no_uid = manifest["SeriesInstanceUID"].isna()
    if no_uid.any():
        rejected.append(_rejected(manifest.loc[no_uid], NOT_SELECTED, "no SeriesInstanceUID: not part of a series"))

    candidates: list[tuple[Hashable, SeriesPlan, pd.Index]] = []  # (study key, plan, row index)
    for uid, rows in manifest.loc[~no_uid].groupby("SeriesInstanceUID", sort=True):
        reason = _column_rejection(_series_values(rows), selection)
        if reason is not None:
            rejected.append(_rejected(rows, NOT_SELECTED, reason))
            continue
        try:
            plan = plan_series(rows, root=root)
        except DicomReadError as exc:  # a multi-frame file's header, read for its per-frame geometry
            rejected.append(_rejected(rows, str(exc.kind), f"series {uid}: {exc.message}"))
            continue
        if plan.fatal_issues:
            issue = plan.fatal_issues[0]
            kind = _FATAL_KIND.get(issue.kind, str(DicomErrorKind.INCONSISTENT_SERIES))
            rejected.append(_rejected(rows, kind, f"series {uid}: {issue.kind}: {issue.message}"))
            continue
        label = plan.orientation_label
        if selection.orientation is not None and label != selection.orientation:
            rejected.append(
                _rejected(
                    rows, NOT_SELECTED, f"orientation {label} is not selection.orientation={selection.orientation}"
                )
            )
            continue
        if plan.n_slices < selection.min_slices:
            rejected.append(
                _rejected(rows, NOT_SELECTED, f"{plan.n_slices} slices < selection.min_slices {selection.min_slices}")
            )
            continue
        study = rows["StudyInstanceUID"].iloc[0] if "StudyInstanceUID" in rows else None
        candidates.append((study if isinstance(study, str) else f"series:{uid}", plan, rows.index))

    keep: list[pd.Index] = []
    if selection.prefer is None:
        keep = [index for _, _, index in candidates]
    else:
        prefer = selection.prefer
        by_study: dict[Hashable, list[tuple[SeriesPlan, pd.Index]]] = {}
        for study, plan, index in candidates:
            by_study.setdefault(study, []).append((plan, index))
        for group in by_study.values():
            group.sort(key=lambda item: _preference_key(item[0], prefer))
            best = group[0][0]
            keep.append(group[0][1])
            for plan, index in group[1:]:
                message = f"selection.prefer={prefer}: the study's {_describe(best)} wins over {_describe(plan)}"
                rejected.append(_rejected(manifest.loc[index], NOT_SELECTED, message))

    kept_index = [i for index in keep for i in index]
    kept = manifest.loc[manifest.index.isin(kept_index)].reset_index(drop=True)
    return kept, pd.concat(rejected, ignore_index=True) if rejected else _empty_rejected()


def select(
    manifest: pd.DataFrame,
    selection: SeriesSelection,
    spatial_dims: int,
    *,
    root: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split manifest rows into those the rules keep and those they reject, with a reason each.

    Args:
        manifest: manifest rows (``medres.data.manifest.MANIFEST_SCHEMA`` columns; missing ones count as null).
        selection: the rules.
        spatial_dims: 2 (a sample is an instance) or 3 (a sample is a series).
        root: archive root the manifest paths are relative to (3D: multi-frame files' headers are read).

    Returns:
        ``(kept, rejected)``: kept manifest rows in manifest order; rejected rows with columns
        ``REJECTED_COLUMNS`` (``kind`` is ``not_selected``, or the error kind of an unreadable series).
        Every manifest row is in exactly one of them.

    Raises:
        ValueError: a spatial_dims other than 2/3, or series rules with ``spatial_dims=2``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"select: spatial_dims={spatial_dims}: must be 2 or 3")
    if spatial_dims == 2:
        if selection.series_rules:
            raise ValueError(
                f"selection {selection.series_rules} only apply to 3D series; spatial_dims=2 selects instances"
            )
        if len(manifest) == 0:
            return manifest.reset_index(drop=True), _empty_rejected()
        return _select_instances(manifest, selection)
    if len(manifest) == 0:
        return manifest.reset_index(drop=True), _empty_rejected()
    return _select_series(manifest, selection, root)


def dropped_reason(record: Mapping[Hashable, Any], plan: SeriesPlan) -> tuple[str, str]:
    """Ledger (kind, message) for a file the series plan left out, from its manifest row.

    Training's ``selection_rejected.parquet`` and scoring's error ledger use the same kinds: a localizer or a
    slice of another orientation is ``not_selected``, a second slice at a kept position is ``duplicate``.

    Mirrors the order :func:`~medres.dicom.series.plan_series` applies its rules in; the plan records counts
    per rule (its issues), not a reason per file.
    """
    image_type = record.get("ImageType")
    if isinstance(image_type, str) and "LOCALIZER" in image_type.upper().split("\\"):
        return NOT_SELECTED, "localizer_dropped: ImageType LOCALIZER (a scout, not part of the volume)"
    orientation = record.get("ImageOrientationPatient")
    if (
        isinstance(orientation, list | tuple | np.ndarray)
        and len(orientation) == 6
        and float(np.max(np.abs(np.asarray(orientation, dtype=float) - plan.orientation))) > ORIENTATION_TOLERANCE
    ):
        return NOT_SELECTED, "mixed_orientation: orientation differs from the series' (an unflagged scout)"
    return DUPLICATE, "duplicate_positions: another slice of the series at this position is kept"
