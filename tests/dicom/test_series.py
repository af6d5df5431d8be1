"""Series → volume on real pydicom-written CT series: ordering, spacing, affine, issues, multi-frame, MONAI."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

from medres.data.manifest import index_archive, read_manifest, write_manifest
from medres.data.selection import SeriesSelection, select
from medres.dicom import DicomErrorKind, DicomReadError
from medres.dicom.series import (
    SeriesReader,
    orientation_label,
    plan_series,
    plan_series_files,
    read_series,
)

SIZE = 16
PIXEL_SPACING = (0.7, 0.8)  # (row, column) mm: different, so a swapped axis shows
SLICE_STEP = 1.25
N_SLICES = 6
SERIES_UID = "1.2.826.0.1.3680043.8.498.1"
STUDY_UID = "1.2.826.0.1.3680043.8.498.2"
FOR_UID = "1.2.826.0.1.3680043.8.498.3"
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    """A rotation whose columns are (row cosine, column cosine, normal) of an oblique stack."""
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


OBLIQUE = _rotation(0.3, -0.2, 0.5)
ORIGIN = np.array([-20.0, 35.5, 110.0])


def _pixels(k: int) -> np.ndarray:
    """Slice k's stored values: a ramp unique to the slice, so order and orientation both show."""
    i, j = np.mgrid[0:SIZE, 0:SIZE]
    return (1000 + 100 * k + 3 * i + j).astype(np.uint16)


