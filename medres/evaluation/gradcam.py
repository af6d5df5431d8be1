"""Grad-CAM montages: where in each image the network looked for the finding it rates highest.

Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391) weights the channels of a late feature map by the mean gradient of
one class score and keeps the positive part. MONAI's ``monai.visualize.GradCAM`` computes it; this module picks the
layer of a medres ``ResNet``, runs it on a private copy of the model and draws the tiles.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from monai.visualize import GradCAM
from torch import nn

from medres.evaluation.thresholds import as_predictions
from medres.models.resnet import ResNet

__all__ = ["default_target_layer", "display_plane", "gradcam_maps", "gradcam_montage"]

DPI = 110


def default_target_layer(model: nn.Module) -> str:
    """The layer Grad-CAM reads in ``model``: the last feature map before global pooling.

    That is the output of the last stage, except in a pre-activation network, whose last stage ends in an addition
    that the network then normalises and rectifies (``norm``, ``final_relu``): there the feature map the head sees is
    the output of ``final_relu``.

    Args:
        model: A medres ``ResNet``, or a module containing one (the name then carries its prefix, e.g.
            ``"backbone.layer4"``).

    Returns:
        The module name, as ``model.named_modules()`` spells it.

    Raises:
        ValueError: When ``model`` holds no medres ``ResNet``; pass the layer name yourself then.
    """
    for name, module in model.named_modules():
        if isinstance(module, ResNet):
            prefix = f"{name}." if name else ""
            return prefix + ("final_relu" if module.preactivation else module.stage_names[-1])
    raise ValueError(f"{type(model).__name__} holds no medres ResNet: pass the Grad-CAM target_layer by name")


def gradcam_maps(
    model: nn.Module, images: torch.Tensor, class_indices: Sequence[int], target_layer: str | None = None
) -> np.ndarray:
    """Grad-CAM of one class per image, upsampled to the image and scaled to [0, 1] per image.

    The model is left as it was found (training flag, ``requires_grad``, hooks, in-place flags): MONAI registers
    hooks it never removes and turns off ``inplace`` on the target layer, so they go on a private copy, which runs
    in eval mode with gradients enabled (also under ``torch.inference_mode``, as in a Lightning evaluation hook).

    Args:
        model: Maps images ``(N, C, *spatial)`` to logits ``(N, F)``.
        images: ``(N, C, *spatial)``, 2D or 3D.
        class_indices: ``(N,)`` the output each image's map explains.
        target_layer: Module name to read; ``default_target_layer(model)`` when None.

    Returns:
        ``(N, *spatial)`` float32 maps; an all-zero map where no location raises the score.
    """
    if len(class_indices) != len(images):
        raise ValueError(f"{len(class_indices)} class indices for {len(images)} images")
    layer = target_layer or default_target_layer(model)
    if layer not in dict(model.named_modules()):
        raise ValueError(f"Grad-CAM target_layer {layer!r} is not a module of {type(model).__name__}")
    with torch.inference_mode(False), torch.enable_grad():
        twin = copy.deepcopy(model).eval()
        twin.requires_grad_(True)  # a frozen model still needs a graph from the target layer to the score
        parameter = next(twin.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        # clone() outside inference mode turns an inference tensor into one autograd accepts.
        x = images.detach().clone().to(device=device, dtype=torch.float32)
        # The raw map, without MONAI's default post-processing (which maps the maximum to 0 for display).
        cam = GradCAM(nn_module=twin, target_layers=layer, postprocessing=lambda m: m)
        classes = np.asarray(class_indices, dtype=np.int64)
        maps = np.zeros((len(images), *images.shape[2:]), dtype=np.float32)
        # MONAI explains one class per call: one call per class present.
        for index in np.unique(classes):
            rows = np.flatnonzero(classes == index)
            result = cam(x=x[torch.from_numpy(rows).to(device)], class_idx=int(index))  # (n, 1, *spatial)
            maps[rows] = result[:, 0].detach().float().cpu().numpy()
    peak = maps.reshape(len(maps), -1).max(axis=1) if len(maps) else np.zeros(0)
    scale = np.where(peak > 0, peak, 1.0).reshape(-1, *[1] * (maps.ndim - 1))
    return (maps / scale).astype(np.float32)


def display_plane(image: np.ndarray, cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 2D plane of an image and its map to show.

    2D ``(C, H, W)``: the first channel, rows down. 3D ``(C, x, y, z)`` in RAS order (as medres's preprocessing lays
    volumes out): the axial slice through the map's maximum (the middle slice when the map is zero), shown in the
    radiological convention: anterior at the top, the patient's right on the viewer's left.

    Args:
        image: ``(C, *spatial)`` one image.
        cam: ``(*spatial)`` its map.

    Returns:
        ``(plane, cam_plane)`` as 2D arrays of equal shape.
    """
    if image.ndim == 3:
        return image[0], cam
    if image.ndim != 4:
        raise ValueError(f"Grad-CAM images must be (C, H, W) or (C, x, y, z), got shape {image.shape}")
    axial = cam.reshape(-1, cam.shape[-1]).max(axis=0)
    z = int(np.argmax(axial)) if axial.max() > 0 else cam.shape[-1] // 2
    # (x, y) slice -> rows y (anterior first), columns x (patient's right first).
    return image[0, :, :, z].T[::-1, ::-1], cam[:, :, z].T[::-1, ::-1]


