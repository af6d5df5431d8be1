"""Every file that ships inside the installed pydicom package: it loads or gets a typed error, never crashes,
and whatever pydicom itself decodes (with the installed plugins) we load too, with the same values.

Only what is on disk is used (the package's ``data`` folder); nothing is downloaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.pixels
import pytest

from medres.dicom import DicomErrorKind, DicomReader, DicomReadError, ReadOptions, read_image

DATA = Path(pydicom.__file__).parent / "data"
FILES = sorted(
    p for p in DATA.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
)
GREY = ("MONOCHROME1", "MONOCHROME2")


def _pydicom_reference(path: Path) -> np.ndarray | None:
    """What pydicom makes of the file, in our output convention (None: pydicom cannot decode it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
            stored = ds.pixel_array
        except Exception:
            return None
    photometric = str(ds.PhotometricInterpretation)
    if photometric in GREY:
        return np.asarray(pydicom.pixels.apply_modality_lut(stored, ds), dtype=np.float64)
    if photometric == "PALETTE COLOR":
        return np.asarray(pydicom.pixels.apply_color_lut(stored, ds), dtype=np.float64)
    return stored.astype(np.float64)


def _photometric(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation)


def test_the_package_ships_enough_files() -> None:
    assert len(FILES) > 150
    assert sum(_pydicom_reference(p) is not None for p in FILES) > 80


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(DATA)) for p in FILES])
def test_loads_or_typed_error(path: Path) -> None:
    reference = _pydicom_reference(path)
    try:
        out, _ = read_image(path)
    except DicomReadError as err:
        assert reference is None, f"pydicom decodes {path.name} but we raised {err}"
        assert err.kind in set(DicomErrorKind) and err.path == str(path)
        assert "\n" not in str(err)
        return
    assert out.dtype == np.float32
    if reference is None:
        return  # we read more than plain pydicom does (e.g. a file without meta header, read with force)
    photometric = _photometric(path)
    assert out.shape == reference.shape
    # 1e-5 relative: pydicom rescales in float64, we in float32 (CT_small's slope/intercept are not dyadic).
    if photometric == "MONOCHROME1":
        # Inverted over the header's range: out + reference is one constant.
        total = out.astype(np.float64) + reference
        np.testing.assert_allclose(total, total.flat[0], rtol=1e-5)
    else:
        np.testing.assert_allclose(out, reference, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("test_files/README.txt", DicomErrorKind.NOT_DICOM),
        ("test_files/zipMR.gz", DicomErrorKind.NOT_DICOM),
        ("test_files/no_meta.dcm", DicomErrorKind.NOT_DICOM),  # no meta and no SOP Class: not safe to force
        ("test_files/rtstruct.dcm", DicomErrorKind.NO_PIXEL_DATA),  # no meta, but a SOP Class: read with force
        ("test_files/ExplVR_BigEndNoMeta.dcm", DicomErrorKind.NO_PIXEL_DATA),
        ("test_files/dicomdirtests/DICOMDIR", DicomErrorKind.NO_PIXEL_DATA),
        ("test_files/MR_truncated.dcm", DicomErrorKind.TRUNCATED),
        ("test_files/rtplan_truncated.dcm", DicomErrorKind.TRUNCATED),
        ("test_files/JPGExtended.dcm", DicomErrorKind.UNSUPPORTED_CODEC),  # 12-bit JPEG: no installed decoder
        ("test_files/nested_priv_SQ.dcm", DicomErrorKind.UNSUPPORTED_IMAGE),  # pixel data, no Image Pixel module
        ("test_files/badVR.dcm", DicomErrorKind.DECODE_ERROR),  # IS value '1A'
    ],
)
def test_known_failures_have_the_right_kind(name: str, kind: DicomErrorKind) -> None:
    with pytest.raises(DicomReadError) as err:
        read_image(DATA / name)
    assert err.value.kind == kind


def test_luminance_option_on_every_colour_file() -> None:
    colour = [p for p in FILES if p.suffix == ".dcm" and "SC_rgb" in p.name and _pydicom_reference(p) is not None]
    assert len(colour) > 10
    for path in colour:
        rgb, _ = read_image(path)
        grey, _ = read_image(path, ReadOptions(colour="luminance"))
        assert grey.shape == rgb.shape[:-1]
        np.testing.assert_allclose(grey, rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32), rtol=1e-5)


def test_monai_reader_on_the_decodable_files() -> None:
    reader = DicomReader()
    for path in FILES:
        if _pydicom_reference(path) is None:
            continue
        array, meta = reader.get_data(reader.read(path))
        channel = meta["original_channel_dim"]
        assert tuple(meta["spatial_shape"]) == (array.shape[:-1] if channel == -1 else array.shape)
        size = len(meta["spatial_shape"]) + 1
        assert meta["affine"].shape in ((size, size), (4, 4))
