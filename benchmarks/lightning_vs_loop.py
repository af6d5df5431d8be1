"""Training throughput of ``medres``'s Lightning fit against a hand-written PyTorch loop doing the same work.

Both train the same ``MultiLabelDetection`` backbone from the same initial weights on the same in-memory batches
(already on the device, no loader work), in the same order, with the same optimizer (AdamW, lr 1e-3), loss (masked
BCE) and precision (``--precision``: 32-true, bf16-mixed or 16-mixed with a gradient scaler), and the same memory
format (``--channels-last``). Lightning runs with no logger, no checkpointing, no progress bar and no validation, so
what is measured is the Trainer's own per-step cost. Throughput is images per second over epochs 2..N (epoch 1 is
warm-up: allocator, cuDNN autotuning); the best of ``--repeats`` runs of each. The per-step losses of the two must
agree (``--loss-tolerance``), or the comparison is void and the script exits 1.

The issue's goal: Lightning ≥ 0.95× the loop's throughput. On a GPU the same script measures the ResNet-50 row:
``--device cuda --backbone resnet50 --size 224 --batch 256 --precision bf16-mixed --channels-last`` (goal ≥ 3,000
images/s on one H100).

Measured on a 2-core CPU (Intel Xeon, ``--threads 2``, defaults: resnet20, 32 px, batch 64, 16 batches per epoch,
4 epochs, 2 repeats), identical per-step losses (max |Δ| 0.0) every time: ratio 1.020 (565 vs 554 images/s) and
0.941 (567 vs 603 images/s) in two runs minutes apart, on a machine shared with other jobs; the difference between
runs is as large as the one between the two loops. No GPU was available to measure the ResNet-50 row.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from medres.data.transforms import Preprocessing
from medres.tasks.detection import MultiLabelDetection
from medres.tasks.losses import masked_bce_with_logits, resolve_labels

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]
GOAL = 0.95


class InMemoryBatches(Dataset[dict[str, torch.Tensor]]):
    """Ready-made batches on the device: the loader only hands them over (``batch_size=None``)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batches[index]


def make_batches(n: int, batch: int, size: int, device: str, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` batches of (batch, 1, size, size) N(0, 1) images and 0/1 labels, with a few unknown (NaN) labels."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        images = torch.randn(batch, 1, size, size, generator=generator)
        labels = (torch.rand(batch, len(FINDINGS), generator=generator) < 0.3).float()
        labels[torch.rand(batch, len(FINDINGS), generator=generator) < 0.05] = float("nan")
        batches.append({"image": images.to(device), "label": labels.to(device)})
    return batches


@dataclass
class Run:
    """One training run's epoch times (seconds) and per-step losses."""

    epoch_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def images_per_second(self, images_per_epoch: int) -> float:
        """Throughput over every epoch but the first."""
        timed = self.epoch_seconds[1:]
        return images_per_epoch * len(timed) / sum(timed)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _Recorder(pl.Callback):
    """Epoch wall times and per-step losses of a Lightning fit (the losses kept on the device until the end)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.run = Run()
        self._losses: list[torch.Tensor] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._losses.append(outputs["loss"].detach())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(self.device)
        self.run.epoch_seconds.append(time.perf_counter() - self._start)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run.losses = torch.stack(self._losses).float().cpu().tolist()


def new_model(args: argparse.Namespace) -> MultiLabelDetection:
    return MultiLabelDetection(
        FINDINGS,
        preprocessing=Preprocessing(spatial_size=(args.size, args.size)),
        backbone=args.backbone,
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3),
        channels_last=args.channels_last,
    )


def lightning_run(args: argparse.Namespace, initial: dict[str, torch.Tensor], data: InMemoryBatches) -> Run:
    model = new_model(args)
    model.load_state_dict(initial)
    recorder = _Recorder(args.device)
    trainer = pl.Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu",
        devices=1,
        precision=args.precision,
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[recorder],
    )
    trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=None, shuffle=False))
    return recorder.run


def loop_run(args: argparse.Namespace, initial: dict[str, torch.Tensor], data: InMemoryBatches) -> Run:
    """The same training in plain PyTorch: autocast and a gradient scaler as Lightning's precision plugin sets them."""
    model = new_model(args)
    model.load_state_dict(initial)
    backbone = model.backbone.to(args.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    backbone.to(memory_format=memory_format)  # type: ignore[call-overload]
    pos_weight = None
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-3)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    scaler = torch.amp.GradScaler(device_type) if args.precision == "16-mixed" else None
    loader = DataLoader(data, batch_size=None, shuffle=False)
    run, losses = Run(), []
    backbone.train()
    for _ in range(args.epochs):
        _sync(args.device)
        start = time.perf_counter()
        for batch in loader:
            images = batch["image"].contiguous(memory_format=memory_format)
            with torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext():
                logits = backbone(images)
                targets, mask = resolve_labels(batch["label"].float(), model.uncertain_policy)
                loss = masked_bce_with_logits(logits, targets, mask, pos_weight)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            losses.append(loss.detach())
        _sync(args.device)
        run.epoch_seconds.append(time.perf_counter() - start)
    run.losses = torch.stack(losses).float().cpu().tolist()
    return run


def hardware(device: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "python": platform.python_version(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=16, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is warm-up")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each; the fastest counts")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--loss-tolerance", type=float, default=1e-4, help="max |Δ loss| per step")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be ≥ 2: the first is warm-up")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    initial = copy.deepcopy(new_model(args).state_dict())
    data = InMemoryBatches(make_batches(args.batches, args.batch, args.size, args.device))
    images_per_epoch = args.batches * args.batch

    lightning: list[Run] = []
    loop: list[Run] = []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        loop.append(loop_run(args, initial, data))
        lightning.append(lightning_run(args, initial, data))
    loop_ips = max(r.images_per_second(images_per_epoch) for r in loop)
    lightning_ips = max(r.images_per_second(images_per_epoch) for r in lightning)
    loss_diff = max(abs(a - b) for a, b in zip(lightning[0].losses, loop[0].losses, strict=True))
    same_losses = loss_diff <= args.loss_tolerance
    ratio = lightning_ips / loop_ips
    result = {
        "benchmark": "lightning_vs_loop",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "images_per_epoch": images_per_epoch,
        "loop_images_per_s": loop_ips,
        "lightning_images_per_s": lightning_ips,
        "ratio": ratio,
        "goal": GOAL,
        "max_loss_difference": loss_diff,
        "same_losses": same_losses,
        "first_losses": {"lightning": lightning[0].losses[:3], "loop": loop[0].losses[:3]},
        "runs": {
            "lightning": [asdict(r) | {"losses": None} for r in lightning],
            "loop": [asdict(r) | {"losses": None} for r in loop],
        },
        "hardware": hardware(args.device),
    }
    print(
        f"{args.backbone} {args.size}px batch {args.batch} {args.precision}"
        f"{' channels_last' if args.channels_last else ''} on {args.device}: "
        f"loop {loop_ips:,.0f} images/s, Lightning {lightning_ips:,.0f} images/s, ratio {ratio:.3f} (goal ≥ {GOAL}); "
        f"max |Δ loss| {loss_diff:.2e} ({'same' if same_losses else 'DIFFERENT'} losses)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if same_losses else 1


if __name__ == "__main__":
    sys.exit(main())
