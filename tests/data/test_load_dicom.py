"""``LoadDicom``/``LoadDicomd`` keep the reader's typed errors where MONAI's ``LoadImage`` loses them (issue 21).

Over every file that ships inside the installed pydicom package (nothing is downloaded), the array transform and its
dict pair either load the image the reader reads, or raise the reader's :class:`DicomReadError` with the same kind.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.data import MetaTensor
from monai.transforms import LoadImage

from medres.data.transforms import LoadDicom, LoadDicomd
from medres.dicom import DicomErrorKind, DicomReader, DicomReadError, read_image

DATA = Path(pydicom.__file__).parent / "data"
FILES = sorted(
    p for p in DATA.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
)


def reader_outcome(path: Path) -> np.ndarray | DicomErrorKind:
    try:
        return read_image(path)[0]
    except DicomReadError as err:
        return err.kind


@pytest.fixture(scope="module")
def outcomes() -> dict[Path, np.ndarray | DicomErrorKind]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {path: reader_outcome(path) for path in FILES}


def test_load_dicom_gives_the_reader_s_image_or_its_typed_error(outcomes) -> None:
    load = LoadDicom()
    kinds = set()
    for path, expected in outcomes.items():
        if isinstance(expected, DicomErrorKind):
            with pytest.raises(DicomReadError) as err:
                load(path)
            assert err.value.kind == expected and err.value.path == str(path)
            kinds.add(expected)
            continue
        image = load(path)
        assert isinstance(image, MetaTensor) and image.meta["filename_or_obj"] == str(path)
        # Channel first: grey gains an axis of 1, colour moves its RGB axis to the front.
        channel_last = expected.ndim >= 3 and expected.shape[-1] == 3 and image.shape[0] == 3
        expected_first = np.moveaxis(expected, -1, 0) if channel_last else expected[None]
        np.testing.assert_array_equal(image.numpy(), expected_first)
    # The test files exercise most kinds, so each comes back typed through the transform.
    assert {DicomErrorKind.NOT_DICOM, DicomErrorKind.TRUNCATED, DicomErrorKind.NO_PIXEL_DATA} <= kinds
    assert {DicomErrorKind.UNSUPPORTED_CODEC, DicomErrorKind.UNSUPPORTED_IMAGE, DicomErrorKind.DECODE_ERROR} <= kinds


def test_where_load_image_loses_the_kind_load_dicom_keeps_it(outcomes) -> None:
    """The reason for the transform: LoadImage answers some failures with another reader's untyped error."""
    load_image = LoadImage(reader=DicomReader(), image_only=True)
    load = LoadDicom()
    lost = []
    for path, expected in outcomes.items():
        if not isinstance(expected, DicomErrorKind):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load_image(path)
        except DicomReadError:
            continue
        except Exception:  # MONAI fell back to its other readers and raised theirs
            lost.append(path)
            with pytest.raises(DicomReadError) as err:
                load(path)
            assert err.value.kind == expected
    assert lost, "LoadImage kept every typed error: the README's advice to use LoadDicom may be revisited"


def test_image_only_false_returns_the_meta_as_load_image_does(outcomes) -> None:
    path = next(p for p, out in outcomes.items() if not isinstance(out, DicomErrorKind) and out.ndim == 2)
    image, meta = LoadDicom(image_only=False)(path)
    assert meta["filename_or_obj"] == str(path) and tuple(meta["spatial_shape"]) == tuple(image.shape[1:])
    assert "PatientName" not in meta and "PatientID" not in meta
    unbatched = LoadDicom(ensure_channel_first=False)(path)
    assert unbatched.shape == image.shape[1:]


def test_load_dicomd_is_the_dict_form(outcomes) -> None:
    transform = LoadDicomd(["image", "other"])
    good = next(p for p, out in outcomes.items() if not isinstance(out, DicomErrorKind))
    bad, kind = next((p, out) for p, out in outcomes.items() if isinstance(out, DicomErrorKind) and out == "truncated")
    out = transform({"image": str(good), "other": str(good), "label": 1})
    assert out["label"] == 1 and out["image"].shape == LoadDicom()(good).shape
    with pytest.raises(DicomReadError) as err:
        transform({"image": str(good), "other": str(bad)})
    assert err.value.kind == kind
