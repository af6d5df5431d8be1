from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from medres.dicom import DicomErrorKind, DicomReader, DicomReadError, read_header, read_image

ROWS, COLS = 64, 48  # JPEG 2000 needs ≥ 2^5 px per side for its default 6 resolutions


def make_dataset(
    arr: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    signed: bool = False,
    **tags: object,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-SECRET-42"
    ds.PatientBirthDate = "19700101"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape[-2:]
    if arr.ndim == 3:
        ds.NumberOfFrames = arr.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = arr.astype(np.int16 if signed else np.uint16).tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4096, (ROWS, COLS)).astype(np.uint16)


def test_codecs_decode_identically(tmp_path: Path, image: np.ndarray) -> None:
    native = save(make_dataset(image), tmp_path / "native.dcm")
    rle_ds = make_dataset(image)
    rle_ds.compress(RLELossless)
    rle = save(rle_ds, tmp_path / "rle.dcm")
    j2k_ds = make_dataset(image)
    j2k_ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    j2k = save(j2k_ds, tmp_path / "j2k.dcm")

    ref, meta = read_image(native)
    assert ref.dtype == np.float32 and ref.shape == (ROWS, COLS)
    np.testing.assert_array_equal(ref, image.astype(np.float32))  # stored orientation, no transpose
    for path in (rle, j2k):
        arr, _ = read_image(path)
        np.testing.assert_array_equal(arr, ref)
    assert meta["PhotometricInterpretation"] == "MONOCHROME2"
    assert meta["spacing"] == (1.0, 1.0)


def test_monochrome1_is_inverted_over_the_stored_range(tmp_path: Path, image: np.ndarray) -> None:
    mono2, _ = read_image(save(make_dataset(image), tmp_path / "m2.dcm"))
    mono1, meta = read_image(save(make_dataset(image, photometric="MONOCHROME1"), tmp_path / "m1.dcm"))
    # 12-bit unsigned: possible values 0..4095, so x -> 4095 - x whatever the image contains.
    np.testing.assert_array_equal(mono1, np.float32(4095) - mono2)
    assert meta["PhotometricInterpretation"] == "MONOCHROME1"  # the original one


def test_monochrome1_inversion_uses_rescaled_range(tmp_path: Path) -> None:
    arr = np.array([[0, 10], [20, 255]], dtype=np.uint16)
    ds = make_dataset(arr, photometric="MONOCHROME1", bits_stored=8, RescaleSlope=2, RescaleIntercept=-100)
    out, _ = read_image(save(ds, tmp_path / "m1r.dcm"))
    lo, hi = -100.0, 255 * 2 - 100.0
    np.testing.assert_array_equal(out, (lo + hi) - (arr * 2.0 - 100.0))


def test_rescale_slope_intercept_gives_hounsfield(tmp_path: Path) -> None:
    stored = np.array([[0, 1000], [1024, 3071]], dtype=np.int16)
    ds = make_dataset(stored, signed=True, bits_stored=16, RescaleSlope=1, RescaleIntercept=-1024, Modality="CT")
    out, meta = read_image(save(ds, tmp_path / "ct.dcm"))
    np.testing.assert_array_equal(out, np.array([[-1024, -24], [0, 2047]], dtype=np.float32))
    assert meta["Modality"] == "CT"


def test_modality_lut_sequence(tmp_path: Path) -> None:
    arr = np.array([[0, 1], [2, 3]], dtype=np.uint16)
    ds = make_dataset(arr, bits_stored=8)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]
    item.ModalityLUTType = "OD"
    item.LUTData = np.array([10, 20, 30, 40], dtype="<u2").tobytes()
    ds.ModalityLUTSequence = [item]
    out, _ = read_image(save(ds, tmp_path / "lut.dcm"))
    np.testing.assert_array_equal(out, np.array([[10, 20], [30, 40]], dtype=np.float32))


def test_multiframe_shape_and_spacing(tmp_path: Path) -> None:
    frames = np.arange(3 * ROWS * COLS, dtype=np.uint16).reshape(3, ROWS, COLS) % 4096
    ds = make_dataset(frames, PixelSpacing=[0.5, 0.25], SpacingBetweenSlices=2.0)
    out, meta = read_image(save(ds, tmp_path / "mf.dcm"))
    assert out.shape == (3, ROWS, COLS)
    np.testing.assert_array_equal(out, frames.astype(np.float32))
    assert meta["spacing"] == (0.5, 0.25) and meta["frame_spacing"] == 2.0


