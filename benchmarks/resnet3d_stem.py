"""3D ResNet-18 on a 96³ volume: MedicalNet's stride-2 stem against MONAI's default stride-1 stem.

The issue's goal: ``medres.models`` ResNet-18 (``spatial_dims=3``; 7³ stride-2 stem convolution and 3³ stride-2
max-pool, as MedicalNet and the 2015 paper) runs a 96³ volume at least 4× faster than
``monai.networks.nets.resnet18(spatial_dims=3)``, whose ``conv1_t_stride`` defaults to 1. The two networks have the
same layers and parameters (MONAI adds a bias to its three projection shortcuts); only the stem's stride differs, so
MONAI's stem convolution and every stage run on 2³ = 8× the voxels, and the ideal speed-up is about 8×.

Both networks are timed in the same run, on the same input: inference (``torch.inference_mode``, eval mode) and a
training step (forward, cross-entropy, backward), after warm-up, median of ``--repeats``. The script prints ms per
volume and the speed-up (MONAI / medres) for each, and exits 1 if the inference speed-up is below ``--target``
(``--gate both`` also holds the training step to it).

Measured on a shared 2-core Xeon CPU (batch 1, 96³, median of 3), ms per volume, inference / training step:

- ``--threads 1``: MONAI 2007 / 6140, medres 251 / 728: 7.99× / 8.43× (the 8× fewer multiply-adds, fully realised).
- default ``--threads 2`` while another process kept one core busy (load average ~3): MONAI 2685 / 8264, medres
  820 / 2513: 3.27× / 3.29×, below the target. Both got slower than on one thread: every parallel region waits
  for the thread that shares its core, and the stride-2 network, with 8× less work per operation, loses the most.
  On a busy machine, compare with ``--threads`` set to the idle cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from monai.networks.nets import resnet18 as monai_resnet18
from torch import nn
from torch.nn import functional as F

from medres.models import create_model

# The only parameters MONAI's ResNet has beyond torchvision's layout: biases on the projection shortcuts' convolutions.
MONAI_EXTRA_SUFFIX = "downsample.0.bias"


def build_models(in_channels: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """medres's 3D ResNet-18 and MONAI's, each with its own defaults apart from channels and classes."""
    torch.manual_seed(0)
    ours = create_model("resnet18", spatial_dims=3, in_channels=in_channels, num_classes=num_classes)
    baseline = monai_resnet18(spatial_dims=3, n_input_channels=in_channels, num_classes=num_classes)
    return ours, baseline


def check_same_layers(ours: nn.Module, baseline: nn.Module) -> list[str]:
    """Differences in parameter names and shapes other than MONAI's shortcut biases (empty: same layers)."""
    mine = {name: tuple(p.shape) for name, p in ours.named_parameters()}
    theirs = {name: tuple(p.shape) for name, p in baseline.named_parameters()}
    problems = [f"{name}: {shape} vs {theirs.get(name)}" for name, shape in mine.items() if theirs.get(name) != shape]
    problems += [f"only in MONAI: {n}" for n in theirs if n not in mine and not n.endswith(MONAI_EXTRA_SUFFIX)]
    return problems


def interleaved_median_ms(
    runs: Mapping[str, Callable[[], object]], warmup: int, repeats: int, device: torch.device
) -> dict[str, float]:
    """Median wall time in ms of each run, after ``warmup`` untimed calls of each (kernel selection, allocator).

    The runs alternate within every repeat, so that a load change on a shared machine hits both networks alike
    instead of whichever happened to be timed second.
    """
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            run()
            if device.type == "cuda":  # kernels are asynchronous: wait for them before stopping the clock
                torch.cuda.synchronize(device)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def inference(
    model: nn.Module, volume: torch.Tensor, autocast: Callable[[], AbstractContextManager[object]]
) -> Callable[[], None]:
    """One forward pass in eval mode without autograd."""

    def run() -> None:
        with torch.inference_mode(), autocast():
            model(volume)

    return run


