"""Synthetic DICOM archives with learnable findings, for tests, demos and CI without patient data.

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
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)
from scipy.ndimage import gaussian_filter
from scipy.special import expit

CHEST_XRAY_FINDINGS: tuple[str, ...] = ("nodule", "effusion", "cardiomegaly", "pneumothorax")

FloatImage = NDArray[np.float32]

# Study-level prevalence of each finding, and how often a label cell hides the truth.
_PREVALENCE = {"nodule": 0.36, "effusion": 0.37, "cardiomegaly": 0.38, "pneumothorax": 0.36}
_P_UNKNOWN = 0.05  # blank cell: masked out of loss and metrics
_P_UNCERTAIN = 0.05  # "-1" cell: handled by the configured uncertainty policy

# Roughly 60 % uncompressed, 20 % RLE, 20 % JPEG 2000 (cumulative thresholds).
_P_RLE = 0.2
_P_J2K = 0.4
_P_MONOCHROME1 = 1 / 3
# pylibjpeg-rle writes the same bytes as pydicom's own pure-Python RLE encoder, about 40x faster.
_RLE_PLUGIN = "pylibjpeg"
_BITS_STORED = (12, 14, 16)
# (slope, intercept) pairs: identity for about half the instances, vendor-style LUTs for the rest.
_RESCALES = ((1.0, 0.0), (1.0, 0.0), (1.0, -1024.0), (0.5, 0.0), (2.0, -4096.0))

_UID_NAMESPACE = "medres.synthetic.chest_xray"

# Made-up identities. The names are common enough to be plausible and belong to no one in particular.
_FAMILY_NAMES = (
    "Smith", "Garcia", "Nguyen", "Muller", "Rossi", "Kowalski", "Okafor", "Tanaka", "Silva", "Haddad",
    "Johansson", "Dubois", "Novak", "Kim", "Patel", "Fischer", "Moreau", "Jensen", "Costa", "Ivanova",
)  # fmt: skip
_GIVEN_NAMES = {
    "F": ("Anna", "Maria", "Sofia", "Emma", "Aiko", "Chiara", "Fatima", "Ingrid", "Lucia", "Nadia"),
    "M": ("James", "Luca", "Minh", "Jonas", "Kenji", "Pierre", "Omar", "Tomas", "Daniel", "Erik"),
}
_PHYSICIANS = ("Hartmann^Eva", "Lindqvist^Per", "Okonkwo^Chidi", "Ferreira^Rui", "Yamamoto^Hana", "Brennan^Aoife")
_OPERATORS = ("Walsh^Tom", "Ahmed^Sara", "Berg^Nils", "Lopez^Ines", "Chen^Wei")
_INSTITUTIONS = ("Riverside General Hospital", "St. Aldhelm Medical Centre", "Northgate University Clinic")
# Fictitious vendors: the archive should never look like it came from a real device.
_DEVICES = {
    "CR": (("Lumen Imaging", "LumenCR 500"), ("Northwind Medical", "NW-CR Reader 2")),
    "DX": (("Lumen Imaging", "LumenDR Flex"), ("Contoso Radiology", "Clarity DX 9"), ("Northwind Medical", "NW-DR 1")),
}


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synth_chest_xray` or :func:`synth_ct` wrote.

    Attributes:
        root: The archive folder.
        patients: Number of patients.
        studies: Number of studies (rows of ``labels.csv``).
        instances: Number of DICOM files.
        labels_csv: Path of the study-level label file.
        series: Number of series (0 where not counted).
    """

    root: Path
    patients: int
    studies: int
    instances: int
    labels_csv: Path
    series: int = 0


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
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64, got {image_size}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"out={out} exists and is not an empty folder; refusing to overwrite it")
    out.mkdir(parents=True, exist_ok=True)

    width = max(4, len(str(patients)))
    label_rows: list[list[str]] = []
    instances = 0
    for p in range(patients):
        # One generator per patient, keyed by (seed, patient): output never depends on loop order.
        rng = np.random.default_rng([seed, p])
        patient = _draw_patient(rng, seed, p)
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
class _Patient:
    number: int  # 1-based ordinal, used for folder names and UIDs
    name: str
    patient_id: str
    birth_date: dt.date
    sex: str
    institution: str


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


def _draw_patient(rng: np.random.Generator, seed: int, index: int) -> _Patient:
    sex = "F" if rng.random() < 0.5 else "M"
    name = f"{rng.choice(_FAMILY_NAMES)}^{rng.choice(_GIVEN_NAMES[sex])}"
    # An affine map of the patient index modulo 10**7 (multiplier coprime with 10) is a bijection,
    # so MRNs look random yet never collide within an archive.
    offset = int(np.random.default_rng([seed, 2**31]).integers(10**7))
    mrn = (7_919_113 * (index + 1) + offset) % 10**7
    birth = dt.date(1935, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 65)))
    return _Patient(index + 1, name, f"MRN{mrn:07d}", birth, sex, str(rng.choice(_INSTITUTIONS)))


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


