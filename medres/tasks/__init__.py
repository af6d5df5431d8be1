"""LightningModules ("systems"): backbone + loss + metrics + optimisation."""

from medres.tasks.detection import MultiLabelDetection

__all__ = ["MultiLabelDetection"]
