import numpy as np
import pytest
import torch

from medres.data.dicom import DicomErrorKind, DicomReadError
from medres.data.transforms import IMAGE_KEY, Augmentation2D, Preprocessing, eval_transforms, train_transforms

from ..conftest import dicom_files


def test_eval_transform_gives_normalised_fixed_size_tensor(tiny_archive):
    pre = Preprocessing(spatial_size=(48, 40))
    out = eval_transforms(pre)({IMAGE_KEY: str(dicom_files(tiny_archive)[0])})[IMAGE_KEY]
    assert type(out) is torch.Tensor  # plain tensor: no DICOM metadata in training batches
    assert out.shape == (1, 48, 40) and out.dtype == torch.float32
    assert out.min().item() == pytest.approx(0.0) and out.max().item() == pytest.approx(1.0)


def test_in_channels_three_repeats_the_grey_channel(tiny_archive):
    out = eval_transforms(Preprocessing(spatial_size=(32, 32), in_channels=3))(
        {IMAGE_KEY: str(dicom_files(tiny_archive)[0])}
    )[IMAGE_KEY]
    assert out.shape == (3, 32, 32)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_track_meta_keeps_uids_for_scoring(tiny_archive):
    import pydicom

    path = dicom_files(tiny_archive)[0]
    out = eval_transforms(Preprocessing(spatial_size=(32, 32)), track_meta=True)({IMAGE_KEY: str(path)})[IMAGE_KEY]
    assert out.meta["SOPInstanceUID"] == pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    assert "PatientName" not in out.meta and "PatientID" not in out.meta


def test_training_augmentation_is_seeded_and_changes_the_image(tiny_archive):
    pre = Preprocessing(spatial_size=(32, 32))
    path = str(dicom_files(tiny_archive)[0])
    plain = eval_transforms(pre)({IMAGE_KEY: path})[IMAGE_KEY]
    strong = Augmentation2D(probability=1.0, rotate_degrees=20, scale=0.2)
    first = train_transforms(pre, strong).set_random_state(seed=7)({IMAGE_KEY: path})[IMAGE_KEY]
    again = train_transforms(pre, strong).set_random_state(seed=7)({IMAGE_KEY: path})[IMAGE_KEY]
    other = train_transforms(pre, strong).set_random_state(seed=8)({IMAGE_KEY: path})[IMAGE_KEY]
    assert first.shape == plain.shape == (1, 32, 32)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, plain)


def test_typed_read_error_reaches_the_caller(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    with pytest.raises(Exception) as info:
        eval_transforms(Preprocessing(spatial_size=(32, 32)))({IMAGE_KEY: str(junk)})
    cause = info.value
    while cause is not None and not isinstance(cause, DicomReadError):
        cause = cause.__cause__
    assert isinstance(cause, DicomReadError) and cause.kind == DicomErrorKind.NOT_DICOM


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"spatial_size": (4, 4)}, "spatial_size"),
        ({"in_channels": 2}, "in_channels"),
        ({"lower_percentile": 90, "upper_percentile": 10}, "percentiles"),
        ({"spatial_dims": 3, "spatial_size": (8, 8, 8)}, "spatial_dims"),
    ],
)
def test_bad_preprocessing_names_the_setting(kwargs, named):
    with pytest.raises(ValueError, match=named):
        Preprocessing(**kwargs)


def test_preprocessing_dict_round_trip_and_unknown_keys():
    pre = Preprocessing(spatial_size=(64, 48), in_channels=3, lower_percentile=1.0)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="window_width"):
        Preprocessing.from_dict({**pre.to_dict(), "window_width": 400})


def test_monochrome1_and_monochrome2_images_normalise_the_same_way(tmp_path):
    """The reader inverts MONOCHROME1, so after normalisation bright stays bright."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ramp = np.tile(np.arange(64, dtype=np.uint16) * 60, (64, 1))
    paths = []
    for photometric, pixels in (("MONOCHROME2", ramp), ("MONOCHROME1", 4095 - ramp)):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.Modality = "CR"
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.tobytes()
        path = tmp_path / f"{photometric}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    transform = eval_transforms(Preprocessing(spatial_size=(64, 64)))
    mono2, mono1 = (transform({IMAGE_KEY: str(p)})[IMAGE_KEY] for p in paths)
    assert torch.allclose(mono1, mono2, atol=1e-5)
    assert mono2[0, 10, -1] > mono2[0, 10, 0]  # the ramp rises left to right
