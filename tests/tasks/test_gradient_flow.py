import math

import mlflow
import pytest
import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentParser
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from medres.models import create_model
from medres.tasks.callbacks.gradient_flow import GradientFlowMonitor, stage_gradient_norms
from medres.tasks.callbacks.mlflow_logger import MLflowLogger


def backward_once(model: nn.Module, size: int = 8, batch: int = 4, seed: int = 0, classes: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=generator, dtype=next(model.parameters()).dtype)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()


def concatenated_norm(model: nn.Module, keep, p: float = 2.0) -> float:
    """Norm of the concatenation of the selected gradients, computed the obvious way (no norm-of-norms).

    In float64: a float32 sum over a quarter of a million squares is itself off by about 1e-5.
    """
    grads = [param.grad.double().flatten() for name, param in model.named_parameters() if keep(name)]
    return torch.linalg.vector_norm(torch.cat(grads), p).item()


@pytest.fixture
def one_thread():
    """Single-threaded torch: the deep networks' many small ops slow down badly when threads contend for 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- stage_gradient_norms ----------------------------------------------------------------------------------------
def test_stage_norms_are_the_norms_of_each_stage_gradients():
    torch.manual_seed(0)
    # zero_init_residual=False: a zeroed bn2 scale would leave every conv2 without gradient at initialisation.
    model = create_model("resnet20", num_classes=3, zero_init_residual=False)
    backward_once(model)
    norms = stage_gradient_norms(model)

    assert list(norms) == [
        "stem",
        "layer1",
        "layer2",
        "layer3",
        "head",
        "total",
        "first_layer",
        "last_layer",
        "first_over_last",
    ]
    expected = {
        "stem": concatenated_norm(model, lambda n: n.startswith(("conv1.", "bn1."))),
        "layer1": concatenated_norm(model, lambda n: n.startswith("layer1.")),
        "layer2": concatenated_norm(model, lambda n: n.startswith("layer2.")),
        "layer3": concatenated_norm(model, lambda n: n.startswith("layer3.")),
        "head": concatenated_norm(model, lambda n: n.startswith("fc.")),
        "total": concatenated_norm(model, lambda n: True),
        # The stem convolution, and the last convolution of the last block (not the classifier).
        "first_layer": model.conv1.weight.grad.norm().item(),
        "last_layer": model.layer3[2].conv2.weight.grad.norm().item(),
    }
    expected["first_over_last"] = expected["first_layer"] / expected["last_layer"]
    assert norms == pytest.approx(expected, rel=1e-5)
    assert all(value > 0 for value in norms.values())


def test_stage_norms_of_a_preactivation_network_include_its_final_norm():
    torch.manual_seed(0)
    model = create_model("preact_resnet18", num_classes=3, in_channels=3)
    backward_once(model, size=32, batch=2)
    norms = stage_gradient_norms(model)
    assert [k for k in norms if k not in ("total", "first_layer", "last_layer", "first_over_last")] == [
        "stem",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "norm",
        "head",
    ]
    assert norms["norm"] == pytest.approx(concatenated_norm(model, lambda n: n.startswith("norm.")), rel=1e-5)
    assert norms["last_layer"] == pytest.approx(model.layer4[1].conv2.weight.grad.norm().item(), rel=1e-5)


def test_stage_norms_skip_parameters_without_gradient_and_take_any_order_and_names():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    model[2].requires_grad_(False)  # frozen: no gradient, no group
    model(torch.randn(5, 4)).square().sum().backward()

    norms = stage_gradient_norms(model, norm_type=math.inf, groups={})
    assert [k for k in norms if k.isdigit()] == ["0", "4"]
    assert norms["0"] == pytest.approx(concatenated_norm(model, lambda n: n.startswith("0."), math.inf))
    assert norms["total"] == pytest.approx(concatenated_norm(model, lambda n: not n.startswith("2."), math.inf))
    # No "head" group here, so the last layer is the last weight overall.
    assert norms["first_layer"] == pytest.approx(model[0].weight.grad.abs().max().item())
    assert norms["last_layer"] == pytest.approx(model[4].weight.grad.abs().max().item())


def test_stage_norms_without_any_gradient_are_empty():
    assert stage_gradient_norms(create_model("resnet20", num_classes=3)) == {}


# ---- GradientFlowMonitor in a real fit ----------------------------------------------------------------------------
class TinyTask(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = create_model("resnet20", num_classes=3)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        return F.cross_entropy(self.backbone(images), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(32, 3, 8, 8, generator=generator), torch.randint(0, 3, (32,)))
        return DataLoader(data, batch_size=4)


@pytest.mark.slow  # ~15 s on 2 cores: most of it importing MLflow and creating its SQLite store
@pytest.mark.filterwarnings("ignore:The number of training batches")  # log_every_n_steps=50 on purpose
def test_monitor_logs_stage_norms_to_mlflow_every_n_steps(tmp_path):
    torch.manual_seed(0)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger(experiment_name="gradient-flow", tracking_uri=tracking_uri, log_model=False)
    monitor = GradientFlowMonitor(every_n_steps=2)
    trainer = pl.Trainer(
        max_steps=5,
        accelerator="cpu",
        logger=logger,
        callbacks=[monitor],
        # Longer than the run: the monitor must not depend on Lightning's own logging interval.
        log_every_n_steps=50,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(TinyTask())

    client = mlflow.tracking.MlflowClient(tracking_uri)
    history = client.get_metric_history(logger.run_id, "grad_norm/layer1")
    assert [m.step for m in history] == [0, 2, 4]
    assert all(math.isfinite(m.value) and m.value > 0 for m in history)
    assert history[-1].value == pytest.approx(monitor.last_norms["layer1"])
    logged = set(client.get_run(logger.run_id).data.metrics)
    expected = {"stem", "layer1", "layer2", "layer3", "head", "total", "first_layer", "last_layer", "first_over_last"}
    assert {f"grad_norm/{key}" for key in expected} <= logged


def test_monitor_names_a_missing_module_attribute():
    with pytest.raises(AttributeError, match="module_attr='net'"):
        GradientFlowMonitor(module_attr="net").setup(pl.Trainer(logger=False), TinyTask(), "fit")
    with pytest.raises(ValueError, match="every_n_steps"):
        GradientFlowMonitor(every_n_steps=0)


def test_monitor_is_configurable_as_a_lightning_cli_callback():
    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[pl.Callback])
    config = parser.parse_args(
        [
            '--callbacks=[{"class_path": "medres.tasks.callbacks.gradient_flow.GradientFlowMonitor",'
            ' "init_args": {"every_n_steps": 10, "module_attr": null}}]'
        ]
    )
    (monitor,) = parser.instantiate_classes(config).callbacks
    assert isinstance(monitor, GradientFlowMonitor)
    assert (monitor.every_n_steps, monitor.module_attr, monitor.norm_type) == (10, None, 2.0)


# ---- the measurement: 1001 layers, pre-activation against plain ----------------------------------------------------
# Scaled down from benchmarks/gradient_flow.py (32×32, batch 8), whose docstring has the full-size numbers; the
# verdicts are the same at this size.
def first_over_last_during_sgd(
    name: str, steps: int, size: int, batch: int, dtype: torch.dtype = torch.float32, **kwargs
) -> list[float]:
    """first/last at initialisation and after each of ``steps`` SGD steps, each on a fresh random batch."""
    torch.manual_seed(0)
    model = create_model(name, in_channels=3, num_classes=10, **kwargs).to(dtype).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    ratios = []
    for step in range(steps + 1):
        backward_once(model, size=size, batch=batch, seed=step, classes=10)
        ratios.append(stage_gradient_norms(model)["first_over_last"])
        optimizer.step()
    return ratios


@pytest.mark.slow
def test_preact1001_first_layer_gradient_within_two_orders_of_the_last(one_thread):
    ratios = first_over_last_during_sgd("preact_resnet1001", steps=1, size=16, batch=8)  # zero-init: the default
    assert all(1e-2 <= r <= 1e2 for r in ratios), ratios  # measured ≈ 3


@pytest.mark.slow
def test_preact1001_without_zero_init_explodes_at_init_then_settles(one_thread):
    ratios = first_over_last_during_sgd("preact_resnet1001", steps=10, size=8, batch=4, zero_init_residual=False)
    # Batch norm in training mode makes even the residual network's gradient grow towards the input at init
    # (measured ~8e4); the first updates grow the early weights, whose gradients shrink as 1/||W|| behind batch norm.
    assert ratios[0] > 1e2, ratios
    assert 1e-2 <= ratios[-1] <= 1e2, ratios  # measured ≈ 3 after 10 steps


@pytest.mark.slow
def test_plain1001_gradient_explodes_at_init_and_vanishes_after_one_step(one_thread):
    # The issue expected vanishing. At initialisation it explodes instead (Yang et al. 2019), beyond float32's range:
    first_norm = first_over_last_during_sgd("plain1001", steps=0, size=16, batch=8, zero_init_residual=False)
    assert not math.isfinite(first_norm[0]), first_norm
    # In float64 the size shows (measured ~1e73); one SGD step then blows up the early weights, and behind batch norm
    # their gradients shrink as 1/||W||: the gradient vanishes (measured ~1e-66).
    ratios = first_over_last_during_sgd(
        "plain1001", steps=1, size=16, batch=8, dtype=torch.float64, zero_init_residual=False
    )
    assert ratios[0] > 1e30, ratios
    assert ratios[1] < 1e-30, ratios
