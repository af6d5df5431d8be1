"""Model registry: architectures are registered by name and built from configs with ``create_model``.

Configs (and registered model packages) name a backbone as a string, e.g. ``backbone: resnet50``; the
registry turns that string into a module. A variant is one decorated factory function, as in timm.
"""

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

ModelFactory = Callable[..., nn.Module]
# The decorator returns its argument unchanged, so a TypeVar keeps each factory's own return type (e.g. ResNet).
F = TypeVar("F", bound=ModelFactory)

_MODELS: dict[str, ModelFactory] = {}


def register_model(fn: F) -> F:
    """Register a model factory under its function name.

    Args:
        fn: Factory that takes keyword arguments and returns a module.

    Returns:
        The factory, unchanged, so the decorator can stack with others.

    Raises:
        ValueError: A model with the same name is already registered.
    """
    name = fn.__name__
    if name in _MODELS:
        # A silent overwrite would make ``create_model`` depend on import order.
        raise ValueError(f"Model {name!r} is already registered (by {_MODELS[name].__module__}).")
    _MODELS[name] = fn
    return fn


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: Registered model name, e.g. ``"resnet50"``.
        **kwargs: Passed to the model factory (``spatial_dims``, ``in_channels``, ``num_classes``, ...).

    Returns:
        The freshly initialised model.

    Raises:
        ValueError: No model is registered under ``name``.
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(list_models())}"
        raise ValueError(f"Unknown model {name!r}; {hint}")
    return _MODELS[name](**kwargs)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted.

    Args:
        pattern: Optional shell-style wildcard, e.g. ``"resnet1*"``.

    Returns:
        The matching names.
    """
    names = sorted(_MODELS)
    return fnmatch.filter(names, pattern) if pattern is not None else names


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _MODELS
