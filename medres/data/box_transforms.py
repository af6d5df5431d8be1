"""Boxes follow the image: the 2D preprocessing chain with MONAI's box transforms, and its inverse (issue 18).

Stored boxes are pixel *edges* in (column, row) order (:mod:`medres.data.boxes`). MONAI's box transforms
order corners by the image's spatial axes, which for the medres reader's ``(1, rows, cols)`` images is
(row, column), and map coordinates through the image affine, which places pixel *centres*. So a box
enters the chain as (row, column) pixel-centre indices, is taken to the reader's world coordinates with
the image's affine as loaded (``AffineBoxToWorldCoordinated``), and after every spatial step of
:func:`medres.data.transforms.load_and_normalise` (longest-side resize, pad or crop) it comes back into the
new image's index space (``AffineBoxToImageCoordinated``), the half pixel restored, and clipped to the
image (``ClipBoxToImaged``). Because both affines are kept in the image's metadata (``original_affine``,
``affine``), :func:`boxes_to_stored_pixels` maps a prediction back to the stored image exactly.

Training augmentation moves boxes with albumentations' own box support (the 2D augmentation library of
:class:`medres.data.transforms.Augmentation2D`), so image and boxes see the same random draw.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from monai.apps.detection.transforms.box_ops import apply_affine_to_boxes
from monai.apps.detection.transforms.dictionary import (
    AffineBoxToImageCoordinated,
    AffineBoxToWorldCoordinated,
    ClipBoxToImaged,
    StandardizeEmptyBoxd,
)
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureTyped, MapTransform, Randomizable

from medres.data.transforms import IMAGE_KEY, Augmentation2D, Preprocessing, load_and_normalise

BOX_KEY = "boxes"
BOX_LABEL_KEY = "box_labels"


class SwapBoxAxesd(MapTransform):
    """Reverse the spatial order of 2D corners: (x_min, y_min, x_max, y_max) ↔ (y_min, x_min, y_max, x_max)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Swap columns and rows of each key's ``(N, 4)`` boxes."""
        out = dict(data)
        for key in self.key_iterator(out):
            out[key] = out[key][:, [1, 0, 3, 2]]
        return out


class ShiftBoxd(MapTransform):
    """Add ``offset`` to every corner: ±0.5 converts between pixel-edge and pixel-centre coordinates."""

    def __init__(self, keys: KeysCollection, offset: float) -> None:
        super().__init__(keys)
        self.offset = offset

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Shift each key's boxes."""
        out = dict(data)
        for key in self.key_iterator(out):
            out[key] = out[key] + self.offset
        return out


def box_load_and_normalise(
    preprocessing: Preprocessing,
    image_key: str = IMAGE_KEY,
    box_key: str = BOX_KEY,
    label_key: str = BOX_LABEL_KEY,
) -> list[Any]:
    """:func:`~medres.data.transforms.load_and_normalise` with the boxes carried through every spatial step.

    Input: ``image_key`` a DICOM path, ``box_key`` an ``(N, 4)`` float array of stored-pixel edges
    (column, row order), ``label_key`` ``(N,)`` integer finding indices. Output: the normalised image and
    boxes in its (row, column) pixel-edge coordinates, boxes left wholly outside the image removed with
    their labels.

    Raises:
        ValueError: For 3D preprocessing (series boxes are in patient millimetres: not built yet).
    """
    if preprocessing.spatial_dims != 2:
        raise ValueError("box transforms: only 2D preprocessing is supported so far (3D boxes are in patient mm)")
    steps = load_and_normalise(preprocessing, [image_key])
    load, spatial = steps[0], steps[1:]
    return [
        load,
        EnsureTyped([box_key], dtype=torch.float32, track_meta=False),
        StandardizeEmptyBoxd([box_key], box_ref_image_keys=image_key),
        SwapBoxAxesd([box_key]),
        ShiftBoxd([box_key], -0.5),
        AffineBoxToWorldCoordinated([box_key], box_ref_image_keys=image_key),
        *spatial,
        AffineBoxToImageCoordinated([box_key], box_ref_image_keys=image_key),
        ShiftBoxd([box_key], 0.5),
        ClipBoxToImaged([box_key], label_keys=[label_key], box_ref_image_keys=image_key, remove_empty=True),
    ]


def box_eval_transforms(
    preprocessing: Preprocessing,
    image_key: str = IMAGE_KEY,
    box_key: str = BOX_KEY,
    label_key: str = BOX_LABEL_KEY,
    track_meta: bool = True,
) -> Compose:
    """The evaluation chain for detection: image and boxes, no randomness; metadata kept for the inverse."""
    tail: list[Any] = [EnsureTyped([image_key], dtype=torch.float32, track_meta=track_meta)]
    if preprocessing.in_channels == 3:
        from monai.transforms import RepeatChanneld

        tail.insert(0, RepeatChanneld([image_key], repeats=3))
    return Compose(box_load_and_normalise(preprocessing, image_key, box_key, label_key) + tail)


