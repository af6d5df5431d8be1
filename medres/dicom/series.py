"""Series → volume: group DICOM slices by SeriesInstanceUID, order them in space, check they form one volume.

Ordering and spacing
    Slices are ordered by their position projected on the slice normal ``n = row_cosine × column_cosine``
    (DICOM PS3.3 C.7.6.2.1.1: ImageOrientationPatient holds the row then the column direction cosines,
    ImagePositionPatient the centre of the first transmitted voxel, both in LPS mm). Never by
    InstanceNumber (free to restart or run backwards, PS3.3 C.7.6.1.1.1) and never by z alone (wrong
    for sagittal, coronal and oblique stacks). The slice spacing is the median step between consecutive
    projected positions; SliceThickness is the *thickness* of a slice, not the distance between slices,
    and is only used (after SpacingBetweenSlices) for a single-slice series. MONAI's ``PydicomReader``
    does both of the things avoided here, which is why this module exists.

Array and affine
    ``read_series`` gives ``(slices, rows, cols)`` float32 in modality units (HU for CT), slice 0 lowest
    along ``n``. ``SeriesPlan.affine`` maps (slice, row, col) indices to RAS mm as MONAI's own readers do
    (``affine_lps_to_ras=True``): the row index steps along the column cosine by PixelSpacing[0], the
    column index along the row cosine by PixelSpacing[1], the slice index along ``n`` by the slice
    spacing; the origin is the first slice's ImagePositionPatient; x and y are then negated (LPS → RAS).

Enhanced multi-frame (PS3.3 C.7.6.16)
    Enhanced CT/MR objects keep the geometry per frame in the Per-Frame Functional Groups
    (PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence), or in the Shared Functional
    Groups when it is the same for every frame. Each frame becomes one slice ``(path, frame index)`` and
    is ordered like any other slice. A frame whose FrameType (value 3) is LOCALIZER is dropped like a
    localizer instance. ``plan_series`` works on manifest rows, which do not hold per-frame geometry, so
    it reads the header of each multi-frame file of the series (the only file access it makes).

What is checked, and what is fatal
    Warnings (the plan is usable; ``SeriesPlan.dropped`` lists what was left out):

    - ``localizer_dropped``: ImageType (or an enhanced frame's FrameType) value 3 is LOCALIZER
      (PS3.3 C.8.2.1.1.1), dropped.
    - ``mixed_orientation`` (not fatal): a minority of slices whose orientation differs from the strict
      majority's by more than ``ORIENTATION_TOLERANCE`` (scouts without a LOCALIZER flag), dropped.
    - ``duplicate_positions`` (not fatal): slices at the same position along ``n`` (within
      ``DUPLICATE_TOLERANCE_MM``); one is kept — the smallest (SOPInstanceUID, frame), so the choice does
      not depend on file names — the others are dropped.
    - ``single_slice``: one slice only; its spacing comes from SpacingBetweenSlices, else
      SliceThickness, else 1 mm.
    - ``gantry_tilt``: positions drift across the slice plane by more than half a pixel over the stack
      (a tilted gantry); the affine still steps along ``n``, so the volume is sheared in patient space.

    Fatal (``read_series`` raises :class:`~medres.dicom.DicomReadError` with the kind in
    parentheses and the path of an offending file):

    - ``missing_geometry`` (missing_geometry): a slice without ImagePositionPatient,
      ImageOrientationPatient or pixel spacing — it cannot be placed in the volume.
    - ``mixed_orientation`` (inconsistent_series): no orientation holds a strict majority.
    - ``localizer_only`` (inconsistent_series): every slice is a localizer.
    - ``mixed_shape`` (inconsistent_series): Rows/Columns differ between the kept slices.
    - ``mixed_spacing`` (inconsistent_series): pixel spacing differs by more than ``SPACING_TOLERANCE``
      (relative), or a slice step differs from the median step by more than ``SPACING_TOLERANCE``
      without being a gap.
    - ``gap`` (inconsistent_series): a step larger than ``GAP_FACTOR`` × the median step (missing slices;
      a uniform affine would misplace everything after the gap).
    - ``duplicate_positions`` (inconsistent_series) when more than half of the positions are
      duplicated: that is several acquisitions (phases, echoes) sharing one series UID, and keeping one
      slice per position would splice them together.
    - ``mixed_frame_of_reference`` (inconsistent_series): FrameOfReferenceUID differs, so positions
      are not in one coordinate system.

Privacy: plans and the meta of ``read_series`` hold UIDs, paths and geometry only, never patient tags.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys

from medres.dicom.errors import DicomErrorKind, DicomReadError
from medres.dicom.reader import read_header, read_image
from medres.dicom.values import (
    PathLike,
    finite_floats,
    float_or_none,
    int_or_none,
    pixel_spacing,
    text_or_none,
)

__all__ = [
    "DUPLICATE_TOLERANCE_MM",
    "GAP_FACTOR",
    "ORIENTATION_TOLERANCE",
    "SERIES_HEADER_TAGS",
    "SPACING_TOLERANCE",
    "SeriesImage",
    "SeriesIssue",
    "SeriesPlan",
    "SeriesReader",
    "orientation_label",
    "plan_series",
    "plan_series_files",
    "read_series",
]


# Largest difference of any direction cosine for two slices to count as having the same orientation
# (0.01 ≈ 0.6°): absorbs the float noise scanners write, separates any real re-orientation (scouts).
ORIENTATION_TOLERANCE = 0.01
# Two slices closer than this along the normal are at the same position.
DUPLICATE_TOLERANCE_MM = 0.01
# A step this many times the median step means missing slices.
GAP_FACTOR = 1.5
# Relative tolerance on pixel spacing and on slice steps (positions are stored as decimal strings of at
# most 16 characters, PS3.5 6.2 "DS", so tiny differences are normal).
SPACING_TOLERANCE = 0.1

# Everything the planner reads from a header; nothing identifying.
SERIES_HEADER_TAGS: tuple[str, ...] = (
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "ImageType",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)

# Issue kinds that make a series unreadable map to the error kind read_series raises.
_ERROR_KIND = {"missing_geometry": DicomErrorKind.MISSING_GEOMETRY}


@dataclass(frozen=True)
class SeriesIssue:
    """Something found while assembling a series.

    Attributes:
        kind: ``duplicate_positions``, ``gap``, ``mixed_orientation``, ``mixed_spacing``, ``mixed_shape``,
            ``mixed_frame_of_reference``, ``localizer_dropped``, ``localizer_only``, ``missing_geometry``,
            ``single_slice`` or ``gantry_tilt`` (see the module docstring).
        message: one line, no patient data.
        fatal: the series cannot be read as a volume.
        path: an offending file, when one is to blame.
    """

    kind: str
    message: str
    fatal: bool
    path: str | None = None


@dataclass(frozen=True, eq=False)
class SeriesPlan:
    """How to assemble one series: which slices, in which order, with which geometry.

    Attributes:
        series_uid: SeriesInstanceUID.
        paths: one per slice, ordered by increasing position along the normal.
        frames: per slice, the frame index in a multi-frame file, or None for a single-frame file.
        positions: ``(n, 3)`` ImagePositionPatient per slice, LPS mm (NaN where missing).
        orientation: ``(6,)`` ImageOrientationPatient of the kept slices (row cosine, column cosine).
        slice_spacing: distance between slice centres along the normal, mm (median step).
        pixel_spacing: (row, column) spacing, mm.
        dropped: files (``path`` or ``path#frame``) left out: localizers, other orientations, duplicates.
        issues: everything found, fatal or not.
        study_uid: StudyInstanceUID, when known.
        modality: Modality, when known.
        shape: (Rows, Columns) of every slice, when known.
    """

    series_uid: str
    paths: tuple[str, ...]
    frames: tuple[int | None, ...]
    positions: np.ndarray
    orientation: np.ndarray
    slice_spacing: float
    pixel_spacing: tuple[float, float]
    dropped: tuple[str, ...]
    issues: tuple[SeriesIssue, ...]
    study_uid: str | None = None
    modality: str | None = None
    shape: tuple[int, int] | None = None

    @property
    def n_slices(self) -> int:
        """Number of slices in the volume."""
        return len(self.paths)

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal ``row_cosine × column_cosine`` (LPS)."""
        return _normal(self.orientation)

    @property
    def fatal_issues(self) -> tuple[SeriesIssue, ...]:
        """The issues that stop the series from being read."""
        return tuple(i for i in self.issues if i.fatal)

    @property
    def affine(self) -> np.ndarray:
        """4×4 map from (slice, row, column) indices to RAS mm (see the module docstring)."""
        row_cos, col_cos = self.orientation[:3], self.orientation[3:]
        lps = np.eye(4)
        lps[:3, 0] = self.normal * self.slice_spacing
        lps[:3, 1] = col_cos * self.pixel_spacing[0]
        lps[:3, 2] = row_cos * self.pixel_spacing[1]
        lps[:3, 3] = self.positions[0] if len(self.positions) else np.nan
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps

    @property
    def orientation_label(self) -> str | None:
        """``axial``, ``coronal`` or ``sagittal`` by the dominant axis of the normal; None without geometry."""
        return orientation_label(self.orientation)


def orientation_label(orientation: Sequence[float] | np.ndarray | None) -> str | None:
    """Name the plane of an ImageOrientationPatient by the dominant LPS axis of its normal.

    Args:
        orientation: the six direction cosines (row, then column).

    Returns:
        ``sagittal`` (normal mostly along x), ``coronal`` (y), ``axial`` (z), or None for missing or
        degenerate values.
    """
    if orientation is None or len(orientation) != 6:
        return None
    normal = np.cross(np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:], dtype=float))
    if not np.all(np.isfinite(normal)) or np.linalg.norm(normal) < 1e-6:
        return None
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def _normal(orientation: np.ndarray) -> np.ndarray:
    normal = np.cross(orientation[:3], orientation[3:])
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else normal


