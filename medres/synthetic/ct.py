"""A synthetic chest CT archive: axial series in Hounsfield units with lung masses and pleural effusions.

:func:`synth_ct` writes studies the way a CT export looks to every stage of medres: axial series of a few dozen
slices with real patient geometry (ImagePositionPatient/ImageOrientationPatient, tilted gantries, feet-first
numbering), scouts that sometimes share the axial series' UID, thicker second reconstructions, several transfer
syntaxes and signed or offset stored values, and a study-level ``labels.csv``. Same seed, same bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)
from scipy.special import expit

from medres.synthetic.writing import (
    OPERATORS,
    PHYSICIANS,
    RLE_PLUGIN,
    FloatImage,
    Patient,
    SynthSummary,
    draw_labels,
    draw_patient,
    ds_number,
    new_archive_folder,
    require_at_least,
    require_within,
)

CT_FINDINGS: tuple[str, ...] = ("mass", "effusion")

_CT_PREVALENCE = {"mass": 0.4, "effusion": 0.4}
_CT_UID_NAMESPACE = "medres.synthetic.ct"
_P_FOLLOW_UP = 0.15  # patients with a second CT study
_P_LOCALIZER = 0.6  # studies whose archive export kept the scout (topogram)
_P_LOCALIZER_MIXED = 0.15  # ... of which the scout carries the axial series' SeriesInstanceUID (a vendor quirk)
_P_THICK = 0.25  # studies with a second, thicker soft-tissue reconstruction
_P_OBLIQUE = 0.15  # gantry-tilted acquisitions: the whole image plane tilts about the left-right axis
_P_OVERLAP = 0.3  # reconstructions whose slices are thicker than their spacing
_P_SPACING_TAG = 0.5  # series that also write SpacingBetweenSlices (vendors differ)
_P_FEET_FIRST = 0.2  # InstanceNumber counts upwards from the feet instead of down from the head
# Cumulative thresholds: about 55 % explicit little endian, 15 % implicit, 15 % RLE, 15 % JPEG 2000 lossless.
_CT_SYNTAXES = ((0.55, ExplicitVRLittleEndian), (0.7, ImplicitVRLittleEndian), (0.85, RLELossless))
_LUNG_WINDOW = (-600.0, 1500.0)  # (centre, width) as radiologists read lung parenchyma
_SOFT_TISSUE_WINDOW = (40.0, 400.0)
_SCOUT_SIZE = 64
# Coordinates and HU fields of the CT renderer: float32 or float64, broadcast together.
_Field = NDArray[np.floating[Any]]


@dataclass(frozen=True)
class _CTDevice:
    manufacturer: str
    model: str
    signed: bool  # PixelRepresentation 1 storing HU directly, or 0 storing HU + 1024
    bits_stored: int
    outside_fov: float  # HU written outside the reconstruction circle (padding, not tissue)


# Fictitious vendors; the three stored-value conventions are the common ones in real archives.
_CT_DEVICES = (
    _CTDevice("Lumen Imaging", "LumenCT 64", signed=True, bits_stored=16, outside_fov=-2000.0),
    _CTDevice("Northwind Medical", "NW-CT Helix", signed=False, bits_stored=12, outside_fov=-1024.0),
    _CTDevice("Contoso Radiology", "Clarity CT 128", signed=True, bits_stored=12, outside_fov=-1024.0),
)


@dataclass(frozen=True)
class _Thorax:
    """A chest in body-frame millimetres: x to the patient's left, y posterior, z up; z = 0 at the lung apices."""

    half_width: float  # body outline (an ellipse) in x
    half_depth: float  # ... and in y
    fat: float  # subcutaneous fat thickness
    lung_x: float  # |x| of each lung's axis
    lung_y: float  # y of the lung axes (lungs sit posterior)
    lung_half_x: float
    lung_half_y: float
    lung_height: float  # apex to the costophrenic angles
    dome: float  # how far the diaphragm domes up into the lung base
    heart: tuple[float, float, float]  # centre
    heart_radii: tuple[float, float, float]
    lung_hu: float
    rib_spacing: float
    spine_y: float
    vessels: tuple[tuple[float, ...], ...]  # (x0, y0, z0, x1, y1, z1, radius): pulmonary vessels, hilum → periphery
    texture: NDArray[np.float64]  # (k, 5): wave vector (rad/mm), phase, amplitude (HU) of the parenchyma texture