def train_step(
    model: nn.Module,
    volume: torch.Tensor,
    labels: torch.Tensor,
    autocast: Callable[[], AbstractContextManager[object]],
) -> Callable[[], None]:
    """Forward, cross-entropy, backward (no optimizer: its cost does not depend on the stem)."""

    def run() -> None:
        model.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(volume).float(), labels)
        loss.backward()

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Time both networks, print the table and the speed-ups; 1 if below target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="volumes per batch")
    parser.add_argument("--size", type=int, default=96, help="side of the cubic volume")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amp", choices=("none", "bf16"), default="none", help="bf16 autocast (cuda only)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all)")
    parser.add_argument("--target", type=float, default=4.0, help="minimum speed-up (MONAI / medres)")
    parser.add_argument("--gate", choices=("inference", "both"), default="inference", help="which speed-ups must pass")
    parser.add_argument("--no-train", action="store_true", help="time inference only")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    if args.amp == "bf16" and args.device != "cuda":
        parser.error("--amp bf16 is for --device cuda")
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True  # pick the fastest 3D convolution algorithm during warm-up
    device = torch.device(args.device)

    def autocast() -> AbstractContextManager[object]:
        return torch.autocast(device.type, dtype=torch.bfloat16) if args.amp == "bf16" else nullcontext()

    ours, baseline = build_models(in_channels=1, num_classes=2)
    counts = [sum(p.numel() for p in m.parameters()) for m in (ours, baseline)]
    print(
        f"parameters: medres resnet18 {counts[0]:,}, MONAI resnet18 {counts[1]:,} (+{counts[1] - counts[0]:,}: "
        f"MONAI's {MONAI_EXTRA_SUFFIX} biases); stem strides {_stride(ours)} vs {_stride(baseline)}"
    )
    problems = check_same_layers(ours, baseline)
    if problems:
        print("the networks differ beyond the stem stride:\n  " + "\n  ".join(problems))
        return 1

    generator = torch.Generator().manual_seed(0)
    volume = torch.randn(args.batch, 1, args.size, args.size, args.size, generator=generator).to(device)
    labels = torch.randint(0, 2, (args.batch,), generator=generator).to(device)
    # Other processes' CPU use slows the many small operations of the stride-2 network most (each parallel region waits
    # for its slowest thread): the load average puts a CPU ratio in context.
    threads = f", {args.threads} threads, load average {os.getloadavg()[0]:.1f}" if device.type == "cpu" else ""
    print(
        f"input {args.batch}×1×{args.size}³ on {args.device}{threads}, amp {args.amp}; median of {args.repeats} "
        f"after {args.warmup} warm-up"
    )
    models = {"MONAI (stride-1 stem)": baseline.to(device), "medres (stride-2 stem)": ours.to(device)}
    for model in models.values():
        model.eval()
    inference_ms = interleaved_median_ms(
        {label: inference(model, volume, autocast) for label, model in models.items()},
        args.warmup,
        args.repeats,
        device,
    )
    train_ms: dict[str, float | None] = dict.fromkeys(models)
    if not args.no_train:
        for model in models.values():
            model.train()
        steps = {label: train_step(model, volume, labels, autocast) for label, model in models.items()}
        train_ms.update(interleaved_median_ms(steps, args.warmup, args.repeats, device))
    results = {label: (inference_ms[label], train_ms[label]) for label in models}

    (base_inf, base_train), (our_inf, our_train) = results.values()
    print(f"{'':24} | {'inference ms/volume':>20} | {'train step ms/volume':>20}")
    for label, (infer_ms, step_ms) in results.items():
        train_cell = f"{step_ms / args.batch:20.1f}" if step_ms is not None else f"{'-':>20}"
        print(f"{label:24} | {infer_ms / args.batch:20.1f} | {train_cell}")
    speedups = {"inference": base_inf / our_inf}
    if base_train is not None and our_train is not None:
        speedups["train step"] = base_train / our_train
    print(f"{'speed-up (MONAI/medres)':24} | " + " | ".join(f"{s:19.2f}×" for s in speedups.values()))

    gated = ["inference"] if args.gate == "inference" else list(speedups)
    failed = [name for name in gated if speedups[name] < args.target]
    for name, value in speedups.items():
        mark = "" if name not in gated else (" FAIL" if name in failed else " ok")
        print(f"{name}: {value:.2f}× against a target of {args.target:.1f}×{mark}")
    return 1 if failed else 0


def _stride(model: nn.Module) -> object:
    conv1 = model.conv1
    assert isinstance(conv1, nn.Conv3d)
    return conv1.stride


if __name__ == "__main__":
    sys.exit(main())