# ----------------------------------------------------------------------------------------------- slices


@dataclass
class _Slice:
    """One 2D slice: a single-frame file, or one frame of a multi-frame file."""

    path: str
    frame: int | None
    sop_uid: str
    position: np.ndarray | None = None
    orientation: np.ndarray | None = None
    spacing: tuple[float, float] | None = None
    shape: tuple[int, int] | None = None
    localizer: bool = False
    frame_of_reference: str | None = None
    thickness: float | None = None  # SpacingBetweenSlices, else SliceThickness (single-slice fallback)
    projection: float = field(default=np.nan)

    @property
    def name(self) -> str:
        return self.path if self.frame is None else f"{self.path}#{self.frame}"

    @property
    def sort_key(self) -> tuple[str, int]:
        # Tie-break on what is in the file, never on its name, so renamed files assemble the same way.
        return self.sop_uid, -1 if self.frame is None else self.frame


def _positive(value: Any) -> float | None:
    """A thickness or spacing: finite and above zero, else unknown."""
    out = float_or_none(value)
    return out if out is not None and out > 0 else None


def _is_localizer(image_type: str | None) -> bool:
    # ImageType value 3 is LOCALIZER for scouts (PS3.3 C.8.2.1.1.1); look at every value, as vendors
    # do not all keep to value 3.
    return image_type is not None and "LOCALIZER" in (v.strip().upper() for v in image_type.split("\\"))