@dataclass(frozen=True)
class _CTLesions:
    """Finding geometry, drawn for every study whether or not the finding is present."""

    masses: tuple[tuple[float, float, float, float, float], ...]  # (x, y, z, radius mm, HU)
    effusion_sides: tuple[int, ...]  # -1 right (patient), +1 left
    effusion_depth: float  # fraction of the lung's antero-posterior depth filled at the base
    effusion_hu: float


@dataclass(frozen=True)
class _CTSeries:
    """Where one series samples the patient (world = scanner LPS millimetres)."""

    number: int
    uid: str
    kind: str  # "axial" or "localizer"
    description: str
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    orientation: tuple[float, ...]  # ImageOrientationPatient: row cosine, column cosine
    positions: NDArray[np.float64]  # (slices, 3) ImagePositionPatient, ordered along the slice normal
    thickness: float
    spacing_tag: bool
    window: tuple[float, float]
    syntax: UID
    feet_first: bool


@dataclass(frozen=True)
class _CTStudy:
    number: int
    uid: str
    date: dt.date
    time: str
    accession: str
    device: _CTDevice
    referring: str
    operator: str
    frame_uid: str
    origin: tuple[float, float, float]  # world position of the body frame's origin
    labels: Mapping[str, str]
    truth: Mapping[str, bool]
    lesions: _CTLesions
    series: tuple[_CTSeries, ...]
    scout_series_uid: str | None  # the localizer's SeriesInstanceUID (the axial one when mixed in)


def synth_ct(out: Path, patients: int = 100, seed: int = 0, slices: int = 32, size: int = 48) -> SynthSummary:
    """Write a synthetic chest CT archive (CT Image Storage files plus ``labels.csv``) into ``out``.

    Each patient has one study (sometimes a follow-up second one); each study an axial series in
    Hounsfield units through the whole thorax and, in some studies, a scout (localizer) image and a
    thicker second reconstruction. Geometry is real: ImagePositionPatient/ImageOrientationPatient
    in the scanner's LPS frame, PixelSpacing, SliceThickness, some gantry-tilted (oblique) series,
    slice spacing that differs between studies, and file names in no particular slice order. Stored
    values go through RescaleSlope/Intercept (RescaleType HU): air -1000, fat -100, soft tissue 40,
    aerated lung about -850, bone 250-600. Findings: ``mass`` (one or two solid lung masses of
    30-48 mm) and ``effusion`` (dependent pleural fluid), both learnable at 8 mm voxels.

    Layout (ordinals, never identifiers): ``out/patient_0001/study_01/series_02/image_0017.dcm``
    where the file number is a shuffled slice number.

    Args:
        out: Folder to create. It may exist but must be empty, so no archive is ever overwritten.
        patients: Number of patients, at least 1.
        seed: Non-negative seed; the same seed writes byte-identical files.
        slices: Nominal slices of the main axial series (8-400); each study varies by about ±15 %.
        size: Rows and columns of each axial image (16-512).

    Returns:
        Counts and paths of what was written.

    Raises:
        ValueError: If an argument is out of range.
        FileExistsError: If ``out`` exists and is not an empty folder.
    """
    require_at_least(1, patients=patients)
    require_at_least(0, seed=seed)
    require_within(8, 400, slices=slices)
    require_within(16, 512, size=size)
    out = new_archive_folder(out)

    width = max(4, len(str(patients)))
    label_rows: list[list[str]] = []
    instances = series_count = 0
    for p in range(patients):
        rng = np.random.default_rng([seed, p, 3])  # keyed by (seed, patient): independent of loop order
        patient = draw_patient(rng, seed, p)
        thorax = _draw_thorax(rng)
        for study in _draw_ct_studies(rng, seed, patient, thorax, slices, size):
            label_rows.append([study.uid, *(study.labels[f] for f in CT_FINDINGS)])
            folder = out / f"patient_{p + 1:0{width}d}" / f"study_{study.number:02d}"
            for series in study.series:
                hu = _render_series(thorax, study, series, rng)  # (slices, rows, cols)
                # File names are a shuffled slice order: nothing downstream may rely on them.
                names = rng.permutation(len(hu)) + 1
                series_dir = folder / f"series_{series.number:02d}"
                series_dir.mkdir(parents=True, exist_ok=True)
                for k in range(len(hu)):
                    ds = _ct_dataset(patient, study, series, k, seed)
                    _set_ct_pixels(ds, hu[k], study.device, series.syntax)
                    ds.save_as(series_dir / f"image_{names[k]:04d}.dcm", enforce_file_format=True)
                instances += len(hu)
                series_count += 1
            if study.scout_series_uid is not None:
                scout = _scout_series(study, thorax)
                hu = _render_series(thorax, study, scout, rng)
                # A mixed-in scout lives beside the axial slices it was exported with.
                number = scout.number if scout.uid != study.series[0].uid else study.series[0].number
                series_dir = folder / f"series_{number:02d}"
                series_dir.mkdir(parents=True, exist_ok=True)
                ds = _ct_dataset(patient, study, scout, 0, seed)
                _set_ct_pixels(ds, hu[0], study.device, ExplicitVRLittleEndian)
                ds.save_as(series_dir / "image_0000.dcm", enforce_file_format=True)
                instances += 1
                series_count += scout.uid != study.series[0].uid

    labels_csv = out / "labels.csv"
    with labels_csv.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["StudyInstanceUID", *CT_FINDINGS])
        writer.writerows(label_rows)
    return SynthSummary(out, patients, len(label_rows), instances, labels_csv, series_count)


