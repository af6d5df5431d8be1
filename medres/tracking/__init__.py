"""MLflow alone: store defaults, config params, the privacy allow-list, provenance, model logging, registry, resume.

Nothing here imports Lightning, a task or scoring: the Lightning side of tracking (the logger, config and registration
callbacks) lives in :mod:`medres.tasks.callbacks` and calls into this package.
"""

from medres.tracking.model_logging import log_model_package
from medres.tracking.registry import load_model

__all__ = ["load_model", "log_model_package"]
