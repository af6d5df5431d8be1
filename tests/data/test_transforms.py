import json

import numpy as np
import pytest
import torch

from medres.data.transforms import IMAGE_KEY, Augmentation2D, Preprocessing, eval_transforms, train_transforms
from medres.dicom import DicomErrorKind, DicomReadError

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


@pytest.mark.parametrize("in_channels", [1, 3])
def test_colour_file_reaches_the_network_as_luminance(tmp_path, in_channels):
    from ..dicom.test_dicom_display import BT601, dataset, save

    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    path = save(dataset(rgb, "RGB"), tmp_path / "us.dcm")
    pre = Preprocessing(spatial_size=(32, 32), in_channels=in_channels, lower_percentile=0.0, upper_percentile=100.0)
    out = eval_transforms(pre)({IMAGE_KEY: str(path)})[IMAGE_KEY]
    assert out.shape == (in_channels, 32, 32)
    grey = rgb @ BT601
    expected = (grey - grey.min()) / (grey.max() - grey.min())
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)


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
        ({"spatial_dims": 4, "spatial_size": (8, 8, 8, 8)}, "spatial_dims"),
        ({"spatial_dims": 3, "spatial_size": (8, 8)}, "spatial_size"),
        ({"target_spacing": (1.0, 1.0, 1.0)}, "target_spacing"),
        ({"spatial_dims": 3, "spatial_size": (8, 8, 8), "target_spacing": (1.0, 0.0, 1.0)}, "target_spacing"),
        ({"intensity_window": (400.0, -1000.0)}, "intensity_window"),
        ({"spatial_dims": 3, "spatial_size": (8, 8, 8), "voi": "lut"}, "voi"),
        ({"voi": "none", "voi_window": (40.0, 400.0)}, "voi_window"),
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


# ---- 3D: series → volume ----------------------------------------------------------------------