def render_ct(
    findings: Mapping[str, bool], *, seed: int = 0, slices: int = 32, size: int = 48, spacing: float = 7.5
) -> FloatImage:
    """Render one axial chest CT volume in HU without writing DICOM (for tests and previews).

    The anatomy, lesion geometry and noise depend only on ``seed``, so two calls that differ in one
    finding differ only where that finding is drawn.

    Args:
        findings: Finding name → present; missing names count as absent.
        seed: Seed of the patient and lesion draws.
        slices: Number of slices (feet → head).
        size: Rows and columns.
        spacing: Voxel size in mm (isotropic).

    Returns:
        ``(slices, rows, cols)`` float32 HU; rows run anterior → posterior, columns patient right → left.
    """
    unknown = set(findings) - set(CT_FINDINGS)
    if unknown:
        raise ValueError(f"findings has unknown names {sorted(unknown)}; expected {CT_FINDINGS}")
    rng = np.random.default_rng(seed)
    thorax = _draw_thorax(rng)
    lesions = _draw_ct_lesions(rng, thorax)
    truth = {f: bool(findings.get(f, False)) for f in CT_FINDINGS}
    top = 25.0  # first slice 25 mm above the apices, as a scan range is planned
    k = np.arange(slices)[:, None, None]
    r = np.arange(size)[None, :, None]
    c = np.arange(size)[None, None, :]
    x = (c - (size - 1) / 2) * spacing
    y = (r - (size - 1) / 2) * spacing
    z = top + (k - (slices - 1)) * spacing  # k = slices - 1 is the top slice
    hu = _ct_hu(thorax, lesions, truth, x, y, z, edge=0.5 * spacing)
    return (hu + rng.normal(0, 15.0, hu.shape)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# CT draws: body, lesions, studies and series geometry. All draws come from the patient rng.
# ---------------------------------------------------------------------------------------------


def _draw_thorax(rng: np.random.Generator) -> _Thorax:
    scale = rng.uniform(0.9, 1.08)
    half_width, half_depth = 160.0 * scale, rng.uniform(100.0, 120.0) * scale
    lung_x, lung_half_x = 0.47 * half_width, 0.37 * half_width
    lung_y, lung_half_y = 0.05 * half_depth, 0.78 * half_depth
    lung_height = rng.uniform(200.0, 240.0) * scale
    heart_radii = (rng.uniform(55, 65), rng.uniform(45, 55), rng.uniform(50, 60))
    # The heart sits anterior and to the patient's left, resting on the diaphragm.
    heart = (0.22 * half_width, -0.3 * half_depth, -lung_height + 0.8 * heart_radii[2])
    vessels = []
    for side in (-1, 1):
        hilum = np.array([side * (lung_x - 0.55 * lung_half_x), lung_y, -0.45 * lung_height])
        for _ in range(6):
            # Towards a random peripheral point of the lung; radius tapers with the branch order.
            angle, height = rng.uniform(0, 2 * np.pi), rng.uniform(-0.85, -0.1) * lung_height
            end = np.array(
                [
                    side * lung_x + 0.8 * lung_half_x * np.cos(angle),
                    lung_y + 0.8 * lung_half_y * np.sin(angle),
                    height,
                ]
            )
            vessels.append((*hilum, *end, rng.uniform(1.0, 2.0)))
    k = 12
    directions = rng.normal(size=(k, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wave = directions * (2 * np.pi / rng.uniform(15.0, 40.0, size=(k, 1)))
    texture = np.concatenate([wave, rng.uniform(0, 2 * np.pi, (k, 1)), rng.uniform(5.0, 12.0, (k, 1))], axis=1)
    return _Thorax(
        half_width=half_width,
        half_depth=half_depth,
        fat=rng.uniform(8.0, 22.0),
        lung_x=lung_x,
        lung_y=lung_y,
        lung_half_x=lung_half_x,
        lung_half_y=lung_half_y,
        lung_height=lung_height,
        dome=rng.uniform(30.0, 50.0),
        heart=heart,
        heart_radii=heart_radii,
        lung_hu=rng.uniform(-880.0, -820.0),
        rib_spacing=rng.uniform(24.0, 30.0),
        spine_y=0.8 * half_depth,
        vessels=tuple(vessels),
        texture=texture,
    )


def _draw_ct_lesions(rng: np.random.Generator, thorax: _Thorax) -> _CTLesions:
    masses = []
    for _ in range(2):
        side = int(rng.choice([-1, 1]))
        # Inside the anterior and middle lung above the heart, where neither fluid nor the heart hides it.
        angle = rng.uniform(np.pi, 2 * np.pi)  # y below the lung axis: anterior
        radial = rng.uniform(0.0, 0.4)
        x = side * thorax.lung_x + radial * thorax.lung_half_x * np.cos(angle)
        y = thorax.lung_y + radial * thorax.lung_half_y * np.sin(angle)
        z = -rng.uniform(0.2, 0.5) * thorax.lung_height
        masses.append((float(x), float(y), float(z), rng.uniform(15.0, 24.0), rng.uniform(0.0, 60.0)))
    count = int(rng.integers(1, 3))
    both = rng.random() < 0.4
    return _CTLesions(
        masses=tuple(masses[:count]),
        effusion_sides=(-1, 1) if both else (int(rng.choice([-1, 1])),),
        effusion_depth=rng.uniform(0.3, 0.5),
        effusion_hu=rng.uniform(2.0, 20.0),
    )


def _ct_uid(seed: int, *parts: object) -> UID:
    return generate_uid(entropy_srcs=[_CT_UID_NAMESPACE, str(seed), *map(str, parts)])


def _draw_ct_studies(
    rng: np.random.Generator, seed: int, patient: Patient, thorax: _Thorax, slices: int, size: int
) -> list[_CTStudy]:
    n_studies = 2 if rng.random() < _P_FOLLOW_UP else 1
    age_days = int(rng.integers(40 * 365, 85 * 365))
    date = min(max(patient.birth_date + dt.timedelta(days=age_days), dt.date(2014, 1, 1)), dt.date(2023, 6, 30))
    studies = []
    for s in range(1, n_studies + 1):
        if s > 1:
            date += dt.timedelta(days=int(rng.integers(60, 400)))
        device = _CT_DEVICES[int(rng.integers(len(_CT_DEVICES)))]
        labels, truth = draw_labels(rng, _CT_PREVALENCE)
        lesions = _draw_ct_lesions(rng, thorax)
        # Where the patient lies on the table: body centre off the isocentre, apices at some table position.
        origin = (float(rng.normal(0, 8)), float(rng.normal(0, 8)), float(rng.uniform(-200.0, 0.0)))
        uid = _ct_uid(seed, "study", patient.number, s)
        series = _axial_series(rng, seed, patient.number, s, thorax, origin, slices, size)
        scout_uid: str | None = None
        if rng.random() < _P_LOCALIZER:
            mixed = rng.random() < _P_LOCALIZER_MIXED
            scout_uid = series[0].uid if mixed else _ct_uid(seed, "series", patient.number, s, 1)
        studies.append(
            _CTStudy(
                number=s,
                uid=uid,
                date=date,
                time=f"{rng.integers(7, 20):02d}{rng.integers(60):02d}{rng.integers(60):02d}",
                accession=f"ACC{(48_271 * (3 * patient.number + s) + 10_000_019 * seed + 7) % 10**8:08d}",
                device=device,
                referring=str(rng.choice(PHYSICIANS)),
                operator=str(rng.choice(OPERATORS)),
                frame_uid=_ct_uid(seed, "frame", patient.number, s),
                origin=origin,
                labels=labels,
                truth=truth,
                lesions=lesions,
                series=series,
                scout_series_uid=scout_uid,
            )
        )
    return studies


def _draw_syntax(rng: np.random.Generator) -> UID:
    u = rng.random()
    return next((syntax for threshold, syntax in _CT_SYNTAXES if u < threshold), JPEG2000Lossless)


def _axial_series(
    rng: np.random.Generator,
    seed: int,
    patient: int,
    study: int,
    thorax: _Thorax,
    origin: tuple[float, float, float],
    slices: int,
    size: int,
) -> tuple[_CTSeries, ...]:
    """The main (lung kernel) reconstruction, and sometimes a thicker soft-tissue one of the same scan."""
    fov = rng.uniform(340.0, 400.0)
    pixel = round(fov / size, 3)
    coverage = thorax.lung_height + rng.uniform(40.0, 70.0)  # apices to below the domes
    n = max(8, round(slices * rng.uniform(0.85, 1.15)))
    spacing = round(coverage / n, 2)
    tilt = np.deg2rad(rng.uniform(4.0, 12.0) * rng.choice([-1, 1])) if rng.random() < _P_OBLIQUE else 0.0
    # Gantry tilt rotates the image plane about the left-right axis (PS3.3 C.7.6.2.1.1 geometry).
    row_cos = np.array([1.0, 0.0, 0.0])
    col_cos = np.array([0.0, np.cos(tilt), np.sin(tilt)])
    normal = np.cross(row_cos, col_cos)
    # The reconstruction centre is near the body centre; the scan runs from above the apices down.
    centre = np.array(origin) + np.array([rng.normal(0, 5), rng.normal(0, 5), 25.0 - coverage / 2 + 10.0])
    thick = rng.random() < _P_THICK
    overlap = rng.random() < _P_OVERLAP
    recons = [("LUNG", spacing, n, _LUNG_WINDOW)]
    if thick:
        recons.append(("SOFT TISSUE", round(2 * spacing, 2), max(4, n // 2), _SOFT_TISSUE_WINDOW))
    series = []
    for number, (kernel, step, count, window) in enumerate(recons, start=2):
        k = np.arange(count) - (count - 1) / 2
        corner = centre - (size - 1) / 2 * pixel * (row_cos + col_cos)
        positions = corner[None, :] + k[:, None] * step * normal[None, :]
        series.append(
            _CTSeries(
                number=number,
                uid=_ct_uid(seed, "series", patient, study, number),
                kind="axial",
                description=f"CHEST {step:g}MM {kernel}",
                rows=size,
                cols=size,
                pixel_spacing=(pixel, pixel),
                orientation=(*row_cos, *np.round(col_cos, 6)),
                positions=np.round(positions, 3),
                thickness=round(step * (1.25 if overlap else 1.0), 2),
                spacing_tag=bool(rng.random() < _P_SPACING_TAG),
                window=window,
                syntax=_draw_syntax(rng),
                feet_first=bool(rng.random() < _P_FEET_FIRST),
            )
        )
    return tuple(series)


def _scout_series(study: _CTStudy, thorax: _Thorax) -> _CTSeries:
    """A frontal projection radiograph planned before the axial scan (its ImageType says LOCALIZER)."""
    width = 2.6 * thorax.half_width
    height = thorax.lung_height + 160.0
    spacing = (round(height / _SCOUT_SIZE, 3), round(width / _SCOUT_SIZE, 3))
    ox, oy, oz = study.origin
    # Coronal plane: rows run to the patient's left, columns down towards the feet.
    corner = np.array([[ox - width / 2, oy, oz + 60.0]])
    return _CTSeries(
        number=1,
        uid=study.scout_series_uid or "",
        kind="localizer",
        description="TOPOGRAM",
        rows=_SCOUT_SIZE,
        cols=_SCOUT_SIZE,
        pixel_spacing=spacing,
        orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
        positions=np.round(corner, 3),
        thickness=0.0,
        spacing_tag=False,
        window=(-500.0, 1000.0),
        syntax=ExplicitVRLittleEndian,
        feet_first=False,
    )


# ---------------------------------------------------------------------------------------------
# CT rendering: HU as a function of body-frame position (mm), sampled at each series' voxels.
# ---------------------------------------------------------------------------------------------


def _render_series(thorax: _Thorax, study: _CTStudy, series: _CTSeries, rng: np.random.Generator) -> FloatImage:
    """HU of every pixel of ``series``, (slices, rows, cols), with scanner noise and the circular field of view."""
    row_cos = np.array(series.orientation[:3])
    col_cos = np.array(series.orientation[3:])
    r = np.arange(series.rows, dtype=np.float64)[:, None, None] * series.pixel_spacing[0]
    c = np.arange(series.cols, dtype=np.float64)[None, :, None] * series.pixel_spacing[1]
    plane = r * col_cos + c * row_cos  # (rows, cols, 3): PS3.3 C.7.6.2.1.1, i along the row, j down the column
    if series.kind == "localizer":
        # A projection: the mean HU along anterior-posterior rays through the body.
        depths = np.linspace(-1.2 * thorax.half_depth, 1.2 * thorax.half_depth, 24)
        points = series.positions[0] + plane[None] + depths[:, None, None, None] * np.array([0.0, 1.0, 0.0])
        edge = 0.5 * max(series.pixel_spacing)
    else:
        points = series.positions[:, None, None, :] + plane[None]
        edge = 0.5 * max(*series.pixel_spacing, series.thickness)
    local = (points - np.array(study.origin)).astype(np.float32)
    hu = _ct_hu(thorax, study.lesions, study.truth, local[..., 0], local[..., 1], local[..., 2], edge)
    if series.kind == "localizer":
        return hu.mean(axis=0, keepdims=True).astype(np.float32)
    hu = (hu + rng.normal(0, rng.uniform(10.0, 25.0), hu.shape)).astype(np.float32)
    # Outside the reconstruction circle the scanner writes padding, not tissue.
    half = (np.array([series.rows, series.cols]) - 1) / 2
    rr, cc = np.ogrid[: series.rows, : series.cols]
    outside = (rr - half[0]) ** 2 + (cc - half[1]) ** 2 > (min(series.rows, series.cols) / 2) ** 2
    hu[:, outside] = study.device.outside_fov
    return hu.astype(np.float32)


def _soft(distance: _Field, edge: float) -> _Field:
    """Soft inside-indicator of a signed distance (positive inside), about ``edge`` mm wide: partial volume."""
    return expit(distance / edge).astype(np.float32)


def _segment_distance(x: _Field, y: _Field, z: _Field, segment: Sequence[float]) -> _Field:
    x0, y0, z0, x1, y1, z1 = segment[:6]
    d = np.array([x1 - x0, y1 - y0, z1 - z0])
    t = np.clip(((x - x0) * d[0] + (y - y0) * d[1] + (z - z0) * d[2]) / float(d @ d), 0, 1)
    return np.sqrt((x - x0 - t * d[0]) ** 2 + (y - y0 - t * d[1]) ** 2 + (z - z0 - t * d[2]) ** 2)


def _ct_hu(
    thorax: _Thorax,
    lesions: _CTLesions,
    truth: Mapping[str, bool],
    x: _Field,
    y: _Field,
    z: _Field,
    edge: float,
) -> FloatImage:
    """HU at body-frame points (mm; x, y, z broadcast together), before noise."""
    a, b = thorax.half_width, thorax.half_depth
    r_body = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    body = _soft((1 - r_body) * b, edge)
    muscle = _soft((1 - np.sqrt((x / (a - thorax.fat)) ** 2 + (y / (b - thorax.fat)) ** 2)) * (b - thorax.fat), edge)
    hu = -1000.0 + 900.0 * body + 140.0 * muscle  # air, subcutaneous fat (-100), muscle and organs (40)

    # Lungs: an elliptic cylinder under an ellipsoidal apex, closed below by a domed diaphragm.
    depth = -z  # mm below the apices
    cap = 0.35 * thorax.lung_height
    reach = np.sqrt(np.clip(1 - ((cap - np.minimum(depth, cap)) / cap) ** 2, 0, 1))
    hx, hy, hz = thorax.heart
    rx, ry, rz = thorax.heart_radii
    heart = _soft((1 - np.sqrt(((x - hx) / rx) ** 2 + ((y - hy) / ry) ** 2 + ((z - hz) / rz) ** 2)) * ry, edge)
    lungs = []
    for side in (-1, 1):
        r = np.sqrt(
            ((x - side * thorax.lung_x) / thorax.lung_half_x) ** 2 + ((y - thorax.lung_y) / thorax.lung_half_y) ** 2
        )
        base = thorax.lung_height - thorax.dome * (1 - np.minimum(r**2, 1))
        lungs.append(_soft((reach - r) * thorax.lung_half_y, edge) * _soft(base - depth, edge) * (1 - heart))
    aerated = lungs[0] + lungs[1]
    wave = thorax.texture
    texture = sum(
        (w[4] * np.cos(w[0] * x + w[1] * y + w[2] * z + w[3]) for w in wave), start=np.zeros((1, 1, 1), np.float32)
    )
    vessels = np.zeros((1, 1, 1), np.float32)
    for vessel in thorax.vessels:
        # A tube thinner than a voxel, blurred by a Gaussian of the voxel's size: its peak falls as r² / (r² + edge²),
        # so thin vessels fade at coarse spacing as they do on a thick-slice CT, instead of looking like masses.
        width2 = vessel[6] ** 2 + edge**2
        profile = np.exp(-(_segment_distance(x, y, z, vessel) ** 2) / width2)
        vessels = np.maximum(vessels, vessel[6] ** 2 / width2 * profile)
    parenchyma = thorax.lung_hu + texture + vessels * (40.0 - thorax.lung_hu)
    hu = hu * (1 - aerated) + aerated * parenchyma
    # The trachea: an air column down the midline to the carina.
    trachea = _soft(9.0 - np.sqrt(x**2 + (y - thorax.lung_y + 20.0) ** 2), edge) * _soft(
        0.3 * thorax.lung_height - depth, edge
    )
    hu = hu * (1 - trachea) - 1000.0 * trachea

    if truth.get("effusion", False):
        for side in lesions.effusion_sides:
            lung = lungs[int(side > 0)]
            # Supine: fluid pools posteriorly (large y), deepest at the base.
            fill = lesions.effusion_depth * (0.5 + 0.5 * np.clip(depth / thorax.lung_height, 0, 1))
            surface = thorax.lung_y + thorax.lung_half_y * (1 - 2 * fill)
            fluid = lung * _soft(y - surface, edge)
            hu = hu * (1 - fluid) + fluid * lesions.effusion_hu
    if truth.get("mass", False):
        for mx, my, mz, radius, mass_hu in lesions.masses:
            mass = _soft(radius - np.sqrt((x - mx) ** 2 + (y - my) ** 2 + (z - mz) ** 2), edge)
            hu = hu * (1 - mass) + mass * mass_hu

    # Bones last: vertebral bodies with discs every ~30 mm, ribs descending anteriorly, the sternum.
    discs = (0.5 + 0.5 * np.cos(2 * np.pi * z / 30.0)) ** 8
    vertebra = _soft(16.0 - np.sqrt(x**2 + (y - thorax.spine_y) ** 2), edge)
    hu = hu * (1 - vertebra) + vertebra * (300.0 - 220.0 * discs)
    ring = _soft((r_body - 0.86) * b, edge) * _soft((0.93 - r_body) * b, edge)
    phase = (z + 0.25 * y) / thorax.rib_spacing
    front = _soft(25.0 - np.abs(x), edge) * _soft(-y, edge)  # costal cartilage: no bone at the front
    ribs = ring * (0.5 + 0.5 * np.cos(2 * np.pi * phase)) ** 6 * (1 - front)
    hu = hu * (1 - ribs) + ribs * 600.0
    sternum = _soft(15.0 - np.abs(x), edge) * _soft(6.0 - np.abs(y + b - thorax.fat - 8.0), edge)
    hu = hu * (1 - sternum) + sternum * 400.0
    return hu.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# CT DICOM: header (CT Image IOD, PS3.3 A.3) and stored values.
# ---------------------------------------------------------------------------------------------


def _ct_dataset(patient: Patient, study: _CTStudy, series: _CTSeries, k: int, seed: int) -> Dataset:
    """The header of slice ``k`` (ordered along the slice normal) of ``series``."""
    count = len(series.positions)
    sop_uid = _ct_uid(seed, "instance", patient.number, study.number, series.number, k)
    start = dt.datetime.combine(study.date, dt.time(int(study.time[:2]), int(study.time[2:4]), int(study.time[4:])))
    acquired = start + dt.timedelta(minutes=series.number)
    age = (study.date - patient.birth_date).days // 365

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # compressed later by _set_ct_pixels

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    if series.kind == "localizer":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study.date.strftime("%Y%m%d")
    ds.StudyTime = study.time
    ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = acquired.strftime("%H%M%S")
    ds.AccessionNumber = study.accession
    ds.Modality = "CT"
    ds.Manufacturer = study.device.manufacturer
    ds.ManufacturerModelName = study.device.model
    ds.InstitutionName = patient.institution
    ds.ReferringPhysicianName = study.referring
    ds.OperatorsName = study.operator
    ds.StudyDescription = "CT CHEST WITHOUT CONTRAST"
    ds.SeriesDescription = series.description
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{age:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.KVP = "120"
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = f"{study.number}"
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    # Head-first scans number slices from the top down; some exports count from the feet.
    ds.InstanceNumber = k + 1 if series.feet_first else count - k
    ds.FrameOfReferenceUID = study.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [ds_number(float(v)) for v in series.positions[k]]
    ds.ImageOrientationPatient = [ds_number(float(v)) for v in series.orientation]
    ds.PixelSpacing = [ds_number(v) for v in series.pixel_spacing]
    if series.kind == "axial":
        normal = np.cross(series.orientation[:3], series.orientation[3:])
        ds.SliceLocation = ds_number(round(float(series.positions[k] @ normal), 3))
        ds.SliceThickness = ds_number(series.thickness)
        if series.spacing_tag:
            ds.SpacingBetweenSlices = ds_number(float(np.linalg.norm(series.positions[1] - series.positions[0])))
        ds.ConvolutionKernel = series.description.split("MM ")[-1]
    ds.WindowCenter = ds_number(series.window[0])
    ds.WindowWidth = ds_number(series.window[1])
    ds.BurnedInAnnotation = "NO"
    return ds


def _set_ct_pixels(ds: Dataset, hu: FloatImage, device: _CTDevice, syntax: UID) -> None:
    """Store HU through the modality LUT (PS3.3 C.11.1: HU = stored · slope + intercept) and encode."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape
    ds.BitsAllocated = 16
    ds.BitsStored = device.bits_stored
    ds.HighBit = device.bits_stored - 1
    ds.PixelRepresentation = 1 if device.signed else 0
    intercept = 0.0 if device.signed else -1024.0
    ds.RescaleIntercept = ds_number(intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    if device.signed:
        low, high = -(2 ** (device.bits_stored - 1)), 2 ** (device.bits_stored - 1) - 1
        stored = np.clip(np.round(hu - intercept), low, high).astype(np.int16)
    else:
        stored = np.clip(np.round(hu - intercept), 0, 2**device.bits_stored - 1).astype(np.uint16)
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    if syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif syntax == RLELossless:
        ds.compress(RLELossless, stored, encoding_plugin=RLE_PLUGIN, generate_instance_uid=False)
    elif syntax == JPEG2000Lossless and min(hu.shape) < 32:
        # OpenJPEG's default six resolution levels need at least 32 pixels a side; tiny test images use RLE.
        ds.compress(RLELossless, stored, encoding_plugin=RLE_PLUGIN, generate_instance_uid=False)
    elif syntax == JPEG2000Lossless:
        ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg", generate_instance_uid=False)