def _shape(rows: Any, columns: Any) -> tuple[int, int] | None:
    r, c = int_or_none(rows), int_or_none(columns)
    return (r, c) if r is not None and c is not None else None


def _first_item(ds: pydicom.Dataset | None, keyword: str) -> pydicom.Dataset | None:
    if ds is None:
        return None
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _frame_value(groups: Sequence[pydicom.Dataset | None], sequence: str, keyword: str) -> Any:
    """A functional-group value: the per-frame group first, then the shared one (PS3.3 C.7.6.16)."""
    for group in groups:
        item = _first_item(group, sequence)
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def _frame_type(group: pydicom.Dataset | None) -> str | None:
    # CT/MR/... Image Frame Type Sequence (PS3.3 C.8.15.3.1, C.8.13.5.1): FrameType mirrors ImageType.
    if group is None:
        return None
    for element in group:
        if element.keyword.endswith("FrameTypeSequence") and element.value:
            return text_or_none(element.value[0].get("FrameType"))
    return None


def _slices_from_dataset(ds: pydicom.Dataset, path: str) -> list[_Slice]:
    """The slices of one header: one for a single-frame file, one per frame for a multi-frame one."""
    sop = text_or_none(ds.get("SOPInstanceUID")) or path
    image_type = text_or_none(ds.get("ImageType"))
    shape = _shape(ds.get("Rows"), ds.get("Columns"))
    frame_of_reference = text_or_none(ds.get("FrameOfReferenceUID"))
    thickness = _positive(ds.get("SpacingBetweenSlices")) or _positive(ds.get("SliceThickness"))
    n_frames = int_or_none(ds.get("NumberOfFrames")) or 1
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if n_frames == 1 and not per_frame:
        return [
            _Slice(
                path=path,
                frame=None,
                sop_uid=sop,
                position=finite_floats(ds.get("ImagePositionPatient"), 3),
                orientation=finite_floats(ds.get("ImageOrientationPatient"), 6),
                spacing=pixel_spacing(ds),
                shape=shape,
                localizer=_is_localizer(image_type),
                frame_of_reference=frame_of_reference,
                thickness=thickness,
            )
        ]
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    slices = []
    for f in range(n_frames):
        own = per_frame[f] if per_frame is not None and f < len(per_frame) else None
        groups = (own, shared)
        ps = finite_floats(_frame_value(groups, "PixelMeasuresSequence", "PixelSpacing"), 2)
        frame_thickness = _positive(_frame_value(groups, "PixelMeasuresSequence", "SpacingBetweenSlices")) or _positive(
            _frame_value(groups, "PixelMeasuresSequence", "SliceThickness")
        )
        slices.append(
            _Slice(
                path=path,
                frame=f,
                sop_uid=sop,
                # A multi-frame file without plane groups has no per-frame position (classic NM/US
                # multi-frame): the frames cannot be placed, which the planner reports.
                position=finite_floats(_frame_value(groups, "PlanePositionSequence", "ImagePositionPatient"), 3),
                orientation=finite_floats(
                    _frame_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
                )
                if own is not None or shared is not None
                else None,
                spacing=(float(ps[0]), float(ps[1])) if ps is not None else pixel_spacing(ds),
                shape=shape,
                localizer=_is_localizer(image_type) or _is_localizer(_frame_type(own) or _frame_type(shared)),
                frame_of_reference=frame_of_reference,
                thickness=frame_thickness or thickness,
            )
        )
    return slices


