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

3D: series boxes are patient LPS millimetres (:mod:`medres.data.boxes`), and the series reader's affine maps
(slice, row, column) indices to RAS millimetres (:class:`medres.dicom.series.SeriesReader`, as MONAI's readers
with ``affine_lps_to_ras``). A box enters as its eight corner points (``ConvertBoxToPoints``); the volume goes
through every spatial step of the 3D path (RAS reorientation, resampling to ``target_spacing``, pad or crop);
the points then go through the *final* image affine into network voxel indices (``ApplyTransformToPoints``
with ``affine_lps_to_ras=True``, which flips the affine's x and y rows so LPS points meet an LPS affine), and
the enclosing box of the eight (``ConvertPointsToBoxes``) is shifted by half a voxel to voxel edges and clipped
to the volume. Mapping the points once through the final affine, rather than step by step through world
and index space as the 2D chain does, keeps the box exact: MONAI's two-corner ``apply_affine_to_boxes`` is
only exact for affines without rotation, and a tilted or oblique series has rotation between its voxel grid
and the patient axes. For series whose axes follow the patient axes (axial, coronal, sagittal, any slice
order), the map is a permutation, flip, scale and shift, and :func:`boxes_to_patient_mm` inverts it exactly;
for an oblique series each direction returns the enclosing box, a little larger.

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
from monai.transforms import (
    ApplyTransformToPoints,
    Compose,
    ConvertBoxToPoints,
    ConvertPointsToBoxes,
    EnsureTyped,
    MapTransform,
)

from medres.data.transforms import IMAGE_KEY, Albumentationsd, Augmentation2D, Preprocessing, load_and_normalise

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

    3D (``preprocessing.spatial_dims == 3``): ``image_key`` holds the series' file paths, ``box_key`` ``(N, 6)``
    corners in patient LPS mm (``x_min, y_min, z_min, x_max, y_max, z_max``); the boxes come out in the
    network volume's voxel edges, in its (x, y, z) = RAS axis order.
    """
    if preprocessing.spatial_dims == 3:
        return _box_load_and_normalise_3d(preprocessing, image_key, box_key, label_key)
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


def _box_load_and_normalise_3d(preprocessing: Preprocessing, image_key: str, box_key: str, label_key: str) -> list[Any]:
    steps = load_and_normalise(preprocessing, [image_key])
    return [
        *steps,
        EnsureTyped([box_key], dtype=torch.float64, track_meta=False),
        PatientBoxToVoxeld([box_key], image_key),
        ClipBoxToImaged([box_key], label_keys=[label_key], box_ref_image_keys=image_key, remove_empty=True),
    ]


class PatientBoxToVoxeld(MapTransform):
    """Map ``(N, 6)`` patient LPS mm boxes onto the voxel edges of ``image_key``'s volume through its affine.

    The image's affine maps voxel indices to RAS mm (the series reader's, carried through MONAI's spatial
    transforms). The boxes' eight corners go through it with MONAI's point transforms, their enclosing box is
    kept, and half a voxel is added so that voxel ``i`` spans ``[i, i + 1)``.
    """

    def __init__(self, keys: KeysCollection, image_key: str) -> None:
        super().__init__(keys)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each key's mm boxes by voxel-edge boxes of the image."""
        out = dict(data)
        affine = out[self.image_key].affine
        for key in self.key_iterator(out):
            out[key] = torch.as_tensor(patient_mm_to_network(_numpy(out[key]), affine))
        return out


