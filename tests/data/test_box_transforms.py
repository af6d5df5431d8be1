"""Boxes follow the image through resize, pad/crop and augmentation (2D) or reorientation, resampling and
pad/crop (3D, patient LPS mm), and map back within 1 pixel or voxel."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medres.data.box_transforms import (
    BOX_KEY,
    BOX_LABEL_KEY,
    box_eval_transforms,
    box_train_transforms,
    boxes_to_patient_mm,
    boxes_to_stored_pixels,
    patient_mm_to_network,
    stored_pixels_to_network,
)
from medres.data.transforms import IMAGE_KEY, Augmentation2D, Preprocessing
from medres.synthetic.luna16 import LunaSummary, synth_luna16

# Stored boxes (column, row pixel edges) of two bright rectangles on a 70-row x 90-column image.
BOXES = np.array([[10, 12, 30, 40], [55, 20, 82, 33]], dtype=np.float32)


def _write_image(path: Path, rows: int = 70, cols: int = 90) -> Path:
    pixels = np.full((rows, cols), 100, np.uint16)
    pixels[0, 0] = 0  # fixes the percentile range so both rectangles land near 1.0
    for x0, y0, x1, y1 in BOXES.astype(int):
        pixels[y0:y1, x0:x1] = 1000
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.PixelSpacing = ["0.2", "0.2"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _bright_box(image: np.ndarray, threshold: float = 0.5) -> list[float]:
    """(row_min, col_min, row_max, col_max) pixel edges of the pixels above ``threshold``."""
    rows, cols = np.nonzero(image > threshold)
    return [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]


@pytest.mark.parametrize("spatial_size", [(48, 40), (64, 64), (40, 56)])
def test_eval_chain_moves_boxes_with_the_pixels_and_back(tmp_path: Path, spatial_size: tuple[int, int]) -> None:
    path = _write_image(tmp_path / "a.dcm")
    preprocessing = Preprocessing(spatial_dims=2, spatial_size=spatial_size, lower_percentile=0, upper_percentile=100)
    out = box_eval_transforms(preprocessing)({IMAGE_KEY: str(path), BOX_KEY: BOXES, BOX_LABEL_KEY: np.array([0, 1])})
    image = out[IMAGE_KEY]
    assert tuple(image.shape) == (1, *spatial_size)
    boxes = np.asarray(out[BOX_KEY])
    # Forward: each box sits on its rectangle in the network input (area resampling blurs one pixel).
    for box, label in zip(boxes, np.asarray(out[BOX_LABEL_KEY]), strict=True):
        r0, c0, r1, c1 = (round(float(v)) for v in box)
        patch = np.zeros(spatial_size, bool)
        patch[r0:r1, c0:c1] = True
        rect = image[0].numpy() * patch
        np.testing.assert_allclose(_bright_box(rect), box, atol=1.0, err_msg=f"box {label}")
    # Inverse: back to stored pixels, within 1 pixel (exact up to float error where nothing was clipped).
    back = boxes_to_stored_pixels(boxes, image.affine, image.meta["original_affine"])
    kept = BOXES[np.asarray(out[BOX_LABEL_KEY])]
    inside = (boxes[:, 0] > 0) & (boxes[:, 1] > 0) & (boxes[:, 2] < spatial_size[0]) & (boxes[:, 3] < spatial_size[1])
    np.testing.assert_allclose(back[inside], kept[inside], atol=1.0)
    np.testing.assert_allclose(
        stored_pixels_to_network(back, image.affine, image.meta["original_affine"]), boxes, atol=1e-4
    )


def test_a_box_cropped_away_is_dropped_with_its_label(tmp_path: Path) -> None:
    path = _write_image(tmp_path / "a.dcm")
    # 90 columns -> 64 across, then centre-cropped to 24 columns: columns 20..44 of 64 survive, the
    # first rectangle (stored columns 10-30 -> 7-21) keeps a sliver, the second (55-82 -> 39-58) too;
    # at 12 columns (26..38) both are gone.
    preprocessing = Preprocessing(spatial_dims=2, spatial_size=(64, 12), lower_percentile=0, upper_percentile=100)
    out = box_eval_transforms(preprocessing)({IMAGE_KEY: str(path), BOX_KEY: BOXES, BOX_LABEL_KEY: np.array([3, 4])})
    assert np.asarray(out[BOX_KEY]).shape == (0, 4) and len(out[BOX_LABEL_KEY]) == 0


def test_augmentation_moves_boxes_with_the_image(tmp_path: Path) -> None:
    path = _write_image(tmp_path / "a.dcm")
    preprocessing = Preprocessing(spatial_dims=2, spatial_size=(64, 64), lower_percentile=0, upper_percentile=100)
    augmentation = Augmentation2D(probability=1.0, rotate_degrees=0.0, scale=0.1, translate=0.08, brightness=0.0,
                                  contrast=0.0, gamma=0.0, horizontal_flip=0.5)  # fmt: skip
    chain = box_train_transforms(preprocessing, augmentation)
    flips = 0
    for seed in range(6):
        chain.set_random_state(seed)
        out = chain({IMAGE_KEY: str(path), BOX_KEY: BOXES, BOX_LABEL_KEY: np.array([0, 1])})
        image = np.asarray(out[IMAGE_KEY][0])
        boxes = np.asarray(out[BOX_KEY])
        assert len(boxes) == 2
        for box in boxes:
            r0, c0, r1, c1 = (round(float(v)) for v in box)
            patch = np.zeros(image.shape, bool)
            patch[max(r0 - 2, 0) : r1 + 2, max(c0 - 2, 0) : c1 + 2] = True
            np.testing.assert_allclose(_bright_box(image * patch), box, atol=1.0)
        # The first stored box is left of the second; a flip swaps their order across the image.
        flips += bool(boxes[0, 1] > boxes[1, 1])
    assert 0 < flips < 6


def test_eval_chain_is_exact_pixel_edge_geometry(tmp_path: Path) -> None:
    # 70 x 90 -> longest side 64: 50 x 64 (scale 50/70 on rows, 64/90 on columns), then rows padded by 7
    # on top to 64. Pixel edges scale exactly; a pixel-centre/edge mix-up would be off by (1 - scale) / 2.
    path = _write_image(tmp_path / "a.dcm")
    preprocessing = Preprocessing(spatial_dims=2, spatial_size=(64, 64), lower_percentile=0, upper_percentile=100)
    out = box_eval_transforms(preprocessing)({IMAGE_KEY: str(path), BOX_KEY: BOXES, BOX_LABEL_KEY: np.array([0, 1])})
    expected = np.stack(
        [BOXES[:, 1] * 50 / 70 + 7, BOXES[:, 0] * 64 / 90, BOXES[:, 3] * 50 / 70 + 7, BOXES[:, 2] * 64 / 90], axis=1
    )
    np.testing.assert_allclose(np.asarray(out[BOX_KEY]), expected, atol=1e-3)


def _luna_sample(summary: LunaSummary, uid: str) -> tuple[list[str], np.ndarray]:
    files = sorted(str(p) for p in summary.root.glob(f"LIDC-IDRI-*/*/{uid}/*.dcm"))
    nodules = [n for n in summary.nodules if n.seriesuid == uid]
    boxes = np.array([[*(np.array(n.centre) - n.diameter_mm / 2), *(np.array(n.centre) + n.diameter_mm / 2)]
                      for n in nodules]).reshape(-1, 6)  # fmt: skip
    return files, boxes


@pytest.mark.parametrize(
    ("orientation", "target_spacing"),
    [("coronal", (1.7, 1.3, 2.1)), ("sagittal", None), ("axial", (2.0, 2.0, 2.0))],
)
def test_3d_chain_puts_lps_boxes_on_the_nodules_and_maps_them_back(
    tmp_path: Path, orientation: Literal["axial", "coronal", "sagittal"], target_spacing: tuple[float, ...] | None
) -> None:
    # Anisotropic voxels (1.5-2 mm pixels, 2-2.5 mm slices) in a plane the RAS reorientation permutes and flips.
    summary = synth_luna16(tmp_path / "luna", scans=2, seed=1, negative_fraction=0.0, orientation=orientation)
    preprocessing = Preprocessing(
        spatial_dims=3, spatial_size=(48, 48, 40), intensity_window=(-1000.0, 400.0), target_spacing=target_spacing
    )
    chain = box_eval_transforms(preprocessing)
    for uid in summary.seriesuids:
        files, boxes = _luna_sample(summary, uid)
        out = chain({IMAGE_KEY: files, BOX_KEY: boxes, BOX_LABEL_KEY: np.zeros(len(boxes), np.int64)})
        volume, network = out[IMAGE_KEY][0].numpy(), np.asarray(out[BOX_KEY])
        assert network.shape == boxes.shape
        grid = np.indices(volume.shape).reshape(3, -1).T + 0.5  # voxel centres in voxel-edge coordinates
        for box in network:
            inside = np.all((grid >= box[:3]) & (grid <= box[3:]), axis=1).reshape(volume.shape)
            # A sphere fills about half its cube: nodule (about 0.75 after the window) vs lung (about 0.1).
            assert volume[inside].mean() > 0.35 > 3 * volume.mean()
            centre = ((box[:3] + box[3:]) / 2).astype(int)
            assert volume[tuple(centre)] > 0.6
        back = boxes_to_patient_mm(network, out[IMAGE_KEY].affine)
        np.testing.assert_allclose(back, boxes, atol=1e-3)
        voxel_mm = max(target_spacing or (2.5,))
        again = patient_mm_to_network(back, out[IMAGE_KEY].affine)
        assert np.abs(again - network).max() < 1e-3 and np.abs(back - boxes).max() < voxel_mm


def test_3d_box_outside_the_network_volume_is_dropped_with_its_label(tmp_path: Path) -> None:
    summary = synth_luna16(tmp_path / "luna", scans=1, seed=4, negative_fraction=0.0, size=24, slices=12)
    files, boxes = _luna_sample(summary, summary.seriesuids[0])
    far = boxes[:1] + np.array([500.0, 0, 0, 500.0, 0, 0])
    labels = np.arange(len(boxes) + 1, dtype=np.int64)
    preprocessing = Preprocessing(spatial_dims=3, spatial_size=(16, 16, 16), intensity_window=(-1000.0, 400.0))
    out = box_eval_transforms(preprocessing)(
        {IMAGE_KEY: files, BOX_KEY: np.concatenate([boxes, far]), BOX_LABEL_KEY: labels}
    )
    assert len(out[BOX_KEY]) == len(out[BOX_LABEL_KEY]) <= len(boxes)
    assert len(boxes) not in set(np.asarray(out[BOX_LABEL_KEY]).tolist())
    with pytest.raises(ValueError, match="3D augmentation does not move boxes"):
        box_train_transforms(preprocessing, Augmentation2D())