def _slices_from_row(row: dict[Any, Any], path: str) -> list[_Slice]:
    """The slice of one manifest row (single-frame instances)."""
    spacing_row, spacing_col = _positive(row.get("spacing_row")), _positive(row.get("spacing_col"))
    return [
        _Slice(
            path=path,
            frame=None,
            sop_uid=text_or_none(row.get("SOPInstanceUID")) or path,
            position=finite_floats(row.get("ImagePositionPatient"), 3),
            orientation=finite_floats(row.get("ImageOrientationPatient"), 6),
            spacing=(spacing_row, spacing_col) if spacing_row and spacing_col else None,
            shape=_shape(row.get("Rows"), row.get("Columns")),
            localizer=_is_localizer(text_or_none(row.get("ImageType"))),
            frame_of_reference=text_or_none(row.get("FrameOfReferenceUID")),
            thickness=_positive(row.get("SpacingBetweenSlices")) or _positive(row.get("SliceThickness")),
        )
    ]


# ---------------------------------------------------------------------------------------------- planning


def _majority_orientation(slices: list[_Slice]) -> tuple[np.ndarray, list[_Slice], list[_Slice]]:
    """The orientation shared (within tolerance) by the most slices, its slices, and the others."""
    orientations = np.stack([s.orientation for s in slices if s.orientation is not None])
    # Distinct orientations (a handful even for thousands of frames), then, for each, how many slices lie
    # within tolerance of it; the best-supported one is the reference.
    distinct, counts = np.unique(orientations, axis=0, return_counts=True)
    close = np.all(np.abs(distinct[:, None, :] - distinct[None, :, :]) <= ORIENTATION_TOLERANCE, axis=2)
    reference = distinct[int(np.argmax(close @ counts))]
    inside: list[_Slice] = []
    outside: list[_Slice] = []
    for s in slices:
        assert s.orientation is not None  # the caller filters slices without geometry
        (inside if np.max(np.abs(s.orientation - reference)) <= ORIENTATION_TOLERANCE else outside).append(s)
    # Normalise the two cosines: stored values are rounded decimals, the affine wants unit vectors.
    row_cos, col_cos = reference[:3], reference[3:]
    return np.concatenate([row_cos / np.linalg.norm(row_cos), col_cos / np.linalg.norm(col_cos)]), inside, outside


