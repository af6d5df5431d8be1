"""Gradient-flow diagnostics: gradient norms per stage of a backbone, logged to MLflow during training.

A residual network's stages are its top-level children (``conv1``/``bn1`` stem, ``layer1`` ... ``layerK``, the
pre-activation ``norm``, the ``fc`` head); a gradient that vanishes or explodes with depth shows as stage norms that
fall or rise by orders of magnitude from the head towards the stem. ``stage_gradient_norms`` measures them for any
``nn.Module`` (it groups parameters by the first component of their names); ``GradientFlowMonitor`` logs them every
``n`` optimizer steps as ``grad_norm/<group>`` metrics. ``benchmarks/gradient_flow.py`` uses the same function to
compare a 1001-layer pre-activation network with its plain counterpart.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim import Optimizer

__all__ = ["RESNET_GROUPS", "GradientFlowMonitor", "stage_gradient_norms"]

# Top-level parameter names of ``medres.models.ResNet`` (torchvision's names) renamed to the stage they belong to;
# any other first name component (``layer1``, ``norm``, the children of another module) is its own group.
RESNET_GROUPS: dict[str, str] = {"conv1": "stem", "bn1": "stem", "fc": "head"}
HEAD_GROUP = "head"
METRIC_PREFIX = "grad_norm/"


def stage_gradient_norms(
    model: nn.Module, norm_type: float = 2.0, groups: Mapping[str, str] | None = None
) -> dict[str, float]:
    """Gradient norm of each stage of ``model``, of its first and last layer, and their ratio.

    Call it after ``backward()`` (and, under AMP, after the gradients are unscaled). Parameters without a gradient
    (frozen, or unused in this step) are left out; a group none of whose parameters has one is absent.

    Keys:

    - one per group: the first component of the parameter names, renamed by ``groups`` (for a ``ResNet``: ``stem``,
      ``layer1`` ... ``layerK``, ``norm`` for pre-activation networks, ``head``); the value is the norm of all the
      group's gradients concatenated into one vector;
    - ``total``: the same over every parameter (what ``clip_grad_norm_`` would see);
    - ``first_layer``: the gradient norm of the first weight tensor with more than one dimension (the stem
      convolution: biases and norm scales are 1-D and skipped);
    - ``last_layer``: the last such weight outside the ``head`` group, i.e. the last convolution, not the linear
      classifier. The classifier's gradient is computed from the loss directly and backpropagates through no depth,
      and its size is set by the pooled features rather than by the convolution stack, so first/last compares two
      convolutions the backward pass is ``depth - 2`` layers apart on. The ``head`` group still gives the classifier's
      norm. A model with no weight outside ``head`` falls back to the last weight overall;
    - ``first_over_last``: ``first_layer / last_layer`` (vanishing gradients make it tiny, exploding ones huge). It is
      ``inf`` when the last layer's gradient is zero, as at the first step of a post-activation network built with
      ``zero_init_residual`` (its zeroed norm scales stop the gradient of the convolutions before them), and ``nan``
      when a gradient overflowed.

    Args:
        model: Any module; typically a ``medres.models.ResNet`` after ``loss.backward()``.
        norm_type: Order of the norm (2 for the Euclidean norm, ``inf`` for the largest magnitude).
        groups: Renames of first name components; default ``RESNET_GROUPS`` (``conv1``/``bn1`` → ``stem``,
            ``fc`` → ``head``). Pass ``{}`` to keep the raw names.

    Returns:
        Norms as Python floats, groups in parameter order, then ``total``, ``first_layer``, ``last_layer`` and
        ``first_over_last`` (the last three only when some weight has a gradient).
    """
    renames = RESNET_GROUPS if groups is None else groups
    per_group: dict[str, list[torch.Tensor]] = {}
    weights: list[tuple[str, torch.Tensor]] = []  # (group, gradient) of the >1-D weights, in parameter order
    for name, param in model.named_parameters():
        if param.grad is None:
            continue
        group = renames.get(name.split(".", 1)[0], name.split(".", 1)[0])
        # One norm per tensor, then the norm of those norms: equal to the norm of the concatenation for any p-norm
        # (and for inf, the max of maxima) without materialising a copy of every gradient. At least float32, so that
        # bf16/fp16 gradients do not overflow while squaring; float64 stays float64.
        grad = param.grad.detach()
        tensor_norm = torch.linalg.vector_norm(grad, norm_type, dtype=torch.promote_types(grad.dtype, torch.float32))
        per_group.setdefault(group, []).append(tensor_norm)
        if param.ndim > 1:
            weights.append((group, tensor_norm))
    if not per_group:
        return {}

    names = list(per_group)
    group_norms = [torch.linalg.vector_norm(torch.stack(per_group[g]), norm_type) for g in names]
    values = [*group_norms, torch.linalg.vector_norm(torch.stack(group_norms), norm_type)]
    keys = [*names, "total"]
    if weights:
        body = [norm for group, norm in weights if group != HEAD_GROUP] or [norm for _, norm in weights]
        first, last = weights[0][1], body[-1]
        values += [first, last, first / last]
        keys += ["first_layer", "last_layer", "first_over_last"]
    # One transfer for all of them: a ``.item()`` per value would synchronise a GPU once per group.
    return dict(zip(keys, torch.stack(values).tolist(), strict=True))


class GradientFlowMonitor(pl.Callback):
    """Log the backbone's per-stage gradient norms to the trainer's loggers every ``every_n_steps`` optimizer steps.

    Metrics are ``grad_norm/<group>`` for each key of ``stage_gradient_norms`` (``grad_norm/stem``,
    ``grad_norm/layer1`` ..., ``grad_norm/head``, ``grad_norm/total``, ``grad_norm/first_layer``,
    ``grad_norm/last_layer``, ``grad_norm/first_over_last``), at step ``trainer.global_step``.

    The norms are taken in ``on_before_optimizer_step``: after the whole (accumulated) backward pass, after AMP's
    gradient scaler has unscaled them, and after DDP has averaged them across ranks, so every rank holds the same
    values and only rank zero logs. They go to ``logger.log_metrics`` directly rather than through ``self.log``: the
    latter only reaches the logger every ``Trainer(log_every_n_steps)`` steps, which would silently drop most values
    whenever ``every_n_steps`` is not a multiple of it. Sharded strategies (FSDP, DeepSpeed ZeRO-2/3) hold a shard of
    each gradient per rank; the norms would be of rank zero's shard only.

    In a LightningCLI config::

        trainer:
          callbacks:
            - class_path: medres.tasks.callbacks.gradient_flow.GradientFlowMonitor
              init_args:
                every_n_steps: 50

    Args:
        every_n_steps: Log at optimizer steps 0, n, 2n, ... (each costs one pass over the gradients).
        module_attr: Attribute of the LightningModule holding the network to measure (``backbone`` in medres's
            tasks); ``None`` measures the whole LightningModule.
        norm_type: Order of the norm (2 for the Euclidean norm).
    """

    def __init__(self, every_n_steps: int = 50, module_attr: str | None = "backbone", norm_type: float = 2.0) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.module_attr = module_attr
        self.norm_type = norm_type
        self.last_norms: dict[str, float] = {}  # the latest measurement, for inspection in notebooks and tests

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fail before the first step, not after it, when the module has no such attribute."""
        self._module(pl_module)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        """Measure and log on steps that are multiples of ``every_n_steps``."""
        if trainer.global_step % self.every_n_steps != 0 or trainer.sanity_checking:
            return
        norms = stage_gradient_norms(self._module(pl_module), self.norm_type)
        self.last_norms = norms
        if not norms or not trainer.is_global_zero:
            return
        metrics = {f"{METRIC_PREFIX}{key}": value for key, value in norms.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def _module(self, pl_module: pl.LightningModule) -> nn.Module:
        if self.module_attr is None:
            return pl_module
        module = getattr(pl_module, self.module_attr, None)
        if not isinstance(module, nn.Module):
            raise AttributeError(
                f"GradientFlowMonitor(module_attr={self.module_attr!r}): {type(pl_module).__name__} has no module "
                f"attribute {self.module_attr!r}; set module_attr to the network's attribute, or null for the whole "
                "LightningModule"
            )
        return module
