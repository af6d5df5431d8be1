"""Named MONAI dictionary-transform presets: DICOM image or series → normalised tensor, augmented for training.

The preprocessing a model needs is one frozen :class:`Preprocessing` value. It is an argument of the
data module, travels inside the registered model package, and scoring rebuilds exactly the same
evaluation pipeline from it, so nothing re-declares it.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

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
    Orientationd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    Randomizable,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RepeatChanneld,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    Transform,
)
from monai.utils import ImageMetaKey

from medres.dicom import DicomReader, ReadOptions
from medres.dicom.series import SeriesReader

IMAGE_KEY = "image"
# What names a sample in results: its path (relative to the archive root) and UIDs, never patient data.
IDENTITY_COLUMNS = ("path", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")


@dataclass(frozen=True)
class Preprocessing:
    """How a DICOM image or series becomes network input. Saved with the model; scoring applies it verbatim.

    2D (``spatial_dims=2``, one instance a sample): pixels are read by
    :class:`~medres.dicom.DicomReader` (modality LUT applied, MONOCHROME1 inverted), resized so
    the longer side is ``max(spatial_size)`` keeping the aspect ratio, scaled to [0, 1] (clipped) by
    ``intensity_window`` or else by the given percentiles, then zero-padded or cropped to ``spatial_size``.

    3D (``spatial_dims=3``, one series a sample, its image the list of its files in any order): the
    series is assembled by :class:`~medres.dicom.series.SeriesReader` (slices ordered along the slice
    normal, localizers dropped, values in modality units: HU for CT), reoriented to RAS, resampled to
    ``target_spacing``, scaled to [0, 1] by ``intensity_window`` (or the percentiles), then
    zero-padded or cropped (centred) to ``spatial_size``. Zero is the bottom of the window, so padding
    reads as air.

    Args:
        spatial_dims: 2 for radiographs (one instance a sample), 3 for CT/MR series (one series a sample).
        spatial_size: Network input size: (rows, columns) in 2D; in 3D (x, y, z) voxels in RAS order, as
            MONAI's ``Orientation("RAS")`` lays them out: the axes run towards the patient's right, anterior
            and superior.
        in_channels: 1 for grey-scale networks; 3 repeats the channel for RGB-pretrained ones.
        lower_percentile: Intensity percentile mapped to 0 (when ``intensity_window`` is not set).
        upper_percentile: Intensity percentile mapped to 1 (when ``intensity_window`` is not set).
        intensity_window: (low, high) in modality units (HU for CT) mapped to 0 and 1, clipped outside;
            ``None`` uses the percentiles of each image.
        target_spacing: 3D only: voxel size (x, y, z) in mm to resample to; ``None`` keeps each series' own.
        voi: 2D only: the reader's VOI step (:class:`~medres.dicom.ReadOptions`): ``none`` (modality units),
            ``lut`` (the file's VOI LUT, else its first window) or ``window`` (``voi_window``, else the file's).
            3D series stay in modality units (HU) and use ``intensity_window``.
        voi_window: (centre, width) in modality units for ``voi="window"``.
        decode: 2D only: ``full`` decodes every stored pixel; ``reduced`` decodes a JPEG 2000 or baseline JPEG
            instance at the coarsest wavelet level / DCT scale whose size still covers the resize's output per
            axis (:mod:`medres.dicom.reduced_decode`; 11× the files/s scoring 2048² JPEG 2000 at 320 px on 2 CPU
            cores, ``benchmarks/decode_reduced.py``), then resizes as usual. Part of the package, so cache fill,
            training and scoring decode alike; packages written before this setting existed mean ``full``.
    """

    spatial_dims: int = 2
    spatial_size: tuple[int, ...] = (224, 224)
    in_channels: int = 1
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    intensity_window: tuple[float, float] | None = None
    target_spacing: tuple[float, float, float] | None = None
    voi: Literal["none", "lut", "window"] = "none"
    voi_window: tuple[float, float] | None = None
    decode: Literal["full", "reduced"] = "full"

    def __post_init__(self) -> None:
        if self.decode not in ("full", "reduced"):
            raise ValueError(f"preprocessing.decode={self.decode!r}: must be 'full' or 'reduced'")
        if self.decode == "reduced" and self.spatial_dims != 2:
            raise ValueError("preprocessing.decode='reduced': only for spatial_dims=2 (series decode in full)")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"preprocessing.spatial_dims={self.spatial_dims}: must be 2 (images) or 3 (series)")
        if len(self.spatial_size) != self.spatial_dims or min(self.spatial_size) < 8:
            raise ValueError(f"preprocessing.spatial_size={self.spatial_size}: need {self.spatial_dims} sizes ≥ 8")
        if self.in_channels not in (1, 3):
            raise ValueError(f"preprocessing.in_channels={self.in_channels}: must be 1 or 3")
        if not 0.0 <= self.lower_percentile < self.upper_percentile <= 100.0:
            raise ValueError(
                f"preprocessing percentiles ({self.lower_percentile}, {self.upper_percentile}): "
                "need 0 ≤ lower < upper ≤ 100"
            )
        if self.intensity_window is not None and (
            len(self.intensity_window) != 2 or not self.intensity_window[0] < self.intensity_window[1]
        ):
            raise ValueError(
                f"preprocessing.intensity_window={self.intensity_window}: need (low, high) with low < high"
            )
        if self.target_spacing is not None:
            if self.spatial_dims != 3:
                raise ValueError("preprocessing.target_spacing: only for spatial_dims=3 (2D images keep their grid)")
            if len(self.target_spacing) != 3 or min(self.target_spacing) <= 0:
                raise ValueError(f"preprocessing.target_spacing={self.target_spacing}: need three sizes > 0 (mm)")
        if self.spatial_dims == 3 and self.voi != "none":
            raise ValueError(f"preprocessing.voi={self.voi!r}: series stay in modality units; use intensity_window")
        try:
            self.read_options()
        except ValueError as err:
            raise ValueError(f"preprocessing voi/voi_window: {err}") from err

    def read_options(self) -> ReadOptions:
        """The DICOM reader's options these settings describe.

        Colour images (ultrasound, secondary captures) are read as luminance: the pipeline's networks see one
        grey channel, repeated for ``in_channels=3``, so an RGB file must not arrive with three channels of its own.
        """
        reduced = max(self.spatial_size) if self.decode == "reduced" else None  # the resize's longer side
        return ReadOptions(voi=self.voi, window=self.voi_window, colour="luminance", reduced_longest_side=reduced)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error naming them.

        Keys added after a package was written take their defaults, so older packages still load.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing setting(s) {unknown}; this medres knows {sorted(known)}")
        values = dict(data)
        if "spatial_size" in values:
            values["spatial_size"] = tuple(int(s) for s in values["spatial_size"])
        for key in ("intensity_window", "target_spacing", "voi_window"):
            if values.get(key) is not None:
                values[key] = tuple(float(v) for v in values[key])
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
        return A.Compose(self._steps())

    def build_with_boxes(self, min_visibility: float = 0.3) -> A.Compose:
        """The same pipeline moving ``pascal_voc`` boxes (labels under ``labels``) with the image.

        Args:
            min_visibility: A box keeping less of its area inside the image than this is dropped.
        """
        params = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=min_visibility)
        return A.Compose(self._steps(), bbox_params=params)

    def _steps(self) -> list[A.BasicTransform]:
        return [
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


@dataclass(frozen=True)
class Augmentation3D:
    """Training-time augmentation for volumes, MONAI 3D transforms applied after normalisation (values in [0, 1]).

    Defaults suit chest CT at a few mm per voxel: a left-right flip (a nodule or an effusion is the
    same finding on either side), small rotations, zooms and shifts (patient positioning), and
    small intensity changes (kernel and scanner differences).

    Args:
        flip_axes: RAS axes to flip at random (0 left-right, 1 antero-posterior, 2 cranio-caudal).
        flip_probability: Chance of a flip, per axis.
        affine_probability: Chance that the rotation/zoom/shift is applied to a volume.
        rotate_degrees: Maximum absolute rotation about each axis.
        scale: Maximum relative zoom in or out.
        translate: Maximum shift as a fraction of ``spatial_size``, per axis.
        intensity_probability: Chance of each intensity change.
        intensity_scale: Maximum relative intensity scaling.
        intensity_shift: Maximum intensity offset (the window maps to [0, 1]).
        noise_std: Standard deviation of added Gaussian noise (0: none).
    """

    flip_axes: tuple[int, ...] = (0,)
    flip_probability: float = 0.5
    affine_probability: float = 0.5
    rotate_degrees: float = 10.0
    scale: float = 0.1
    translate: float = 0.05
    intensity_probability: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        if any(axis not in (0, 1, 2) for axis in self.flip_axes):
            raise ValueError(f"augmentation.flip_axes={self.flip_axes}: axes are 0, 1 and 2")
        for name in ("flip_probability", "affine_probability", "intensity_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augmentation.{name}={getattr(self, name)}: must be in [0, 1]")

    def build(self, keys: Sequence[str], spatial_size: Sequence[int]) -> list[Any]:
        """The MONAI dictionary transforms these settings describe, for volumes of ``spatial_size``."""
        keys = list(keys)
        angle = float(np.deg2rad(self.rotate_degrees))
        transforms: list[Any] = [RandFlipd(keys, prob=self.flip_probability, spatial_axis=a) for a in self.flip_axes]
        transforms.append(
            RandAffined(
                keys,
                prob=self.affine_probability,
                rotate_range=(angle, angle, angle),
                scale_range=(self.scale,) * 3,
                translate_range=tuple(self.translate * s for s in spatial_size),
                spatial_size=tuple(spatial_size),
                cache_grid=True,  # same output size every time: build the sampling grid once
                mode="bilinear",
                padding_mode="zeros",  # the bottom of the window: air
            )
        )
        if self.intensity_scale > 0:
            transforms.append(RandScaleIntensityd(keys, factors=self.intensity_scale, prob=self.intensity_probability))
        if self.intensity_shift > 0:
            transforms.append(RandShiftIntensityd(keys, offsets=self.intensity_shift, prob=self.intensity_probability))
        if self.noise_std > 0:
            transforms.append(RandGaussianNoised(keys, prob=self.intensity_probability, std=self.noise_std))
        return transforms


class LoadDicom(Transform):
    """Load one DICOM file through :class:`~medres.dicom.DicomReader` into a MetaTensor; typed errors propagate.

    Use it where ``LoadImage(reader=DicomReader())`` would go. ``LoadImage`` does not keep a reader's errors: when
    the reader given up front fails, it tries every other reader MONAI has installed (ITK, NIfTI, PIL, ...) and
    raises *their* error, a ``RuntimeError`` or ``ValueError`` carrying only text; for 22 of 146 real test files
    (21 of them shipped with pydicom) the ``DicomReadError`` and its kind were lost that way (issue 21). It also
    instantiates every default MONAI reader when built (probing optional libraries, and warning about
    nvImageCodec each time). This transform calls the reader alone, so a file it cannot read raises
    :class:`~medres.dicom.DicomReadError` with the error ledger's ``kind`` (``truncated``,
    ``unsupported_codec``, ...).

    Args:
        options: How the reader maps stored values (VOI, colour); default :class:`ReadOptions`'s.
        ensure_channel_first: Put the channel axis first: grey images become ``(1, rows, columns)`` (multi-frame
            ``(1, frames, rows, columns)``), colour ones ``(3, rows, columns)``; as ``LoadImage``'s option.
        image_only: Return the image only; ``False`` returns ``(image, meta)`` as ``LoadImage`` does.
    """

    def __init__(
        self, options: ReadOptions | None = None, ensure_channel_first: bool = True, image_only: bool = True
    ) -> None:
        self.reader = DicomReader(options=options or ReadOptions())
        self.ensure_channel_first = ensure_channel_first
        self.image_only = image_only
        self.channel_first = EnsureChannelFirst()

    def __call__(self, filename: str | os.PathLike[str]) -> MetaTensor | tuple[MetaTensor, dict[str, Any]]:
        """Read ``filename``; raises :class:`~medres.dicom.DicomReadError` for a file it cannot use."""
        path = str(filename)
        array, meta = self.reader.get_data(self.reader.read(path))
        meta[ImageMetaKey.FILENAME_OR_OBJ] = path
        image = MetaTensor.ensure_torch_and_prune_meta(array.astype(np.float32, copy=False), meta)
        if self.ensure_channel_first:
            image = self.channel_first(image, meta_dict=meta)
        return image if self.image_only else (image, dict(image.meta))


class LoadDicomd(MapTransform):
    """The dictionary form of :class:`LoadDicom`: each key's DICOM path becomes its (channel-first) MetaTensor.

    ``LoadImaged(reader=DicomReader(), ensure_channel_first=True, image_only=True)`` with the reader's typed
    errors kept (see :class:`LoadDicom`): the error ledger needs the ``DicomReadError`` and its kind.

    Args:
        keys: Keys holding one file's path each.
        options: Passed to :class:`LoadDicom`.
    """

    def __init__(self, keys: KeysCollection, options: ReadOptions | None = None) -> None:
        super().__init__(keys)
        self.loader = LoadDicom(options, ensure_channel_first=True, image_only=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each key's path by its image; typed read errors propagate."""
        out = dict(data)
        for key in self.key_iterator(out):
            out[key] = self.loader(out[key])
        return out


