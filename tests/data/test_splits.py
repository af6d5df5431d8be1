from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from medres.data.splits import assign_patient_splits, load_or_create_splits

KEYS = [f"patient{i:04d}" for i in range(1000)]


def test_deterministic_in_the_set_of_keys() -> None:
    a = assign_patient_splits(KEYS, seed=3)
    b = assign_patient_splits(list(reversed(KEYS)) + KEYS[:10], seed=3)  # order and duplicates ignored
    assert a == b
    assert set(a) == set(KEYS) and set(a.values()) == {"train", "val", "test"}


def test_seed_changes_assignment() -> None:
    assert assign_patient_splits(KEYS, seed=0) != assign_patient_splits(KEYS, seed=1)


def test_fractions_respected() -> None:
    counts = Counter(assign_patient_splits(KEYS, fractions=(0.6, 0.3, 0.1)).values())
    assert counts == {"train": 600, "val": 300, "test": 100}
    counts = Counter(assign_patient_splits(KEYS[:7], fractions=(0.7, 0.15, 0.15)).values())
    assert sum(counts.values()) == 7 and all(counts[s] >= 1 for s in ("train", "val", "test"))
    counts = Counter(assign_patient_splits(KEYS[:10], fractions=(0.8, 0.2, 0.0)).values())
    assert counts == {"train": 8, "val": 2}
    assert assign_patient_splits([], seed=0) == {}


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5), (1.2, -0.1, -0.1), (0.7, 0.2, 0.05)])
def test_bad_fractions(fractions: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="fractions"):
        assign_patient_splits(KEYS, fractions=fractions)


def test_create_then_reuse(tmp_path: Path) -> None:
    path = tmp_path / "splits" / "splits.csv"
    first = load_or_create_splits(KEYS, path, seed=5)
    assert path.exists() and (tmp_path / "splits" / "splits.csv.meta.json").exists()
    assert json.loads((tmp_path / "splits" / "splits.csv.meta.json").read_text())["seed"] == 5
    assert path.read_text().splitlines()[0] == "patient_key,split"
    assert first == assign_patient_splits(KEYS, seed=5)

    # Reused as written, even if the algorithm's output would differ for this subset.
    subset = KEYS[:100]
    again = load_or_create_splits(subset, path, seed=5)
    assert again == {k: first[k] for k in subset}
    assert not list(tmp_path.glob("splits/.*tmp"))


def test_mismatched_settings(tmp_path: Path) -> None:
    path = tmp_path / "splits.csv"
    load_or_create_splits(KEYS, path, seed=0)
    with pytest.raises(ValueError, match=r"seed=0.*seed=1.*delete the file"):
        load_or_create_splits(KEYS, path, seed=1)
    with pytest.raises(ValueError, match="fractions"):
        load_or_create_splits(KEYS, path, fractions=(0.8, 0.1, 0.1), seed=0)


def test_archive_grew(tmp_path: Path) -> None:
    path = tmp_path / "splits.csv"
    load_or_create_splits(KEYS[:500], path)
    with pytest.raises(ValueError, match=r"splits\.csv: 3 patient\(s\) have no split"):
        load_or_create_splits([*KEYS[:500], "new1", "new2", "new3"], path)


def test_overlap_on_load_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "splits.csv"
    load_or_create_splits(KEYS[:10], path)
    with path.open("a") as f:
        f.write(f"{KEYS[0]},test\n{KEYS[0]},train\n")
    with pytest.raises(ValueError, match="disjoint"):
        load_or_create_splits(KEYS[:10], path)


def test_missing_record_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "splits.csv"
    path.write_text("patient_key,split\na,train\n")
    with pytest.raises(ValueError, match="delete"):
        load_or_create_splits(["a"], path)