@dataclass
class _Planning:
    """What the planning steps share: the slices still in play, those dropped and the issues found so far."""

    series_uid: str
    slices: list[_Slice]
    dropped: list[_Slice] = field(default_factory=list)
    issues: list[SeriesIssue] = field(default_factory=list)

    def issue(self, kind: str, message: str, fatal: bool, path: str | None = None) -> None:
        self.issues.append(SeriesIssue(kind, message, fatal, path))

    def result(
        self,
        kept: list[_Slice],
        orientation: np.ndarray,
        slice_spacing: float,
        study_uid: str | None,
        modality: str | None,
    ) -> SeriesPlan:
        spacings = [s.spacing for s in kept if s.spacing is not None]
        shapes = [s.shape for s in kept if s.shape is not None]
        return SeriesPlan(
            series_uid=self.series_uid,
            paths=tuple(s.path for s in kept),
            frames=tuple(s.frame for s in kept),
            positions=np.array(
                [s.position if s.position is not None else np.full(3, np.nan) for s in kept], dtype=np.float64
            ).reshape(-1, 3),
            orientation=orientation,
            slice_spacing=float(slice_spacing),
            pixel_spacing=Counter(spacings).most_common(1)[0][0] if spacings else (np.nan, np.nan),
            dropped=tuple(sorted(s.name for s in self.dropped)),
            issues=tuple(self.issues),
            study_uid=study_uid,
            modality=modality,
            shape=Counter(shapes).most_common(1)[0][0] if shapes else None,
        )


def _plan(
    series_uid: str,
    slices: list[_Slice],
    study_uid: str | None = None,
    modality: str | None = None,
) -> SeriesPlan:
    """Order, check and describe the slices of one series: each step below adds its issues, fatal or not."""
    if not slices:
        raise ValueError(f"series {series_uid}: no slices")
    state = _Planning(series_uid, sorted(slices, key=lambda s: s.sort_key))
    nan6 = np.full(6, np.nan)
    # Localizers first: a scout may legitimately lack what the stack has, and is never part of it.
    if not _drop_localizers(state) or not _check_geometry(state):
        return state.result(state.slices, nan6, np.nan, study_uid, modality)
    orientation, placed = _keep_majority_orientation(state)
    if not placed:
        return state.result(state.slices, orientation, np.nan, study_uid, modality)
    _check_frame_of_reference(state)
    _check_shapes(state)
    common_spacing = _check_pixel_spacing(state)
    normal = _normal(orientation)
    kept = _order_and_deduplicate(state, normal)
    if len(kept) == 1:
        spacing = kept[0].thickness or 1.0
        state.issue("single_slice", f"one slice; slice spacing {spacing:g} mm from the header", False)
        return state.result(kept, orientation, spacing, study_uid, modality)
    median = _check_steps(state, kept)
    _check_gantry_tilt(state, kept, normal, common_spacing)
    return state.result(kept, orientation, median, study_uid, modality)


def _drop_localizers(state: _Planning) -> bool:
    """Drop scouts; False (a fatal issue) when nothing else is left."""
    localizers = [s for s in state.slices if s.localizer]
    if len(localizers) == len(state.slices):
        state.issue("localizer_only", f"all {len(state.slices)} slices are localizers", True, state.slices[0].path)
        return False
    if localizers:
        state.dropped.extend(localizers)
        state.slices = [s for s in state.slices if not s.localizer]
        state.issue("localizer_dropped", f"{len(localizers)} localizer slice(s) dropped", False)
    return True


def _check_geometry(state: _Planning) -> bool:
    """Every slice must be placeable: position, orientation and pixel spacing. False (fatal) otherwise."""
    lacking = [s for s in state.slices if s.position is None or s.orientation is None or s.spacing is None]
    if not lacking:
        return True
    missing = sorted(
        {
            name
            for s in lacking
            for name, absent in (
                ("ImagePositionPatient", s.position is None),
                ("ImageOrientationPatient", s.orientation is None),
                ("PixelSpacing", s.spacing is None),
            )
            if absent
        }
    )
    message = f"{len(lacking)} of {len(state.slices)} slices lack {'/'.join(missing)}"
    state.issue("missing_geometry", message, True, lacking[0].path)
    return False


def _keep_majority_orientation(state: _Planning) -> tuple[np.ndarray, bool]:
    """The series' orientation, slices of another one dropped; False (fatal) when none holds a majority."""
    orientation, slices, others = _majority_orientation(state.slices)
    if not others:
        return orientation, True
    if len(slices) <= len(others):
        message = f"no orientation holds a majority ({len(slices)} vs {len(others)} slices)"
        state.issue("mixed_orientation", message, True, others[0].path)
        state.slices = slices + others
        return orientation, False
    state.slices = slices
    state.dropped.extend(others)
    state.issue("mixed_orientation", f"{len(others)} slice(s) with another orientation dropped", False, others[0].path)
    return orientation, True


def _check_frame_of_reference(state: _Planning) -> None:
    frames_of_reference = {s.frame_of_reference for s in state.slices if s.frame_of_reference is not None}
    if len(frames_of_reference) > 1:
        message = f"{len(frames_of_reference)} FrameOfReferenceUIDs: positions are not comparable"
        state.issue("mixed_frame_of_reference", message, True, state.slices[0].path)