class LoadSeriesd(MapTransform):
    """Load a series (its file paths, in any order) through :class:`~medres.dicom.series.SeriesReader`.

    Gives a (1, slices, rows, cols) MetaTensor in modality units whose affine maps indices to RAS mm,
    so MONAI's ``Orientationd``/``Spacingd`` work in patient space. A single path is a one-file series
    (an enhanced multi-frame CT or MR). Like :class:`LoadDicomd`, it calls the reader directly so a
    ``DicomReadError`` (``inconsistent_series``, ``missing_geometry``, …) reaches the caller with its kind.
    """

    def __init__(self, keys: KeysCollection) -> None:
        super().__init__(keys)
        self.reader = SeriesReader()
        self.channel_first = EnsureChannelFirst()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each key's paths by the series volume; typed read errors propagate."""
        out = dict(data)
        for key in self.key_iterator(out):
            value = out[key]
            paths = [str(value)] if isinstance(value, str | os.PathLike) else [str(p) for p in value]
            array, meta = self.reader.get_data(self.reader.read(paths))
            image = MetaTensor.ensure_torch_and_prune_meta(array.astype(np.float32, copy=False), meta)
            out[key] = self.channel_first(image, meta_dict=meta)
        return out


def eval_transforms(
    preprocessing: Preprocessing, keys: Sequence[str] = (IMAGE_KEY,), track_meta: bool = False
) -> Compose:
    """DICOM path(s) under ``keys`` → float32 tensors (in_channels, *spatial_size); no randomness.

    In 2D each key holds one file's path; in 3D the paths of one series (a list, any order) or one
    multi-frame file's path.

    Args:
        preprocessing: The model's preprocessing.
        keys: Dict keys holding paths.
        track_meta: Keep MONAI metadata (the reader's UIDs, spacing) on the outputs, for scoring.
    """
    return Compose(load_and_normalise(preprocessing, keys) + _to_network_input(preprocessing, keys, track_meta))