@pytest.mark.parametrize("content", [b"", b"not,a,dicom\n1,2,3\n", bytes(range(256)) * 8])
def test_not_dicom(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(content)
    for reader in (read_image, read_header):
        with pytest.raises(DicomReadError) as err:
            reader(path)
        assert err.value.kind == DicomErrorKind.NOT_DICOM
        assert err.value.path == str(path)
        assert str(err.value).startswith(f"{path}: not_dicom: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("codec", [None, RLELossless, JPEG2000Lossless])
@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.9, 0.999])
def test_truncated(tmp_path: Path, image: np.ndarray, codec: str | None, fraction: float) -> None:
    ds = make_dataset(image)
    if codec is not None:
        ds.compress(codec, encoding_plugin="pylibjpeg" if codec == JPEG2000Lossless else "")
    full = save(ds, tmp_path / "full.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(full[: int(len(full) * fraction)])
    with pytest.raises(DicomReadError) as err:
        read_image(path)
    assert err.value.kind == DicomErrorKind.TRUNCATED
    for specific_tags in (None, ["SOPInstanceUID", "Rows"]):
        with pytest.raises(DicomReadError) as err:
            read_header(path, specific_tags=specific_tags, require_pixel_data=True)
        assert err.value.kind == DicomErrorKind.TRUNCATED


def test_no_pixel_data(tmp_path: Path, image: np.ndarray) -> None:
    ds = make_dataset(image)
    del ds.PixelData
    path = save(ds, tmp_path / "nopix.dcm")
    with pytest.raises(DicomReadError) as err:
        read_image(path)
    assert err.value.kind == DicomErrorKind.NO_PIXEL_DATA
    assert read_header(path).SOPInstanceUID == ds.SOPInstanceUID  # the header alone is fine
    with pytest.raises(DicomReadError) as err:
        read_header(path, require_pixel_data=True)
    assert err.value.kind == DicomErrorKind.NO_PIXEL_DATA


def test_unsupported_transfer_syntax(tmp_path: Path, image: np.ndarray) -> None:
    ds = make_dataset(image)
    ds.compress(RLELossless)
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.9999.1"  # made-up encapsulated syntax
    path = tmp_path / "odd.dcm"
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    with pytest.raises(DicomReadError) as err:
        read_image(path)
    assert err.value.kind == DicomErrorKind.UNSUPPORTED_CODEC


@pytest.mark.parametrize(("photometric", "samples"), [("CMYK", 4), ("HSV", 3), ("RGB", 1), ("SOMETHING", 1)])
def test_unsupported_photometric_is_unsupported_image(tmp_path: Path, photometric: str, samples: int) -> None:
    ds = make_dataset(np.zeros((4, 4), dtype=np.uint16))
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = samples, photometric, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.zeros((4, 4, samples), dtype=np.uint8).tobytes()
    with pytest.raises(DicomReadError) as err:
        read_image(save(ds, tmp_path / "odd.dcm"))
    assert err.value.kind == DicomErrorKind.UNSUPPORTED_IMAGE
    assert photometric in err.value.message


def test_corrupt_codestream_is_decode_error(tmp_path: Path, image: np.ndarray) -> None:
    ds = make_dataset(image)
    ds.compress(RLELossless)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless  # RLE bytes labelled as JPEG 2000: every plugin fails
    with pytest.raises(DicomReadError) as err:
        read_image(save(ds, tmp_path / "bad.dcm"))
    assert err.value.kind == DicomErrorKind.DECODE_ERROR
    assert "\n" not in str(err.value)


def test_error_pickles(tmp_path: Path) -> None:
    import pickle

    err = DicomReadError(DicomErrorKind.TRUNCATED, tmp_path / "a.dcm", "cut")
    back = pickle.loads(pickle.dumps(err))
    assert (back.kind, back.path, back.message, str(back)) == (err.kind, err.path, err.message, str(err))


def test_meta_has_no_identifying_tags(tmp_path: Path, image: np.ndarray) -> None:
    path = save(make_dataset(image, PixelSpacing=[0.2, 0.3]), tmp_path / "id.dcm")
    _, meta = read_image(path)
    assert set(meta) == {
        "SOPInstanceUID",
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "Modality",
        "PhotometricInterpretation",
        "spacing",
    }
    _, monai_meta = DicomReader().get_data(DicomReader().read(path))
    text = repr(meta) + repr(monai_meta)
    assert "PID-SECRET-42" not in text and "Doe" not in text and "19700101" not in text
    assert not {"PatientName", "PatientID", "PatientBirthDate"} & set(monai_meta)


def test_verify_suffix() -> None:
    reader = DicomReader()
    assert reader.verify_suffix("a/b.dcm") and reader.verify_suffix(Path("x.DCM")) and reader.verify_suffix("IM0001")
    assert reader.verify_suffix(["a.dicom", Path("b")])
    assert not reader.verify_suffix("a.nii.gz") and not reader.verify_suffix(["a.dcm", "b.png"])


def test_load_imaged(tmp_path: Path, image: np.ndarray) -> None:
    from monai.data import MetaTensor
    from monai.transforms import LoadImaged

    path = save(make_dataset(image, ImagerPixelSpacing=[0.4, 0.7]), tmp_path / "IM0001")
    load = LoadImaged(keys="image", reader=DicomReader(), ensure_channel_first=True, image_only=True)
    out = load({"image": str(path)})["image"]
    assert isinstance(out, MetaTensor)
    assert tuple(out.shape) == (1, ROWS, COLS)
    np.testing.assert_array_equal(out[0].numpy(), image.astype(np.float32))
    np.testing.assert_allclose(np.diag(np.asarray(out.affine))[:2], [0.4, 0.7])
    np.testing.assert_allclose(np.asarray(out.pixdim), [0.4, 0.7])
    assert out.meta["filename_or_obj"] == str(path)

    # Two paths stack on a new channel axis.
    other = save(make_dataset(image, ImagerPixelSpacing=[0.4, 0.7]), tmp_path / "IM0002.dcm")
    stacked = LoadImaged(keys="image", reader=DicomReader(), ensure_channel_first=True, image_only=True)(
        {"image": [str(path), str(other)]}
    )["image"]
    assert tuple(stacked.shape) == (2, ROWS, COLS)


def test_pydicom_reference_agrees(tmp_path: Path, image: np.ndarray) -> None:
    path = save(make_dataset(image), tmp_path / "ref.dcm")
    arr, _ = read_image(path)
    np.testing.assert_array_equal(arr, pydicom.dcmread(path).pixel_array.astype(np.float32))