def _check_shapes(state: _Planning) -> None:
    shapes = Counter(s.shape for s in state.slices if s.shape is not None)
    if len(shapes) > 1:
        (common, _), *rest = shapes.most_common()
        odd = next(s for s in state.slices if s.shape is not None and s.shape != common)
        message = f"slice sizes differ: {common} and {[shape for shape, _ in rest]} (Rows, Columns)"
        state.issue("mixed_shape", message, True, odd.path)


def _check_pixel_spacing(state: _Planning) -> np.ndarray:
    """The most common in-plane spacing; a slice differing by more than the tolerance is fatal."""
    spacings = Counter(s.spacing for s in state.slices if s.spacing is not None)
    common_spacing = np.asarray(spacings.most_common(1)[0][0])
    for s in state.slices:
        if np.any(np.abs(np.asarray(s.spacing) - common_spacing) > SPACING_TOLERANCE * common_spacing):
            message = f"pixel spacing {s.spacing} differs from the series' {tuple(common_spacing.tolist())} mm"
            state.issue("mixed_spacing", message, True, s.path)
            break
    return common_spacing


def _order_and_deduplicate(state: _Planning, normal: np.ndarray) -> list[_Slice]:
    """Slices in order along the normal, one per position.

    Ties (duplicates) are broken in content order, so the kept slice does not depend on file names.
    """
    slices = state.slices
    for s in slices:
        assert s.position is not None
        s.projection = float(s.position @ normal)
    slices.sort(key=lambda s: (s.projection, s.sort_key))
    kept = [slices[0]]
    duplicates: list[_Slice] = []
    duplicated: set[int] = set()  # indices in kept of positions that had duplicates
    for s in slices[1:]:
        if s.projection - kept[-1].projection < DUPLICATE_TOLERANCE_MM:
            duplicated.add(len(kept) - 1)
            duplicates.append(s)
        else:
            kept.append(s)
    if duplicates:
        state.dropped.extend(duplicates)
        several = len(duplicated) > len(kept) / 2
        state.issue(
            "duplicate_positions",
            f"{len(duplicates)} slice(s) at an already-filled position dropped ({len(duplicated)} of "
            f"{len(kept)} positions)" + ("; looks like several acquisitions sharing one series UID" if several else ""),
            several,
            duplicates[0].path,
        )
    return kept


def _check_steps(state: _Planning, kept: list[_Slice]) -> float:
    """The median step between slice positions; gaps and uneven steps are fatal."""
    steps = np.diff([s.projection for s in kept])
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_FACTOR * median)
    if len(gaps):
        i = int(gaps[0])
        message = f"{len(gaps)} gap(s) in the slice positions: a step of {steps[i]:.3g} mm, median {median:.3g} mm"
        state.issue("gap", message, True, kept[i + 1].path)
    uneven = np.flatnonzero((np.abs(steps - median) > SPACING_TOLERANCE * median) & (steps <= GAP_FACTOR * median))
    if len(uneven):
        i = int(uneven[0])
        message = f"slice steps vary from {steps.min():.3g} to {steps.max():.3g} mm (median {median:.3g} mm)"
        state.issue("mixed_spacing", message, True, kept[i + 1].path)
    return median


def _check_gantry_tilt(state: _Planning, kept: list[_Slice], normal: np.ndarray, common_spacing: np.ndarray) -> None:
    """A stack running obliquely to the slice normal (PS3.3 C.7.6.2.1.1 allows it for CT) is sheared, not fatal."""
    travel = kept[-1].position - kept[0].position  # type: ignore[operator]
    drift = float(np.linalg.norm(travel - (travel @ normal) * normal))
    if drift > 0.5 * float(min(common_spacing)):
        message = f"slice positions drift {drift:.3g} mm across the slice plane (tilted gantry); volume is sheared"
        state.issue("gantry_tilt", message, False)


def _resolve(path: Any, root: PathLike | None) -> str:
    text = str(path)
    return text if root is None else str(Path(root) / text)


