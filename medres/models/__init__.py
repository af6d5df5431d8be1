"""Backbones: plain torch modules built by name from the registry (never imports Lightning)."""

from medres.models.registry import create_backbone, create_model, is_model, list_models, register_model
from medres.models.resnet import ResNet  # importing the module registers the ResNet family
from medres.models.weights import LoadReport, WeightsError, load_pretrained, read_state_dict

__all__ = [
    "LoadReport",
    "ResNet",
    "WeightsError",
    "create_backbone",
    "create_model",
    "is_model",
    "list_models",
    "load_pretrained",
    "read_state_dict",
    "register_model",
]
