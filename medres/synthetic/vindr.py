"""A synthetic archive in the layout of the VinDr-CXR release (PhysioNet 1.0.0), several readers per image.

The release, as it ships::

    train/<image_id>.dicom                       image_id: 32 hex digits; no patient folders
    annotations/annotations_train.csv            image_id,rad_id,class_name,x_min,y_min,x_max,y_max
    annotations/image_labels_train.csv           image_id,rad_id,<one 0/1 column per class>

Each image was read by three of seventeen radiologists (``R1`` .. ``R17``); each reader draws boxes in
stored pixels, or writes one ``No finding`` row with blank corners. Here the truth comes from the chest
model of :mod:`medres.synthetic` (nodules → ``Nodule/Mass``, cardiomegaly → ``Cardiomegaly``,
effusion → ``Pleural effusion``) plus the patchy air-space opacities of :mod:`medres.synthetic.rsna`
(``Lung Opacity``). Readers disagree as radiologists do: each misses a lesion now and then, draws its
box a few pixels off, and sometimes boxes something that is not there. ``truth.csv`` (not part of the
release) holds the true boxes, for checking reader merging.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from medres.synthetic.chest_xray import (
    _draw_anatomy,
    _draw_encoding,
    _draw_geometry,
    _frontal_lungs,
    _render,
    _set_pixels,
)
from medres.synthetic.rsna import render_rsna
from medres.synthetic.writing import new_archive_folder, require_at_least

VINDR_IMAGES = "train"
VINDR_ANNOTATIONS = "annotations/annotations_train.csv"
VINDR_IMAGE_LABELS = "annotations/image_labels_train.csv"
VINDR_HEADER = ("image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max")
VINDR_CLASSES = ("Cardiomegaly", "Lung Opacity", "Nodule/Mass", "Pleural effusion")
NO_FINDING = "No finding"
TRUTH_CSV = "truth.csv"

_UID_NAMESPACE = "medres.synthetic.vindr"
_P_MISS = 0.12  # a reader overlooks a true lesion
_P_FALSE_BOX = 0.06  # a reader boxes a lesion that is not there
_JITTER = 0.08  # reader's corner error, fraction of the box size (sd)
_P_CLASS = {"Cardiomegaly": 0.25, "Nodule/Mass": 0.3, "Pleural effusion": 0.25}

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class VindrSummary:
    """What :func:`synth_vindr_cxr` wrote.

    Attributes:
        root: The archive folder.
        images: Number of DICOM files.
        positives: Images with at least one true lesion.
        lesions: True lesions (rows of ``truth.csv``).
        annotations_csv: Path of ``annotations/annotations_train.csv``.
    """

    root: Path
    images: int
    positives: int
    lesions: int
    annotations_csv: Path


def synth_vindr_cxr(
    out: Path, images: int = 150, seed: int = 0, image_size: int = 256, readers_per_image: int = 3
) -> VindrSummary:
    """Write a synthetic archive in the VinDr-CXR layout with several radiologists' boxes per image.

    Args:
        out: Folder to create; it may exist but must be empty.
        images: Number of training images, at least 1.
        seed: Non-negative seed; the same seed writes byte-identical files.
        image_size: Nominal Rows/Columns, at least 64; each image varies by about ±8 %.
        readers_per_image: Radiologists per image, 1 to 17.

    Returns:
        Counts and paths of what was written.

    Raises:
        ValueError: If an argument is out of range.
        FileExistsError: If ``out`` exists and is not an empty folder.
    """
    require_at_least(1, images=images)
    require_at_least(0, seed=seed)
    require_at_least(64, image_size=image_size)
    if not 1 <= readers_per_image <= 17:
        raise ValueError(f"readers_per_image must be in 1..17, got {readers_per_image}")
    out = new_archive_folder(out)
    (out / VINDR_IMAGES).mkdir(parents=True)
    (out / "annotations").mkdir()

    annotations: list[list[str]] = []
    image_labels: list[list[str]] = []
    truth_rows: list[list[str]] = []
    positives = 0
    for i in range(images):
        rng = np.random.default_rng([seed, i])
        image_id = rng.bytes(16).hex()
        size = round(image_size * float(rng.uniform(0.92, 1.08)))
        image, lesions = _render_image(rng, size)
        encoding = _draw_encoding(rng)
        ds = _dataset(seed, i, encoding.photometric)
        _set_pixels(ds, image, encoding)
        ds.save_as(out / VINDR_IMAGES / f"{image_id}.dicom", enforce_file_format=True)
        positives += bool(lesions)
        truth_rows.extend([image_id, c, *map(_corner, box)] for c, box in lesions)
        readers = rng.choice(np.arange(1, 18), size=readers_per_image, replace=False)
        for reader in sorted(readers):
            rad_id = f"R{reader}"
            drawn = _read(rng, lesions, size)
            if not drawn:
                annotations.append([image_id, rad_id, NO_FINDING, "", "", "", ""])
            annotations.extend([image_id, rad_id, c, *map(_corner, box)] for c, box in drawn)
            present = {c for c, _ in drawn}
            image_labels.append([image_id, rad_id, *("1" if c in present else "0" for c in VINDR_CLASSES),
                                 "0" if present else "1"])  # fmt: skip

    annotations_csv = out / VINDR_ANNOTATIONS
    _write_csv(annotations_csv, VINDR_HEADER, annotations)
    _write_csv(out / VINDR_IMAGE_LABELS, ("image_id", "rad_id", *VINDR_CLASSES, NO_FINDING), image_labels)
    _write_csv(out / TRUTH_CSV, ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max"), truth_rows)
    return VindrSummary(out, images, positives, len(truth_rows), annotations_csv)


def _render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple[str, Box]]]:
    """A frontal radiograph and its true ``(class_name, box)`` lesions."""
    lesions: list[tuple[str, Box]] = []
    if rng.random() < 0.3:
        # Air-space opacities, drawn (and boxed) by the RSNA-layout renderer.
        image, boxes, _ = render_rsna(rng, size, prevalence=0.999)
        lesions.extend(("Lung Opacity", tuple(map(float, b))) for b in boxes)  # type: ignore[misc]
        return image, lesions
    anatomy = _draw_anatomy(rng)
    geometry = _draw_geometry(rng)
    present = {c: bool(rng.random() < p) for c, p in _P_CLASS.items()}
    truth = {"nodule": present["Nodule/Mass"], "effusion": present["Pleural effusion"],
             "cardiomegaly": present["Cardiomegaly"], "pneumothorax": False}  # fmt: skip
    image = _render("PA", anatomy, geometry, truth, size, size, rng)
    lungs = _frontal_lungs(anatomy)
    if present["Nodule/Mass"]:
        for nodule in geometry.nodules:
            # The nodule's centre and radius as the chest model draws it (medres.synthetic._nodules).
            lung = lungs[int(nodule.side > 0)]
            cu = (lung.center_u + lung.outward * nodule.r * lung.half_width) * size
            cv = (lung.apex_v + nodule.t * (lung.base_v - lung.apex_v)) * size
            radius = nodule.radius * size
            lesions.append(("Nodule/Mass", (cu - radius, cv - radius, cu + radius, cv + radius)))
    if present["Cardiomegaly"]:
        # Readers box the heart shadow: its transverse diameter (the CTR) across, hilum to diaphragm down.
        # Half the heart's width: CTR x half the thoracic width (outer lung wall to outer lung wall).
        half = geometry.enlarged_ctr * (anatomy.lung_offset + anatomy.lung_half_width) * size
        centre = anatomy.center_u * size
        top, bottom = (anatomy.apex_v + 0.45 * (anatomy.base_v - anatomy.apex_v)) * size, anatomy.base_v * size
        lesions.append(("Cardiomegaly", (centre - half, top, centre + half, bottom)))
    if present["Pleural effusion"]:
        for side in geometry.effusion_sides:
            lung = lungs[int(side > 0)]
            height = geometry.effusion_height * (lung.base_v - lung.apex_v)
            x0, x1 = (lung.center_u - 1.08 * lung.half_width) * size, (lung.center_u + 1.08 * lung.half_width) * size
            y0 = (lung.base_v - height - geometry.meniscus) * size
            lesions.append(("Pleural effusion", (x0, y0, x1, (lung.base_v + 0.02) * size)))
    clipped = [(c, _clip(box, size)) for c, box in lesions]
    return image, [(c, b) for c, b in clipped if b[2] - b[0] >= 2 and b[3] - b[1] >= 2]


def _read(rng: np.random.Generator, lesions: list[tuple[str, Box]], size: int) -> list[tuple[str, Box]]:
    """One radiologist's boxes: misses, corner jitter and the occasional false box."""
    drawn: list[tuple[str, Box]] = []
    for class_name, (x0, y0, x1, y1) in lesions:
        # Always both draws, so a miss never shifts the draws of later lesions.
        miss, noise = rng.random(), rng.normal(0, _JITTER, 4)
        if miss < _P_MISS:
            continue
        w, h = x1 - x0, y1 - y0
        jittered = (x0 + noise[0] * w, y0 + noise[1] * h, x1 + noise[2] * w, y1 + noise[3] * h)
        box = _clip(jittered, size)
        if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
            drawn.append((class_name, box))
    if rng.random() < _P_FALSE_BOX:
        cx, cy, r = rng.uniform(0.25, 0.75) * size, rng.uniform(0.3, 0.7) * size, rng.uniform(0.03, 0.06) * size
        drawn.append(("Nodule/Mass", _clip((cx - r, cy - r, cx + r, cy + r), size)))
    return drawn


def _clip(box: Box, size: int) -> Box:
    x0, y0, x1, y1 = (float(np.clip(v, 0, size)) for v in box)
    return (x0, y0, x1, y1)


def _corner(value: float) -> str:
    # The release writes corners with up to three decimals.
    return f"{value:.3f}"


def _dataset(seed: int, index: int, photometric: str) -> Dataset:
    sop_uid = _uid(seed, "instance", index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "DX"
    # The release removed identities and dates; the pseudonymous key is the file name.
    ds.PatientID = ""
    ds.PatientName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.StudyInstanceUID = _uid(seed, "study", index)
    ds.SeriesInstanceUID = _uid(seed, "series", index)
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.BodyPartExamined = "CHEST"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if photometric == "MONOCHROME2" else 1
    return ds


def _write_csv(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _uid(seed: int, *parts: object) -> UID:
    return generate_uid(entropy_srcs=[_UID_NAMESPACE, str(seed), *map(str, parts)])
