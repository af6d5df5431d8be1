"""Named MONAI dictionary-transform presets: DICOM path → normalised tensor, with 2D augmentation for training.

The preprocessing a model needs is one frozen :class:`Preprocessing` value. It is an argument of the
data module, travels inside the registered model package, and scoring rebuilds exactly the same
evaluation pipeline from it, so nothing re-declares it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import albumentations as A
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirst,
    EnsureTyped,
    MapTransform,
    Randomizable,
    RepeatChanneld,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRangePercentilesd,
)
from monai.utils import ImageMetaKey

from medres.data.dicom import DicomReader

IMAGE_KEY = "image"
# What names a sample in results: its path (relative to the archive root) and UIDs, never patient data.
IDENTITY_COLUMNS = ("path", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")


@dataclass(frozen=True)
class Preprocessing:
    """How a DICOM image becomes network input. Saved with the model; scoring applies it verbatim.

    Pixels are read by :class:`~medres.data.dicom.DicomReader` (modality LUT applied, MONOCHROME1
    inverted), resized so the longer side is ``max(spatial_size)`` keeping the aspect ratio,
    scaled so the given percentiles map to 0 and 1 (clipped), then zero-padded or cropped to
    ``spatial_size``.

    Args:
        spatial_dims: 2 for radiographs (one instance a sample).
        spatial_size: Network input size (rows, columns).
        in_channels: 1 for grey-scale networks; 3 repeats the channel for RGB-pretrained ones.
        lower_percentile: Intensity percentile mapped to 0.
        upper_percentile: Intensity percentile mapped to 1.
    """

    spatial_dims: int = 2
    spatial_size: tuple[int, int] = (224, 224)
    in_channels: int = 1
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5

    def __post_init__(self) -> None:
        if self.spatial_dims != 2:
            raise ValueError(f"preprocessing.spatial_dims={self.spatial_dims}: only 2D radiographs are supported yet")
        if len(self.spatial_size) != self.spatial_dims or min(self.spatial_size) < 8:
            raise ValueError(f"preprocessing.spatial_size={self.spatial_size}: need {self.spatial_dims} sizes ≥ 8")
        if self.in_channels not in (1, 3):
            raise ValueError(f"preprocessing.in_channels={self.in_channels}: must be 1 or 3")
        if not 0.0 <= self.lower_percentile < self.upper_percentile <= 100.0:
            raise ValueError(
                f"preprocessing percentiles ({self.lower_percentile}, {self.upper_percentile}): "
                "need 0 ≤ lower < upper ≤ 100"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        data = asdict(self)
        data["spatial_size"] = list(self.spatial_size)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing setting(s) {unknown}; this medres knows {sorted(known)}")
        values = dict(data)
        if "spatial_size" in values:
            values["spatial_size"] = tuple(int(s) for s in values["spatial_size"])
        return cls(**values)


@dataclass(frozen=True)
class Augmentation2D:
    """Training-time augmentation for radiographs, applied by albumentations after normalisation.

    No horizontal flip by default: laterality is anatomy in a chest film (the heart is on the left).

    Args:
        probability: Chance that the geometric transform is applied to an image.
        rotate_degrees: Maximum absolute rotation.
        scale: Maximum relative zoom in or out.
        translate: Maximum shift as a fraction of the image size.
        brightness: Maximum brightness change (fraction of the intensity range).
        contrast: Maximum contrast change (fraction).
        gamma: Maximum gamma change as a fraction around 1.
        horizontal_flip: Chance of a left-right flip.
    """

    probability: float = 0.8
    rotate_degrees: float = 7.0
    scale: float = 0.1
    translate: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 0.2
    horizontal_flip: float = 0.0

    def build(self) -> A.Compose:
        """The albumentations pipeline these settings describe."""
        return A.Compose(
            [
                A.Affine(
                    scale=(1.0 - self.scale, 1.0 + self.scale),
                    translate_percent=(-self.translate, self.translate),
                    rotate=(-self.rotate_degrees, self.rotate_degrees),
                    border_mode=0,
                    fill=0,
                    p=self.probability,
                ),
                A.RandomBrightnessContrast(
                    brightness_limit=self.brightness, contrast_limit=self.contrast, p=0.5 if self.brightness else 0.0
                ),
                A.RandomGamma(
                    gamma_limit=(100 * (1.0 - self.gamma), 100 * (1.0 + self.gamma)), p=0.5 if self.gamma else 0.0
                ),
                A.HorizontalFlip(p=self.horizontal_flip),
            ]
        )


class Albumentationsd(Randomizable, MapTransform):
    """Apply an albumentations pipeline to channel-first 2D arrays inside a MONAI dict pipeline.

    MONAI's own ``RandAffined`` would do the geometry, but albumentations is the stack's 2D
    augmentation library (faster on CPU, richer photometric set). Seeding goes through MONAI's
    ``Randomizable`` so ``monai.data.DataLoader`` gives every worker its own reproducible stream.
    """

    def __init__(self, keys: KeysCollection, transform: A.Compose) -> None:
        MapTransform.__init__(self, keys)
        self.transform = transform

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Albumentationsd:
        """Seed this transform and the albumentations pipeline from MONAI's random state."""
        super().set_random_state(seed, state)
        self.transform.set_random_seed(int(self.R.randint(2**31 - 1)))
        return self

    def randomize(self, data: Any = None) -> None:
        """Albumentations draws its own parameters; nothing to pre-draw."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Augment each key: (C, H, W) → HWC for albumentations → (C, H, W) float32."""
        out = dict(data)
        for key in self.key_iterator(out):
            image = out[key]
            array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
            augmented = self.transform(image=np.ascontiguousarray(np.moveaxis(array, 0, -1)))["image"]
            if augmented.ndim == 2:  # cv2 drops a trailing singleton channel
                augmented = augmented[..., None]
            out[key] = np.ascontiguousarray(np.moveaxis(augmented, -1, 0), dtype=np.float32)
        return out