def _map_box_corners(boxes: np.ndarray, affine: torch.Tensor, invert: bool) -> np.ndarray:
    """The enclosing boxes of ``(N, 6)`` boxes' eight corners mapped through a RAS ``affine`` (LPS points).

    ``invert=True``: LPS mm → voxel indices (through the inverse affine); ``False``: voxel indices → LPS mm.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    if not len(boxes):
        return np.zeros((0, 6), np.float64)
    points = ConvertBoxToPoints()(torch.as_tensor(boxes))  # (N, 8, 3): N "channels" of 8 points
    # affine_lps_to_ras: the points are LPS, the affine RAS; MONAI flips the affine's x and y rows to meet them.
    mapper = ApplyTransformToPoints(dtype=torch.float64, invert_affine=invert, affine_lps_to_ras=True)
    with mapper.trace_transform(False):
        mapped = mapper(torch.as_tensor(np.asarray(points), dtype=torch.float64), affine)
    return np.asarray(_numpy(ConvertPointsToBoxes()(mapped)), dtype=np.float64)


def patient_mm_to_network(
    boxes: np.ndarray | Sequence[Sequence[float]], network_affine: np.ndarray | torch.Tensor
) -> np.ndarray:
    """Map ``(N, 6)`` boxes from patient LPS mm onto a volume's voxel edges (the forward map of 3D boxes).

    Args:
        boxes: ``x_min, y_min, z_min, x_max, y_max, z_max`` in patient LPS mm, the 3D box contract's corners.
        network_affine: The volume's 4x4 index → RAS mm affine (``image.affine`` after the 3D chain).

    Returns:
        ``(N, 6)`` float64 corners in voxel edges along the volume's axes (voxel ``i`` spans ``[i, i + 1)``).
    """
    affine = torch.as_tensor(np.asarray(_numpy(network_affine), dtype=np.float64))
    return _map_box_corners(np.asarray(boxes, dtype=np.float64), affine, invert=True) + 0.5


def boxes_to_patient_mm(boxes: np.ndarray | torch.Tensor, network_affine: np.ndarray | torch.Tensor) -> np.ndarray:
    """Map ``(N, 6)`` boxes from a network volume's voxel edges back to patient LPS mm (the 3D box contract).

    Args:
        boxes: Boxes on the network input, as a 3D detector predicts them (voxel edges, the volume's axis order).
        network_affine: The network volume's affine (``image.affine`` after :func:`box_eval_transforms`); the
            world coordinates never change along the chain, so it is all the inverse needs.

    Returns:
        ``(N, 6)`` float64 ``x_min, y_min, z_min, x_max, y_max, z_max`` in patient LPS mm.
    """
    affine = torch.as_tensor(np.asarray(_numpy(network_affine), dtype=np.float64))
    return _map_box_corners(np.asarray(_numpy(boxes), dtype=np.float64) - 0.5, affine, invert=False)


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
    """The evaluation chain plus augmentation that moves image and boxes together.

    Raises:
        ValueError: An augmentation with 3D preprocessing (moving boxes with 3D augmentation is not built).
    """
    if augmentation is not None and preprocessing.spatial_dims == 3:
        raise ValueError("box_train_transforms: 3D augmentation does not move boxes yet; pass augmentation=None")
    steps = box_load_and_normalise(preprocessing, image_key, box_key, label_key)
    if augmentation is not None:
        steps.append(AlbumentationsBoxd(image_key, box_key, label_key, augmentation.build_with_boxes()))
    if preprocessing.in_channels == 3:
        from monai.transforms import RepeatChanneld

        steps.append(RepeatChanneld([image_key], repeats=3))
    steps.append(EnsureTyped([image_key, box_key], dtype=torch.float32, track_meta=False))
    return Compose(steps)


class AlbumentationsBoxd(Albumentationsd):
    """Apply an albumentations pipeline (built with ``bbox_params``) to a 2D image and its boxes.

    Seeding is :class:`~medres.data.transforms.Albumentationsd`'s. Boxes are (row, column) pixel edges on the way
    in and out; albumentations' ``pascal_voc`` boxes are (x = column, y = row) pixel edges, so the corners are
    swapped around the call. Boxes that leave the image (or shrink below the pipeline's ``min_visibility``) are
    dropped with their labels.
    """

    def __init__(self, image_key: str, box_key: str, label_key: str, transform: A.Compose) -> None:
        super().__init__([image_key], transform)
        self.image_key, self.box_key, self.label_key = image_key, box_key, label_key

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
