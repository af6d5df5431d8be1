"""Boxes follow the image through resize, pad/crop and augmentation, and map back within 1 pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medres.data.box_transforms import (
    BOX_KEY,
    BOX_LABEL_KEY,
    box_eval_transforms,
    box_train_transforms,
    boxes_to_stored_pixels,
    stored_pixels_to_network,
)
from medres.data.transforms import IMAGE_KEY, Augmentation2D, Preprocessing

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
