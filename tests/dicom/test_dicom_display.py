"""Intensity and colour: HU, MONOCHROME1, VOI LUT / window options, palette and YBR → RGB, luminance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pydicom.pixels
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medres.dicom import DicomErrorKind, DicomReader, DicomReadError, ReadOptions, read_image

DATA = Path(pydicom.__file__).parent / "data" / "test_files"
BT601 = np.array([0.299, 0.587, 0.114])


def dataset(arr: np.ndarray, photometric: str = "MONOCHROME2", **tags: object) -> Dataset:
    """Native explicit VR little endian; 8-bit samples for colour/palette, else 16-bit (12 stored) unless given."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = arr.shape[:2]
    colour = arr.ndim == 3
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = 8 if colour or photometric == "PALETTE COLOR" else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = arr.astype(np.uint8 if bits == 8 else "<i2" if ds.PixelRepresentation else "<u2").tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------------------ modality


def test_shipped_ct_comes_out_in_hounsfield_units() -> None:
    ds = pydicom.dcmread(DATA / "CT_small.dcm")
    assert (ds.RescaleSlope, ds.RescaleIntercept) == (1, -1024)
    out, meta = read_image(DATA / "CT_small.dcm")
    np.testing.assert_array_equal(out, ds.pixel_array.astype(np.float32) - 1024)
    assert meta["Modality"] == "CT" and out.min() < -800  # air around the body


