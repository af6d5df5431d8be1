"""Model registry: architectures are registered by name and built from configs with ``create_model``.

Configs (and registered model packages) name a backbone as a string, e.g. ``backbone: resnet50``; the
registry turns that string into a module. A variant is one decorated factory function, as in timm. Any other
``torch.nn.Module`` class can be named by its ``class_path`` instead (``create_backbone``).
"""

import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable, Mapping
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


# A config names a backbone either by registry name or, for any other torch network (a MONAI one, say), by its
# import path in jsonargparse's ``class_path``/``init_args`` form. Sizing arguments the config leaves out are filled
# in from the data under whichever name the class uses: MONAI spells them ``in_channels``/``n_input_channels`` and
# ``num_classes``/``out_channels``.
_SIZING_ALIASES = {
    "spatial_dims": ("spatial_dims",),
    "in_channels": ("in_channels", "n_input_channels"),
    "num_classes": ("num_classes", "out_channels"),
}
# Constructor arguments that fetch weights over the network (MONAI's ``pretrained=True`` downloads): medres loads
# weights from local files only (``medres.models.weights``), so a config that turns these on is refused.
_DOWNLOAD_ARGUMENTS = ("pretrained",)


def import_module_class(class_path: str) -> type[nn.Module]:
    """The ``torch.nn.Module`` subclass at ``class_path`` (``package.module.ClassName``).

    Only ``nn.Module`` subclasses are accepted, so a model package or config cannot name an arbitrary callable.

    Raises:
        ValueError: The path does not import, or names something that is not a module class.
    """
    module_name, _, attribute = class_path.rpartition(".")
    if not module_name:
        raise ValueError(
            f"backbone class_path {class_path!r} must be a dotted import path, e.g. monai.networks.nets.DenseNet121"
        )
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"backbone class_path {class_path!r} does not import: {err}") from err
    if not (isinstance(target, type) and issubclass(target, nn.Module)):
        raise ValueError(f"backbone class_path {class_path!r} is not a torch.nn.Module class")
    return target


def create_backbone(
    spec: str | Mapping[str, Any],
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    overrides: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build the backbone a config names, sized for the data.

    Args:
        spec: A registered name (``"resnet50"``), or ``{"class_path": ..., "init_args": {...}}`` for any
            ``nn.Module`` class.
        spatial_dims: 2 or 3, from the preprocessing.
        in_channels: Image channels, from the preprocessing.
        num_classes: Outputs, one per finding.
        overrides: Keyword arguments for a registered model (``drop_path_rate``, ``shortcut``, ...). For a
            ``class_path`` they are merged over ``init_args``.

    Returns:
        The freshly initialised backbone.

    Raises:
        ValueError: Unknown name, bad class path, arguments the class does not take, or a download requested.
    """
    sizing = {"spatial_dims": spatial_dims, "in_channels": in_channels, "num_classes": num_classes}
    if isinstance(spec, str):
        return create_model(spec, **{**sizing, **(overrides or {})})
    class_path, init_args = backbone_class_spec(spec)
    cls = import_module_class(class_path)
    args = {**init_args, **(overrides or {})}
    parameters = inspect.signature(cls).parameters
    for key, value in sizing.items():
        names = [name for name in _SIZING_ALIASES[key] if name in parameters]
        if names and not any(name in args for name in _SIZING_ALIASES[key]):
            args[names[0]] = value
    for name in _DOWNLOAD_ARGUMENTS:
        if args.get(name):
            raise ValueError(
                f"backbone {class_path}: {name}={args[name]!r} would download weights; medres loads weights from "
                "local files only (model.pretrained)"
            )
    try:
        inspect.signature(cls).bind(**args)
    except TypeError as err:
        raise ValueError(f"backbone {class_path}: {err}") from err
    return cls(**args)


def backbone_class_spec(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(class_path, init_args)`` of a ``class_path`` backbone spec, validated.

    Raises:
        ValueError: The mapping is not ``{"class_path": str, "init_args": mapping}``.
    """
    unknown = set(spec) - {"class_path", "init_args"}
    class_path = spec.get("class_path")
    init_args = spec.get("init_args") or {}
    if unknown or not isinstance(class_path, str) or not isinstance(init_args, Mapping):
        raise ValueError(
            "backbone must be a registered name or {class_path: package.module.Class, init_args: {...}}, "
            f"got {dict(spec)!r}"
        )
    return class_path, dict(init_args)
