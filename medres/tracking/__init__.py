"""MLflow: logger set-up, config logging, model logging and registration, model resolution, gradient flow."""

from medres.tracking.config_logging import MLflowSaveConfig
from medres.tracking.gradient_flow import GradientFlowMonitor, stage_gradient_norms
from medres.tracking.logger import MLflowLogger
from medres.tracking.model_logging import RegisterModel, log_model_package
from medres.tracking.registry import load_model

__all__ = [
    "GradientFlowMonitor",
    "MLflowLogger",
    "MLflowSaveConfig",
    "RegisterModel",
    "load_model",
    "log_model_package",
    "stage_gradient_norms",
]
