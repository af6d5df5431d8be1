"""A synthetic CT archive in the layout of LUNA16's DICOM source (LIDC-IDRI), with its nodule annotations.

The release, as it ships (the scans as DICOM, from TCIA's LIDC-IDRI collection; LUNA16's own label files)::

    LIDC-IDRI-NNNN/<StudyInstanceUID>/<SeriesInstanceUID>/NNNNNN.dcm   one axial CT series per scan
    annotations.csv                          seriesuid,coordX,coordY,coordZ,diameter_mm  (one row per nodule)
    evaluationScript/annotations/seriesuids.csv   every scan of the release, one seriesuid a line, no header

``annotations.csv`` lists nodules of at least 3 mm that readers agreed on, by centre and diameter. Its
coordinates are ITK *physical* coordinates in millimetres, as SimpleITK reports them for the converted
``.mhd`` volumes: ITK keeps DICOM's patient frame, so they are DICOM patient LPS (x to the patient's left,
y posterior, z up), the frame of ImagePositionPatient. A scan without a row has no annotated nodule; LUNA16
knows it is a scan of the release (a negative, not an unlabelled one) from ``seriesuids.csv``, the list its
evaluation script (``noduleCADEvaluationLUNA16.py``) scores every CAD system on. ``candidates.csv`` also
names every scan but holds candidate points, most of them false positives, so it is not a list of reads.

The scans here are small crops of the chest model of :mod:`medres.synthetic.ct`, centred on the right lung,
written by its CT header and pixel writers (signed or offset HU, several transfer syntaxes), with bright
spherical solid nodules (3-12 mm) at the annotated centres. ``orientation`` writes coronal or sagittal
acquisitions instead of axial ones, for tests of geometry handling (the release is axial).
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydicom.uid import UID, generate_uid

from medres.synthetic.ct import (
    _CT_DEVICES,
    _ct_dataset,
    _CTLesions,
    _CTSeries,
    _CTStudy,
    _draw_syntax,
    _draw_thorax,
    _render_series,
    _set_ct_pixels,
    _soft,
    _Thorax,
)
from medres.synthetic.writing import Patient, new_archive_folder, require_at_least, require_within

LUNA_ANNOTATIONS = "annotations.csv"
LUNA_SERIESUIDS = "evaluationScript/annotations/seriesuids.csv"
LUNA_HEADER = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
# LIDC-IDRI's UID root (TCIA's), so the synthetic UIDs look like the release's.
_LIDC_UID_ROOT = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
_NODULE_HU = (20.0, 80.0)  # solid nodules: soft-tissue density, bright against aerated lung (about -850 HU)
# (row cosine, column cosine) of each acquisition plane, LPS; slices then step along row × column.
_PLANES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}


@dataclass(frozen=True)
class LunaNodule:
    """One annotated nodule.

    Attributes:
        seriesuid: The scan's SeriesInstanceUID.
        centre: (x, y, z) in patient LPS mm (LUNA16's coordX, coordY, coordZ).
        diameter_mm: Its diameter.
    """

    seriesuid: str
    centre: tuple[float, float, float]
    diameter_mm: float


@dataclass(frozen=True)
class LunaSummary:
    """What :func:`synth_luna16` wrote.

    Attributes:
        root: The archive folder.
        scans: Series written (one per case).
        negatives: Scans without a nodule.
        nodules: The true nodules, in ``annotations.csv`` order.
        seriesuids: Every scan's SeriesInstanceUID, in ``seriesuids.csv`` order.
        annotations_csv: Path of ``annotations.csv``.
        seriesuids_csv: Path of ``seriesuids.csv``.
    """

    root: Path
    scans: int
    negatives: int
    nodules: tuple[LunaNodule, ...]
    seriesuids: tuple[str, ...]
    annotations_csv: Path
    seriesuids_csv: Path


def synth_luna16(
    out: Path,
    scans: int = 12,
    seed: int = 0,
    size: int = 48,
    slices: int = 32,
    negative_fraction: float = 0.25,
    orientation: Literal["axial", "coronal", "sagittal"] = "axial",
) -> LunaSummary:
    """Write a synthetic archive in LUNA16's DICOM-source layout with ``annotations.csv`` and ``seriesuids.csv``.

    Each case is one CT series of ``size`` x ``size`` pixels (1.5-2.0 mm) by ``slices`` slices (2.0-2.5 mm
    apart: anisotropic voxels, as thin-pixel thick-slice CT is), with one to three nodules of 3-12 mm,
    or none for about ``negative_fraction`` of the cases.

    Args:
        out: Folder to create; it may exist but must be empty.
        scans: Number of cases (one series each), at least 1.
        seed: Non-negative seed; the same seed writes byte-identical files.
        size: Rows = Columns (16-512).
        slices: Slices per series (8-400).
        negative_fraction: Fraction of scans without a nodule, in [0, 1].
        orientation: Acquisition plane of every series (the release is axial).

    Returns:
        The true nodules and what was written.

    Raises:
        ValueError: If an argument is out of range.
        FileExistsError: If ``out`` exists and is not an empty folder.
    """
    require_at_least(1, scans=scans)
    require_at_least(0, seed=seed)
    require_within(16, 512, size=size)
    require_within(8, 400, slices=slices)
    if not 0.0 <= negative_fraction <= 1.0:
        raise ValueError(f"negative_fraction must be in [0, 1], got {negative_fraction}")
    if orientation not in _PLANES:
        raise ValueError(f"orientation must be one of {sorted(_PLANES)}, got {orientation!r}")
    out = new_archive_folder(out)

    nodules: list[LunaNodule] = []
    uids: list[str] = []
    negatives = 0
    for case in range(1, scans + 1):
        rng = np.random.default_rng([seed, case, 16])  # keyed by (seed, case): independent of loop order
        study, series, thorax = _draw_scan(rng, seed, case, size, slices, orientation)
        centres = _draw_nodules(rng, series, negative_fraction)
        negatives += not centres
        hu = _render_series(thorax, study, series, rng)
        points = _voxel_points(series)
        for centre, diameter, nodule_hu in centres:
            distance = np.sqrt(((points - np.array(centre)) ** 2).sum(axis=-1))
            # A sharp edge (a quarter of the finest voxel): solid nodules are well defined on CT.
            inside = _soft(diameter / 2 - distance, 0.25 * min(series.pixel_spacing))
            hu = (hu * (1 - inside) + inside * (nodule_hu + rng.normal(0, 10.0, hu.shape))).astype(np.float32)
            nodules.append(LunaNodule(series.uid, centre, diameter))
        uids.append(series.uid)
        patient = Patient(case, f"LIDC-IDRI-{case:04d}", f"LIDC-IDRI-{case:04d}", dt.date(1901, 1, 1), "", "")
        folder = out / patient.patient_id / study.uid / series.uid
        folder.mkdir(parents=True)
        for k in range(len(hu)):
            ds = _ct_dataset(patient, study, series, k, seed)
            _set_ct_pixels(ds, hu[k], study.device, series.syntax)
            # LIDC-IDRI's files are numbered by InstanceNumber, six digits.
            ds.save_as(folder / f"{int(ds.InstanceNumber):06d}.dcm", enforce_file_format=True)

    annotations_csv = out / LUNA_ANNOTATIONS
    with annotations_csv.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(LUNA_HEADER)
        for n in nodules:
            writer.writerow([n.seriesuid, *(f"{v:.9g}" for v in n.centre), f"{n.diameter_mm:.9g}"])
    seriesuids_csv = out / LUNA_SERIESUIDS
    seriesuids_csv.parent.mkdir(parents=True)
    seriesuids_csv.write_text("".join(f"{uid}\n" for uid in uids))
    return LunaSummary(out, scans, negatives, tuple(nodules), tuple(uids), annotations_csv, seriesuids_csv)


def _uid(seed: int, *parts: object) -> UID:
    return generate_uid(prefix=_LIDC_UID_ROOT, entropy_srcs=["medres.synthetic.luna16", str(seed), *map(str, parts)])


def _draw_scan(
    rng: np.random.Generator, seed: int, case: int, size: int, slices: int, orientation: str
) -> tuple[_CTStudy, _CTSeries, _Thorax]:
    """The study, its one series and the chest it images; the series is a box about the right lung's middle."""
    thorax = _draw_thorax(rng)
    pixel = round(float(rng.uniform(1.5, 2.0)), 3)
    step = round(float(rng.uniform(2.0, 2.5)), 3)
    # Where the chest lies on the table: the body frame's origin (lung apices) in scanner LPS mm.
    origin = (float(rng.normal(0, 8)), float(rng.normal(-20, 8)), float(rng.uniform(-120.0, -40.0)))
    row_cos, col_cos = (np.array(v) for v in _PLANES[orientation])
    normal = np.cross(row_cos, col_cos)
    # The right lung (patient's right = -x in LPS) half way down: mostly aerated lung, where nodules show.
    centre = np.array(origin) + np.array([-thorax.lung_x, thorax.lung_y, -0.5 * thorax.lung_height])
    k = np.arange(slices) - (slices - 1) / 2
    corner = centre - (size - 1) / 2 * pixel * (row_cos + col_cos)
    positions = corner[None, :] + k[:, None] * step * normal[None, :]
    series = _CTSeries(
        number=3000 + case,
        uid=_uid(seed, "series", case),
        kind="axial",
        description=f"CHEST {step:g}MM LUNG",
        rows=size,
        cols=size,
        pixel_spacing=(pixel, pixel),
        orientation=(*row_cos, *col_cos),
        positions=np.round(positions, 3),
        thickness=step,
        spacing_tag=False,
        window=(-600.0, 1500.0),
        syntax=_draw_syntax(rng),
        feet_first=bool(rng.random() < 0.5),
    )
    study = _CTStudy(
        number=1,
        uid=_uid(seed, "study", case),
        date=dt.date(2000, 1, 1),
        time="000000",
        accession="",
        device=_CT_DEVICES[int(rng.integers(len(_CT_DEVICES)))],
        referring="",
        operator="",
        frame_uid=_uid(seed, "frame", case),
        origin=origin,
        labels={},
        truth={},  # the chest model's own masses and effusions stay out: nodules are drawn on top
        lesions=_CTLesions(masses=(), effusion_sides=(), effusion_depth=0.0, effusion_hu=0.0),
        series=(series,),
        scout_series_uid=None,
    )
    return study, series, thorax


def _voxel_points(series: _CTSeries) -> NDArray[np.float64]:
    """LPS mm of every voxel centre, (slices, rows, cols, 3), as PS3.3 C.7.6.2.1.1 places them."""
    row_cos = np.array(series.orientation[:3])
    col_cos = np.array(series.orientation[3:])
    r = np.arange(series.rows, dtype=np.float64)[:, None, None] * series.pixel_spacing[0]
    c = np.arange(series.cols, dtype=np.float64)[None, :, None] * series.pixel_spacing[1]
    plane = r * col_cos + c * row_cos
    return series.positions[:, None, None, :] + plane[None]


def _draw_nodules(
    rng: np.random.Generator, series: _CTSeries, negative_fraction: float
) -> list[tuple[tuple[float, float, float], float, float]]:
    """``(centre LPS mm, diameter mm, HU)`` of each nodule: inside the scan's central region, apart from each other."""
    if rng.random() < negative_fraction:
        return []
    row_cos = np.array(series.orientation[:3])
    col_cos = np.array(series.orientation[3:])
    normal = np.cross(row_cos, col_cos)
    step = float(np.linalg.norm(series.positions[1] - series.positions[0]))
    extent = np.array([series.cols * series.pixel_spacing[1], series.rows * series.pixel_spacing[0]])
    depth = len(series.positions) * step
    first = series.positions[0]
    found: list[tuple[tuple[float, float, float], float, float]] = []
    for _ in range(int(rng.integers(1, 4))):
        diameter = round(float(rng.uniform(3.0, 12.0)), 2)
        # Central 60 % of the field along each axis: inside the lung and the circular field of view.
        u, v, w = rng.uniform(0.2, 0.8, 3)
        centre = first + u * extent[0] * row_cos + v * extent[1] * col_cos + w * depth * normal
        if any(np.linalg.norm(centre - np.array(c)) < (diameter + d) / 2 + 4.0 for c, d, _ in found):
            continue  # touching nodules would read as one: keep them apart
        x, y, z = (round(float(v), 3) for v in centre)
        found.append(((x, y, z), diameter, float(rng.uniform(*_NODULE_HU))))
    return found