def train_transforms(
    preprocessing: Preprocessing,
    augmentation: Augmentation2D | Augmentation3D | None,
    keys: Sequence[str] = (IMAGE_KEY,),
) -> Compose:
    """The evaluation pipeline with augmentation between normalisation and the network-input step.

    Raises:
        ValueError: If the augmentation does not match ``preprocessing.spatial_dims``.
    """
    return Compose(
        load_and_normalise(preprocessing, keys)
        + augment_transforms(preprocessing, augmentation, keys)
        + _to_network_input(preprocessing, keys, track_meta=False)
    )


def load_and_normalise(preprocessing: Preprocessing, keys: Sequence[str] = (IMAGE_KEY,)) -> list[Any]:
    """The deterministic head of both pipelines: read, resample, normalise, pad/crop (cacheable)."""
    keys = list(keys)
    if preprocessing.spatial_dims == 3:
        return _load_and_normalise_3d(preprocessing, keys)
    return [
        LoadDicomd(keys, preprocessing.read_options()),  # (1, rows, cols) float32, MONOCHROME2, modality units or VOI
        # Longer side → max(spatial_size); area interpolation is the right anti-aliasing for big downscales.
        Resized(keys, spatial_size=max(preprocessing.spatial_size), size_mode="longest", mode="area"),
        _intensity(preprocessing, keys),
        ResizeWithPadOrCropd(keys, spatial_size=preprocessing.spatial_size),  # (1, *spatial_size), zero pad
    ]


