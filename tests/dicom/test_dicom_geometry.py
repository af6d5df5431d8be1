"""ImageOrientationPatient / ImagePositionPatient → the RAS affine in DicomReader's MONAI metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medres.dicom import DicomReader, instance_affine, read_header

DATA = Path(pydicom.__file__).parent / "data" / "test_files"
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
# An oblique plane: rows run 30° between patient left and posterior, columns run feet-wards.
# (Values short enough for a DS string: 16 characters, PS3.5 6.2.)
ROW_COSINE = np.array([0.8660254037844, 0.5, 0.0])  # (cos 30°, sin 30°, 0)
COLUMN_COSINE = np.array([0.0, 0.0, -1.0])
IPP = np.array([10.0, -20.0, 30.0])


def mr_dataset(frames: int = 1, **tags: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR image
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = 6, 5
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.arange(frames * 30, dtype="<u2").tobytes()
    return ds


def oblique(path: Path) -> Path:
    ds = mr_dataset(
        ImageOrientationPatient=[*ROW_COSINE, *COLUMN_COSINE],
        ImagePositionPatient=list(IPP),
        PixelSpacing=[0.5, 0.25],
        SliceThickness=2.0,
    )
    ds.save_as(path, enforce_file_format=True)
    return path


def test_oblique_slice_affine_maps_pixels_to_patient_ras(tmp_path: Path) -> None:
    path = oblique(tmp_path / "oblique.dcm")
    reader = DicomReader()
    array, meta = reader.get_data(reader.read(path))
    affine = meta["affine"]
    assert array.shape == (6, 5) and affine.shape == (4, 4)
    # Pixel (row 4, column 3): IPP + 4 × 0.5 mm along the column cosine + 3 × 0.25 mm along the row cosine
    # (PS3.3 C.7.6.2.1.1) = (10.6495, -19.625, 28.0) LPS = (-10.6495, 19.625, 28.0) RAS.
    lps = IPP + 4 * 0.5 * COLUMN_COSINE + 3 * 0.25 * ROW_COSINE
    np.testing.assert_allclose(lps, [10 + 0.75 * np.cos(np.pi / 6), -19.625, 28.0], atol=1e-12)
    np.testing.assert_allclose(affine @ [4, 3, 0, 1], [*(lps * LPS_TO_RAS), 1.0], atol=1e-9)
    # Column 2: the slice normal row × column cosine, scaled by the slice thickness, in RAS.
    np.testing.assert_allclose(affine[:3, 2], np.cross(ROW_COSINE, COLUMN_COSINE) * 2.0 * LPS_TO_RAS, atol=1e-12)
    assert abs(np.linalg.det(affine[:3, :3])) == pytest.approx(0.5 * 0.25 * 2.0)


def test_agrees_with_monai_pydicom_reader(tmp_path: Path) -> None:
    from monai.data import PydicomReader

    path = oblique(tmp_path / "oblique.dcm")
    theirs = PydicomReader(swap_ij=False)  # MONAI's own DICOM geometry, without its i/j swap
    _, their_meta = theirs.get_data(theirs.read(str(path)))
    ours = DicomReader()
    _, our_meta = ours.get_data(ours.read(path))
    # MONAI puts a unit z axis in column 2 for a single slice; the in-plane columns and the origin must agree.
    np.testing.assert_allclose(our_meta["affine"][:, [0, 1, 3]], np.asarray(their_meta["affine"])[:, [0, 1, 3]])


def test_shipped_axial_ct() -> None:
    ds = read_header(DATA / "CT_small.dcm")
    reader = DicomReader()
    _, meta = reader.get_data(reader.read(DATA / "CT_small.dcm"))
    s = float(ds.PixelSpacing[0])
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    # Axial, IOP (1,0,0,0,1,0): rows step posterior (−A in RAS), columns step left (−R).
    expected = np.array([[0, -s, 0, -x], [-s, 0, 0, -y], [0, 0, float(ds.SliceThickness), z], [0, 0, 0, 1]])
    np.testing.assert_allclose(meta["affine"], expected, atol=1e-9)


def test_no_geometry_keeps_the_image_frame_diagonal(tmp_path: Path) -> None:
    path = tmp_path / "dx.dcm"
    mr_dataset(ImagerPixelSpacing=[0.4, 0.7]).save_as(path, enforce_file_format=True)
    reader = DicomReader()
    _, meta = reader.get_data(reader.read(path))
    np.testing.assert_array_equal(meta["affine"], np.diag([0.4, 0.7, 1.0]))


def _enhanced(positions: list[list[float]]) -> Dataset:
    """An enhanced-style multi-frame: orientation and spacing shared, one position per frame."""
    shared = Dataset()
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.25], 3.0
    orientation.ImageOrientationPatient = [*ROW_COSINE, *COLUMN_COSINE]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    per_frame = []
    for position in positions:
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = position
        item.PlanePositionSequence = [plane]
        per_frame.append(item)
    return mr_dataset(
        frames=len(positions), SharedFunctionalGroupsSequence=[shared], PerFrameFunctionalGroupsSequence=per_frame
    )


def test_enhanced_multiframe_affine_steps_between_frame_positions(tmp_path: Path) -> None:
    normal = np.cross(ROW_COSINE, COLUMN_COSINE)
    positions = [IPP + k * 2.5 * normal for k in range(3)]  # 2.5 mm apart, though SliceThickness says 3
    path = tmp_path / "enhanced.dcm"
    _enhanced([list(p) for p in positions]).save_as(path, enforce_file_format=True)
    reader = DicomReader()
    array, meta = reader.get_data(reader.read(path))
    assert array.shape == (3, 6, 5)
    affine = meta["affine"]
    for k in range(3):  # frame k, row 2, column 1
        lps = positions[k] + 2 * 0.5 * COLUMN_COSINE + 1 * 0.25 * ROW_COSINE
        np.testing.assert_allclose(affine @ [k, 2, 1, 1], [*(lps * LPS_TO_RAS), 1.0], atol=1e-9)


def test_multiframe_without_positions_uses_frame_spacing() -> None:
    ds = mr_dataset(frames=2, SpacingBetweenSlices=4.0, PixelSpacing=[1.0, 2.0])
    np.testing.assert_array_equal(instance_affine(ds, (2, 6, 5)), np.diag([4.0, 1.0, 2.0, 1.0]))
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, 0]
    np.testing.assert_allclose(instance_affine(ds, (2, 6, 5))[:3, 0], [0, 0, 4.0])  # along the normal


def test_load_image_metatensor(tmp_path: Path) -> None:
    from monai.transforms import LoadImage

    path = oblique(tmp_path / "oblique.dcm")
    out = LoadImage(reader=DicomReader(), ensure_channel_first=True, image_only=True)(str(path))
    assert tuple(out.shape) == (1, 6, 5)
    reader = DicomReader()
    np.testing.assert_allclose(np.asarray(out.affine), reader.get_data(reader.read(path))[1]["affine"])
    # MONAI's 2D transforms look at the x/y rows only; for an axial slice those hold the pixel spacing.
    axial = LoadImage(reader=DicomReader(), ensure_channel_first=True, image_only=True)(str(DATA / "CT_small.dcm"))
    np.testing.assert_allclose(np.asarray(axial.pixdim), [0.661468, 0.661468])
