"""Pretrained weights from local checkpoint files: torchvision (2D), MedicalNet (3D) and medres's own.

``ResNet`` names its parameters as torchvision does, so the only work here is what differs between layouts:

- torchvision (``torchvision.models.resnet*``): a plain 2D state dict, sometimes wrapped in ``"state_dict"`` or
  ``"model"``, with a 1000-class ``fc`` and an RGB ``conv1``.
- MedicalNet (Chen et al. 2019, "Med3D: Transfer Learning for 3D Medical Image Analysis", arXiv:1904.00625;
  Tencent/MedicalNet): ``{"state_dict": ...}`` saved from ``DataParallel`` (every key prefixed ``module.``), 3D,
  one input channel, a segmentation head ``conv_seg`` that a classifier has no use for, no ``fc``, and layer3/layer4
  dilated instead of strided. The model must be built the way the weights were trained (``dilated=True``, stem
  stride 2, and shortcut A for resnet18/34, B otherwise): the weights are only meaningful in the network they were
  trained in, so a mismatch is an error, never a silent partial load.
- medres: a model package folder (``package.json`` + ``weights.safetensors``) or a medres Lightning checkpoint.

Two adaptations are allowed and reported: a classification head that does not fit is skipped (the model keeps its
own, freshly initialised), and the first convolution is adapted between 3 and 1 (or N) input channels. Everything
else must match key for key and shape for shape. Files are only ever read locally, with
``torch.load(weights_only=True)`` or safetensors: a checkpoint is data, and loading it must never run code.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from safetensors.torch import load_file
from torch import nn

from medres.models.package_layout import BACKBONE_PREFIX, CHECKPOINT_KEY, CONTRACT_FILE, WEIGHTS_FILE

__all__ = ["LoadReport", "WeightsError", "load_pretrained", "read_state_dict"]

logger = logging.getLogger(__name__)

Layout = Literal["auto", "torchvision", "medicalnet", "medres"]
Head = Literal["auto", "load", "skip"]

# Keys under which checkpoints nest the state dict: Lightning and MedicalNet ("state_dict"), timm/DeiT-style training
# scripts ("model"), and a few that saved a wrapper's attributes ("module").
_WRAPPERS = ("state_dict", "model", "module")
_DATA_PARALLEL_PREFIX = "module."
_SEG_HEAD_PREFIX = "conv_seg."
_HEAD_PREFIX = "fc."
_SHORTCUT_KEY = ".downsample."
_BLOCK = re.compile(r"^(layer\d+\.\d+)\.")  # "layer3.0." -> the block "layer3.0"
# A scheme of two or more letters followed by ":/" ("https://", "s3://", "file:///", and "https:/" once ``Path`` has
# collapsed the double slash); a one-letter scheme is a Windows drive ("C:/...").
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
_LISTED = 10  # keys named per category in an error message; the counts say how many more


class WeightsError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model (one line, naming the file)."""


@dataclass(frozen=True)
class LoadReport:
    """What ``load_pretrained`` did.

    Args:
        source: The file or folder read.
        layout: The layout it was read as (``"torchvision"``, ``"medicalnet"`` or ``"medres"``).
        loaded: Model keys whose values now come from the checkpoint.
        skipped: Checkpoint keys dropped on purpose: a segmentation head, or a classification head that was not
            loaded.
        adapted: Checkpoint tensors changed to fit, each with how (e.g. the first convolution summed from 3 input
            channels to 1).
        kept: Model keys left as the model had them: its own head when the checkpoint's was skipped or absent, and
            batch-norm ``num_batches_tracked`` counters that old checkpoints do not store.
    """

    source: str
    layout: str
    loaded: list[str]
    skipped: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