def augment_transforms(
    preprocessing: Preprocessing, augmentation: Augmentation2D | Augmentation3D | None, keys: Sequence[str]
) -> list[Any]:
    """The random part of the training pipeline (empty for no augmentation)."""
    if augmentation is None:
        return []
    expected = Augmentation3D if preprocessing.spatial_dims == 3 else Augmentation2D
    if not isinstance(augmentation, expected):
        raise ValueError(
            f"data.augmentation is {type(augmentation).__name__} but preprocessing.spatial_dims="
            f"{preprocessing.spatial_dims} needs {expected.__name__}"
            + (
                " (a config picks it by its keys: give a 3D-only one such as flip_axes)"
                if expected is Augmentation3D
                else ""
            )
        )
    if isinstance(augmentation, Augmentation3D):
        return augmentation.build(keys, preprocessing.spatial_size)
    return [Albumentationsd(keys, augmentation.build())]


def _load_and_normalise_3d(preprocessing: Preprocessing, keys: list[str]) -> list[Any]:
    steps: list[Any] = [
        LoadSeriesd(keys),  # (1, slices, rows, cols) in modality units (HU), affine → RAS mm
        # (1, x, y, z): the same anatomy on the same axis for every series. The labels are MONAI's RAS ones, given
        # so that MONAI's announced change of their default cannot silently change the axes.
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if preprocessing.target_spacing is not None:
        # Border padding: a voxel just outside the field of view takes the edge value, not 0 HU (water).
        steps.append(Spacingd(keys, pixdim=preprocessing.target_spacing, mode="bilinear", padding_mode="border"))
    steps += [
        _intensity(preprocessing, keys),
        ResizeWithPadOrCropd(keys, spatial_size=preprocessing.spatial_size),  # centred; pads with 0 = air
    ]
    return steps


def _intensity(preprocessing: Preprocessing, keys: list[str]) -> Any:
    if preprocessing.intensity_window is not None:
        low, high = preprocessing.intensity_window
        return ScaleIntensityRanged(keys, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
    return ScaleIntensityRangePercentilesd(
        keys,
        lower=preprocessing.lower_percentile,
        upper=preprocessing.upper_percentile,
        b_min=0.0,
        b_max=1.0,
        clip=True,
    )


def _to_network_input(preprocessing: Preprocessing, keys: Sequence[str], track_meta: bool) -> list[Any]:
    keys = list(keys)
    repeat = [RepeatChanneld(keys, repeats=3)] if preprocessing.in_channels == 3 else []
    # Training batches carry plain tensors, never DICOM metadata.
    return [*repeat, EnsureTyped(keys, dtype=torch.float32, track_meta=track_meta)]
