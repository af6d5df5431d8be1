"""``medres labels import FORMAT SRC --out DIR`` and the public-layout ``medres synth`` kinds (issue 18)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ArgumentParser

from medres.data.boxes import MergeRule


def labels_import_command(
    format: Literal["rsna-pneumonia", "vindr-cxr", "luna16", "mimic-cxr"],
    src: Path,
    out: Path,
    merge: Literal["union", "consensus"] = "consensus",
    min_readers: int = 2,
    iou: float = 0.4,
) -> None:
    """Convert a public release's label files, read as they ship, into boxes.csv and labels.csv.

    Args:
        format: The release layout: ``rsna-pneumonia``, ``vindr-cxr`` (2D boxes), ``luna16`` (3D nodule boxes in
            patient LPS mm, keyed by SeriesInstanceUID) or ``mimic-cxr`` (image-level labels only, no boxes.csv).
        src: The release folder (the archive root to index).
        out: Output folder for boxes.csv (every reader's boxes) and labels.csv (image- or series-level).
        merge: How several readers' boxes are merged for labels.csv (single-reader releases ignore it).
        min_readers: Readers that must agree under the consensus rule.
        iou: IoU at which two readers' boxes are the same lesion.
    """
    from medres.data.importers import import_labels

    options: dict[str, Any] = {}
    if format == "vindr-cxr":
        options["merge"] = MergeRule(merge, min_readers=min_readers, iou=iou)
    summary = import_labels(format, Path(src), Path(out), **options)
    unit = "series" if format == "luna16" else "images"
    if summary.boxes_csv is None:
        print(
            f"{summary.images} {unit} ({summary.positives} with a positive finding; findings "
            f"{', '.join(summary.findings)}; image-level labels only, no boxes) -> {summary.labels_csv}"
        )
        return
    print(
        f"{summary.images} {unit} ({summary.positives} with boxes, {summary.boxes} boxes; findings "
        f"{', '.join(summary.findings)}) -> {summary.boxes_csv}, {summary.labels_csv}"
    )


def labels_main(args: Sequence[str]) -> None:
    """``medres labels SUBCOMMAND``: only ``import`` today."""
    parser = ArgumentParser(
        prog="medres labels", description="Label files: import public layouts.", exit_on_error=False
    )
    subcommands = parser.add_subcommands(required=True, dest="action")
    importer = ArgumentParser(exit_on_error=False)
    importer.add_argument(
        "format",
        choices=["rsna-pneumonia", "vindr-cxr", "luna16", "mimic-cxr"],
        help="The release layout: rsna-pneumonia, vindr-cxr (2D boxes), luna16 (3D nodule boxes, LPS mm, "
        "SeriesInstanceUID), mimic-cxr (image-level labels keyed by path, no boxes.csv).",
    )
    importer.add_argument("src", type=Path, help="The release folder (the archive root to index).")
    importer.add_argument(
        "--out", type=Path, required=True, help="Output folder for boxes.csv (not mimic-cxr) and labels.csv."
    )
    importer.add_argument("--merge", choices=["union", "consensus"], default="consensus", help="Reader merge rule.")
    importer.add_argument("--min_readers", type=int, default=2, help="Readers that must agree (consensus).")
    importer.add_argument("--iou", type=float, default=0.4, help="IoU at which two readers' boxes agree.")
    subcommands.add_subcommand("import", importer, help="Convert a public release's labels into the box contract.")
    config = parser.parse_args(list(args))
    labels_import_command(**config["import"].as_dict())


def synth_rsna_pneumonia_command(
    out: Path, patients: int = 200, seed: int = 0, image_size: int = 256, prevalence: float = 0.4
) -> None:
    """Write a synthetic archive in the RSNA Pneumonia Detection Challenge layout, with its true boxes.

    Args:
        out: Folder to create (empty or absent).
        patients: Number of patients (one image each).
        seed: Non-negative seed; the same seed writes byte-identical files.
        image_size: Rows = Columns of every image (the release has 1024).
        prevalence: Fraction of images with lung opacities.
    """
    from medres.synthetic.rsna import synth_rsna_pneumonia

    s = synth_rsna_pneumonia(out, patients=patients, seed=seed, image_size=image_size, prevalence=prevalence)
    print(f"{s.images} images ({s.positives} with opacities, {s.boxes} boxes) -> {s.root}")


def synth_vindr_cxr_command(
    out: Path, images: int = 150, seed: int = 0, image_size: int = 256, readers_per_image: int = 3
) -> None:
    """Write a synthetic archive in the VinDr-CXR layout: several radiologists' boxes per image.

    Args:
        out: Folder to create (empty or absent).
        images: Number of training images.
        seed: Non-negative seed; the same seed writes byte-identical files.
        image_size: Nominal Rows/Columns.
        readers_per_image: Radiologists per image (the release has 3).
    """
    from medres.synthetic.vindr import synth_vindr_cxr

    s = synth_vindr_cxr(out, images=images, seed=seed, image_size=image_size, readers_per_image=readers_per_image)
    print(f"{s.images} images ({s.positives} with lesions, {s.lesions} true lesions) -> {s.root}")


def synth_luna16_command(
    out: Path,
    scans: int = 12,
    seed: int = 0,
    size: int = 48,
    slices: int = 32,
    negative_fraction: float = 0.25,
    orientation: Literal["axial", "coronal", "sagittal"] = "axial",
) -> None:
    """Write a synthetic CT archive in LUNA16's layout (LIDC-IDRI folders, annotations.csv, seriesuids.csv).

    Args:
        out: Folder to create (empty or absent).
        scans: Number of cases (one CT series each).
        seed: Non-negative seed; the same seed writes byte-identical files.
        size: Rows = Columns of every slice.
        slices: Slices per series.
        negative_fraction: Fraction of scans without a nodule.
        orientation: Acquisition plane (the release is axial).
    """
    from medres.synthetic.luna16 import synth_luna16

    s = synth_luna16(
        out,
        scans=scans,
        seed=seed,
        size=size,
        slices=slices,
        negative_fraction=negative_fraction,
        orientation=orientation,
    )
    print(f"{s.scans} scans ({s.negatives} without nodules, {len(s.nodules)} nodules) -> {s.root}")


def synth_mimic_cxr_command(out: Path, patients: int = 20, seed: int = 0, image_size: int = 128) -> None:
    """Write a synthetic archive in the MIMIC-CXR layout: files/pNN/pSUBJECT/sSTUDY/DICOM_ID.dcm and its CSVs.

    Args:
        out: Folder to create (empty or absent).
        patients: Number of subjects.
        seed: Non-negative seed; the same seed writes byte-identical files.
        image_size: Nominal Rows/Columns.
    """
    from medres.synthetic.mimic import synth_mimic_cxr

    s = synth_mimic_cxr(out, patients=patients, seed=seed, image_size=image_size)
    print(f"{s.images} images in {s.studies} studies of {s.subjects} subjects -> {s.root}")


# `medres synth KIND` entries beyond the hospital-export archives: (function, help).
SYNTH_LAYOUTS: dict[str, tuple[Callable[..., None], str]] = {
    "rsna-pneumonia": (synth_rsna_pneumonia_command, "RSNA Pneumonia Detection layout (boxes, stem-keyed)."),
    "vindr-cxr": (synth_vindr_cxr_command, "VinDr-CXR layout (3 radiologists' boxes, 'No finding' rows)."),
    "luna16": (synth_luna16_command, "LUNA16 layout (LIDC-IDRI CT series, nodule centres in LPS mm)."),
    "mimic-cxr": (synth_mimic_cxr_command, "MIMIC-CXR layout (pNN/p<subject>/s<study>, CheXpert-style labels)."),
}
