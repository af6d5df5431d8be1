"""Where models logged before medres 0.2 find their model class: their stored code imports it from here.

MLflow stores a short code file with each model ("models from code") and runs it to load the model; files logged by
medres 0.1 say ``from medres.tracking.serving import MedresPyfuncModel``. The class now lives in the scoring stage
(:mod:`medres.scoring.serving`); this alias keeps those registered versions loading. It is the one import from
tracking up to scoring, declared as an exception in the layer rules (``pyproject.toml``, ``[tool.importlinter]``).
"""

from medres.scoring.serving import MedresPyfuncModel

__all__ = ["MedresPyfuncModel"]
