"""A synthetic archive in the layout of the RSNA Pneumonia Detection Challenge (Kaggle, 2018) release.

The release, as it ships::

    stage_2_train_images/<patientId>.dcm       one frontal radiograph per patient, file stem = patientId
    stage_2_train_labels.csv                   patientId,x,y,width,height,Target  (one row per box;
                                               one row with blank corners and Target 0 for a negative)
    stage_2_detailed_class_info.csv            patientId,class  ("Lung Opacity", "Normal",
                                               "No Lung Opacity / Not Normal"), one row per labels row

Corners are stored-pixel coordinates: ``x`` the left column, ``y`` the top row, ``width``/``height`` in
pixels, as floats (``264.0``). The DICOM files are Secondary Capture, MONOCHROME2, 8 bits, square, with
the patientId as PatientID and PatientName, and the release's blanked dates and de-identification
markers. The release's JPEG Baseline encoding is not reproduced (pydicom cannot encode it); the pixels
are stored uncompressed, which changes nothing downstream of the decoder.

The radiographs come from the chest model of :mod:`medres.synthetic`. "Lung Opacity" adds one to
three patchy air-space opacities inside the lung fields, boxed as a reader would box them; "No Lung
Opacity / Not Normal" shows one of the chest model's other findings (effusion, cardiomegaly, nodules,
pneumothorax) and no opacity, so the finding must be told apart from other abnormal densities.
"""

from __future__ import annotations

import csv
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from scipy.ndimage import gaussian_filter
from scipy.special import expit

from medres.synthetic.chest_xray import (
    CHEST_XRAY_FINDINGS,
    FloatImage,
    _draw_anatomy,
    _draw_geometry,
    _frontal_lungs,
    _Grid,
    _lung_mask,
    _render,
)
from medres.synthetic.writing import new_archive_folder, require_at_least

RSNA_IMAGES = "stage_2_train_images"
RSNA_LABELS = "stage_2_train_labels.csv"
RSNA_CLASSES = "stage_2_detailed_class_info.csv"
RSNA_LABEL_HEADER = ("patientId", "x", "y", "width", "height", "Target")
RSNA_CLASS_HEADER = ("patientId", "class")
OPACITY, NORMAL, NOT_NORMAL = "Lung Opacity", "Normal", "No Lung Opacity / Not Normal"

_UID_NAMESPACE = "medres.synthetic.rsna"
# Class mix of the release's training set is about 31 / 40 / 29 %; the default raises the boxed class so
# small synthetic archives still hold enough boxes to learn from.
_P_NOT_NORMAL = 0.3
# Opacities per positive image: the release has mostly 1-2 boxes, rarely 3-4.
_OPACITY_COUNTS = (1, 2, 3)
_OPACITY_COUNT_P = (0.45, 0.45, 0.1)


@dataclass(frozen=True)
class RsnaSummary:
    """What :func:`synth_rsna_pneumonia` wrote.

    Attributes:
        root: The archive folder.
        images: Number of DICOM files (one per patient).
        positives: Images with at least one box.
        boxes: Boxes in ``stage_2_train_labels.csv``.
        labels_csv: Path of ``stage_2_train_labels.csv``.
    """

    root: Path
    images: int
    positives: int
    boxes: int
    labels_csv: Path


@dataclass(frozen=True)
class _Opacity:
    side: int  # -1 image-left lung field, +1 image-right
    t: float  # 0 apex .. 1 base
    r: float  # 0 lung centre .. 1 lateral wall (signed by the lung's outward direction)
    half_u: float  # half extent across, fraction of the lung half-width
    half_v: float  # half extent down, fraction of the lung height
    contrast: float


def synth_rsna_pneumonia(
    out: Path, patients: int = 200, seed: int = 0, image_size: int = 256, prevalence: float = 0.4
) -> RsnaSummary:
    """Write a synthetic archive in the RSNA Pneumonia Detection Challenge layout, with its true boxes.

    Args:
        out: Folder to create; it may exist but must be empty.
        patients: Number of patients (= images), at least 1.
        seed: Non-negative seed; the same seed writes byte-identical files.
        image_size: Rows = Columns of every image, at least 64 (the release has 1024).
        prevalence: Fraction of images with opacities, in (0, 1).

    Returns:
        Counts and paths of what was written.

    Raises:
        ValueError: If an argument is out of range.
        FileExistsError: If ``out`` exists and is not an empty folder.
    """
    require_at_least(1, patients=patients)
    require_at_least(0, seed=seed)
    require_at_least(64, image_size=image_size)
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
    out = new_archive_folder(out)
    (out / RSNA_IMAGES).mkdir()

    label_rows: list[list[str]] = []
    class_rows: list[list[str]] = []
    positives = 0
    for p in range(patients):
        rng = np.random.default_rng([seed, p])
        patient_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        image, boxes, klass = render_rsna(rng, image_size, prevalence)
        ds = _dataset(patient_id, rng, seed, p)
        _set_pixels_8bit(ds, image)
        ds.save_as(out / RSNA_IMAGES / f"{patient_id}.dcm", enforce_file_format=True)
        if boxes:
            positives += 1
        for x0, y0, x1, y1 in boxes:
            label_rows.append([patient_id, f"{x0:.1f}", f"{y0:.1f}", f"{x1 - x0:.1f}", f"{y1 - y0:.1f}", "1"])
            class_rows.append([patient_id, klass])
        if not boxes:
            label_rows.append([patient_id, "", "", "", "", "0"])
            class_rows.append([patient_id, klass])

    labels_csv = out / RSNA_LABELS
    for path, header, rows in (
        (labels_csv, RSNA_LABEL_HEADER, label_rows),
        (out / RSNA_CLASSES, RSNA_CLASS_HEADER, class_rows),
    ):
        with path.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
    n_boxes = sum(1 for r in label_rows if r[-1] == "1")
    return RsnaSummary(out, patients, positives, n_boxes, labels_csv)