def box_train_transforms(
    preprocessing: Preprocessing,
    augmentation: Augmentation2D | None,
    image_key: str = IMAGE_KEY,
    box_key: str = BOX_KEY,
    label_key: str = BOX_LABEL_KEY,
) -> Compose:
    """The evaluation chain plus augmentation that moves image and boxes together."""
    steps = box_load_and_normalise(preprocessing, image_key, box_key, label_key)
    if augmentation is not None:
        steps.append(AlbumentationsBoxd(image_key, box_key, label_key, augmentation.build_with_boxes()))
    if preprocessing.in_channels == 3:
        from monai.transforms import RepeatChanneld

        steps.append(RepeatChanneld([image_key], repeats=3))
    steps.append(EnsureTyped([image_key, box_key], dtype=torch.float32, track_meta=False))
    return Compose(steps)


class AlbumentationsBoxd(Randomizable, MapTransform):
    """Apply an albumentations pipeline (built with ``bbox_params``) to a 2D image and its boxes.

    Boxes are (row, column) pixel edges on the way in and out; albumentations' ``pascal_voc`` boxes are
    (x = column, y = row) pixel edges, so the corners are swapped around the call. Boxes that leave the
    image (or shrink below the pipeline's ``min_visibility``) are dropped with their labels.
    """

    def __init__(self, image_key: str, box_key: str, label_key: str, transform: A.Compose) -> None:
        MapTransform.__init__(self, [image_key])
        self.image_key, self.box_key, self.label_key = image_key, box_key, label_key
        self.transform = transform

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> AlbumentationsBoxd:
        """Seed this transform and the albumentations pipeline from MONAI's random state."""
        super().set_random_state(seed, state)
        self.transform.set_random_seed(int(self.R.randint(2**31 - 1)))
        return self

    def randomize(self, data: Any = None) -> None:
        """Albumentations draws its own parameters; nothing to pre-draw."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Augment the image (C, H, W) and its boxes together."""
        out = dict(data)
        image = out[self.image_key]
        array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        boxes = _numpy(out[self.box_key]).reshape(-1, 4)[:, [1, 0, 3, 2]]
        labels = _numpy(out[self.label_key]).reshape(-1)
        result = self.transform(
            image=np.ascontiguousarray(np.moveaxis(array, 0, -1)), bboxes=boxes, labels=labels.tolist()
        )
        augmented = result["image"]
        if augmented.ndim == 2:  # cv2 drops a trailing singleton channel
            augmented = augmented[..., None]
        out[self.image_key] = np.ascontiguousarray(np.moveaxis(augmented, -1, 0), dtype=np.float32)
        moved = np.asarray(result["bboxes"], dtype=np.float32).reshape(-1, 4)
        out[self.box_key] = moved[:, [1, 0, 3, 2]]
        out[self.label_key] = np.asarray(result["labels"], dtype=np.int64).reshape(-1)
        return out


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def boxes_to_stored_pixels(
    boxes: np.ndarray | torch.Tensor,
    network_affine: np.ndarray | torch.Tensor,
    stored_affine: np.ndarray | torch.Tensor,
) -> np.ndarray:
    """Map ``(N, 4)`` boxes from network-input pixel edges (row, column) back to stored pixels (column, row).

    Args:
        boxes: Boxes on the network input, as the detector predicts them.
        network_affine: The network input's affine (``image.affine`` after :func:`box_eval_transforms`).
        stored_affine: The stored image's affine (``image.meta["original_affine"]``).

    Returns:
        ``(N, 4)`` float64 (x_min, y_min, x_max, y_max) in stored pixel edges, the box contract's layout.
    """
    network = torch.as_tensor(np.asarray(_numpy(network_affine), dtype=np.float64))
    stored = torch.as_tensor(np.asarray(_numpy(stored_affine), dtype=np.float64))
    centres = torch.as_tensor(_numpy(boxes), dtype=torch.float64).reshape(-1, 4) - 0.5
    # network index -> world -> stored index: the inverse of the two affine steps of the forward chain.
    mapped = apply_affine_to_boxes(centres, torch.linalg.inv(stored) @ network) + 0.5
    return mapped.numpy()[:, [1, 0, 3, 2]]


def stored_pixels_to_network(
    boxes: np.ndarray | Sequence[Sequence[float]],
    network_affine: np.ndarray | torch.Tensor,
    stored_affine: np.ndarray | torch.Tensor,
) -> np.ndarray:
    """The forward map of :func:`boxes_to_stored_pixels` (for checks and drawing truth on network inputs)."""
    network = torch.as_tensor(np.asarray(_numpy(network_affine), dtype=np.float64))
    stored = torch.as_tensor(np.asarray(_numpy(stored_affine), dtype=np.float64))
    centres = torch.as_tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[:, [1, 0, 3, 2]]) - 0.5
    return (apply_affine_to_boxes(centres, torch.linalg.inv(network) @ stored) + 0.5).numpy()