class LoadDicomd(MapTransform):
    """Load DICOM paths through :class:`~medres.data.dicom.DicomReader` into (1, rows, cols) MetaTensors.

    This is ``LoadImaged(reader=DicomReader(), ensure_channel_first=True, image_only=True)`` minus two
    behaviours medres cannot use: ``LoadImage`` instantiates every default MONAI reader when built
    (probing optional libraries and warning about nvImageCodec each time), and it turns an exception
    of a reader given up front into a ``RuntimeError`` carrying only text, while the error ledger
    needs the ``DicomReadError`` and its kind.
    """

    def __init__(self, keys: KeysCollection) -> None:
        super().__init__(keys)
        self.reader = DicomReader()
        self.channel_first = EnsureChannelFirst()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each key's path by its image; typed read errors propagate."""
        out = dict(data)
        for key in self.key_iterator(out):
            path = str(out[key])
            array, meta = self.reader.get_data(self.reader.read(path))
            meta[ImageMetaKey.FILENAME_OR_OBJ] = path
            image = MetaTensor.ensure_torch_and_prune_meta(array.astype(np.float32, copy=False), meta)
            out[key] = self.channel_first(image, meta_dict=meta)
        return out


def eval_transforms(
    preprocessing: Preprocessing, keys: Sequence[str] = (IMAGE_KEY,), track_meta: bool = False
) -> Compose:
    """DICOM path(s) under ``keys`` → float32 tensors (in_channels, *spatial_size); no randomness.

    Args:
        preprocessing: The model's preprocessing.
        keys: Dict keys holding paths.
        track_meta: Keep MONAI metadata (the reader's UIDs, spacing) on the outputs, for scoring.
    """
    return Compose(_load_and_normalise(preprocessing, keys) + _to_network_input(preprocessing, keys, track_meta))


def train_transforms(
    preprocessing: Preprocessing, augmentation: Augmentation2D | None, keys: Sequence[str] = (IMAGE_KEY,)
) -> Compose:
    """The evaluation pipeline with albumentations augmentation between normalisation and channel repeat."""
    augment = [Albumentationsd(keys, augmentation.build())] if augmentation is not None else []
    return Compose(
        _load_and_normalise(preprocessing, keys) + augment + _to_network_input(preprocessing, keys, track_meta=False)
    )


def _load_and_normalise(preprocessing: Preprocessing, keys: Sequence[str]) -> list[Any]:
    keys = list(keys)
    return [
        LoadDicomd(keys),  # (1, rows, cols) float32 in modality units, MONOCHROME2
        # Longer side → max(spatial_size); area interpolation is the right anti-aliasing for big downscales.
        Resized(keys, spatial_size=max(preprocessing.spatial_size), size_mode="longest", mode="area"),
        ScaleIntensityRangePercentilesd(
            keys,
            lower=preprocessing.lower_percentile,
            upper=preprocessing.upper_percentile,
            b_min=0.0,
            b_max=1.0,
            clip=True,
        ),
        ResizeWithPadOrCropd(keys, spatial_size=preprocessing.spatial_size),  # (1, *spatial_size), zero pad
    ]


def _to_network_input(preprocessing: Preprocessing, keys: Sequence[str], track_meta: bool) -> list[Any]:
    keys = list(keys)
    repeat = [RepeatChanneld(keys, repeats=3)] if preprocessing.in_channels == 3 else []
    # Training batches carry plain tensors, never DICOM metadata.
    return [*repeat, EnsureTyped(keys, dtype=torch.float32, track_meta=track_meta)]
