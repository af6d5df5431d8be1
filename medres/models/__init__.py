"""Backbones: plain torch modules built by name from the registry (never imports Lightning)."""

from medres.models.registry import create_model, is_model, list_models, register_model
from medres.models.resnet import ResNet  # importing the module registers resnet18 ... resnet152

__all__ = ["ResNet", "create_model", "is_model", "list_models", "register_model"]
