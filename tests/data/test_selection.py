"""Selection rules on manifest rows: 2D instances and 3D series, each rejection with its reason."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from medres.data.selection import REJECTED_COLUMNS, SeriesSelection, select

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
# Tilted 20° about x: still mostly axial.
TILTED = [1.0, 0.0, 0.0, 0.0, float(np.cos(0.35)), float(-np.sin(0.35))]


def _instance(path: str, modality: str | None, view: str | None, body: str | None = "CHEST") -> dict[str, Any]:
    return {
        "path": path,
        "SOPInstanceUID": f"sop.{path}",
        "SeriesInstanceUID": f"series.{path}",
        "StudyInstanceUID": f"study.{path}",
        "Modality": modality,
        "BodyPartExamined": body,
        "ViewPosition": view,
    }


def _series(
    uid: str,
    study: str,
    n: int,
    step: float,
    orientation: list[float] = AXIAL,
    *,
    modality: str = "CT",
    image_type: str | None = "ORIGINAL\\PRIMARY\\AXIAL",
    skip: tuple[int, ...] = (),
) -> list[dict[str, Any]]:
    """Manifest rows of a series: positions along the normal, k * step (slices in ``skip`` left out)."""
    normal = np.cross(orientation[:3], orientation[3:])
    return [
        {
            "path": f"{uid}/{k}.dcm",
            "SOPInstanceUID": f"{uid}.{k}",
            "SeriesInstanceUID": uid,
            "StudyInstanceUID": study,
            "Modality": modality,
            "BodyPartExamined": "Chest",
            "ViewPosition": None,
            "Rows": 16,
            "Columns": 16,
            "NumberOfFrames": 1,
            "spacing_row": 0.7,
            "spacing_col": 0.7,
            "ImagePositionPatient": list(np.array([0.0, 0.0, -50.0]) + k * step * normal),
            "ImageOrientationPatient": orientation,
            "ImageType": image_type,
            "SliceThickness": step,
        }
        for k in range(n)
        if k not in skip
    ]


def _check_partition(manifest: pd.DataFrame, kept: pd.DataFrame, rejected: pd.DataFrame) -> None:
    assert list(rejected.columns) == list(REJECTED_COLUMNS)
    assert sorted([*kept["path"], *rejected["path"]]) == sorted(manifest["path"])
    assert rejected["message"].map(lambda m: isinstance(m, str) and len(m) > 0).all()


def _reasons(rejected: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Series (or path) → (kind, message), one per series."""
    by = "SeriesInstanceUID"
    return {row[by]: (row["kind"], row["message"]) for _, row in rejected.drop_duplicates(by).iterrows()}


# ---------------------------------------------------------------------------------------------------- 2D


def test_instances_by_modality_view_and_body_part() -> None:
    manifest = pd.DataFrame(
        [
            _instance("a", "DX", "PA"),
            _instance("b", "cr", " pa "),  # case and spaces do not matter
            _instance("c", "DX", "LL"),
            _instance("d", "CT", "PA"),
            _instance("e", "DX", None),  # null never matches an explicit rule
            _instance("f", "DX", "PA", body=None),
        ]
    )
    manifest.index = [10, 11, 12, 13, 14, 15]  # filtered manifests keep odd indices
    selection = SeriesSelection(modalities=("DX", "CR"), view_positions=("PA", "AP"), body_parts=("chest",))
    kept, rejected = select(manifest, selection, spatial_dims=2)
    _check_partition(manifest, kept, rejected)
    assert list(kept["path"]) == ["a", "b"] and list(kept.index) == [0, 1]
    messages = dict(zip(rejected["path"], rejected["message"], strict=True))
    assert "ViewPosition 'LL' not in selection.view_positions" in messages["c"]
    assert "Modality 'CT' not in selection.modalities" in messages["d"]
    assert "ViewPosition is missing" in messages["e"]
    assert "BodyPartExamined is missing" in messages["f"]
    assert set(rejected["kind"]) == {"not_selected"}
    assert rejected.set_index("path").loc["c", "SOPInstanceUID"] == "sop.c"


def test_no_rules_keep_everything_and_absent_columns_count_as_null() -> None:
    manifest = pd.DataFrame([_instance("a", "DX", "PA"), _instance("b", "DX", "AP")]).drop(columns="BodyPartExamined")
    kept, rejected = select(manifest, SeriesSelection(), spatial_dims=2)
    assert list(kept["path"]) == ["a", "b"] and rejected.empty and list(rejected.columns) == list(REJECTED_COLUMNS)
    kept, rejected = select(manifest, SeriesSelection(body_parts=("CHEST",)), spatial_dims=2)
    assert kept.empty and list(rejected["path"]) == ["a", "b"]


def test_series_rules_are_refused_in_2d() -> None:
    with pytest.raises(ValueError, match=r"\['orientation', 'prefer'\] only apply to 3D"):
        select(pd.DataFrame([_instance("a", "DX", "PA")]), SeriesSelection(orientation="axial", prefer="largest"), 2)
    with pytest.raises(ValueError, match="spatial_dims=4"):
        select(pd.DataFrame([_instance("a", "DX", "PA")]), SeriesSelection(), 4)


# ---------------------------------------------------------------------------------------------------- 3D


@pytest.fixture
def archive() -> pd.DataFrame:
    rows = [
        *_series("A.thin", "A", 6, 1.0),
        *_series("A.thick", "A", 8, 2.0),
        *_series("A.coronal", "A", 10, 1.0, CORONAL),
        *_series("A.scout", "A", 1, 1.0, CORONAL, image_type="ORIGINAL\\PRIMARY\\LOCALIZER"),
        *_series("A.mr", "A", 6, 1.0, modality="MR"),
        *_series("B.short", "B", 3, 0.5),
        *_series("B.gap", "B", 8, 0.5, skip=(4,)),
        *_series("C.tilted", "C", 5, 1.0, TILTED),
    ]
    return pd.DataFrame(rows)