def plan_series(rows: pd.DataFrame, *, root: PathLike | None = None) -> SeriesPlan:
    """Plan one series from its manifest rows (header-only: no pixel data is read).

    Manifest columns that are absent or null are treated as missing from the header. Rows of
    multi-frame files (NumberOfFrames > 1) are expanded to one slice per frame by reading that file's
    header, since the manifest holds no per-frame geometry.

    Args:
        rows: manifest rows of one series (columns of ``medres.data.manifest.MANIFEST_SCHEMA``).
        root: archive root that manifest paths are relative to; the plan's paths are joined to it.

    Returns:
        The plan; check ``plan.fatal_issues`` before reading.

    Raises:
        ValueError: no rows, or rows of several series.
        DicomReadError: a multi-frame file's header cannot be read.
    """
    if len(rows) == 0:
        raise ValueError("plan_series: no rows")
    uids: list[Any] = list(rows["SeriesInstanceUID"].dropna().unique()) if "SeriesInstanceUID" in rows else []
    if len(uids) > 1:
        raise ValueError(f"plan_series: rows of {len(uids)} series given; pass one SeriesInstanceUID at a time")
    slices: list[_Slice] = []
    for row in rows.to_dict("records"):  # plain dicts: several times faster than iterrows
        path = _resolve(row["path"], root)
        if (int_or_none(row.get("NumberOfFrames")) or 1) > 1:
            slices.extend(_header_values(path, require_pixel_data=False)[0])
        else:
            slices.extend(_slices_from_row(row, path))
    first = rows.iloc[0]
    return _plan(
        str(uids[0]) if len(uids) else "",
        slices,
        study_uid=text_or_none(first.get("StudyInstanceUID")),
        modality=text_or_none(first.get("Modality")),
    )


def plan_series_files(paths: Sequence[PathLike]) -> list[SeriesPlan]:
    """Read the headers of ``paths`` (any order), group them by SeriesInstanceUID and plan each series.

    Args:
        paths: DICOM files.

    Returns:
        One plan per SeriesInstanceUID, sorted by UID.

    Raises:
        DicomReadError: a header cannot be read (not DICOM, truncated, ...).
    """
    groups: dict[str, list[_Slice]] = {}
    context: dict[str, tuple[str | None, str | None]] = {}
    for p in paths:
        path = str(p)
        file_slices, uid, study, modality = _header_values(path, require_pixel_data=True)
        groups.setdefault(uid, []).extend(file_slices)
        context.setdefault(uid, (study, modality))
    return [_plan(uid, groups[uid], *context[uid]) for uid in sorted(groups)]