def test_shipped_cr_monochrome1_is_inverted() -> None:
    path = DATA / "dicomdirtests" / "77654033" / "CR1" / "6154"
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 12
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    lo, hi = intercept, 4095 * slope + intercept  # the 12-bit range through the rescale
    out, _ = read_image(path)
    np.testing.assert_allclose(out, (lo + hi) - (ds.pixel_array * slope + intercept), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ VOI


def _linear(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR window onto [0, 1]."""
    c, w = centre - 0.5, width - 1
    return np.clip((x - c) / w + 0.5, 0.0, 1.0)


def test_explicit_window(tmp_path: Path) -> None:
    hu = np.array([[-1000, -161, -160], [40, 239, 1000]], dtype=np.int16)
    path = save(dataset(hu + 1024, RescaleSlope=1, RescaleIntercept=-1024, Modality="CT"), tmp_path / "ct.dcm")
    out, _ = read_image(path, ReadOptions(voi="window", window=(40, 400)))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _linear(hu.astype(np.float64), 40, 400), atol=1e-6)
    assert out[0, 0] == 0.0 and out[1, 2] == 1.0


def test_file_window_matches_pydicom() -> None:
    ds = pydicom.dcmread(DATA / "MR_small.dcm")  # WindowCenter 600, WindowWidth 1600, signed 16-bit
    out, _ = read_image(DATA / "MR_small.dcm", ReadOptions(voi="window"))
    reference = pydicom.pixels.apply_windowing(ds.pixel_array.astype(np.float64), ds)  # onto [-32768, 32767]
    np.testing.assert_allclose(out, (reference + 32768) / 65535, atol=1e-6)
    lut, _ = read_image(DATA / "MR_small.dcm", ReadOptions(voi="lut"))  # no VOI LUT Sequence: the window
    np.testing.assert_array_equal(lut, out)


def test_first_of_several_windows_is_used() -> None:
    path = DATA / "examples_overlay.dcm"  # WindowCenter [450, 200], WindowWidth [790, 443]
    out, _ = read_image(path, ReadOptions(voi="window"))
    np.testing.assert_allclose(out, _linear(pydicom.dcmread(path).pixel_array.astype(np.float64), 450, 790), atol=1e-6)


def test_voi_lut_sequence(tmp_path: Path) -> None:
    ds = dataset(np.array([[0, 1], [2, 3]]), BitsStored=8, HighBit=7)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.add_new(0x00283006, "US", [0, 85, 170, 255])  # LUT Data
    ds.VOILUTSequence = [item]
    ds.WindowCenter, ds.WindowWidth = 100, 10  # the LUT takes precedence for voi="lut"
    path = save(ds, tmp_path / "voi.dcm")
    out, _ = read_image(path, ReadOptions(voi="lut"))
    np.testing.assert_allclose(out, [[0, 1 / 3], [2 / 3, 1]], atol=1e-6)
    windowed, _ = read_image(path, ReadOptions(voi="window"))
    np.testing.assert_allclose(windowed, _linear(np.array([[0, 1], [2, 3]], dtype=np.float64), 100, 10))
    raw, _ = read_image(path)  # default: no VOI
    np.testing.assert_array_equal(raw, [[0, 1], [2, 3]])


def test_monochrome1_is_inverted_after_the_window(tmp_path: Path) -> None:
    arr = np.array([[0, 1000], [2000, 4095]])
    mono2, _ = read_image(save(dataset(arr), tmp_path / "m2.dcm"), ReadOptions(voi="window", window=(2000, 3000)))
    mono1, _ = read_image(
        save(dataset(arr, "MONOCHROME1"), tmp_path / "m1.dcm"), ReadOptions(voi="window", window=(2000, 3000))
    )
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


@pytest.mark.parametrize("voi", ["lut", "window"])
def test_voi_without_lut_or_window_is_a_typed_error(tmp_path: Path, voi: str) -> None:
    path = save(dataset(np.zeros((2, 2))), tmp_path / "plain.dcm")
    with pytest.raises(DicomReadError) as err:
        read_image(path, ReadOptions(voi=voi))  # type: ignore[arg-type]
    assert err.value.kind == DicomErrorKind.UNSUPPORTED_IMAGE and voi in err.value.message


def test_read_options_validation() -> None:
    assert ReadOptions(voi="window", window=[40, 400]).window == (40.0, 400.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="voi"):
        ReadOptions(voi="auto")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="colour"):
        ReadOptions(colour="grey")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only used with voi='window'"):
        ReadOptions(window=(40, 400))
    with pytest.raises(ValueError, match="width"):
        ReadOptions(voi="window", window=(40, 0.5))


# --------------------------------------------------------------------------------------------- colour


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (6, 5, 3)).astype(np.uint8)


def test_rgb_planar_configurations(tmp_path: Path, rgb: np.ndarray) -> None:
    interleaved = save(dataset(rgb, "RGB"), tmp_path / "rgb0.dcm")
    planar_ds = dataset(rgb, "RGB", PlanarConfiguration=1)
    planar_ds.PixelData = np.moveaxis(rgb, -1, 0).tobytes()  # RRR..GGG..BBB
    planar = save(planar_ds, tmp_path / "rgb1.dcm")
    for path in (interleaved, planar):
        out, meta = read_image(path)
        assert out.dtype == np.float32 and out.shape == (6, 5, 3)
        np.testing.assert_array_equal(out, rgb)
        assert meta["PhotometricInterpretation"] == "RGB"


def test_luminance(tmp_path: Path, rgb: np.ndarray) -> None:
    out, _ = read_image(save(dataset(rgb, "RGB"), tmp_path / "rgb.dcm"), ReadOptions(colour="luminance"))
    assert out.shape == (6, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, rgb @ BT601, rtol=1e-6)


def test_ybr_full_to_rgb(tmp_path: Path, rgb: np.ndarray) -> None:
    ybr = pydicom.pixels.convert_color_space(rgb, "RGB", "YBR_FULL")
    out, _ = read_image(save(dataset(ybr, "YBR_FULL"), tmp_path / "ybr.dcm"))
    np.testing.assert_allclose(out, rgb, atol=2)  # two 8-bit roundings


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_dcmtk_+eb+cy+n2.dcm",  # YBR_FULL, JPEG baseline
        "SC_rgb_dcmtk_+eb+cy+s2.dcm",  # YBR_FULL_422, JPEG baseline
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_ybr_full_422_uncompressed.dcm",  # YBR_FULL_422, native (pydicom upsamples and converts)
        "SC_rgb_jpeg_lossy_gdcm.dcm",
    ],
)
def test_shipped_ybr_images_match_the_rgb_original(name: str) -> None:
    reference, _ = read_image(DATA / "SC_rgb_rle.dcm")  # the same picture, RGB, lossless
    out, meta = read_image(DATA / name)
    assert meta["PhotometricInterpretation"].startswith("YBR")
    assert out.shape == reference.shape
    assert np.abs(out - reference).mean() < 3.0  # JPEG loss only; an unconverted YBR image is off by ~50


@pytest.mark.parametrize("name", ["examples_jpeg2k.dcm", "GDCMJ2K_TextGBR.dcm"])
def test_ybr_rct_jpeg2000_is_rgb(name: str) -> None:
    ds = pydicom.dcmread(DATA / name)
    assert ds.PhotometricInterpretation == "YBR_RCT"
    out, _ = read_image(DATA / name)
    # Two independent decoders agree, and both return RGB (the J2K inverse colour transform is applied).
    for plugin in ("gdcm", "pylibjpeg"):
        np.testing.assert_array_equal(out, pydicom.pixels.pixel_array(ds, decoding_plugin=plugin))


def test_palette_colour(tmp_path: Path) -> None:
    indices = np.array([[0, 1], [2, 255]])
    lut = {c: np.zeros(256, dtype="<u2") for c in "RGB"}
    lut["R"][[0, 1, 2, 255]] = [0, 1000, 2000, 65535]
    lut["G"][[0, 1, 2, 255]] = [10, 20, 30, 40]
    lut["B"][[0, 1, 2, 255]] = [65535, 0, 7, 9]
    ds = dataset(indices, "PALETTE COLOR")
    for colour, name in zip("RGB", ("Red", "Green", "Blue"), strict=True):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", lut[colour].tobytes())
    path = save(ds, tmp_path / "palette.dcm")
    out, _ = read_image(path)
    expected = np.stack([lut[c][indices] for c in "RGB"], axis=-1).astype(np.float32)
    np.testing.assert_array_equal(out, expected)
    grey, _ = read_image(path, ReadOptions(colour="luminance"))
    np.testing.assert_allclose(grey, expected @ BT601, rtol=1e-6)
    # 16-bit indices with 8 bits stored: the unused high bits are cleared, indices stay integers.
    ds.BitsAllocated = 16
    ds.PixelData = (indices + 0xAB00).astype("<u2").tobytes()  # garbage in the high byte
    out16, _ = read_image(save(ds, tmp_path / "palette16.dcm"))
    np.testing.assert_array_equal(out16, expected)


def test_voi_options_do_not_apply_to_colour(tmp_path: Path, rgb: np.ndarray) -> None:
    path = save(dataset(rgb, "RGB"), tmp_path / "rgb.dcm")
    out, _ = read_image(path, ReadOptions(voi="window", window=(128, 10)))
    np.testing.assert_array_equal(out, rgb)  # VOI is a grey-scale pipeline step (PS3.3 C.11.2)


def test_multiframe_colour_shape() -> None:
    out, meta = read_image(DATA / "SC_rgb_rle_2frame.dcm")
    assert out.shape == (2, 100, 100, 3) and meta["frame_spacing"] == 1.0


def test_load_image_puts_rgb_first(tmp_path: Path, rgb: np.ndarray) -> None:
    from monai.transforms import LoadImage

    path = save(dataset(rgb, "RGB"), tmp_path / "rgb.dcm")
    out = LoadImage(reader=DicomReader(), ensure_channel_first=True, image_only=True)(str(path))
    assert tuple(out.shape) == (3, 6, 5)
    np.testing.assert_array_equal(out.numpy(), np.moveaxis(rgb, -1, 0))
    grey = LoadImage(reader=DicomReader(ReadOptions(colour="luminance")), ensure_channel_first=True, image_only=True)(
        str(path)
    )
    assert tuple(grey.shape) == (1, 6, 5)
