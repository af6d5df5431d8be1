"""A resolved config as MLflow params: every leaf a ``a.b.c`` key, long values cut to what MLflow accepts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# MLflow rejects param values over 6,000 characters; long lists are still readable in config.yaml.
MAX_PARAM_CHARS = 500


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``("a.b.c", "value")`` pairs for every leaf of a nested config mapping.

    Args:
        config: A nested mapping as dumped by jsonargparse (``class_path``/``init_args`` kept).
        prefix: Key prefix for recursion.
    """
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten_config(value, prefix=f"{name}.")
        else:
            text = str(value)
            yield name, text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