def write_series(folder, volume_hu, spacing=(2.0, 1.5, 1.5), origin=(-10.0, -20.0, 100.0), names=None):
    """Axial CT slices of ``volume_hu`` (slices, rows, cols), slice k at z = origin_z + k·spacing; returns paths."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k, pixels in enumerate(volume_hu):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.ImageType, ds.InstanceNumber = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"], k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = pixels.astype("<i2").tobytes()
        path = folder / (names[k] if names else f"slice_{k:03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    return paths


def test_3d_series_is_reoriented_to_ras(tmp_path):
    # One bright voxel at the patient's left (high column: +x in LPS), anterior (low row: -y) and superior (high slice).
    volume = np.full((10, 16, 16), -1000, dtype=np.int16)
    volume[8, 2, 13] = 1000
    paths = write_series(tmp_path / "s", volume, spacing=(1.0, 1.0, 1.0))
    pre = Preprocessing(spatial_dims=3, spatial_size=(16, 16, 10), intensity_window=(-1000.0, 1000.0))
    out = eval_transforms(pre)({IMAGE_KEY: paths})[IMAGE_KEY]
    assert type(out) is torch.Tensor and out.shape == (1, 16, 16, 10)
    # RAS: x runs towards the patient's right, y anterior, z superior.
    assert np.unravel_index(int(out.argmax()), out.shape) == (0, 15 - 13, 15 - 2, 8)
    assert out.max().item() == pytest.approx(1.0) and out.min().item() == pytest.approx(0.0)


def test_3d_resamples_windows_and_pads_in_hounsfield_units(tmp_path):
    volume = np.full((12, 20, 20), 40, dtype=np.int16)  # soft tissue everywhere
    paths = write_series(tmp_path / "s", volume, spacing=(2.0, 1.0, 1.0))
    pre = Preprocessing(
        spatial_dims=3, spatial_size=(16, 16, 16), intensity_window=(-1000.0, 400.0), target_spacing=(2.0, 2.0, 2.0)
    )
    image = eval_transforms(pre, track_meta=True)({IMAGE_KEY: paths})[IMAGE_KEY]
    # 20 × 1 mm → 10 voxels of 2 mm in-plane, 12 × 2 mm → 12 slices; centred in 16³ with zero (air) padding.
    assert np.allclose(np.diag(image.affine.numpy())[:3], 2.0)
    inside = image[0, 3:13, 3:13, 2:14]
    assert torch.allclose(inside, torch.full_like(inside, 1040 / 1400), atol=1e-4)
    assert image[0, :3].abs().max() == 0 and image[0, :, :, :2].abs().max() == 0
    assert image.meta["SeriesInstanceUID"] and "PatientName" not in image.meta


def test_3d_shuffled_file_names_give_the_same_volume(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.integers(-1000, 1000, size=(9, 12, 12)).astype(np.int16)
    ordered = write_series(tmp_path / "ordered", volume)
    names = [f"{int(n):08x}.dcm" for n in rng.permutation(1000)[:9]]
    shuffled = write_series(tmp_path / "shuffled", volume, names=names)
    pre = Preprocessing(spatial_dims=3, spatial_size=(12, 12, 9), intensity_window=(-1000.0, 1000.0))
    a = eval_transforms(pre)({IMAGE_KEY: ordered})[IMAGE_KEY]
    b = eval_transforms(pre)({IMAGE_KEY: list(reversed(shuffled))})[IMAGE_KEY]
    assert torch.equal(a, b)


def test_3d_augmentation_is_seeded_and_keeps_the_shape(tmp_path):
    from medres.data.transforms import Augmentation3D

    rng = np.random.default_rng(1)
    paths = write_series(tmp_path / "s", rng.integers(-1000, 400, size=(8, 12, 12)).astype(np.int16))
    pre = Preprocessing(spatial_dims=3, spatial_size=(12, 12, 8), intensity_window=(-1000.0, 400.0))
    strong = Augmentation3D(flip_probability=1.0, affine_probability=1.0, intensity_probability=1.0, noise_std=0.01)
    plain = eval_transforms(pre)({IMAGE_KEY: paths})[IMAGE_KEY]
    first = train_transforms(pre, strong).set_random_state(seed=3)({IMAGE_KEY: paths})[IMAGE_KEY]
    again = train_transforms(pre, strong).set_random_state(seed=3)({IMAGE_KEY: paths})[IMAGE_KEY]
    other = train_transforms(pre, strong).set_random_state(seed=4)({IMAGE_KEY: paths})[IMAGE_KEY]
    assert type(first) is torch.Tensor and first.shape == plain.shape == (1, 12, 12, 8)
    assert torch.equal(first, again) and not torch.equal(first, other) and not torch.equal(first, plain)


def test_3d_inconsistent_series_error_reaches_the_caller(tmp_path):
    volume = np.zeros((6, 8, 8), dtype=np.int16)
    paths = write_series(tmp_path / "s", volume)
    del paths[3]  # a missing slice: a gap
    pre = Preprocessing(spatial_dims=3, spatial_size=(8, 8, 8))
    with pytest.raises(Exception) as info:
        eval_transforms(pre)({IMAGE_KEY: paths})
    cause = info.value
    while cause is not None and not isinstance(cause, DicomReadError):
        cause = cause.__cause__
    assert isinstance(cause, DicomReadError) and cause.kind == DicomErrorKind.INCONSISTENT_SERIES


def test_augmentation_must_match_the_dimensions():
    from medres.data.transforms import Augmentation3D

    with pytest.raises(ValueError, match="Augmentation3D"):
        train_transforms(Preprocessing(spatial_dims=3, spatial_size=(8, 8, 8)), Augmentation2D())
    with pytest.raises(ValueError, match="Augmentation2D"):
        train_transforms(Preprocessing(spatial_size=(8, 8)), Augmentation3D())
    with pytest.raises(ValueError, match="flip_axes"):
        Augmentation3D(flip_axes=(3,))


def test_3d_preprocessing_round_trips_and_old_packages_still_load():
    pre = Preprocessing(
        spatial_dims=3, spatial_size=(40, 32, 32), intensity_window=(-1000.0, 400.0), target_spacing=(8.0, 8.0, 8.0)
    )
    data = pre.to_dict()
    assert data["spatial_size"] == [40, 32, 32] and data["target_spacing"] == [8.0, 8.0, 8.0]
    assert Preprocessing.from_dict(json.loads(json.dumps(data))) == pre
    # A package written before the 3D fields existed.
    old = {
        "spatial_dims": 2,
        "spatial_size": [64, 64],
        "in_channels": 1,
        "lower_percentile": 0.5,
        "upper_percentile": 99.5,
    }
    assert Preprocessing.from_dict(old) == Preprocessing(spatial_size=(64, 64))


def test_voi_window_reaches_the_reader(tiny_archive):
    path = str(dicom_files(tiny_archive)[0])
    pre = Preprocessing(spatial_size=(32, 32), voi="window", voi_window=(2000.0, 10.0), intensity_window=(0.0, 1.0))
    out = eval_transforms(pre)({IMAGE_KEY: path})[IMAGE_KEY]
    # A 10-wide window: nearly every pixel lands at 0 or 1 (the reader's VOI output is in [0, 1]).
    assert out.shape == (1, 32, 32) and ((out < 0.05) | (out > 0.95)).float().mean() > 0.9
    assert Preprocessing.from_dict(pre.to_dict()) == pre
