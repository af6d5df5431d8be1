"""``medres labels import FORMAT SRC --out DIR`` and the public-layout ``medres synth`` kinds (issue 18)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ArgumentParser

from medres.data.boxes import MergeRule


def labels_import_command(
    format: Literal["rsna-pneumonia", "vindr-cxr"],
    src: Path,
    out: Path,
    merge: Literal["union", "consensus"] = "consensus",
    min_readers: int = 2,
    iou: float = 0.4,
) -> None:
    """Convert a public release's label files, read as they ship, into boxes.csv and labels.csv.

    Args:
        format: The release layout.
        src: The release folder (the archive root to index).
        out: Output folder for boxes.csv (every reader's boxes) and labels.csv (image-level, derived).
        merge: How several readers' boxes are merged for labels.csv (single-reader releases ignore it).
        min_readers: Readers that must agree under the consensus rule.
        iou: IoU at which two readers' boxes are the same lesion.
    """
    from medres.data.importers import import_labels

    options: dict[str, Any] = {}
    if format == "vindr-cxr":
        options["merge"] = MergeRule(merge, min_readers=min_readers, iou=iou)
    summary = import_labels(format, Path(src), Path(out), **options)
    print(
        f"{summary.images} images ({summary.positives} with boxes, {summary.boxes} boxes; findings "
        f"{', '.join(summary.findings)}) -> {summary.boxes_csv}, {summary.labels_csv}"
    )


def labels_main(args: Sequence[str]) -> None:
    """``medres labels SUBCOMMAND``: only ``import`` today."""
    parser = ArgumentParser(
        prog="medres labels", description="Label files: import public layouts.", exit_on_error=False
    )
    subcommands = parser.add_subcommands(required=True, dest="action")
    importer = ArgumentParser(exit_on_error=False)
    importer.add_argument("format", choices=["rsna-pneumonia", "vindr-cxr"], help="The release layout.")
    importer.add_argument("src", type=Path, help="The release folder (the archive root to index).")
    importer.add_argument("--out", type=Path, required=True, help="Output folder for boxes.csv and labels.csv.")
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


# `medres synth KIND` entries beyond the hospital-export archives: (function, help).
SYNTH_LAYOUTS: dict[str, tuple[Callable[..., None], str]] = {
    "rsna-pneumonia": (synth_rsna_pneumonia_command, "RSNA Pneumonia Detection layout (boxes, stem-keyed)."),
    "vindr-cxr": (synth_vindr_cxr_command, "VinDr-CXR layout (3 radiologists' boxes, 'No finding' rows)."),
}
