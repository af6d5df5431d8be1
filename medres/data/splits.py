"""Patient-level train/val/test splits: seeded, written once, reused, checked disjoint.

Splitting by patient (not image or study) keeps one patient's images out of more than one split, the
usual source of optimistic validation scores. The split file is the hand-off between indexing and
training (nnU-Net style): the first run writes it, later runs reuse it and refuse to silently change it.

On disk: ``<path>`` is a CSV ``patient_key,split`` and ``<path>.meta.json`` records the seed and
fractions it was made with. Both are written atomically (temporary file + rename), the JSON first, so a
CSV never exists without its record.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SPLITS", "assign_patient_splits", "load_or_create_splits"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_TOLERANCE = 1e-6


def _check_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3:
        raise ValueError(f"fractions must be (train, val, test), got {fractions!r}")
    if any(not math.isfinite(f) or f < 0 for f in values):
        raise ValueError(f"fractions must be non-negative, got {fractions!r}")
    if abs(sum(values) - 1.0) > _TOLERANCE:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {sum(values):.6g})")
    return values[0], values[1], values[2]


def _split_sizes(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Largest-remainder sizes summing to n; then every positive-fraction split gets ≥1 if n allows."""
    exact = [n * f for f in fractions]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    positive = [i for i in range(3) if fractions[i] > 0]
    if n >= len(positive):
        for i in positive:
            if sizes[i] == 0:
                donor = max(range(3), key=lambda j: sizes[j])  # the largest split can spare one
                sizes[donor] -= 1
                sizes[i] += 1
    return sizes


def assign_patient_splits(
    patient_keys: Iterable[str], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, str]:
    """Assign each patient to 'train', 'val' or 'test'.

    Deterministic in the *set* of keys and the seed: keys are de-duplicated and sorted, then shuffled
    with ``numpy.random.default_rng(seed)``, so input order and duplicates do not matter.

    Args:
        patient_keys: patient keys (duplicates allowed, e.g. one per image).
        fractions: (train, val, test); non-negative, summing to 1 (±1e-6).
        seed: shuffle seed.

    Returns:
        ``{patient_key: split}``.

    Raises:
        ValueError: invalid fractions.
    """
    fractions = _check_fractions(fractions)
    keys = sorted(set(patient_keys))
    order = np.random.default_rng(seed).permutation(len(keys))
    sizes = _split_sizes(len(keys), fractions)
    labels = np.repeat(np.array(SPLITS), sizes)  # split of the i-th patient in shuffled order
    return {keys[idx]: str(label) for idx, label in zip(order.tolist(), labels, strict=True)}


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _load(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    meta_path = _meta_path(path)
    if not meta_path.exists():
        raise ValueError(f"{path}: split record {meta_path.name} is missing; delete {path} to re-create the splits")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    splits: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"patient_key", "split"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns 'patient_key,split', got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            key, split = row["patient_key"], row["split"]
            if split not in SPLITS:
                raise ValueError(f"{path}: line {line}: unknown split {split!r} (expected one of {SPLITS})")
            if key in splits and splits[key] != split:
                raise ValueError(
                    f"{path}: patient {key} is in both {splits[key]!r} and {split!r}; splits must be disjoint"
                )
            splits[key] = split
    return splits, meta


def load_or_create_splits(
    patient_keys: Iterable[str],
    path: Path,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, str]:
    """Reuse the split file at ``path`` if it exists, else create it from ``patient_keys``.

    Args:
        patient_keys: the patients that need a split now.
        path: the CSV (``patient_key,split``); its record is ``<path>.meta.json``.
        fractions: (train, val, test).
        seed: shuffle seed.

    Returns:
        ``{patient_key: split}`` for exactly the requested patients. Patients in the file but not
        requested (archive shrank, filtered manifest) are ignored.

    Raises:
        ValueError: the file was made with another seed/fractions, it lacks some requested patients
            (archive grew), it is malformed, or a patient appears in two splits.
    """
    path = Path(path)
    fractions = _check_fractions(fractions)
    keys = set(patient_keys)
    if not path.exists():
        splits = assign_patient_splits(keys, fractions, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(_meta_path(path), json.dumps({"seed": seed, "fractions": list(fractions)}, indent=2) + "\n")
        body = "patient_key,split\n" + "".join(f"{k},{splits[k]}\n" for k in sorted(splits))
        _atomic_write(path, body)
        logger.info("wrote splits for %d patients to %s", len(splits), path)
        return splits

    stored, meta = _load(path)
    stored_fractions = tuple(float(f) for f in meta.get("fractions", []))
    same_fractions = len(stored_fractions) == 3 and all(
        abs(a - b) <= _TOLERANCE for a, b in zip(stored_fractions, fractions, strict=True)
    )
    if meta.get("seed") != seed or not same_fractions:
        raise ValueError(
            f"{path} was made with seed={meta.get('seed')} fractions={list(stored_fractions)}, but seed={seed} "
            f"fractions={list(fractions)} were requested; delete the file to re-split or change the setting back"
        )
    missing = keys - stored.keys()
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} patient(s) have no split (the archive grew?); "
            "delete the file to re-split everyone, or assign the new patients explicitly"
        )
    return {k: stored[k] for k in keys}