def render_rsna(
    rng: np.random.Generator, size: int, prevalence: float
) -> tuple[FloatImage, list[tuple[int, int, int, int]], str]:
    """One RSNA-style frontal radiograph in density [0, 1], its opacity boxes and its detailed class.

    Boxes are ``(x_min, y_min, x_max, y_max)`` pixel edges (columns, rows).
    """
    u = rng.random(3)
    positive = bool(u[0] < prevalence)
    anatomy = _draw_anatomy(rng)
    geometry = _draw_geometry(rng)
    view = "AP" if u[1] < 0.45 else "PA"
    truth = dict.fromkeys(CHEST_XRAY_FINDINGS, False)
    other = str(rng.choice(CHEST_XRAY_FINDINGS))
    # Effusion often accompanies pneumonia; other abnormalities make the "Not Normal" negatives.
    if positive:
        truth["effusion"] = bool(u[2] < 0.15)
        klass = OPACITY
    elif u[2] < _P_NOT_NORMAL / (1 - prevalence):
        truth[other] = True
        klass = NOT_NORMAL
    else:
        klass = NORMAL
    image = _render(view, anatomy, geometry, truth, size, size, rng)
    opacities = _draw_opacities(rng) if positive else []
    grid = _Grid.make(size, size)
    lungs = _frontal_lungs(anatomy)
    texture = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma=0.02 * size)
    texture = (texture - texture.mean()) / (texture.std() + 1e-6)
    boxes: list[tuple[int, int, int, int]] = []
    for opacity in opacities:
        lung = lungs[int(opacity.side > 0)]
        mask = _lung_mask(lung, grid.u, grid.v, grid.edge)
        cu = lung.center_u + lung.outward * opacity.r * lung.half_width
        cv = lung.apex_v + opacity.t * (lung.base_v - lung.apex_v)
        au = opacity.half_u * lung.half_width
        av = opacity.half_v * (lung.base_v - lung.apex_v)
        d = np.sqrt(((grid.u - cu) / au) ** 2 + ((grid.v - cv) / av) ** 2)
        # Air-space disease: ill-defined edges (a wide sigmoid) and patchy density inside (the texture).
        extent = expit((1 - d) * 4.0).astype(np.float32)
        patchy = np.clip(0.75 + 0.35 * texture, 0.2, 1.2)
        # The reader boxes what is visibly dense: the core of the opacity inside the lung.
        inside = (d < 1.0) & (mask > 0.5)
        rows, cols = np.nonzero(inside)
        if len(rows) < 4:
            continue
        box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
        # Overlapping opacities would be read as one lesion with one box: draw only disjoint ones.
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
            continue
        layer = opacity.contrast * extent * patchy * mask
        image = np.clip(image + layer, 0, 1).astype(np.float32)
        boxes.append(box)
    if positive and not boxes:  # every drawn opacity fell outside the lungs: a negative after all
        klass = NORMAL
    return image, boxes, klass


def _draw_opacities(rng: np.random.Generator) -> list[_Opacity]:
    count = int(rng.choice(_OPACITY_COUNTS, p=_OPACITY_COUNT_P))
    first_side = int(rng.choice([-1, 1]))
    opacities = []
    for i in range(count):
        # Two opacities are mostly bilateral, as in the release (multifocal pneumonia).
        side = first_side if i != 1 else -first_side
        opacities.append(
            _Opacity(
                side=side,
                t=float(rng.uniform(0.35, 0.75)),
                r=float(rng.uniform(-0.2, 0.4)),
                half_u=float(rng.uniform(0.45, 0.75)),
                half_v=float(rng.uniform(0.14, 0.26)),
                contrast=float(rng.uniform(0.22, 0.34)),
            )
        )
    return opacities


def _dataset(patient_id: str, rng: np.random.Generator, seed: int, index: int) -> Dataset:
    sop_uid = _uid(seed, "instance", index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    # The release blanks dates to 1901-01-01 and keeps only age and sex.
    ds.StudyDate = "19010101"
    ds.StudyTime = "000000.00"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    view = "AP" if rng.random() < 0.45 else "PA"
    ds.StudyDescription = ds.SeriesDescription = f"view: {view}"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F" if rng.random() < 0.45 else "M"
    # The release writes the age as a bare number ("51"), not DICOM's "051Y": kept, the readers must cope.
    with config.disable_value_validation():
        ds.PatientAge = str(int(rng.integers(18, 90)))
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.StudyInstanceUID = _uid(seed, "study", index)
    ds.SeriesInstanceUID = _uid(seed, "series", index)
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.PixelSpacing = ["0.14", "0.14"]
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    return ds


def _set_pixels_8bit(ds: Dataset, image: FloatImage) -> None:
    stored: NDArray[np.uint8] = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = stored.tobytes()


def _uid(seed: int, *parts: object) -> UID:
    return generate_uid(entropy_srcs=[_UID_NAMESPACE, str(seed), *map(str, parts)])