def _ct_dataset(
    position: np.ndarray,
    orientation: np.ndarray,
    pixels: np.ndarray,
    *,
    instance: int,
    series_uid: str = SERIES_UID,
    image_type: str = "ORIGINAL\\PRIMARY\\AXIAL",
    pixel_spacing: tuple[float, float] = PIXEL_SPACING,
    slice_thickness: float = 5.0,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = FOR_UID
    ds.PatientID = "PAT-001"
    ds.PatientName = "Doe^Jane"
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.ImageType = image_type.split("\\")
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.PixelSpacing = [str(v) for v in pixel_spacing]
    ds.SliceThickness = str(slice_thickness)  # deliberately not the slice step
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "-1024"
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _geometry(rotation: np.ndarray = OBLIQUE) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    orientation = np.concatenate([rotation[:, 0], rotation[:, 1]])
    normal = rotation[:, 2]
    positions = [ORIGIN + k * SLICE_STEP * normal for k in range(N_SLICES)]
    return orientation, normal, positions


def _write_series(folder: Path, rotation: np.ndarray = OBLIQUE, names: list[str] | None = None) -> list[Path]:
    """An ordered CT series: file k holds slice k; InstanceNumber runs backwards (it must not matter)."""
    orientation, _, positions = _geometry(rotation)
    names = names or [f"{k:03d}.dcm" for k in range(N_SLICES)]
    return [
        _save(_ct_dataset(positions[k], orientation, _pixels(k), instance=N_SLICES - k), folder / names[k])
        for k in range(N_SLICES)
    ]


def _expected_volume() -> np.ndarray:
    return np.stack([_pixels(k).astype(np.float32) - 1024 for k in range(N_SLICES)])


@pytest.fixture
def ordered(tmp_path: Path) -> list[Path]:
    return _write_series(tmp_path / "ordered")


def _only(paths: list[Path]):  # one plan
    plans = plan_series_files(paths)
    assert len(plans) == 1
    return plans[0]


# ------------------------------------------------------------------------------------------- ordering


def test_shuffled_series_assembles_like_the_ordered_one(tmp_path: Path, ordered: list[Path]) -> None:
    shuffled_dir = tmp_path / "shuffled"
    rng = np.random.default_rng(7)
    shuffled_dir.mkdir()
    for p in rng.permutation(ordered):
        shutil.copy(p, shuffled_dir / f"{uuid.UUID(int=int(rng.integers(1 << 62))).hex}.dcm")
    shuffled = sorted(shuffled_dir.iterdir())
    assert [p.read_bytes() for p in shuffled] != [p.read_bytes() for p in ordered]  # really another order

    volume_a, meta_a = read_series(_only(ordered))
    volume_b, meta_b = read_series(_only(list(shuffled)))
    np.testing.assert_array_equal(volume_a, volume_b)
    np.testing.assert_array_equal(meta_a["affine"], meta_b["affine"])
    np.testing.assert_array_equal(volume_a, _expected_volume())  # slice k of the volume is slice k in space
    assert volume_a.dtype == np.float32 and volume_a.shape == (N_SLICES, SIZE, SIZE)


def test_spacing_comes_from_positions_along_the_normal(ordered: list[Path]) -> None:
    plan = _only(ordered)
    # SliceThickness says 5 mm; the z step of this oblique stack is SLICE_STEP * n_z; neither is the spacing.
    assert plan.slice_spacing == pytest.approx(SLICE_STEP, abs=1e-5)
    assert abs(OBLIQUE[2, 2] * SLICE_STEP - SLICE_STEP) > 0.05
    _, meta = read_series(plan)
    assert meta["spacing"] == pytest.approx((SLICE_STEP, *PIXEL_SPACING), abs=1e-5)
    assert meta["n_slices"] == N_SLICES and meta["dropped"] == 0
    assert meta["Modality"] == "CT" and meta["SeriesInstanceUID"] == SERIES_UID
    assert not {"PatientID", "PatientName"} & set(meta)
    assert plan.issues == ()


def test_affine_maps_indices_to_ras(ordered: list[Path]) -> None:
    plan = _only(ordered)
    orientation, normal, positions = _geometry()
    affine = plan.affine
    np.testing.assert_allclose(affine @ [0, 0, 0, 1], [*(positions[0] * LPS_TO_RAS), 1], atol=1e-5)
    np.testing.assert_allclose(affine[:3, 0], normal * SLICE_STEP * LPS_TO_RAS, atol=1e-5)
    # Row index along the column cosine by PixelSpacing[0], column index along the row cosine by [1].
    k, i, j = N_SLICES - 1, 3, 11
    lps = positions[k] + i * PIXEL_SPACING[0] * orientation[3:] + j * PIXEL_SPACING[1] * orientation[:3]
    np.testing.assert_allclose(affine @ [k, i, j, 1], [*(lps * LPS_TO_RAS), 1], atol=1e-4)


def test_orientation_labels() -> None:
    assert orientation_label([1, 0, 0, 0, 1, 0]) == "axial"
    assert orientation_label([1, 0, 0, 0, 0, -1]) == "coronal"
    assert orientation_label([0, 1, 0, 0, 0, -1]) == "sagittal"
    assert orientation_label(None) is None
    assert orientation_label([0, 0, 0, 0, 0, 0]) is None


# -------------------------------------------------------------------------------------------- issues


def test_localizer_and_other_orientation_are_dropped(tmp_path: Path, ordered: list[Path]) -> None:
    _, _, positions = _geometry()
    scout = _save(
        _ct_dataset(
            positions[2],
            np.array([1, 0, 0, 0, 0, -1.0]),
            _pixels(9),
            instance=99,
            image_type="ORIGINAL\\PRIMARY\\LOCALIZER",
        ),
        tmp_path / "ordered" / "scout.dcm",
    )
    # Another orientation without the LOCALIZER flag (some vendors' scouts): dropped, reported.
    stray = _save(
        _ct_dataset(positions[3], np.array([0, 1, 0, 0, 0, -1.0]), _pixels(8), instance=98),
        tmp_path / "ordered" / "stray.dcm",
    )
    plan = _only([*ordered, scout, stray])
    assert set(plan.dropped) == {str(scout), str(stray)}
    assert {i.kind for i in plan.issues} == {"localizer_dropped", "mixed_orientation"}
    assert not plan.fatal_issues
    volume, meta = read_series(plan)
    np.testing.assert_array_equal(volume, _expected_volume())
    assert meta["dropped"] == 2


def test_duplicate_position_keeps_one_and_reports(tmp_path: Path, ordered: list[Path]) -> None:
    orientation, _, positions = _geometry()
    dup = _save(_ct_dataset(positions[2], orientation, _pixels(2), instance=50), tmp_path / "ordered" / "dup.dcm")
    plan = _only([*ordered, dup])
    assert plan.n_slices == N_SLICES and len(plan.dropped) == 1
    assert plan.dropped[0] in {str(dup), str(ordered[2])}
    (issue,) = plan.issues
    assert issue.kind == "duplicate_positions" and not issue.fatal
    np.testing.assert_array_equal(read_series(plan)[0], _expected_volume())
    # The kept copy depends on content (SOPInstanceUID), not on names: renaming changes nothing.
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for p in [*ordered, dup]:
        shutil.copy(p, renamed / f"x{uuid.uuid4().hex}.dcm")
    other = _only(sorted(renamed.iterdir()))
    assert Path(other.dropped[0]).read_bytes() == Path(plan.dropped[0]).read_bytes()


def test_every_position_duplicated_is_fatal(tmp_path: Path, ordered: list[Path]) -> None:
    orientation, _, positions = _geometry()
    second = [
        _save(_ct_dataset(positions[k], orientation, _pixels(k + 20), instance=k), tmp_path / "phase2" / f"{k}.dcm")
        for k in range(N_SLICES)
    ]
    plan = _only([*ordered, *second])
    assert [i.kind for i in plan.fatal_issues] == ["duplicate_positions"]
    with pytest.raises(DicomReadError) as info:
        read_series(plan)
    assert info.value.kind == DicomErrorKind.INCONSISTENT_SERIES


def test_gap_is_fatal_and_names_the_file(ordered: list[Path]) -> None:
    plan = _only([p for k, p in enumerate(ordered) if k != 3])
    assert [i.kind for i in plan.fatal_issues] == ["gap"]
    assert plan.slice_spacing == pytest.approx(SLICE_STEP, abs=1e-5)
    with pytest.raises(DicomReadError) as info:
        read_series(plan)
    assert info.value.kind == DicomErrorKind.INCONSISTENT_SERIES
    assert info.value.path == str(ordered[4])  # the slice after the gap
    assert "gap" in info.value.message


def test_uneven_slice_steps_are_mixed_spacing(tmp_path: Path) -> None:
    orientation, normal, _ = _geometry()
    offsets = [0.0, 1.0, 2.0, 3.0, 4.3, 5.3]  # one step of 1.3 mm: not a gap, not uniform
    paths = [
        _save(_ct_dataset(ORIGIN + o * normal, orientation, _pixels(k), instance=k), tmp_path / f"{k}.dcm")
        for k, o in enumerate(offsets)
    ]
    plan = _only(paths)
    assert [i.kind for i in plan.fatal_issues] == ["mixed_spacing"]
    assert plan.slice_spacing == pytest.approx(1.0, abs=1e-5)


def test_mixed_pixel_spacing_and_shape_are_fatal(tmp_path: Path, ordered: list[Path]) -> None:
    orientation, normal, _ = _geometry()
    far = ORIGIN + N_SLICES * SLICE_STEP * normal
    odd_spacing = _save(
        _ct_dataset(far, orientation, _pixels(7), instance=7, pixel_spacing=(0.9, 0.8)), tmp_path / "a" / "s.dcm"
    )
    plan = _only([*ordered, odd_spacing])
    assert [(i.kind, i.path) for i in plan.fatal_issues] == [("mixed_spacing", str(odd_spacing))]

    odd_shape = _save(
        _ct_dataset(far, orientation, np.zeros((SIZE, SIZE + 4), np.uint16), instance=7), tmp_path / "b" / "s.dcm"
    )
    plan = _only([*ordered, odd_shape])
    assert [(i.kind, i.path) for i in plan.fatal_issues] == [("mixed_shape", str(odd_shape))]
    with pytest.raises(DicomReadError) as info:
        read_series(plan)
    assert info.value.kind == DicomErrorKind.INCONSISTENT_SERIES and info.value.path == str(odd_shape)


def test_missing_geometry_is_fatal(tmp_path: Path, ordered: list[Path]) -> None:
    orientation, _, positions = _geometry()
    ds = _ct_dataset(positions[0], orientation, _pixels(0), instance=1)
    del ds.ImagePositionPatient
    bare = _save(ds, tmp_path / "bare.dcm")
    plan = _only([*ordered, bare])
    (issue,) = plan.fatal_issues
    assert issue.kind == "missing_geometry" and issue.path == str(bare) and "ImagePositionPatient" in issue.message
    with pytest.raises(DicomReadError) as info:
        read_series(plan)
    assert info.value.kind == DicomErrorKind.MISSING_GEOMETRY and info.value.path == str(bare)


def test_single_slice_and_localizer_only(tmp_path: Path, ordered: list[Path]) -> None:
    plan = _only(ordered[:1])
    assert [i.kind for i in plan.issues] == ["single_slice"] and not plan.fatal_issues
    assert plan.slice_spacing == 5.0  # SliceThickness: the only hint a lone slice has
    assert read_series(plan)[0].shape == (1, SIZE, SIZE)

    orientation, _, positions = _geometry()
    scout = _save(
        _ct_dataset(positions[0], orientation, _pixels(0), instance=1, image_type="ORIGINAL\\PRIMARY\\LOCALIZER"),
        tmp_path / "scout.dcm",
    )
    assert [i.kind for i in _only([scout]).fatal_issues] == ["localizer_only"]


def test_files_are_grouped_by_series(tmp_path: Path, ordered: list[Path]) -> None:
    orientation, _, positions = _geometry()
    other = _save(
        _ct_dataset(positions[0], orientation, _pixels(0), instance=1, series_uid="1.2.3.4"), tmp_path / "o.dcm"
    )
    plans = plan_series_files([other, *ordered])
    assert [(p.series_uid, p.n_slices) for p in plans] == [("1.2.3.4", 1), (SERIES_UID, N_SLICES)]
    with pytest.raises(DicomReadError) as info:
        SeriesReader().read([other, *ordered])
    assert info.value.kind == DicomErrorKind.INCONSISTENT_SERIES


# --------------------------------------------------------------------------------- enhanced multi-frame


def _enhanced_ct(path: Path, frame_order: list[int]) -> Path:
    """An Enhanced CT file whose frame f holds slice frame_order[f] (frames stored out of spatial order)."""
    orientation, _, positions = _geometry()
    ds = _ct_dataset(positions[0], orientation, _pixels(0), instance=1)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = len(frame_order)
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    measures = Dataset()
    measures.PixelSpacing = [str(v) for v in PIXEL_SPACING]
    measures.SliceThickness = "5.0"
    shared.PlaneOrientationSequence = DicomSequence([orient])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in frame_order:
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        item.PlanePositionSequence = DicomSequence([plane])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = np.stack([_pixels(k) for k in frame_order]).tobytes()
    return _save(ds, path)


def test_enhanced_multiframe_is_split_and_ordered(tmp_path: Path, ordered: list[Path]) -> None:
    frame_order = [3, 0, 5, 1, 4, 2]
    enhanced = _enhanced_ct(tmp_path / "enhanced.dcm", frame_order)
    plan = _only([enhanced])
    assert plan.paths == (str(enhanced),) * N_SLICES
    assert plan.frames == tuple(frame_order.index(k) for k in range(N_SLICES))
    assert plan.slice_spacing == pytest.approx(SLICE_STEP, abs=1e-5)
    np.testing.assert_allclose(plan.affine, _only(ordered).affine, atol=1e-5)
    volume, _ = read_series(plan)
    np.testing.assert_array_equal(volume, _expected_volume())


@pytest.mark.parametrize("where", ["shared", "per_frame"])
def test_enhanced_rescale_in_functional_groups_gives_hounsfield_units(tmp_path: Path, where: str) -> None:
    """Enhanced CT keeps slope/intercept in the Pixel Value Transformation functional group, not at top level."""
    frame_order = [3, 0, 5, 1, 4, 2]
    path = _enhanced_ct(tmp_path / "enhanced.dcm", frame_order)
    ds = pydicom.dcmread(path)
    del ds.RescaleSlope, ds.RescaleIntercept
    groups = [ds.SharedFunctionalGroupsSequence[0]] if where == "shared" else list(ds.PerFrameFunctionalGroupsSequence)
    for group in groups:
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = "1", "-1024", "HU"
        group.PixelValueTransformationSequence = DicomSequence([transform])
    ds.save_as(path)
    volume, _ = read_series(_only([path]))
    np.testing.assert_array_equal(volume, _expected_volume())


# ------------------------------------------------------------------------------------ manifest rows


def test_plan_from_manifest_rows_matches_plan_from_files(tmp_path: Path, ordered: list[Path]) -> None:
    root = tmp_path / "ordered"
    orientation, _, positions = _geometry()
    _save(
        _ct_dataset(positions[1], orientation, _pixels(9), instance=9, image_type="DERIVED\\SECONDARY\\LOCALIZER"),
        root / "scout.dcm",
    )
    manifest, errors = index_archive(root, salt="s")
    assert errors.empty
    from_rows = plan_series(manifest, root=root)
    from_files = _only(sorted(root.iterdir()))
    assert from_rows.paths == from_files.paths and from_rows.dropped == from_files.dropped
    np.testing.assert_allclose(from_rows.affine, from_files.affine)
    np.testing.assert_array_equal(read_series(from_rows)[0], _expected_volume())

    # Columns that are absent or null count as missing from the header, not as errors.
    bare = manifest.drop(columns=["ImageType", "SliceThickness", "FrameOfReferenceUID", "Rows", "Columns"])
    assert plan_series(bare, root=root).n_slices == N_SLICES
    nulls = manifest.copy()
    nulls["ImagePositionPatient"] = pd.Series([None] * len(nulls), dtype=object)
    assert [i.kind for i in plan_series(nulls, root=root).fatal_issues] == ["missing_geometry"]


def _rows(positions: list[np.ndarray], **columns: list[Any]) -> pd.DataFrame:
    n = len(positions)
    return pd.DataFrame(
        {
            "path": [f"{k}.dcm" for k in range(n)],
            "SOPInstanceUID": [f"1.2.{k}" for k in range(n)],
            "SeriesInstanceUID": [SERIES_UID] * n,
            "spacing_row": [0.5] * n,
            "spacing_col": [0.5] * n,
            "ImagePositionPatient": [list(p) for p in positions],
            "ImageOrientationPatient": [[1.0, 0, 0, 0, 1, 0]] * n,
            **columns,
        }
    )


def test_gantry_tilt_and_frame_of_reference_from_rows() -> None:
    # A tilted gantry: each slice 1 mm up and 0.4 mm posterior; the normal is still z.
    tilted = _rows([np.array([0.0, 0.4 * k, 1.0 * k]) for k in range(5)])
    plan = plan_series(tilted)
    assert [i.kind for i in plan.issues] == ["gantry_tilt"] and not plan.fatal_issues
    assert plan.slice_spacing == pytest.approx(1.0)
    mixed = _rows([np.array([0.0, 0.0, 1.0 * k]) for k in range(4)], FrameOfReferenceUID=["1.1", "1.1", "1.2", "1.2"])
    assert [i.kind for i in plan_series(mixed).fatal_issues] == ["mixed_frame_of_reference"]


def test_select_on_a_written_and_read_manifest(tmp_path: Path, ordered: list[Path]) -> None:
    root = tmp_path / "ordered"
    manifest, _ = index_archive(root, salt="s")
    write_manifest(manifest, tmp_path / "m.parquet")
    manifest = read_manifest(tmp_path / "m.parquet")
    kept, rejected = select(manifest, SeriesSelection(modalities=("ct",), orientation="axial"), 3, root=root)
    assert len(kept) == N_SLICES and rejected.empty  # the oblique stack is mostly axial
    kept, rejected = select(manifest, SeriesSelection(min_slices=N_SLICES + 1), 3, root=root)
    assert kept.empty and set(rejected["kind"]) == {"not_selected"} and len(rejected) == N_SLICES


def test_plan_series_rejects_several_series() -> None:
    rows = pd.DataFrame({"path": ["a", "b"], "SeriesInstanceUID": ["1.1", "1.2"]})
    with pytest.raises(ValueError, match="2 series"):
        plan_series(rows)


def test_plan_series_expands_multiframe_rows(tmp_path: Path) -> None:
    enhanced = _enhanced_ct(tmp_path / "enhanced.dcm", [2, 1, 0, 3, 4, 5])
    manifest, _ = index_archive(tmp_path, salt="s")
    plan = plan_series(manifest, root=tmp_path)
    assert plan.paths == (str(enhanced),) * N_SLICES and plan.frames == (2, 1, 0, 3, 4, 5)


# ---------------------------------------------------------------------------------------------- MONAI


def test_load_image_with_series_reader(tmp_path: Path, ordered: list[Path]) -> None:
    from monai.transforms import LoadImage, Spacing

    shuffled = list(np.random.default_rng(3).permutation([str(p) for p in ordered]))
    image = LoadImage(reader=SeriesReader(), ensure_channel_first=True, image_only=True)(shuffled)
    assert tuple(image.shape) == (1, N_SLICES, SIZE, SIZE)
    np.testing.assert_allclose(image.affine.numpy(), _only(ordered).affine, atol=1e-6)
    np.testing.assert_array_equal(image[0].numpy(), _expected_volume())

    from_folder = LoadImage(reader=SeriesReader(), ensure_channel_first=True, image_only=True)(ordered[0].parent)
    np.testing.assert_array_equal(from_folder.numpy(), image.numpy())

    # Resampling keeps the oblique directions and spans the same extent: (n - 1) * old / new + 1 voxels.
    pixdim = ((N_SLICES - 1) * SLICE_STEP / 2, (SIZE - 1) * PIXEL_SPACING[0] / 5, (SIZE - 1) * PIXEL_SPACING[1] / 5)
    resampled = Spacing(pixdim=pixdim)(image)
    assert tuple(resampled.shape) == (1, 3, 6, 6)
    out = resampled.affine.numpy()
    np.testing.assert_allclose(np.linalg.norm(out[:3, :3], axis=0), pixdim, atol=1e-5)
    np.testing.assert_allclose(out[:3, :3] / pixdim, image.affine.numpy()[:3, :3] / image.pixdim.numpy(), atol=1e-5)
    np.testing.assert_allclose(out[:3, 3], image.affine.numpy()[:3, 3], atol=1e-4)  # same first voxel


def test_orientation_to_ras_on_an_axial_series(tmp_path: Path) -> None:
    from monai.transforms import LoadImage, Orientation

    paths = _write_series(tmp_path / "axial", rotation=np.eye(3))
    image = LoadImage(reader=SeriesReader(), ensure_channel_first=True, image_only=True)([str(p) for p in paths])
    # Axial, IOP (1,0,0, 0,1,0): slices go to superior, rows to posterior, columns to patient left.
    ras = Orientation(axcodes="RAS")(image)
    assert tuple(ras.shape) == (1, SIZE, SIZE, N_SLICES)
    np.testing.assert_allclose(np.diag(ras.affine.numpy())[:3], [PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_STEP])
    volume = _expected_volume()
    # RAS index (x, y, z) = (column flipped, row flipped, slice).
    np.testing.assert_array_equal(ras[0].numpy(), volume[:, ::-1, ::-1].transpose(2, 1, 0))
