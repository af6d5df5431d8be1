"""MLflow: logger set-up, config logging, model logging and registration, model resolution."""

from medres.tracking.config_logging import MLflowSaveConfig
from medres.tracking.logger import MLflowLogger
from medres.tracking.model_logging import RegisterModel, log_model_package
from medres.tracking.registry import load_model

__all__ = ["MLflowLogger", "MLflowSaveConfig", "RegisterModel", "load_model", "log_model_package"]
