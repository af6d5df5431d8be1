"""Importers of the label files of public releases, read as they ship, into the box contract.

Each format module reads its release's label file(s), checks them against the images present, and writes
``boxes.csv`` (:mod:`medres.data.boxes` contract) and ``labels.csv`` (image-level labels derived from the
boxes, the layout :func:`medres.data.manifest.join_labels` reads) into the output folder. Paths in both
are POSIX paths relative to the release folder, which is the archive root to index. LUNA16's boxes are 3D
(patient LPS mm, keyed by SeriesInstanceUID); MIMIC-CXR has image-level labels only, so its importer writes
``labels.csv`` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medres.data.importers.common import ImportSummary
from medres.data.importers.luna16 import import_luna16
from medres.data.importers.mimic import import_mimic_cxr
from medres.data.importers.rsna import import_rsna_pneumonia
from medres.data.importers.vindr import import_vindr_cxr

IMPORTERS: dict[str, Callable[..., ImportSummary]] = {
    "rsna-pneumonia": import_rsna_pneumonia,
    "vindr-cxr": import_vindr_cxr,
    "luna16": import_luna16,
    "mimic-cxr": import_mimic_cxr,
}


def import_labels(fmt: str, src: Path, out: Path, **options: object) -> ImportSummary:
    """Convert the label files of the public release ``fmt`` under ``src`` into ``out``.

    Args:
        fmt: One of :data:`IMPORTERS`.
        src: The release folder, as it ships.
        out: Output folder for ``boxes.csv`` and ``labels.csv``.
        **options: Format-specific options (see each importer).

    Returns:
        What was written.
    """
    if fmt not in IMPORTERS:
        raise ValueError(f"unknown label format {fmt!r}; expected one of {sorted(IMPORTERS)}")
    return IMPORTERS[fmt](Path(src), Path(out), **options)


__all__ = [
    "IMPORTERS",
    "ImportSummary",
    "import_labels",
    "import_luna16",
    "import_mimic_cxr",
    "import_rsna_pneumonia",
    "import_vindr_cxr",
]