def _draw_labels(
    rng: np.random.Generator, prevalence: Mapping[str, float] = _PREVALENCE
) -> tuple[dict[str, str], dict[str, bool]]:
    """Truth and ``labels.csv`` cell of each finding (in ``prevalence`` order)."""
    labels: dict[str, str] = {}
    truth: dict[str, bool] = {}
    for finding, finding_prevalence in prevalence.items():
        # Always three draws per finding, so label noise never shifts later draws.
        present, cell, hidden = rng.random(3)
        if cell < _P_UNKNOWN:
            labels[finding], truth[finding] = "", bool(hidden < 0.5)
        elif cell < _P_UNKNOWN + _P_UNCERTAIN:
            labels[finding], truth[finding] = "-1", bool(hidden < 0.5)
        else:
            truth[finding] = bool(present < finding_prevalence)
            labels[finding] = "1" if truth[finding] else "0"
    return labels, truth


def _draw_studies(rng: np.random.Generator, seed: int, patient: _Patient) -> list[_Study]:
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
        labels, truth = _draw_labels(rng)
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
                referring=str(rng.choice(_PHYSICIANS)),
                operator=str(rng.choice(_OPERATORS)),
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


def _ds_number(x: float) -> str:
    """A DS string of at most 16 characters."""
    return f"{x:.6g}"


def _dicom_dataset(
    patient: _Patient, study: _Study, view: str, series_number: int, encoding: _Encoding, seed: int
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
    ds.ImagerPixelSpacing = [_ds_number(study.pixel_spacing)] * 2
    # PixelSpacing is the imager spacing corrected for a nominal 1.1 geometric magnification.
    ds.PixelSpacing = [_ds_number(round(study.pixel_spacing / 1.1, 4))] * 2
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
    ds.RescaleSlope = _ds_number(encoding.slope)
    ds.RescaleIntercept = _ds_number(encoding.intercept)
    ds.RescaleType = "US"
    # The window spans every value in the image, so a reader that applies VOI clips nothing.
    lo, hi = (float(x) * encoding.slope + encoding.intercept for x in (stored.min(), stored.max()))
    ds.WindowCenter = _ds_number(round((lo + hi) / 2, 1))
    ds.WindowWidth = _ds_number(round(hi - lo + 1, 1))
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.astype("<u2").tobytes()
    if encoding.transfer_syntax == RLELossless:
        ds.compress(RLELossless, stored, encoding_plugin=_RLE_PLUGIN, generate_instance_uid=False)
    elif encoding.transfer_syntax == JPEG2000Lossless:
        ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg", generate_instance_uid=False)


# =============================================================================================
# CT: axial chest series in Hounsfield units, with lung masses and pleural effusions.
# =============================================================================================

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
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 8 <= slices <= 400:
        raise ValueError(f"slices must be in 8..400, got {slices}")
    if not 16 <= size <= 512:
        raise ValueError(f"size must be in 16..512, got {size}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"out={out} exists and is not an empty folder; refusing to overwrite it")
    out.mkdir(parents=True, exist_ok=True)

    width = max(4, len(str(patients)))
    label_rows: list[list[str]] = []
    instances = series_count = 0
    for p in range(patients):
        rng = np.random.default_rng([seed, p, 3])  # keyed by (seed, patient): independent of loop order
        patient = _draw_patient(rng, seed, p)
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
    rng: np.random.Generator, seed: int, patient: _Patient, thorax: _Thorax, slices: int, size: int
) -> list[_CTStudy]:
    n_studies = 2 if rng.random() < _P_FOLLOW_UP else 1
    age_days = int(rng.integers(40 * 365, 85 * 365))
    date = min(max(patient.birth_date + dt.timedelta(days=age_days), dt.date(2014, 1, 1)), dt.date(2023, 6, 30))
    studies = []
    for s in range(1, n_studies + 1):
        if s > 1:
            date += dt.timedelta(days=int(rng.integers(60, 400)))
        device = _CT_DEVICES[int(rng.integers(len(_CT_DEVICES)))]
        labels, truth = _draw_labels(rng, _CT_PREVALENCE)
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
                referring=str(rng.choice(_PHYSICIANS)),
                operator=str(rng.choice(_OPERATORS)),
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


def _ct_dataset(patient: _Patient, study: _CTStudy, series: _CTSeries, k: int, seed: int) -> Dataset:
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
    ds.ImagePositionPatient = [_ds_number(float(v)) for v in series.positions[k]]
    ds.ImageOrientationPatient = [_ds_number(float(v)) for v in series.orientation]
    ds.PixelSpacing = [_ds_number(v) for v in series.pixel_spacing]
    if series.kind == "axial":
        normal = np.cross(series.orientation[:3], series.orientation[3:])
        ds.SliceLocation = _ds_number(round(float(series.positions[k] @ normal), 3))
        ds.SliceThickness = _ds_number(series.thickness)
        if series.spacing_tag:
            ds.SpacingBetweenSlices = _ds_number(float(np.linalg.norm(series.positions[1] - series.positions[0])))
        ds.ConvolutionKernel = series.description.split("MM ")[-1]
    ds.WindowCenter = _ds_number(series.window[0])
    ds.WindowWidth = _ds_number(series.window[1])
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
    ds.RescaleIntercept = _ds_number(intercept)
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
        ds.compress(RLELossless, stored, encoding_plugin=_RLE_PLUGIN, generate_instance_uid=False)
    elif syntax == JPEG2000Lossless and min(hu.shape) < 32:
        # OpenJPEG's default six resolution levels need at least 32 pixels a side; tiny test images use RLE.
        ds.compress(RLELossless, stored, encoding_plugin=_RLE_PLUGIN, generate_instance_uid=False)
    elif syntax == JPEG2000Lossless:
        ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg", generate_instance_uid=False)