class _Checkpoint(NamedTuple):
    """A state dict and whether it came from a medres package or Lightning checkpoint (for layout detection)."""

    state: dict[str, torch.Tensor]
    medres: bool


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a local checkpoint.

    Accepts ``.safetensors`` files, ``torch.save`` files (read with ``weights_only=True``, so a file that would
    need to unpickle code is refused), state dicts wrapped in ``"state_dict"``, ``"model"`` or ``"module"``, a medres
    model package folder, and a medres Lightning checkpoint (the backbone's tensors, ``backbone.`` prefix removed).
    Non-tensor entries (epoch counters, hyper-parameters) are ignored.

    Args:
        path: Local file or model package folder; URLs are refused.

    Returns:
        Tensor name to tensor, on the CPU, keys as stored (no ``module.`` stripping: see ``load_pretrained``).

    Raises:
        WeightsError: A URL, a missing file, a file that is not a safe checkpoint, or one without tensors.
    """
    return _read(path).state


def load_pretrained(
    model: nn.Module,
    path: str | Path,
    layout: Layout = "auto",
    head: Head = "auto",
) -> LoadReport:
    """Load a local pretrained checkpoint into a medres ResNet, strictly.

    Args:
        model: The network, built the way the weights were trained (``spatial_dims``; for MedicalNet also
            ``dilated=True``, ``stem_stride=2`` and its shortcut type). Its tensors are replaced in place.
        path: Checkpoint file or medres model package folder (local only).
        layout: ``"auto"`` reads ``conv_seg.`` keys, or ``module.`` keys with a 3D ``conv1``, as MedicalNet, a medres
            package or Lightning checkpoint as medres, and anything else as torchvision.
        head: The checkpoint's ``fc``: ``"auto"`` loads it when its shapes fit the model's head and keeps the model's
            own otherwise (a 1000-class ImageNet head into a 4-finding detector); ``"load"`` makes a misfit an error;
            ``"skip"`` always keeps the model's own.

    Returns:
        What was loaded, skipped, adapted and kept.

    Raises:
        WeightsError: The file cannot be read, the model is not built as the layout requires, or keys or shapes
            differ (the message lists them).
        ValueError: ``layout`` or ``head`` is not one of the values above.
    """
    if layout not in ("auto", "torchvision", "medicalnet", "medres"):
        raise ValueError(f"layout must be 'auto', 'torchvision', 'medicalnet' or 'medres', got {layout!r}")
    if head not in ("auto", "load", "skip"):
        raise ValueError(f"head must be 'auto', 'load' or 'skip', got {head!r}")
    source = str(path)
    checkpoint = _read(path)

    data_parallel = any(k.startswith(_DATA_PARALLEL_PREFIX) for k in checkpoint.state)
    state = {k.removeprefix(_DATA_PARALLEL_PREFIX): v for k, v in checkpoint.state.items()}
    if layout == "auto":
        segmentation = any(k.startswith(_SEG_HEAD_PREFIX) for k in state)
        # A DataParallel prefix alone also marks 2D ImageNet runs saved from multi-GPU training; MedicalNet is 3D.
        planar = "conv1.weight" in state and state["conv1.weight"].ndim == 4
        if segmentation or (data_parallel and not planar):
            layout = "medicalnet"
        else:
            layout = "medres" if checkpoint.medres else "torchvision"
    skipped: list[str] = []
    if layout == "medicalnet":
        # The segmentation decoder MedicalNet was pretrained with: a classifier has no place for it.
        skipped = [k for k in state if k.startswith(_SEG_HEAD_PREFIX)]
        state = {k: v for k, v in state.items() if not k.startswith(_SEG_HEAD_PREFIX)}

    model_state = model.state_dict()
    _check_model(model, model_state, state, layout, source)
    kept: list[str] = []
    skipped_head, kept_head = _resolve_head(model, model_state, state, head, source)
    for key in skipped_head:
        del state[key]
    skipped += skipped_head
    kept += kept_head
    adapted = _adapt_first_conv(model_state, state, source)
    kept += _fill_batch_counters(model_state, state)
    _check_keys(model_state, state, set(kept), layout, source)

    loaded = [k for k in model_state if k not in kept]
    # Every model key is now either from the checkpoint or deliberately the model's own: strict=True must hold.
    full = {k: model_state[k] if k in kept else state[k] for k in model_state}
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError as err:  # not expected after the checks above; keep the one-line, file-naming contract
        raise WeightsError(f"{source}: {' '.join(str(err).split())}") from err
    report = LoadReport(source=source, layout=layout, loaded=loaded, skipped=skipped, adapted=adapted, kept=kept)
    logger.info(
        "Loaded %d tensors from %s (%s layout); skipped %d, adapted %s, kept %s",
        len(loaded),
        source,
        layout,
        len(skipped),
        adapted or "none",
        kept_head or "none",
    )
    return report


# ---- reading --------------------------------------------------------------------------------------------------------


def _read(path: str | Path) -> _Checkpoint:
    """``read_state_dict``, also saying whether the file was medres's own."""
    # Imported here: medres.package imports medres.models, which may import this module.

    if _URL.match(str(path)):
        raise WeightsError(f"{path}: medres loads weights from local files only; download the file and pass its path")
    path = Path(path)
    if path.is_dir():
        if not (path / CONTRACT_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise WeightsError(f"{path}: a folder, but not a medres model package ({CONTRACT_FILE} + {WEIGHTS_FILE})")
        return _Checkpoint(_tensors(_load_file(path / WEIGHTS_FILE), path), medres=True)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        return _Checkpoint(_tensors(_load_file(path), path), medres=False)

    try:
        raw: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types (UnpicklingError, RuntimeError, EOFError) for bad files
        raise WeightsError(
            f"{path}: not a checkpoint torch.load can read with weights_only=True ({_unpickler_reason(err)}); "
            "medres never unpickles code from weight files"
        ) from err
    lightning = isinstance(raw, Mapping) and CHECKPOINT_KEY in raw
    while isinstance(raw, Mapping):
        wrapper = next((k for k in _WRAPPERS if isinstance(raw.get(k), Mapping)), None)
        if wrapper is None:
            break
        raw = raw[wrapper]
    if not isinstance(raw, Mapping):
        raise WeightsError(f"{path}: holds a {type(raw).__name__}, not a state dict")
    if lightning or any(isinstance(k, str) and k.startswith(BACKBONE_PREFIX) for k in raw):
        # A medres LightningModule's state: the backbone is one submodule among loss buffers and metric states.
        raw = {k[len(BACKBONE_PREFIX) :]: v for k, v in raw.items() if str(k).startswith(BACKBONE_PREFIX)}
        return _Checkpoint(_tensors(raw, path), medres=True)
    return _Checkpoint(_tensors(raw, path), medres=False)


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, with its errors as ``WeightsError``."""
    try:
        return load_file(path, device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError, or OSError
        raise WeightsError(f"{path}: not a readable safetensors file ({' '.join(str(err).split())})") from err


def _tensors(raw: Mapping[Any, Any], path: Path) -> dict[str, torch.Tensor]:
    """The tensor entries of a mapping; refuses one with none (the wrong file, or an unknown wrapper)."""
    state = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not state:
        keys = ", ".join(map(str, list(raw)[:_LISTED]))
        raise WeightsError(f"{path}: no tensors found (top-level keys: {keys or 'none'})")
    return state


def _unpickler_reason(err: Exception) -> str:
    """The useful sentence of a ``torch.load`` error, on one line (its full text is a multi-paragraph how-to)."""
    text = " ".join(str(err).split())
    match = re.search(r"WeightsUnpickler error: (.+?)(?: Please use| Check the documentation|$)", text)
    return (match.group(1) if match else text[:200]).rstrip(". ") or type(err).__name__


# ---- fitting --------------------------------------------------------------------------------------------------------


def _first_conv(model_state: Mapping[str, torch.Tensor]) -> str | None:
    """The key of the first convolution weight in the model (``conv1.weight``): the first tensor of 3+ dims."""
    return next((k for k, v in model_state.items() if k.endswith(".weight") and v.ndim >= 3), None)


def _check_model(
    model: nn.Module,
    model_state: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    layout: str,
    source: str,
) -> None:
    """Refuse a model not built the way the layout's weights were trained, naming the setting to change."""
    spatial_dims = getattr(model, "spatial_dims", None)
    if layout == "medicalnet":
        if spatial_dims is not None and spatial_dims != 3:
            raise WeightsError(f"{source}: MedicalNet weights are 3D: build the backbone with spatial_dims=3")
        if not getattr(model, "dilated", False):
            raise WeightsError(
                f"{source}: MedicalNet weights were trained with dilated layer3/layer4: "
                "build the backbone with dilated=True"
            )
        if getattr(model, "stem_stride", 2) != 2:
            raise WeightsError(
                f"{source}: MedicalNet weights were trained with a stride-2 first convolution: "
                "build the backbone with stem_stride=2"
            )
    elif layout == "torchvision" and spatial_dims is not None and spatial_dims != 2:
        raise WeightsError(
            f"{source}: torchvision weights are 2D and the model is {spatial_dims}D: "
            "build the backbone with spatial_dims=2 (for 3D use MedicalNet weights)"
        )
    first = _first_conv(model_state)
    if first is not None and first in state and state[first].ndim != model_state[first].ndim:
        ckpt_dims, model_dims = state[first].ndim - 2, model_state[first].ndim - 2
        raise WeightsError(
            f"{source}: {first} is {state[first].ndim}-D ({ckpt_dims}D weights) but the model's is "
            f"{model_state[first].ndim}-D ({model_dims}D): build the backbone with spatial_dims={ckpt_dims}"
        )


def _resolve_head(
    model: nn.Module,
    model_state: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    head: Head,
    source: str,
) -> tuple[list[str], list[str]]:
    """Decide about the checkpoint's ``fc``.

    Returns:
        Checkpoint head keys to drop, and model head keys to keep as initialised.
    """
    ckpt_head = [k for k in state if k.startswith(_HEAD_PREFIX)]
    model_head = [k for k in model_state if k.startswith(_HEAD_PREFIX)]
    if isinstance(getattr(model, "fc", None), nn.Identity) or not model_head:
        return ckpt_head, []  # a feature extractor (num_classes=0) has no head to load into
    if head == "skip":
        return ckpt_head, model_head
    fits = set(ckpt_head) == set(model_head) and all(state[k].shape == model_state[k].shape for k in model_head)
    if fits:
        return [], []
    if head == "load":
        if not ckpt_head:
            return [], []  # the missing head keys are reported with the rest by _check_keys
        shapes = ", ".join(f"{k} {_shape(state[k])}" for k in ckpt_head)
        model_shapes = ", ".join(f"{k} {_shape(model_state[k])}" for k in model_head)
        raise WeightsError(
            f"{source}: the checkpoint's head ({shapes}) does not fit the model's ({model_shapes}); "
            "pass head='auto' or head='skip' to keep the model's own head"
        )
    return ckpt_head, model_head


def _adapt_first_conv(
    model_state: Mapping[str, torch.Tensor], state: dict[str, torch.Tensor], source: str
) -> list[str]:
    """Fit the checkpoint's first convolution to the model's input channels, in place in ``state``.

    The usual rules (timm's ``adapt_input_conv``): 3 → 1 sums over the input channels, so a grey image gives the same
    response as its RGB repetition; 1 → N and 3 → N repeat the filters and scale them by 1/N and 3/N, so the
    response to a repeated grey image is unchanged.

    Returns:
        A description of the adaptation, or nothing.
    """
    key = _first_conv(model_state)
    if key is None or key not in state:
        return []
    weight, target = state[key], model_state[key]
    if weight.shape == target.shape:
        return []
    same_elsewhere = weight.ndim == target.ndim and all(
        a == b for i, (a, b) in enumerate(zip(weight.shape, target.shape, strict=True)) if i != 1
    )
    if not same_elsewhere:
        return []  # not a channel difference: reported as a shape mismatch with the rest
    have, want = weight.shape[1], target.shape[1]
    if have == 3 and want == 1:
        state[key], how = weight.sum(dim=1, keepdim=True), "summed"
    elif have == 1:
        state[key], how = weight.repeat(1, want, *([1] * (weight.ndim - 2))) / want, f"repeated, scaled by 1/{want}"
    elif have == 3:
        repeats = math.ceil(want / 3)
        repeated = weight.repeat(1, repeats, *([1] * (weight.ndim - 2)))[:, :want]
        state[key], how = repeated * (3 / want), f"repeated, scaled by 3/{want}"
    else:
        raise WeightsError(
            f"{source}: {key} has {have} input channels and the model {want}: only 3 → 1, 1 → N and 3 → N adapt"
        )
    return [f"{key}: {have} → {want} input channels ({how})"]


def _fill_batch_counters(model_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """Model ``num_batches_tracked`` keys absent from the checkpoint though its norm's statistics are present.

    PyTorch before 0.4.1 did not store the counter (the original torchvision ResNet files, MedicalNet); it only
    matters for momentum=None norms and ``BatchNorm`` itself fills it in for such files, so it is not an error.
    """
    suffix = "num_batches_tracked"
    return [
        k
        for k in model_state
        if k.endswith(suffix) and k not in state and k.removesuffix(suffix) + "running_mean" in state
    ]


def _check_keys(
    model_state: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    kept: set[str],
    layout: str,
    source: str,
) -> None:
    """One error listing every missing, unexpected and mis-shaped key; hints the shortcut type if that is all."""
    missing = [k for k in model_state if k not in state and k not in kept]
    unexpected = [k for k in state if k not in model_state]
    mismatched = [k for k in state if k in model_state and state[k].shape != model_state[k].shape]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected {_listing(unexpected)}")
    if mismatched:
        shapes = [f"{k} {_shape(state[k])} vs model {_shape(model_state[k])}" for k in mismatched]
        parts.append(f"{len(mismatched)} shape mismatches {_listing(shapes)}")
    message = f"{source}: {layout} checkpoint does not fit the model: {'; '.join(parts)}"
    if not mismatched and all(_SHORTCUT_KEY in k for k in missing + unexpected):
        # Only projection shortcuts differ: the network was built with another shortcut option than the weights
        # were trained with (MedicalNet pretrained resnet18/34 with option A, the others with B).
        option = _shortcut_option(state)
        message += (
            f"; the checkpoint was trained with shortcut option {option}: build the backbone with shortcut='{option}'"
        )
    raise WeightsError(message)


def _shortcut_option(state: Mapping[str, torch.Tensor]) -> str:
    """The shortcut option a checkpoint was trained with: projections in no block (A), some (B) or every block (C)."""
    blocks = {m.group(1) for k in state if (m := _BLOCK.match(k))}
    projected = {m.group(1) for k in state if _SHORTCUT_KEY in k and (m := _BLOCK.match(k))}
    if not projected:
        return "A"
    return "C" if projected == blocks else "B"


def _listing(items: list[str]) -> str:
    """``[a, b, ...]`` with at most ``_LISTED`` items and the number left out."""
    shown = ", ".join(items[:_LISTED])
    more = f", ... {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return f"[{shown}{more}]"


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(map(str, tensor.shape)) or "scalar"