def test_thinnest_axial_series_per_study(archive: pd.DataFrame) -> None:
    selection = SeriesSelection(modalities=("ct",), orientation="axial", min_slices=4, prefer="thinnest")
    kept, rejected = select(archive, selection, spatial_dims=3)
    _check_partition(archive, kept, rejected)
    assert sorted(kept["SeriesInstanceUID"].unique()) == ["A.thin", "C.tilted"]
    assert len(kept) == 6 + 5  # every row of a kept series
    reasons = _reasons(rejected)
    assert set(reasons) == {"A.thick", "A.coronal", "A.scout", "A.mr", "B.short", "B.gap"}
    assert reasons["A.thick"][0] == "not_selected" and "prefer=thinnest" in reasons["A.thick"][1]
    assert "A.thin (6 slices, 1 mm)" in reasons["A.thick"][1]
    assert "orientation coronal" in reasons["A.coronal"][1]
    assert reasons["A.scout"] == ("not_selected", reasons["A.scout"][1]) and "localizer" in reasons["A.scout"][1]
    assert "Modality 'MR'" in reasons["A.mr"][1]
    assert "3 slices < selection.min_slices 4" in reasons["B.short"][1]
    # An unreadable series goes to the ledger as what it is, not as a rule rejection.
    assert reasons["B.gap"][0] == "inconsistent_series" and "gap" in reasons["B.gap"][1]


def test_largest_series_per_study(archive: pd.DataFrame) -> None:
    selection = SeriesSelection(modalities=("CT",), orientation="axial", prefer="largest")
    kept, rejected = select(archive, selection, spatial_dims=3)
    _check_partition(archive, kept, rejected)
    assert sorted(kept["SeriesInstanceUID"].unique()) == ["A.thick", "B.short", "C.tilted"]
    assert "prefer=largest" in _reasons(rejected)["A.thin"][1]


def test_without_prefer_every_matching_series_is_kept(archive: pd.DataFrame) -> None:
    kept, rejected = select(archive, SeriesSelection(orientation="coronal"), spatial_dims=3)
    _check_partition(archive, kept, rejected)
    assert sorted(kept["SeriesInstanceUID"].unique()) == ["A.coronal"]
    kept, _ = select(archive, SeriesSelection(), spatial_dims=3)
    assert sorted(kept["SeriesInstanceUID"].unique()) == [
        "A.coronal",
        "A.mr",
        "A.thick",
        "A.thin",
        "B.short",
        "C.tilted",
    ]


def test_ties_on_spacing_go_to_more_slices_then_uid() -> None:
    manifest = pd.DataFrame([*_series("S.b", "S", 5, 1.0), *_series("S.a", "S", 5, 1.0), *_series("S.c", "S", 7, 1.0)])
    kept, _ = select(manifest, SeriesSelection(prefer="thinnest"), spatial_dims=3)
    assert set(kept["SeriesInstanceUID"]) == {"S.c"}
    kept, _ = select(manifest.loc[manifest["SeriesInstanceUID"] != "S.c"], SeriesSelection(prefer="thinnest"), 3)
    assert set(kept["SeriesInstanceUID"]) == {"S.a"}


def test_missing_geometry_and_missing_series_uid(archive: pd.DataFrame) -> None:
    manifest = archive.copy()
    manifest["ImageOrientationPatient"] = manifest["ImageOrientationPatient"].astype(object)
    manifest.loc[manifest["SeriesInstanceUID"] == "A.thin", "ImageOrientationPatient"] = None
    manifest.loc[manifest["SeriesInstanceUID"] == "A.mr", "SeriesInstanceUID"] = None
    kept, rejected = select(manifest, SeriesSelection(), spatial_dims=3)
    _check_partition(manifest, kept, rejected)
    reasons = _reasons(rejected.dropna(subset=["SeriesInstanceUID"]))
    assert reasons["A.thin"][0] == "missing_geometry"
    no_uid = rejected[rejected["SeriesInstanceUID"].isna()]
    assert len(no_uid) == 6 and set(no_uid["message"]) == {"no SeriesInstanceUID: not part of a series"}


# --------------------------------------------------------------------------------------------- config


def test_selection_round_trips_and_validates() -> None:
    selection = SeriesSelection(modalities=["CT"], body_parts="CHEST", orientation="axial", min_slices=8)  # type: ignore[arg-type]
    assert selection.modalities == ("CT",) and selection.body_parts == ("CHEST",)
    data = selection.to_dict()
    assert data == {
        "modalities": ["CT"],
        "body_parts": ["CHEST"],
        "view_positions": None,
        "orientation": "axial",
        "min_slices": 8,
        "prefer": None,
    }
    assert SeriesSelection.from_dict(data) == selection
    assert SeriesSelection.from_dict(None) == SeriesSelection()
    with pytest.raises(ValueError, match=r"unknown selection setting\(s\) \['min_slice'\]"):
        SeriesSelection.from_dict({"min_slice": 3})
    with pytest.raises(ValueError, match="selection.orientation='oblique'"):
        SeriesSelection(orientation="oblique")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="selection.min_slices=0"):
        SeriesSelection(min_slices=0)
    with pytest.raises(ValueError, match="selection.modalities"):
        SeriesSelection(modalities=())
    with pytest.raises(ValueError, match="selection.prefer='biggest'"):
        SeriesSelection(prefer="biggest")  # type: ignore[arg-type]
