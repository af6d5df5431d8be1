"""One image, many encodings: every lossless transfer syntax gives the identical array; files without meta header."""

from __future__ import annotations

from pathlib import Path

import gdcm
import numpy as np
import pydicom
import pydicom.pixels
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from medres.dicom import DicomErrorKind, DicomReadError, read_header, read_image

DATA = Path(pydicom.__file__).parent / "data" / "test_files"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def ct_dataset(stored: np.ndarray, syntax: UID = ExplicitVRLittleEndian) -> Dataset:
    """A signed 16-bit CT slice (12 bits stored) with HU rescale; pixel bytes in the syntax's byte order."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = stored.astype(">i2" if syntax == ExplicitVRBigEndian else "<i2").tobytes()
    return ds


@pytest.fixture(scope="module")
def stored() -> np.ndarray:
    # A smooth body-like disc plus noise, signed 12-bit stored values (-2048..2047), 64×48.
    yy, xx = np.mgrid[0:64, 0:48]
    disc = np.where((yy - 32) ** 2 + (xx - 24) ** 2 < 20**2, 1064, 24)
    noise = np.random.default_rng(1).integers(-300, 300, disc.shape)
    return np.clip(disc + noise, -2048, 2047).astype(np.int16)


def _gdcm_transcode(src: Path, dst: Path, syntax: int) -> Path:
    """Re-encode a file with GDCM (pydicom has no JPEG-LS encoder without pyjpegls)."""
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(syntax))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return dst


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory, stored: np.ndarray) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encodings")
    paths: dict[str, Path] = {}
    for name, syntax, implicit, little in [
        ("explicit_le", ExplicitVRLittleEndian, False, True),
        ("implicit_le", ImplicitVRLittleEndian, True, True),
        ("explicit_be", ExplicitVRBigEndian, False, False),
    ]:
        paths[name] = root / f"{name}.dcm"
        pydicom.dcmwrite(
            paths[name],
            ct_dataset(stored, syntax),
            implicit_vr=implicit,
            little_endian=little,
            enforce_file_format=True,
        )
    rle = ct_dataset(stored)
    rle.compress(RLELossless)  # pydicom's own RLE encoder
    rle.save_as(paths.setdefault("rle", root / "rle.dcm"), enforce_file_format=True)
    j2k = ct_dataset(stored)
    j2k.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")  # openjpeg
    j2k.save_as(paths.setdefault("j2k", root / "j2k.dcm"), enforce_file_format=True)
    paths["jpeg_ls"] = _gdcm_transcode(paths["explicit_le"], root / "jls.dcm", gdcm.TransferSyntax.JPEGLSLossless)
    return paths


def test_own_image_identical_in_every_lossless_encoding(encoded: dict[str, Path], stored: np.ndarray) -> None:
    expected = stored.astype(np.float32) - 1024  # HU
    syntaxes = {
        name: pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID for name, p in encoded.items()
    }
    assert syntaxes == {
        "explicit_le": ExplicitVRLittleEndian,
        "implicit_le": ImplicitVRLittleEndian,
        "explicit_be": ExplicitVRBigEndian,
        "rle": RLELossless,
        "j2k": JPEG2000Lossless,
        "jpeg_ls": JPEGLSLossless,
    }
    for name, path in encoded.items():
        out, meta = read_image(path)
        np.testing.assert_array_equal(out, expected, err_msg=name)
        assert meta["Modality"] == "CT"


def test_jpeg_ls_decoders_agree(encoded: dict[str, Path]) -> None:
    # gdcm decodes JPEG-LS; pyjpegls (pulled in by highdicom) may too: whichever pydicom picks, the pixels match gdcm's.
    assert "gdcm" in pydicom.pixels.get_decoder(JPEGLSLossless).available_plugins
    ds = pydicom.dcmread(encoded["jpeg_ls"])
    by_gdcm = pydicom.pixels.pixel_array(ds, decoding_plugin="gdcm")
    np.testing.assert_array_equal(read_image(encoded["jpeg_ls"])[0], by_gdcm.astype(np.float32) - 1024)


def test_jpeg_baseline_decodes_with_gdcm() -> None:
    path = DATA / "SC_rgb_jpeg_dcmtk.dcm"  # YBR_FULL JPEG baseline
    ds = pydicom.dcmread(path)
    assert "gdcm" in pydicom.pixels.get_decoder(ds.file_meta.TransferSyntaxUID).available_plugins
    by_gdcm = pydicom.pixels.pixel_array(ds, decoding_plugin="gdcm")
    np.testing.assert_array_equal(read_image(path)[0], by_gdcm.astype(np.float32))


@pytest.mark.parametrize(
    "variant",
    [
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_padded.dcm",
    ],
)
def test_shipped_mr_variants_identical(variant: str) -> None:
    reference, _ = read_image(DATA / "MR_small.dcm")
    out, _ = read_image(DATA / variant)
    np.testing.assert_array_equal(out, reference)


@pytest.mark.parametrize(
    ("reference", "variant"),
    [
        ("rtdose.dcm", "rtdose_expb.dcm"),  # 32-bit multi-frame, big endian
        ("rtdose.dcm", "rtdose_rle.dcm"),
        ("rtdose_1frame.dcm", "rtdose_rle_1frame.dcm"),
        ("liver_1frame.dcm", "liver_expb_1frame.dcm"),
    ],
)
def test_shipped_pairs_identical(reference: str, variant: str) -> None:
    expected, _ = read_image(DATA / reference)
    out, _ = read_image(DATA / variant)
    np.testing.assert_array_equal(out, expected)


# ------------------------------------------------------------------------------------- no file meta header


def _bare(ds: Dataset) -> Dataset:
    """The dataset without its file meta header (written with no preamble, no 'DICM', no group 0002)."""
    bare = Dataset()
    bare.update(ds)
    return bare


@pytest.mark.parametrize(("implicit", "little"), [(True, True), (False, True), (False, False)])
def test_file_without_meta_header_is_read_when_safe(
    tmp_path: Path, stored: np.ndarray, implicit: bool, little: bool
) -> None:
    syntax = ExplicitVRBigEndian if not little else ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    path = tmp_path / "bare.dcm"
    pydicom.dcmwrite(path, _bare(ct_dataset(stored, syntax)), implicit_vr=implicit, little_endian=little)
    assert path.read_bytes()[:4] in (b"\x08\x00\x16\x00", b"\x00\x08\x00\x16")  # starts with (0008,0016)
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(path)  # plain pydicom refuses it
    out, _ = read_image(path)
    np.testing.assert_array_equal(out, stored.astype(np.float32) - 1024)
    assert read_header(path).file_meta.TransferSyntaxUID == syntax


def test_file_without_meta_and_encapsulated_pixels_is_not_dicom(tmp_path: Path, stored: np.ndarray) -> None:
    ds = ct_dataset(stored)
    ds.compress(RLELossless)
    path = tmp_path / "bare_rle.dcm"
    pydicom.dcmwrite(path, _bare(ds), implicit_vr=False, little_endian=True)
    with pytest.raises(DicomReadError) as err:
        read_image(path)
    assert err.value.kind == DicomErrorKind.NOT_DICOM  # explicit VR LE + encapsulated: the codec is unknown


def test_file_without_meta_and_sop_class_is_not_dicom(tmp_path: Path, stored: np.ndarray) -> None:
    ds = _bare(ct_dataset(stored))
    del ds.SOPClassUID
    ds.SpecificCharacterSet = "ISO_IR 100"  # (0008,0005): still starts like a dataset
    path = tmp_path / "bare_no_sop.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    for reader in (read_image, read_header):
        with pytest.raises(DicomReadError) as err:
            reader(path)
        assert err.value.kind == DicomErrorKind.NOT_DICOM


@pytest.mark.parametrize(
    "head", [b"\x08\x00\x16\x00" + b"\xff" * 60, b"\x08\x00" + bytes(range(256)) * 4], ids=["ff", "ramp"]
)
def test_junk_that_starts_like_a_dataset_is_not_dicom(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(head)
    with pytest.raises(DicomReadError) as err:
        read_image(path)
    assert err.value.kind == DicomErrorKind.NOT_DICOM


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
# 800×700 = 560,000 values: three read-and-convert chunks of 2^18, the last one partial
# (see medres.dicom._read_into_float32).
@pytest.mark.parametrize(("frames", "rows", "cols"), [(1, 8, 6), (3, 8, 6), (1, 800, 700)])
def test_unused_high_bits_are_cleared(
    tmp_path: Path, signed: bool, syntax: UID, frames: int, rows: int, cols: int
) -> None:
    # 12 bits stored in 16 allocated, with garbage (an old overlay, say) in the top 4 bits (PS3.5 8.1.1).
    rng = np.random.default_rng(3)
    values = rng.integers(-2048 if signed else 0, 2048 if signed else 4096, (frames, rows, cols))
    garbage = rng.integers(0, 16, values.shape) << 12
    raw = (values & 0x0FFF) | garbage  # 12-bit two's complement for signed values
    ds = ct_dataset(np.zeros((rows, cols), dtype=np.int16), syntax)
    ds.PixelRepresentation = int(signed)
    del ds.RescaleSlope, ds.RescaleIntercept
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = raw.astype(">u2" if syntax == ExplicitVRBigEndian else "<u2").tobytes()
    path = tmp_path / "garbage.dcm"
    pydicom.dcmwrite(
        path, ds, implicit_vr=False, little_endian=syntax == ExplicitVRLittleEndian, enforce_file_format=True
    )
    out, _ = read_image(path)
    expected = values if frames > 1 else values[0]
    np.testing.assert_array_equal(out, expected.astype(np.float32))
    np.testing.assert_array_equal(out, pydicom.dcmread(path).pixel_array)


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_full_width_native_sizes(tmp_path: Path, bits: int) -> None:
    values = np.random.default_rng(4).integers(0, 1 << bits, (800, 700), dtype=np.uint64)  # three chunks
    ds = ct_dataset(np.zeros((800, 700), dtype=np.int16))
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = values.astype(f"<u{bits // 8}").tobytes()
    out, _ = read_image(save_file(ds, tmp_path / f"u{bits}.dcm"))
    np.testing.assert_array_equal(out, values.astype(np.float32))


def save_file(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path
