"""A synthetic chest X-ray archive with four learnable findings, for tests, demos and CI without patient data.

:func:`synth_chest_xray` writes a chest X-ray archive that looks, to every stage of medres, like an
export from a hospital PACS: CR and DX instances from several made-up devices, MONOCHROME1 and
MONOCHROME2, 12/14/16-bit stored values behind a modality LUT, uncompressed, RLE and JPEG 2000
transfer syntaxes, images of slightly different sizes, realistic (invented) patient identifiers
inside the files only, and a study-level ``labels.csv`` with unknown and uncertain cells.

Every image is drawn from a small parametric chest model (body outline, two lung fields, heart,
mediastinum, spine, ribs, clavicles, lung markings) plus four findings that stay visible after
downsampling to 96-128 pixels and percentile normalisation, so a small ResNet can learn them in
minutes on a CPU. Everything is derived from ``seed``: the same seed gives byte-identical files.

Layout (folder and file names are ordinals, never identifiers)::

    out/labels.csv
    out/patient_0001/study_01/series_01/image_0001.dcm   frontal (PA, sometimes AP)
    out/patient_0001/study_01/series_02/image_0001.dcm   lateral (LL), about half the studies
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)
from scipy.ndimage import gaussian_filter
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
)

CHEST_XRAY_FINDINGS: tuple[str, ...] = ("nodule", "effusion", "cardiomegaly", "pneumothorax")

# Study-level prevalence of each finding, and how often a label cell hides the truth.
_PREVALENCE = {"nodule": 0.36, "effusion": 0.37, "cardiomegaly": 0.38, "pneumothorax": 0.36}

# Roughly 60 % uncompressed, 20 % RLE, 20 % JPEG 2000 (cumulative thresholds).
_P_RLE = 0.2
_P_J2K = 0.4
_P_MONOCHROME1 = 1 / 3
_BITS_STORED = (12, 14, 16)
# (slope, intercept) pairs: identity for about half the instances, vendor-style LUTs for the rest.
_RESCALES = ((1.0, 0.0), (1.0, 0.0), (1.0, -1024.0), (0.5, 0.0), (2.0, -4096.0))

_UID_NAMESPACE = "medres.synthetic.chest_xray"

# Fictitious vendors: the archive should never look like it came from a real device.
_DEVICES = {
    "CR": (("Lumen Imaging", "LumenCR 500"), ("Northwind Medical", "NW-CR Reader 2")),
    "DX": (("Lumen Imaging", "LumenDR Flex"), ("Contoso Radiology", "Clarity DX 9"), ("Northwind Medical", "NW-DR 1")),
}


def synth_chest_xray(out: Path, patients: int = 150, seed: int = 0, image_size: int = 320) -> SynthSummary:
    """Write a synthetic chest X-ray archive (DICOM files plus ``labels.csv``) into ``out``.

    Each patient has one to three studies; each study a frontal view and, about half the time, a
    lateral view, each its own series. Labels are per study (StudyInstanceUID) and every view of a
    study shows the study's findings. Blank and ``-1`` label cells hide a truth that was drawn 50/50.

    Args:
        out: Folder to create. It may exist but must be empty, so no archive is ever overwritten.
        patients: Number of patients, at least 1.
        seed: Non-negative seed; the same seed writes byte-identical files.
        image_size: Nominal Rows/Columns, at least 64; each image varies by about ±10 %.

    Returns:
        Counts and paths of what was written.

    Raises:
        ValueError: If an argument is out of range.
        FileExistsError: If ``out`` exists and is not an empty folder.
    """
    require_at_least(1, patients=patients)
    require_at_least(0, seed=seed)
    require_at_least(64, image_size=image_size)
    out = new_archive_folder(out)

    width = max(4, len(str(patients)))
    label_rows: list[list[str]] = []
    instances = 0
    for p in range(patients):
        # One generator per patient, keyed by (seed, patient): output never depends on loop order.
        rng = np.random.default_rng([seed, p])
        patient = draw_patient(rng, seed, p)
        for study in _draw_studies(rng, seed, patient):
            label_rows.append([study.uid, *(study.labels[f] for f in CHEST_XRAY_FINDINGS)])
            for series_number, view in enumerate(study.views, start=1):
                rows, cols = (round(image_size * float(f)) for f in rng.uniform([0.92, 0.9], [1.1, 1.08]))
                image = _render(view, study.anatomy, study.geometry, study.truth, rows, cols, rng)
                encoding = _draw_encoding(rng)
                ds = _dicom_dataset(patient, study, view, series_number, encoding, seed)
                _set_pixels(ds, image, encoding)
                path = out / f"patient_{p + 1:0{width}d}" / f"study_{study.number:02d}"
                path = path / f"series_{series_number:02d}" / "image_0001.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(path, enforce_file_format=True)
                instances += 1

    labels_csv = out / "labels.csv"
    with labels_csv.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["StudyInstanceUID", *CHEST_XRAY_FINDINGS])
        writer.writerows(label_rows)
    return SynthSummary(out, patients, len(label_rows), instances, labels_csv)


def render_chest_xray(
    findings: Mapping[str, bool], *, seed: int = 0, view: str = "PA", rows: int = 256, cols: int = 256
) -> FloatImage:
    """Render one chest image without writing DICOM (for tests, previews and debugging).

    The anatomy, the finding geometry and the noise depend only on ``seed``, not on ``findings``,
    so two calls that differ in one finding differ only where that finding is drawn.

    Args:
        findings: Finding name → present; missing names count as absent.
        seed: Seed of the patient, study and image draws.
        view: ``"PA"``, ``"AP"`` or ``"LL"``.
        rows: Image height in pixels.
        cols: Image width in pixels.

    Returns:
        ``(rows, cols)`` float32 in [0, 1], 1 = dense (white on a normal radiograph display).
    """
    unknown = set(findings) - set(CHEST_XRAY_FINDINGS)
    if unknown:
        raise ValueError(f"findings has unknown names {sorted(unknown)}; expected {CHEST_XRAY_FINDINGS}")
    if view not in ("PA", "AP", "LL"):
        raise ValueError(f"view must be 'PA', 'AP' or 'LL', got {view!r}")
    rng = np.random.default_rng(seed)
    anatomy = _draw_anatomy(rng)
    geometry = _draw_geometry(rng)
    truth = {f: bool(findings.get(f, False)) for f in CHEST_XRAY_FINDINGS}
    return _render(view, anatomy, geometry, truth, rows, cols, rng)


# ---------------------------------------------------------------------------------------------
# Patients and studies: identities, dates, devices, labels. All draws come from the patient rng.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Anatomy:
    """A thorax in image-fraction units (u across columns, v down rows, both 0..1)."""

    center_u: float  # midline
    lung_offset: float  # midline → centre of each lung field
    lung_half_width: float
    apex_v: float  # top of the lung fields
    base_v: float  # lateral costophrenic angles
    dome: float  # how far the diaphragm domes up above the costophrenic angles
    heart_ctr: float  # normal cardiothoracic ratio of this patient
    lung_depth: float  # how much darker aerated lung is than soft tissue
    rib_spacing: float
    rib_drop: float  # how steeply posterior ribs descend laterally


@dataclass(frozen=True)
class _Nodule:
    side: int  # -1 image-left lung, +1 image-right lung (the lateral view has one lung field)
    t: float  # 0 at the apex … 1 at the costophrenic angle
    r: float  # 0 at the lung centre … 1 at the chest wall
    radius: float  # fraction of the image width
    contrast: float


@dataclass(frozen=True)
class _Geometry:
    """Where and how big each finding is, drawn for every study whether or not it is present."""

    nodules: tuple[_Nodule, ...]
    effusion_sides: tuple[int, ...]
    effusion_height: float  # fraction of the lung height filled with fluid
    meniscus: float  # how far the fluid climbs the chest wall
    enlarged_ctr: float  # cardiothoracic ratio with cardiomegaly
    pneumothorax_side: int
    collapse: float  # size of the collapsed lung relative to the full lung field


@dataclass(frozen=True)
class _Study:
    number: int  # 1-based within the patient
    uid: str
    date: dt.date
    time: str
    accession: str
    modality: str
    manufacturer: str
    model: str
    referring: str
    operator: str
    pixel_spacing: float
    views: tuple[str, ...]
    labels: Mapping[str, str]  # the labels.csv cells
    truth: Mapping[str, bool]  # what is drawn
    anatomy: _Anatomy
    geometry: _Geometry


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    scale = rng.uniform(0.88, 1.04)  # body habitus and detector framing
    apex = rng.uniform(0.1, 0.16)
    return _Anatomy(
        center_u=0.5 + rng.normal(0, 0.015),
        lung_offset=0.175 * scale,
        lung_half_width=0.125 * scale,
        apex_v=apex,
        base_v=apex + rng.uniform(0.56, 0.64) * scale,
        dome=rng.uniform(0.04, 0.065),
        heart_ctr=rng.uniform(0.38, 0.46),
        lung_depth=rng.uniform(0.28, 0.36),
        rib_spacing=rng.uniform(0.06, 0.072) * scale,
        rib_drop=rng.uniform(0.06, 0.1),
    )


def _draw_geometry(rng: np.random.Generator) -> _Geometry:
    nodules = tuple(
        _Nodule(
            side=int(rng.choice([-1, 1])),
            t=rng.uniform(0.3, 0.8),
            r=rng.uniform(0.05, 0.6),
            radius=rng.uniform(0.028, 0.045),  # diameter 5.5-9 % of the width: 7-11 px at 128
            contrast=rng.uniform(0.22, 0.34),
        )
        for _ in range(3)
    )
    count = int(rng.integers(1, 4))
    one_side = int(rng.choice([-1, 1]))
    both = rng.random() < 0.35
    return _Geometry(
        nodules=nodules[:count],
        effusion_sides=(-1, 1) if both else (one_side,),
        effusion_height=rng.uniform(0.25, 0.42),
        meniscus=rng.uniform(0.06, 0.12),
        enlarged_ctr=rng.uniform(0.6, 0.7),
        pneumothorax_side=int(rng.choice([-1, 1])),
        collapse=rng.uniform(0.6, 0.76),
    )


def _draw_studies(rng: np.random.Generator, seed: int, patient: Patient) -> list[_Study]:
    anatomy = _draw_anatomy(rng)
    n_studies = int(rng.integers(1, 4))
    age_days = int(rng.integers(20 * 365, 85 * 365))
    date = max(patient.birth_date + dt.timedelta(days=age_days), dt.date(2012, 1, 1))
    date = min(date, dt.date(2022, 6, 30))
    studies = []
    for s in range(1, n_studies + 1):
        if s > 1:
            date += dt.timedelta(days=int(rng.integers(3, 400)))
        modality = "CR" if rng.random() < 0.5 else "DX"
        manufacturer, model = _DEVICES[modality][int(rng.integers(len(_DEVICES[modality])))]
        frontal = "AP" if rng.random() < 0.1 else "PA"
        views = (frontal, "LL") if rng.random() < 0.5 else (frontal,)
        labels, truth = draw_labels(rng, _PREVALENCE)
        # Positioning differs from visit to visit; the patient's body does not.
        jittered = replace(
            anatomy,
            center_u=anatomy.center_u + rng.normal(0, 0.012),
            apex_v=anatomy.apex_v + (shift := rng.normal(0, 0.012)),
            base_v=anatomy.base_v + shift,
        )
        studies.append(
            _Study(
                number=s,
                uid=_uid(seed, "study", patient.number, s),
                date=date,
                time=f"{rng.integers(7, 20):02d}{rng.integers(60):02d}{rng.integers(60):02d}",
                accession=f"ACC{(48_271 * (3 * patient.number + s) + 10_000_019 * seed) % 10**8:08d}",
                modality=modality,
                manufacturer=manufacturer,
                model=model,
                referring=str(rng.choice(PHYSICIANS)),
                operator=str(rng.choice(OPERATORS)),
                pixel_spacing=round(float(rng.uniform(0.15, 0.2)), 3),
                views=views,
                labels=labels,
                truth=truth,
                anatomy=jittered,
                geometry=_draw_geometry(rng),
            )
        )
    return studies


def _uid(seed: int, *parts: object) -> UID:
    # generate_uid hashes its entropy sources: deterministic, and distinct for distinct inputs.
    return generate_uid(entropy_srcs=[_UID_NAMESPACE, str(seed), *map(str, parts)])


# ---------------------------------------------------------------------------------------------
# Anatomy. Images are built in "density" space (0 = air, 1 = bone-white) on broadcast grids:
# u has shape (1, cols), v has shape (rows, 1), so every mask below costs one pass over the image.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    u: FloatImage  # (1, cols) column centres in 0..1
    v: FloatImage  # (rows, 1) row centres in 0..1
    rows: int
    cols: int
    edge: float  # soft-edge width of anatomical boundaries, about one pixel

    @classmethod
    def make(cls, rows: int, cols: int) -> _Grid:
        u = ((np.arange(cols) + 0.5) / cols).astype(np.float32)[None, :]
        v = ((np.arange(rows) + 0.5) / rows).astype(np.float32)[:, None]
        return cls(u, v, rows, cols, edge=1.0 / max(rows, cols))


@dataclass(frozen=True)
class _LungField:
    center_u: float
    half_width: float
    apex_v: float
    base_v: float
    dome: float
    outward: int  # direction (-1 left, +1 right) of the chest wall that fluid climbs and air collects at


def _lung_mask(lung: _LungField, u: NDArray[np.float32], v: NDArray[np.float32], edge: float) -> FloatImage:
    """Soft mask of a lung field: a half-ellipse apex on straight walls, closed by a domed diaphragm."""
    r = (u - lung.center_u) / lung.half_width
    # Above the shoulder of the apex (t < 1) the boundary is an ellipse; below it, vertical walls.
    t = (v - lung.apex_v) / (0.55 * (lung.base_v - lung.apex_v))
    d = np.sqrt(r**2 + np.minimum(t - 1, 0) ** 2)
    walls = expit((1 - d) * lung.half_width / edge)
    # The diaphragm is highest mid-lung and meets the wall low and sharp: the costophrenic angle.
    diaphragm = lung.base_v - lung.dome * (1 - np.minimum(r**2, 1))
    return (walls * expit((diaphragm - v) / edge)).astype(np.float32)


def _ellipse(grid: _Grid, cu: float, cv: float, au: float, av: float, edge: float, power: float = 2) -> FloatImage:
    """Soft (super-)ellipse; ``power`` > 2 squares off the left and right sides."""
    d = (np.abs((grid.u - cu) / au) ** power + ((grid.v - cv) / av) ** 2) ** 0.5
    return expit((1 - d) * min(au, av) / edge).astype(np.float32)


def _band(x: NDArray[np.float32], center: float, half_width: float, edge: float) -> FloatImage:
    """Soft indicator of |x - center| < half_width."""
    return expit((half_width - np.abs(x - center)) / edge).astype(np.float32)


def _segment_line(grid: _Grid, p0: tuple[float, float], p1: tuple[float, float], width: float) -> FloatImage:
    """A soft bright line of the given width from p0 to p1, both (u, v)."""
    (u0, v0), (u1, v1) = p0, p1
    du, dv = u1 - u0, v1 - v0
    s = np.clip(((grid.u - u0) * du + (grid.v - v0) * dv) / (du * du + dv * dv), 0, 1)
    dist = np.hypot(grid.u - (u0 + s * du), grid.v - (v0 + s * dv))
    return np.exp(-((dist / width) ** 2)).astype(np.float32)


def _frontal_lungs(anatomy: _Anatomy) -> list[_LungField]:
    lungs = []
    for side in (-1, 1):
        # The right hemidiaphragm (image left on a PA film) sits a little higher than the left.
        base = anatomy.base_v - (0.02 if side == -1 else 0.0)
        center = anatomy.center_u + side * anatomy.lung_offset
        lungs.append(_LungField(center, anatomy.lung_half_width, anatomy.apex_v, base, anatomy.dome, side))
    return lungs


def _lateral_lung(anatomy: _Anatomy) -> _LungField:
    # Seen from the side both lungs overlap into one broad field; anterior is image left.
    half_width = 0.27 * anatomy.lung_half_width / 0.125
    return _LungField(anatomy.center_u + 0.02, half_width, anatomy.apex_v, anatomy.base_v, anatomy.dome, 1)


@dataclass(frozen=True)
class _Chest:
    """The layers of one view before findings are added."""

    body: FloatImage  # soft-tissue density of the patient
    bones: FloatImage  # spine, ribs, clavicles, sternum
    heart: FloatImage
    lungs: list[_LungField]
    lung_masks: list[FloatImage]
    markings: FloatImage  # hilar vessels and lung texture, only where lung is aerated


def _frontal_chest(grid: _Grid, anatomy: _Anatomy, heart_ctr: float, texture: FloatImage) -> _Chest:
    c = anatomy.center_u
    thorax_half = anatomy.lung_offset + anatomy.lung_half_width
    # The trunk fills the film from the shoulders down, its flanks nearly straight.
    body = _ellipse(grid, c, 0.8, 1.3 * thorax_half, 1.05, 4 * grid.edge, power=3)
    # Mediastinum: the great vessels widen the soft tissue between the lungs; the trachea is an air column.
    body = body + 0.06 * _band(grid.u, c, 0.06, grid.edge) * expit((anatomy.base_v - grid.v) / 0.05)
    body = body - 0.1 * _band(grid.u, c, 0.012, grid.edge) * expit((anatomy.apex_v + 0.18 - grid.v) / 0.02)

    # Spine: a bright column with darker disc spaces every ~4 % of the height.
    discs = 0.8 + 0.2 * np.cos(2 * np.pi * grid.v / 0.04) ** 2
    spine = 0.07 * _band(grid.u, c, 0.032, 2 * grid.edge) * discs * body
    # Posterior ribs: arcs that descend laterally, repeated down the thorax.
    phase = (grid.v - anatomy.apex_v - anatomy.rib_drop * ((grid.u - c) / thorax_half) ** 2) / anatomy.rib_spacing
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * phase)) ** 6
    ribs = ribs * _band(grid.u, c, thorax_half * 1.05, 3 * grid.edge)
    ribs = ribs * expit((grid.v - anatomy.apex_v + 0.04) / 0.01) * expit((anatomy.base_v + 0.03 - grid.v) / 0.02)
    clavicles = sum(
        (
            _segment_line(grid, (c + s * 0.03, anatomy.apex_v + 0.03), (c + s * 0.27, anatomy.apex_v - 0.03), 0.012)
            for s in (-1, 1)
        ),
        start=np.zeros((1, 1), np.float32),
    )
    bones = spine + 0.07 * ribs + 0.1 * clavicles

    # The heart sits low in the mediastinum, bulging more to the patient's left (image right).
    heart_half = heart_ctr * thorax_half
    # It rests on the diaphragm domes, its lower half hidden in the equally dense abdomen.
    heart_v = anatomy.base_v - anatomy.dome - 0.2 * 0.85 * heart_half
    heart = _ellipse(grid, c + 0.3 * heart_half, heart_v, heart_half, 0.85 * heart_half, grid.edge)

    lungs = _frontal_lungs(anatomy)
    masks = [_lung_mask(lung, grid.u, grid.v, grid.edge) for lung in lungs]
    # Vessels fan out from each hilum: denser and more textured medially, fading to the periphery.
    hilar = sum(
        (
            np.exp(
                -(((grid.u - (lung.center_u - lung.outward * 0.45 * lung.half_width)) / 0.09) ** 2)
                - ((grid.v - (lung.apex_v + 0.45 * (lung.base_v - lung.apex_v))) / 0.14) ** 2
            )
            for lung in lungs
        ),
        start=np.zeros((1, 1), np.float32),
    )
    markings = 0.07 * hilar + 0.03 * (0.5 + hilar) * texture
    return _Chest(body, bones.astype(np.float32), heart, lungs, masks, markings.astype(np.float32))


def _lateral_chest(grid: _Grid, anatomy: _Anatomy, heart_ctr: float, texture: FloatImage) -> _Chest:
    lung = _lateral_lung(anatomy)
    front, back = lung.center_u - lung.half_width, lung.center_u + lung.half_width
    body = _ellipse(grid, lung.center_u, 0.8, 1.45 * lung.half_width, 1.05, 4 * grid.edge, power=3)

    discs = 0.75 + 0.25 * np.cos(2 * np.pi * grid.v / 0.045) ** 2
    spine = 0.14 * _band(grid.u, back + 0.05, 0.035, 2 * grid.edge) * discs * body
    sternum = 0.08 * _band(grid.u, front - 0.015, 0.01, grid.edge) * _band(grid.v, lung.apex_v + 0.3, 0.3, 0.02)
    # Ribs cross a lateral film as faint oblique stripes.
    phase = (grid.v - 0.25 * (grid.u - lung.center_u)) / anatomy.rib_spacing
    ribs = 0.035 * (0.5 + 0.5 * np.cos(2 * np.pi * phase)) ** 6 * _band(grid.u, lung.center_u, lung.half_width, 0.01)
    ribs = ribs * expit((grid.v - anatomy.apex_v + 0.03) / 0.01) * expit((anatomy.base_v - grid.v) / 0.02)
    bones = spine + sternum + ribs

    # The heart is anterior and low; as it enlarges it grows backwards over the lung field.
    heart_half = heart_ctr * 0.85 * lung.half_width
    heart_v = lung.base_v - lung.dome - 0.3 * 0.8 * heart_half
    heart = _ellipse(grid, front + 0.8 * heart_half, heart_v, heart_half, 0.8 * heart_half, grid.edge)

    mask = _lung_mask(lung, grid.u, grid.v, grid.edge)
    hilar = np.exp(
        -(((grid.u - lung.center_u) / 0.1) ** 2)
        - ((grid.v - (lung.apex_v + 0.45 * (lung.base_v - lung.apex_v))) / 0.12) ** 2
    )
    markings = 0.06 * hilar + 0.025 * (0.5 + hilar) * texture
    return _Chest(body, bones.astype(np.float32), heart, [lung], [mask], markings.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Findings. Each returns a layer on the same grid; _render composes them with the chest.
# ---------------------------------------------------------------------------------------------


def _lung_for_side(chest: _Chest, side: int) -> int:
    """Index of the lung field a left/right finding belongs to (the lateral view has only one)."""
    return 0 if len(chest.lungs) == 1 else int(side > 0)


def _nodules(grid: _Grid, chest: _Chest, nodules: Sequence[_Nodule]) -> FloatImage:
    """Small round opacities, brightest in the middle like a projected sphere."""
    layer = np.zeros((grid.rows, grid.cols), np.float32)
    for nodule in nodules:
        lung = chest.lungs[_lung_for_side(chest, nodule.side)]
        nu = lung.center_u + lung.outward * nodule.r * lung.half_width
        nv = lung.apex_v + nodule.t * (lung.base_v - lung.apex_v)
        # Distance in units of the radius, in pixels on both axes so nodules stay round on non-square images.
        d2 = (((grid.u - nu) * grid.cols) ** 2 + ((grid.v - nv) * grid.rows) ** 2) / (nodule.radius * grid.cols) ** 2
        layer += nodule.contrast * np.sqrt(np.clip(1 - d2, 0, 1))
    return layer


def _effusion(grid: _Grid, chest: _Chest, geometry: _Geometry) -> FloatImage:
    """Fluid filling the lung base: homogeneous, with a meniscus climbing the chest wall."""
    sides = {_lung_for_side(chest, s) for s in geometry.effusion_sides}
    layer = np.zeros((grid.rows, grid.cols), np.float32)
    for i in sides:
        lung = chest.lungs[i]
        # Fill a slightly larger field than the lung, so no rim of aerated lung outlines the fluid.
        pleural_space = replace(lung, half_width=1.08 * lung.half_width, base_v=lung.base_v + 0.02)
        mask = _lung_mask(pleural_space, grid.u, grid.v, 2 * grid.edge)
        height = geometry.effusion_height * (lung.base_v - lung.apex_v)
        lateral = np.clip((grid.u - lung.center_u) * lung.outward / lung.half_width, 0, 1)
        surface = lung.base_v - height - geometry.meniscus * lateral**2
        layer = np.maximum(layer, mask * expit((grid.v - surface) / (4 * grid.edge)))
    return layer


def _pneumothorax(grid: _Grid, chest: _Chest, geometry: _Geometry) -> tuple[FloatImage, FloatImage]:
    """Air between the chest wall and a collapsed lung, and the visceral pleural line bounding it.

    The collapsed lung is the lung field shrunk towards its medial base, so the air collects at the
    apex and along the lateral wall, as on an upright film.

    Returns:
        (air, pleural_line) layers.
    """
    i = _lung_for_side(chest, geometry.pneumothorax_side)
    lung, mask = chest.lungs[i], chest.lung_masks[i]
    anchor_u = lung.center_u - lung.outward * 0.6 * lung.half_width
    # The lung drops from the apex more than it leaves the lateral wall.
    k_v, k_u = geometry.collapse, (1 + geometry.collapse) / 2
    collapsed = _lung_mask(
        lung, anchor_u + (grid.u - anchor_u) / k_u, lung.base_v + (grid.v - lung.base_v) / k_v, 1.5 * grid.edge
    )
    # Keep the lowest part out of it: the shrunken diaphragm would otherwise draw a second line there.
    upper = expit((lung.base_v - 0.1 - grid.v) / 0.03)
    air = mask * (1 - collapsed) * upper
    line = 4 * collapsed * (1 - collapsed) * mask * upper
    return air.astype(np.float32), line.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Composition.
# ---------------------------------------------------------------------------------------------


def _render(
    view: str,
    anatomy: _Anatomy,
    geometry: _Geometry,
    truth: Mapping[str, bool],
    rows: int,
    cols: int,
    rng: np.random.Generator,
) -> FloatImage:
    grid = _Grid.make(rows, cols)
    # Every random draw happens here, before any finding is looked at, so that toggling a finding
    # changes only the pixels of that finding.
    texture = gaussian_filter(rng.standard_normal((rows, cols), np.float32), sigma=max(0.8, 0.005 * cols))
    texture /= texture.std() + 1e-6
    noise = rng.standard_normal((rows, cols), np.float32)
    noise_sigma = rng.uniform(0.006, 0.014)
    gamma = rng.uniform(0.85, 1.15)
    tilt_u, tilt_v = rng.normal(0, 0.03, size=2)

    heart_ctr = geometry.enlarged_ctr if truth["cardiomegaly"] else anatomy.heart_ctr
    if view == "LL":
        chest = _lateral_chest(grid, anatomy, heart_ctr, texture)
        depth = 0.85 * anatomy.lung_depth  # overlapping lungs and more soft tissue in the beam
    else:
        chest = _frontal_chest(grid, anatomy, heart_ctr, texture)
        depth = anatomy.lung_depth

    zeros = np.zeros((rows, cols), np.float32)
    effusion = _effusion(grid, chest, geometry) if truth["effusion"] else zeros
    air, pleura = _pneumothorax(grid, chest, geometry) if truth["pneumothorax"] else (zeros, zeros)
    nodules = _nodules(grid, chest, geometry.nodules) if truth["nodule"] else zeros

    aerated = np.clip(sum(chest.lung_masks, start=zeros), 0, 1) * (1 - chest.heart) * (1 - effusion)
    image = 0.04 + 0.5 * chest.body + 0.04 * chest.heart  # air, soft tissue, a denser heart
    image = image - depth * aerated
    # Pneumothorax air has no lung behind it: no vessels, ribs barely seen, darker than lung.
    image = image + aerated * (1 - air) * chest.markings - 0.12 * air * aerated
    image = image + chest.bones * (1 - 0.7 * air) + nodules * (1 - effusion) + 0.12 * pleura * (1 - effusion)

    # Exposure: detector gamma, a smooth gradient (heel effect, uneven body thickness), quantum noise.
    image = np.clip(image, 0, 1) ** gamma
    image = image + tilt_u * (grid.u - 0.5) + tilt_v * (grid.v - 0.5) + noise_sigma * noise
    return np.clip(image, 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# DICOM: header, stored values and transfer syntax.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoding:
    photometric: str
    bits_stored: int
    slope: float
    intercept: float
    transfer_syntax: UID
    low: float  # fraction of the stored range used by density 0
    high: float  # ... and by density 1


def _draw_encoding(rng: np.random.Generator) -> _Encoding:
    photometric = "MONOCHROME1" if rng.random() < _P_MONOCHROME1 else "MONOCHROME2"
    bits = int(rng.choice(_BITS_STORED))
    slope, intercept = _RESCALES[int(rng.integers(len(_RESCALES)))]
    u = rng.random()
    syntax: UID = RLELossless if u < _P_RLE else JPEG2000Lossless if u < _P_J2K else ExplicitVRLittleEndian
    return _Encoding(photometric, bits, slope, intercept, syntax, rng.uniform(0.02, 0.1), rng.uniform(0.8, 0.97))


def _stored_values(image: FloatImage, encoding: _Encoding) -> NDArray[np.uint16]:
    """Map density to stored values inside BitsStored; MONOCHROME1 stores it inverted (bright = low)."""
    top = 2**encoding.bits_stored - 1
    scaled = encoding.low + image * (encoding.high - encoding.low)
    if encoding.photometric == "MONOCHROME1":
        scaled = encoding.low + encoding.high - scaled
    return np.round(scaled * top).astype(np.uint16)


def _dicom_dataset(
    patient: Patient, study: _Study, view: str, series_number: int, encoding: _Encoding, seed: int
) -> Dataset:
    sop_class = ComputedRadiographyImageStorage if study.modality == "CR" else DigitalXRayImageStorageForPresentation
    series_uid = _uid(seed, "series", patient.number, study.number, series_number)
    sop_uid = _uid(seed, "instance", patient.number, study.number, series_number, 1)
    # The lateral is taken a couple of minutes after the frontal view.
    start = dt.datetime.combine(study.date, dt.time(int(study.time[:2]), int(study.time[2:4]), int(study.time[4:])))
    acquired = start + dt.timedelta(minutes=2 * series_number - 1)
    age = (study.date - patient.birth_date).days // 365

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # compressed later by _set_pixels

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study.date.strftime("%Y%m%d")
    ds.StudyTime = study.time
    ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = acquired.strftime("%H%M%S")
    ds.AccessionNumber = study.accession
    ds.Modality = study.modality
    ds.Manufacturer = study.manufacturer
    ds.ManufacturerModelName = study.model
    ds.InstitutionName = patient.institution
    ds.ReferringPhysicianName = study.referring
    ds.OperatorsName = study.operator
    ds.StudyDescription = "XR CHEST 2 VIEWS" if len(study.views) == 2 else "XR CHEST 1 VIEW"
    ds.SeriesDescription = "LATERAL" if view == "LL" else view
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{age:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    # Frontal films are displayed with the patient's left on the image right; laterals face image left.
    ds.PatientOrientation = ["P", "F"] if view == "LL" else ["L", "F"]
    ds.ImagerPixelSpacing = [ds_number(study.pixel_spacing)] * 2
    # PixelSpacing is the imager spacing corrected for a nominal 1.1 geometric magnification.
    ds.PixelSpacing = [ds_number(round(study.pixel_spacing / 1.1, 4))] * 2
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"{study.number}"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "NO"
    if study.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        # -1: higher values mean less beam reaching the detector, which is what MONOCHROME2 stores here.
        ds.PixelIntensityRelationshipSign = -1 if encoding.photometric == "MONOCHROME2" else 1
    return ds


def _set_pixels(ds: Dataset, image: FloatImage, encoding: _Encoding) -> None:
    """Fill the Image Pixel, Modality LUT and VOI LUT attributes, then encode the pixel data."""
    stored = _stored_values(image, encoding)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = encoding.photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = encoding.bits_stored
    ds.HighBit = encoding.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope = ds_number(encoding.slope)
    ds.RescaleIntercept = ds_number(encoding.intercept)
    ds.RescaleType = "US"
    # The window spans every value in the image, so a reader that applies VOI clips nothing.
    lo, hi = (float(x) * encoding.slope + encoding.intercept for x in (stored.min(), stored.max()))
    ds.WindowCenter = ds_number(round((lo + hi) / 2, 1))
    ds.WindowWidth = ds_number(round(hi - lo + 1, 1))
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.astype("<u2").tobytes()
    if encoding.transfer_syntax == RLELossless:
        ds.compress(RLELossless, stored, encoding_plugin=RLE_PLUGIN, generate_instance_uid=False)
    elif encoding.transfer_syntax == JPEG2000Lossless:
        ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg", generate_instance_uid=False)
