"""What every synthetic archive shares: made-up patients, label cells with unknown and uncertain values, DICOM numbers.

The identities are invented and planted inside the files only (names, MRNs, birth dates, institutions, physicians), so
the privacy tests can check that none of them leaves medres.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

FloatImage = NDArray[np.float32]

P_UNKNOWN = 0.05  # blank cell: masked out of loss and metrics
P_UNCERTAIN = 0.05  # "-1" cell: handled by the configured uncertainty policy
# pylibjpeg-rle writes the same bytes as pydicom's own pure-Python RLE encoder, about 40x faster.
RLE_PLUGIN = "pylibjpeg"
# Made-up identities. The names are common enough to be plausible and belong to no one in particular.
_FAMILY_NAMES = (
    "Smith", "Garcia", "Nguyen", "Muller", "Rossi", "Kowalski", "Okafor", "Tanaka", "Silva", "Haddad",
    "Johansson", "Dubois", "Novak", "Kim", "Patel", "Fischer", "Moreau", "Jensen", "Costa", "Ivanova",
)  # fmt: skip
_GIVEN_NAMES = {
    "F": ("Anna", "Maria", "Sofia", "Emma", "Aiko", "Chiara", "Fatima", "Ingrid", "Lucia", "Nadia"),
    "M": ("James", "Luca", "Minh", "Jonas", "Kenji", "Pierre", "Omar", "Tomas", "Daniel", "Erik"),
}
PHYSICIANS = ("Hartmann^Eva", "Lindqvist^Per", "Okonkwo^Chidi", "Ferreira^Rui", "Yamamoto^Hana", "Brennan^Aoife")
OPERATORS = ("Walsh^Tom", "Ahmed^Sara", "Berg^Nils", "Lopez^Ines", "Chen^Wei")
_INSTITUTIONS = ("Riverside General Hospital", "St. Aldhelm Medical Centre", "Northgate University Clinic")


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


@dataclass(frozen=True)
class Patient:
    """A made-up patient whose identifiers are planted in the files (and must never leave medres)."""

    number: int  # 1-based ordinal, used for folder names and UIDs
    name: str
    patient_id: str
    birth_date: dt.date
    sex: str
    institution: str


def draw_patient(rng: np.random.Generator, seed: int, index: int) -> Patient:
    """The ``index``-th patient of an archive: a plausible name, a unique MRN, a birth date and an institution."""
    sex = "F" if rng.random() < 0.5 else "M"
    name = f"{rng.choice(_FAMILY_NAMES)}^{rng.choice(_GIVEN_NAMES[sex])}"
    # An affine map of the patient index modulo 10**7 (multiplier coprime with 10) is a bijection,
    # so MRNs look random yet never collide within an archive.
    offset = int(np.random.default_rng([seed, 2**31]).integers(10**7))
    mrn = (7_919_113 * (index + 1) + offset) % 10**7
    birth = dt.date(1935, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 65)))
    return Patient(index + 1, name, f"MRN{mrn:07d}", birth, sex, str(rng.choice(_INSTITUTIONS)))


def draw_labels(rng: np.random.Generator, prevalence: Mapping[str, float]) -> tuple[dict[str, str], dict[str, bool]]:
    """Truth and ``labels.csv`` cell of each finding (in ``prevalence`` order)."""
    labels: dict[str, str] = {}
    truth: dict[str, bool] = {}
    for finding, finding_prevalence in prevalence.items():
        # Always three draws per finding, so label noise never shifts later draws.
        present, cell, hidden = rng.random(3)
        if cell < P_UNKNOWN:
            labels[finding], truth[finding] = "", bool(hidden < 0.5)
        elif cell < P_UNKNOWN + P_UNCERTAIN:
            labels[finding], truth[finding] = "-1", bool(hidden < 0.5)
        else:
            truth[finding] = bool(present < finding_prevalence)
            labels[finding] = "1" if truth[finding] else "0"
    return labels, truth


def require_at_least(minimum: int, **values: int) -> None:
    """Refuse a writer's argument below ``minimum``, naming it (``patients must be >= 1, got 0``)."""
    for name, value in values.items():
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


def require_within(low: int, high: int, **values: int) -> None:
    """Refuse a writer's argument outside ``low..high``, naming it."""
    for name, value in values.items():
        if not low <= value <= high:
            raise ValueError(f"{name} must be in {low}..{high}, got {value}")


def new_archive_folder(out: Path) -> Path:
    """``out``, created or an existing empty folder: a synthetic archive is never written over anything.

    Raises:
        FileExistsError: If ``out`` exists and is not an empty folder.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"out={out} exists and is not an empty folder; refusing to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def ds_number(x: float) -> str:
    """A DS string of at most 16 characters."""
    return f"{x:.6g}"