def gradcam_montage(
    model: nn.Module,
    images: torch.Tensor,
    probs: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    findings: Sequence[str],
    thresholds: Sequence[float],
    captions: Sequence[str],
    out_path: str | Path,
    columns: int = 4,
    target_layer: str | None = None,
) -> Path:
    """A PNG grid of images, each with the Grad-CAM of its highest-probability finding and a short caption.

    A caption is the given string (a pseudonymous key or an index: never anything read from DICOM headers) and one
    line per finding, ``name p=0.83 ✓ (label 1)``: ✓ when the call at the threshold agrees with the label, ✗ when
    it does not, ``?`` for an unknown label. The mapped finding is marked with ``▶``.

    Args:
        model: Maps images to logits ``(N, F)`` (e.g. the task's backbone); left as found.
        images: ``(N, C, *spatial)`` preprocessed images, 2D or 3D.
        probs: ``(N, F)`` the model's probabilities for them.
        targets: ``(N, F)`` labels: 1, 0, NaN for unknown.
        findings: ``(F,)`` names.
        thresholds: ``(F,)`` operating thresholds.
        captions: ``(N,)`` first caption line per image.
        out_path: PNG to write.
        columns: Tiles per row.
        target_layer: Grad-CAM layer; ``default_target_layer(model)`` when None.

    Returns:
        ``out_path``.
    """
    p, t = as_predictions(probs, targets)
    n = len(images)
    if not (len(p) == len(captions) == n) or n == 0:
        raise ValueError(
            f"Grad-CAM montage needs one probability row and caption per image: {n} images, "
            f"{len(p)} rows, {len(captions)} captions"
        )
    if not (len(findings) == len(thresholds) == p.shape[1]):
        raise ValueError(f"{len(findings)} findings and {len(thresholds)} thresholds for {p.shape[1]} columns")
    if columns < 1:
        raise ValueError(f"Grad-CAM montage columns must be at least 1, got {columns}")
    shown = p.argmax(axis=1)
    maps = gradcam_maps(model, images, shown.tolist(), target_layer)
    pixels = images.detach().float().cpu().numpy()

    columns = min(columns, n)
    rows = math.ceil(n / columns)
    lines = len(findings) + 1
    fig = Figure(figsize=(2.8 * columns, (2.8 + 0.16 * lines) * rows), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        plane, cam = display_plane(pixels[i], maps[i])
        low, high = np.percentile(plane, [1, 99])
        ax.imshow(plane, cmap="gray", vmin=low, vmax=high if high > low else low + 1)
        ax.imshow(cam, cmap="jet", alpha=0.35 * (cam > 0.05), vmin=0, vmax=1)  # faint heat left off
        ax.set_title(_caption(captions[i], p[i], t[i], findings, thresholds, int(shown[i])), fontsize=7, loc="left")
    fig.suptitle(f"Grad-CAM ({target_layer or default_target_layer(model)}) of the highest-probability finding")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # render with Agg whatever backend matplotlib is configured with
    fig.savefig(out, dpi=DPI, format="png")
    return out


def _caption(
    key: str, probs: np.ndarray, targets: np.ndarray, findings: Sequence[str], thresholds: Sequence[float], shown: int
) -> str:
    """The tile's caption: its key, then ``▶ name p=0.83 ✓ (label 1)`` per finding."""
    lines = [str(key)]
    for column, name in enumerate(findings):
        prob, label = float(probs[column]), float(targets[column])
        called = probs[column] >= probs.dtype.type(thresholds[column])
        if math.isnan(label):
            verdict, label_text = "?", "?"
        else:
            verdict, label_text = ("✓" if bool(called) == (label == 1) else "✗"), f"{label:.0f}"
        marker = "▶ " if column == shown else "   "
        lines.append(f"{marker}{name} p={prob:.2f} {verdict} (label {label_text})")
    return "\n".join(lines)
