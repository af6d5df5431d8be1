"""The model package: everything scoring needs to apply a trained model, and nothing executable.

A package is a folder with ``package.json`` (the contract: backbone, label names, preprocessing,
thresholds, versions, training config) and ``weights.safetensors`` (the backbone's tensors). It is
what gets logged to MLflow and registered; it is also embedded in every Lightning checkpoint under
the ``"medres"`` key, so a checkpoint path scores the same way. Loading never unpickles: weights come
from safetensors, checkpoints are read with ``torch.load(weights_only=True)``.

Format versions (``format_version`` in ``package.json``)
    1. The first format: backbone, findings, thresholds, preprocessing, spatial_dims/in_channels,
       versions, training config.
    2. Adds ``selection``: the series selection rules
       (:meth:`medres.data.selection.SeriesSelection.to_dict`) that chose the training samples; scoring
       applies the same rules before decoding a pixel. A format-1 package loads with the default
       selection (no filtering), which is what it was trained with. 3D preprocessing settings (target
       spacing, HU window, ...) live inside ``preprocessing`` and need no format change: an older
       medres refuses them as unknown preprocessing keys.
    3. Adds ``detector`` (:class:`medres.models.detector.DetectorSpec`) and ``threshold_fp_rate``: a lesion
       detector (issue 18). Its weights are the whole RetinaNet (feature pyramid, heads), its ``thresholds``
       are box-score thresholds chosen on validation at ``threshold_fp_rate`` false positives per image, and
       its outputs are boxes (2D: stored-pixel edges ``x_min, y_min, x_max, y_max``; 3D: patient LPS mm) whose
       top score per finding is the image-level probability. Classification packages are still written as
       format 2, so an older medres keeps loading them.

    Every key of a known format is known: an unknown key (top level, in ``preprocessing`` or in
    ``selection``) is refused with a message naming the package, never silently ignored, and a
    package newer than this medres is refused with "upgrade medres".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import medres
from medres.data.selection import SeriesSelection
from medres.data.transforms import Preprocessing
from medres.models.detector import DetectorSpec, build_detector
from medres.models.package_layout import (
    BACKBONE_PREFIX,
    CHECKPOINT_KEY,
    CONTRACT_FILE,
    DETECTOR_PREFIX,
    WEIGHTS_FILE,
)
from medres.models.registry import backbone_class_spec, create_backbone, import_module_class, is_model
from medres.models.resnet import ResNet

__all__ = [
    "BACKBONE_PREFIX",
    "CHECKPOINT_KEY",
    "CONTRACT_FILE",
    "DETECTOR_PREFIX",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "ModelPackage",
    "PackageError",
    "backbone_state",
    "build_backbone",
    "finding_column",
    "probability_column",
]

FORMAT_VERSION = 3
# Top-level keys of package.json (every format up to FORMAT_VERSION); anything else is refused.
CONTRACT_KEYS = frozenset(
    {
        "format_version",
        "medres_version",
        "backbone",
        "backbone_args",
        "findings",
        "thresholds",
        "preprocessing",
        "selection",
        "spatial_dims",
        "in_channels",
        "training_config",
        "detector",
        "threshold_fp_rate",
    }
)
# The box coordinates a detector package's outputs are in, stated in its contract for readers of package.json.
BOX_CONTRACT = {
    2: "x_min, y_min, x_max, y_max: stored-pixel edges (column, row) of the referenced image",
    3: "x_min, y_min, z_min, x_max, y_max, z_max: patient LPS millimetres",
}


def probability_column(finding: str) -> str:
    """Output column holding the probability of ``finding`` (predictions, pyfunc)."""
    return f"prob_{finding}"


def finding_column(finding: str) -> str:
    """Output column holding the thresholded call for ``finding``."""
    return f"finding_{finding}"


class PackageError(ValueError):
    """A model package this medres cannot honour (the message says why and where)."""


@dataclass
class ModelPackage:
    """A trained diagnostic-detection model and its contract.

    Args:
        backbone: Registered model name (see ``medres.models.list_models``), or ``{"class_path", "init_args"}`` of
            any ``torch.nn.Module`` class.
        backbone_args: Extra keyword arguments the backbone was built with.
        findings: Label names, in output order.
        preprocessing: The exact preprocessing the network was trained on.
        thresholds: Operating threshold per finding (probability ≥ threshold ⇒ finding present).
        state_dict: Backbone weights.
        medres_version: The medres version that trained it.
        training_config: The resolved training config (YAML text), for provenance.
        selection: Which DICOM instances/series the model takes (the training data's selection rules); scoring
            applies it verbatim. The default filters nothing.
        detector: Set for a lesion detector: the detector's sizing; ``state_dict`` then holds the whole detector
            network and ``thresholds`` are box-score thresholds.
        threshold_fp_rate: A detector's false positives per image its thresholds were chosen at.
    """

    backbone: str | dict[str, Any]
    backbone_args: dict[str, Any]
    findings: list[str]
    preprocessing: Preprocessing
    thresholds: list[float]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    medres_version: str = medres.__version__
    training_config: str | None = field(default=None, repr=False)
    selection: SeriesSelection = field(default_factory=SeriesSelection)
    detector: DetectorSpec | None = None
    threshold_fp_rate: float | None = None

    @property
    def is_detector(self) -> bool:
        """Whether the package predicts boxes (a lesion detector) rather than image-level logits."""
        return self.detector is not None

    def __post_init__(self) -> None:
        if not self.findings:
            raise PackageError("model package has no findings")
        if len(self.thresholds) != len(self.findings):
            raise PackageError(f"model package has {len(self.thresholds)} thresholds for {len(self.findings)} findings")

    # ---- contract ---------------------------------------------------------------------------
    def contract(self) -> dict[str, Any]:
        """The JSON-serialisable part: everything but the weights."""
        contract: dict[str, Any] = {
            "format_version": 3 if self.detector is not None else 2,
            "medres_version": self.medres_version,
            "backbone": self.backbone,
            "backbone_args": self.backbone_args,
            "findings": list(self.findings),
            "thresholds": [float(t) for t in self.thresholds],
            "preprocessing": self.preprocessing.to_dict(),
            "selection": self.selection.to_dict(),
            "spatial_dims": self.preprocessing.spatial_dims,
            "in_channels": self.preprocessing.in_channels,
            "training_config": self.training_config,
        }
        if self.detector is not None:
            contract["detector"] = {**self.detector.to_dict(), "boxes": BOX_CONTRACT[self.preprocessing.spatial_dims]}
            contract["threshold_fp_rate"] = self.threshold_fp_rate
        return contract

    @classmethod
    def from_contract(cls, contract: dict[str, Any], state_dict: dict[str, torch.Tensor], source: str) -> ModelPackage:
        """Validate a contract read from ``source`` and attach weights; refuses what this medres cannot honour."""
        version = contract.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise PackageError(
                f"{source}: package format {version!r} is newer than this medres supports ({FORMAT_VERSION}); "
                "upgrade medres"
            )
        missing = [k for k in ("backbone", "findings", "preprocessing", "thresholds") if k not in contract]
        if missing:
            raise PackageError(f"{source}: model package lacks {missing}")
        unknown = sorted(set(contract) - CONTRACT_KEYS)
        if unknown:
            raise PackageError(f"{source}: unknown model package key(s) {unknown} in format {version}")
        backbone = contract["backbone"]
        if isinstance(backbone, str):
            if not is_model(backbone):
                raise PackageError(f"{source}: backbone {backbone!r} is not a registered medres model")
        else:
            # A class_path backbone is rebuilt by importing an installed nn.Module class: nothing is unpickled and
            # nothing but a module class can be named.
            try:
                import_module_class(backbone_class_spec(backbone)[0])
            except (ValueError, AttributeError) as err:
                raise PackageError(f"{source}: {err}") from err
        try:
            preprocessing = Preprocessing.from_dict(contract["preprocessing"])
            # Format 1 had no selection: those models were trained on every instance, the default's behaviour.
            selection = SeriesSelection.from_dict(contract.get("selection") or {})
        except (TypeError, ValueError) as err:
            raise PackageError(f"{source}: {err}") from err
        if preprocessing.spatial_dims == 2 and selection.series_rules:
            raise PackageError(f"{source}: selection {selection.series_rules} apply to 3D series only (spatial_dims=2)")
        for key in ("spatial_dims", "in_channels"):
            if key in contract and contract[key] != getattr(preprocessing, key):
                raise PackageError(
                    f"{source}: {key}={contract[key]!r} disagrees with preprocessing.{key}="
                    f"{getattr(preprocessing, key)!r}"
                )
        detector = None
        if contract.get("detector") is not None:
            try:
                detector = DetectorSpec.from_dict({k: v for k, v in contract["detector"].items() if k != "boxes"})
            except (TypeError, ValueError) as err:
                raise PackageError(f"{source}: {err}") from err
        return cls(
            detector=detector,
            threshold_fp_rate=contract.get("threshold_fp_rate"),
            backbone=backbone if isinstance(backbone, str) else dict(backbone),
            backbone_args=dict(contract.get("backbone_args") or {}),
            findings=list(contract["findings"]),
            preprocessing=preprocessing,
            thresholds=[float(t) for t in contract["thresholds"]],
            state_dict=state_dict,
            medres_version=str(contract.get("medres_version", "unknown")),
            training_config=contract.get("training_config"),
            selection=selection,
        )

    # ---- model --------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """The backbone (a detector: the whole detector) with the packaged weights loaded strictly, in eval mode."""
        if self.detector is not None:
            resnet = build_backbone(self.backbone, self.backbone_args, self.preprocessing, 0)
            if not isinstance(resnet, ResNet):
                raise PackageError(f"detector backbone {self.backbone} is not a medres ResNet")
            dims, channels = self.preprocessing.spatial_dims, self.preprocessing.in_channels
            detector = build_detector(resnet, self.detector, dims, channels, len(self.findings))
            result = detector.network.load_state_dict(self.state_dict, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise PackageError(
                    f"weights do not fit the {self.backbone} detector: missing {result.missing_keys[:5]}, "
                    f"unexpected {result.unexpected_keys[:5]}"
                )
            return detector.eval()
        model = build_backbone(self.backbone, self.backbone_args, self.preprocessing, len(self.findings))
        result = model.load_state_dict(self.state_dict, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise PackageError(
                f"weights do not fit {self.backbone}: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
        return model.eval()

    # ---- files --------------------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        """Write ``package.json`` and ``weights.safetensors`` into ``directory`` (created)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONTRACT_FILE).write_text(json.dumps(self.contract(), indent=2) + "\n")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()}, directory / WEIGHTS_FILE)
        return directory

    @classmethod
    def load(cls, directory: Path) -> ModelPackage:
        """Read a package folder written by :meth:`save`."""
        contract_path = directory / CONTRACT_FILE
        if not contract_path.is_file():
            raise PackageError(f"{directory}: not a medres model package (no {CONTRACT_FILE})")
        contract = json.loads(contract_path.read_text())
        return cls.from_contract(contract, load_file(directory / WEIGHTS_FILE), str(directory))

    @classmethod
    def from_checkpoint(cls, path: Path) -> ModelPackage:
        """Read the package embedded in a medres Lightning checkpoint, without unpickling code."""
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint file")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for files that are not safe checkpoints
            raise PackageError(f"{path}: cannot read as a checkpoint with weights_only=True: {err}") from err
        if CHECKPOINT_KEY not in checkpoint:
            raise PackageError(f"{path}: not a medres checkpoint (no '{CHECKPOINT_KEY}' entry)")
        contract = checkpoint[CHECKPOINT_KEY]
        state = checkpoint["state_dict"]
        if contract.get("detector") is not None:
            weights = {k.removeprefix(DETECTOR_PREFIX): v for k, v in state.items() if k.startswith(DETECTOR_PREFIX)}
            return cls.from_contract(contract, weights, str(path))
        return cls.from_contract(contract, backbone_state(state), str(path))


def backbone_state(module_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's tensors out of a detection LightningModule's state dict (``backbone.`` prefix dropped)."""
    return {k.removeprefix(BACKBONE_PREFIX): v for k, v in module_state.items() if k.startswith(BACKBONE_PREFIX)}


def build_backbone(
    backbone: str | dict[str, Any], backbone_args: dict[str, Any], preprocessing: Preprocessing, num_classes: int
) -> nn.Module:
    """Create the backbone sized for the preprocessing (dims, channels) and the number of findings."""
    return create_backbone(
        backbone,
        spatial_dims=preprocessing.spatial_dims,
        in_channels=preprocessing.in_channels,
        num_classes=num_classes,
        overrides=backbone_args,
    )
