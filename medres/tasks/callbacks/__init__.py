"""What a fit runs beside its task: the MLflow logger, checkpointing, config logging, review, registration."""

from medres.tasks.callbacks.checkpointing import Checkpoint
from medres.tasks.callbacks.gradient_flow import GradientFlowMonitor, stage_gradient_norms
from medres.tasks.callbacks.mlflow_logger import MLflowLogger
from medres.tasks.callbacks.register_model import RegisterModel
from medres.tasks.callbacks.review import ReviewRun
from medres.tasks.callbacks.save_config import MLflowSaveConfig

__all__ = [
    "Checkpoint",
    "GradientFlowMonitor",
    "MLflowLogger",
    "MLflowSaveConfig",
    "RegisterModel",
    "ReviewRun",
    "stage_gradient_norms",
]