def _header_values(path: str, require_pixel_data: bool) -> tuple[list[_Slice], str, str | None, str | None]:
    """A file's slices and its series UID, study UID and modality, header-only.

    pydicom converts a value when it is first used, so a damaged element (a flipped VR byte raises
    ``NotImplementedError``, issue 21) fails after the parse: it is the file's ``decode_error``, typed.
    """
    ds = read_header(path, specific_tags=SERIES_HEADER_TAGS, require_pixel_data=require_pixel_data)
    try:
        slices = _slices_from_dataset(ds, path)
        return (
            slices,
            text_or_none(ds.get("SeriesInstanceUID")) or "",
            text_or_none(ds.get("StudyInstanceUID")),
            text_or_none(ds.get("Modality")),
        )
    except DicomReadError:
        raise
    except Exception as exc:
        raise DicomReadError(DicomErrorKind.DECODE_ERROR, path, f"{type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------------- reading


def _raise_fatal(plan: SeriesPlan) -> None:
    fatal = plan.fatal_issues
    if fatal:
        issue = fatal[0]
        kind = _ERROR_KIND.get(issue.kind, DicomErrorKind.INCONSISTENT_SERIES)
        path = issue.path or (plan.paths[0] if plan.paths else plan.series_uid)
        others = f" (+{len(fatal) - 1} more)" if len(fatal) > 1 else ""
        raise DicomReadError(kind, path, f"series {plan.series_uid}: {issue.kind}: {issue.message}{others}")


def read_series(plan: SeriesPlan) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode the slices of a plan into one volume.

    Args:
        plan: from :func:`plan_series` or :func:`plan_series_files`.

    Returns:
        ``(volume, meta)``: volume ``(slices, rows, cols)`` float32 in modality units (HU for CT); meta
        ``SeriesInstanceUID``, ``StudyInstanceUID``, ``Modality``, ``spacing`` (slice, row, col) mm,
        ``affine`` (4×4 RAS), ``n_slices``, ``dropped`` (count). Nothing patient-identifying.

    Raises:
        DicomReadError: ``missing_geometry`` or ``inconsistent_series`` for a plan with fatal issues or
            slices that decode to different sizes; any decoding error of a slice.
    """
    _raise_fatal(plan)
    volume: np.ndarray | None = None
    first_meta: dict[str, Any] = {}
    decoded: dict[str, np.ndarray] = {}  # multi-frame files are decoded once for all their frames
    for k, (path, frame) in enumerate(zip(plan.paths, plan.frames, strict=True)):
        if frame is None:
            image, meta = read_image(path)
        else:
            if path not in decoded:
                decoded[path], meta = read_image(path)
            image = decoded[path]
            image = image[frame] if image.ndim == 3 else image
        if k == 0:
            first_meta = meta
            volume = np.empty((plan.n_slices, *image.shape), dtype=np.float32)
        assert volume is not None
        if image.shape != volume.shape[1:]:
            raise DicomReadError(
                DicomErrorKind.INCONSISTENT_SERIES,
                path,
                f"series {plan.series_uid}: slice of shape {image.shape} in a series of {volume.shape[1:]}",
            )
        volume[k] = image
    assert volume is not None  # plans always hold at least one slice
    meta_out: dict[str, Any] = {
        "SeriesInstanceUID": plan.series_uid,
        "StudyInstanceUID": plan.study_uid or first_meta.get("StudyInstanceUID"),
        "Modality": plan.modality or first_meta.get("Modality"),
        "spacing": (plan.slice_spacing, *plan.pixel_spacing),
        "affine": plan.affine,
        "n_slices": plan.n_slices,
        "dropped": len(plan.dropped),
    }
    return volume, meta_out


# ---------------------------------------------------------------------------------------- MONAI reader


class SeriesImage:
    """What :meth:`SeriesReader.read` returns: the volume, its meta and the plan it came from."""

    __slots__ = ("meta", "plan", "volume")

    def __init__(self, volume: np.ndarray, meta: dict[str, Any], plan: SeriesPlan) -> None:
        self.volume = volume
        self.meta = meta
        self.plan = plan


class SeriesReader(ImageReader):
    """MONAI ``ImageReader`` for one series given as its files, in any order.

    ``LoadImage(reader=SeriesReader(), ensure_channel_first=True)(paths)`` gives a ``(1, slices, rows,
    cols)`` MetaTensor whose affine is the RAS affine of :class:`SeriesPlan`, so MONAI's
    ``Orientation(d)``/``Spacing(d)`` work in patient space.
    """

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Accept ``.dcm``/``.dicom`` (any case) and extensionless files."""
        names = [filename] if isinstance(filename, str | os.PathLike) else list(filename)
        return bool(names) and all(Path(n).suffix.lower() in {".dcm", ".dicom", ""} for n in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> SeriesImage:
        """Plan and decode the series made of ``data``: the paths of one series, or the folder holding it.

        Raises:
            DicomReadError: ``inconsistent_series`` when the files hold several series, or any error of
                :func:`read_series`.
        """
        given = [data] if isinstance(data, str | os.PathLike) else list(data)
        # A folder stands for the files in it (not recursive; hidden files skipped), as in MONAI's readers.
        names = [
            child
            for name in given
            for child in (
                sorted(str(c) for c in Path(name).iterdir() if c.is_file() and not c.name.startswith("."))
                if Path(name).is_dir()
                else [str(name)]
            )
        ]
        if not names:
            raise DicomReadError(DicomErrorKind.NO_PIXEL_DATA, given[0] if given else "", "no files to read")
        plans = plan_series_files(names)
        if len(plans) > 1:
            raise DicomReadError(
                DicomErrorKind.INCONSISTENT_SERIES,
                names[0],
                f"{len(plans)} series among the {len(names)} files given; SeriesReader reads one series",
            )
        volume, meta = read_series(plans[0])
        return SeriesImage(volume, meta, plans[0])

    def get_data(self, img: SeriesImage) -> tuple[np.ndarray, dict[str, Any]]:
        """Return ``(volume, meta)`` with MONAI's meta keys (affine, spatial_shape, original_channel_dim)."""
        meta: dict[str, Any] = {k: ("none" if v is None else v) for k, v in img.meta.items()}
        meta["spacing"] = np.asarray(img.meta["spacing"], dtype=np.float64)  # arrays collate into tensors
        meta["affine"] = img.meta["affine"].copy()
        meta["original_affine"] = img.meta["affine"].copy()
        meta["spatial_shape"] = np.asarray(img.volume.shape)
        meta["original_channel_dim"] = float("nan")  # no channel axis: ensure_channel_first adds one
        meta[MetaKeys.SPACE] = SpaceKeys.RAS  # what MONAI's readers set for an LPS→RAS affine
        meta["filename_or_obj"] = img.plan.paths[0]
        return img.volume, meta
