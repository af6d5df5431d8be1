"""The training benchmark suite in one command: a table of each measured ratio against its goal, markdown and JSON.

Rows (each benchmark runs as its own process, so threads and allocator state do not leak between them):

- Lightning vs a hand-written loop (``lightning_vs_loop.py``): throughput ratio after the first epoch, same losses;
  goal ≥ 0.95.
- Disk cache (``cache_speedup.py``, when present): data-loading speed-up of epoch 2 (from the cache) over epoch 1
  (decoding a JPEG 2000 archive); goal ≥ 10. Asked for its result with ``--json PATH``.
- MLflow overhead (``mlflow_overhead.py``): extra wall time of a fit with the MLflow logger; goal ≤ 3 %.
- On a CUDA GPU only: ResNet-50 2D training throughput, bf16-mixed and channels_last at 224 px, in-memory data;
  goal ≥ 3,000 images/s (one H100). Without CUDA the row says it was skipped.

Usage: ``python benchmarks/suite.py --json benchmarks/results.json [--markdown results.md] [--quick]``. ``--quick``
shrinks every benchmark (smoke run, numbers not meant to be quoted). The hardware is recorded with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 1800


@dataclass
class Row:
    """One line of the table."""

    benchmark: str
    measured: str
    ratio: float | None
    goal: str
    verdict: str  # meets / below / skipped / failed
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def run_script(
    script: str, args: list[str], workdir: Path, ask_json: bool = True
) -> tuple[dict[str, Any] | None, str, int]:
    """Run ``benchmarks/<script> ... --json FILE``; its JSON (None if it wrote none), its output and exit code."""
    out = workdir / f"{Path(script).stem}.json"
    command = [sys.executable, str(HERE / script), *args, *(["--json", str(out)] if ask_json else [])]
    print(f"$ {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=HERE.parent)
    output = result.stdout + result.stderr
    print(f"  exit {result.returncode} after {time.perf_counter() - started:.0f}s", flush=True)
    return (json.loads(out.read_text()) if out.is_file() else None), output, result.returncode


def _failed(name: str, goal: str, output: str, code: int) -> Row:
    last = [line for line in output.strip().splitlines() if line.strip()][-1:] or [""]
    return Row(name, "", None, goal, "failed", f"exit {code}: {last[0][:200]}")


def lightning_row(quick: bool, workdir: Path) -> Row:
    args = ["--threads", str(os.cpu_count() or 1)] + (
        ["--batches", "4", "--epochs", "2", "--repeats", "1"] if quick else []
    )
    data, output, code = run_script("lightning_vs_loop.py", args, workdir)
    name, goal = "Lightning fit / hand-written loop (throughput after epoch 1)", "≥ 0.95×"
    if data is None:
        return _failed(name, goal, output, code)
    ratio = float(data["ratio"])
    same = bool(data["same_losses"])
    config = data["config"]
    return Row(
        name,
        f"{data['lightning_images_per_s']:,.0f} vs {data['loop_images_per_s']:,.0f} images/s",
        ratio,
        goal,
        ("meets" if ratio >= data["goal"] else "below") if same else "failed",
        f"{config['backbone']} {config['size']} px, batch {config['batch']}, {config['precision']}, "
        f"{config['device']}; "
        f"max |Δ loss| {data['max_loss_difference']:.1e} ({'same' if same else 'DIFFERENT'} losses)",
        data,
    )


def cache_row(quick: bool, workdir: Path) -> Row:
    name, goal = "Disk cache: epoch 2 (cache) / epoch 1 (JPEG 2000 decode), data loading", "≥ 10×"
    if not (HERE / "cache_speedup.py").is_file():
        return Row(name, "", None, goal, "skipped", "benchmarks/cache_speedup.py not present")
    args = ["--patients", "12", "--image-size", "256"] if quick else []
    data, output, code = run_script("cache_speedup.py", args, workdir)
    if data is None and "unrecognized arguments: --json" in output:
        data, output, code = run_script("cache_speedup.py", args, workdir, ask_json=False)
    if data is None:
        # The script prints "speed-up epoch 1 / epoch 2  N×"; read that when it has no --json option.
        match = re.search(r"speed-up epoch 1 / epoch 2\s+([0-9.]+)×", output)
        if match is None:
            return _failed(name, goal, output, code)
        parsed = float(match.group(1))
        note = "ratio read from its output: the script wrote no JSON (no --json option)"
        return Row(name, f"{parsed:.1f}×", parsed, goal, "meets" if parsed >= 10 else "below", note)
    ratio = _first_number(data, ("speedup", "speed_up", "ratio", "epoch1_over_epoch2", "cold_over_warm"))
    if ratio is None:
        return Row(name, "", None, goal, "failed", f"no speed-up in its JSON (keys: {sorted(data)})", data)
    return Row(name, f"{ratio:.1f}×", ratio, goal, "meets" if ratio >= 10 else "below", "", data)


def _first_number(data: dict[str, Any], keys: Sequence[str]) -> float | None:
    """The first of ``keys`` found at the top level or one level down, as a float."""
    for key in keys:
        if isinstance(data.get(key), int | float):
            return float(data[key])
    for value in data.values():
        if isinstance(value, dict):
            found = _first_number(value, keys)
            if found is not None:
                return found
    return None


def mlflow_row(quick: bool, workdir: Path) -> Row:
    args = ["--threads", str(os.cpu_count() or 1)] + (
        ["--batches", "4", "--epochs", "2", "--repeats", "1"] if quick else []
    )
    data, output, code = run_script("mlflow_overhead.py", args, workdir)
    name, goal = "MLflow logging overhead on a fit (wall time)", "≤ 3 %"
    if data is None:
        return _failed(name, goal, output, code)
    overhead = float(data["overhead"])
    plain, tracked = sorted(data["seconds_without_logger"]), sorted(data["seconds_with_mlflow"])
    return Row(
        name,
        f"{overhead:+.1%}",
        1.0 + overhead,
        goal,
        "meets" if overhead <= data["goal"] else "below",
        f"median {tracked[len(tracked) // 2]:.2f}s with MLflow vs {plain[len(plain) // 2]:.2f}s without "
        f"({len(plain)} pairs); ratio column = with / without",
        data,
    )


def gpu_row(quick: bool, workdir: Path, cuda: bool) -> Row:
    name, goal = "ResNet-50 2D training, bf16-mixed + channels_last, 224 px, in-memory (1 GPU)", "≥ 3,000 images/s"
    if not cuda:
        return Row(name, "", None, goal, "skipped", "no CUDA device on this machine")
    args = [
        "--device",
        "cuda",
        "--backbone",
        "resnet50",
        "--size",
        "224",
        "--batch",
        "256",
        "--precision",
        "bf16-mixed",
        "--channels-last",
        "--loss-tolerance",
        "0.05",
    ]
    args += ["--batches", "6", "--epochs", "2", "--repeats", "1"] if quick else ["--batches", "30", "--epochs", "3"]
    data, output, code = run_script("lightning_vs_loop.py", args, workdir)
    if data is None:
        return _failed(name, goal, output, code)
    images_per_s = float(data["lightning_images_per_s"])
    gpu = data["hardware"].get("gpu", "?")
    return Row(
        name,
        f"{images_per_s:,.0f} images/s",
        images_per_s / 3000.0,
        goal,
        "meets" if images_per_s >= 3000 else "below",
        f"{gpu}; hand-written loop {data['loop_images_per_s']:,.0f} images/s; ratio column = measured / goal",
        data,
    )


def hardware() -> dict[str, Any]:
    """Machine, CPU count and, where present, the GPU the rows were measured on."""
    import torch

    info: dict[str, Any] = {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    return info


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def markdown(rows: list[Row], info: dict[str, Any]) -> str:
    """The table, with the hardware line under it."""
    lines = [
        "| benchmark | measured | ratio | goal | verdict | notes |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.3f}"
        lines.append(f"| {row.benchmark} | {row.measured} | {ratio} | {row.goal} | {row.verdict} | {row.notes} |")
    gpu = f", GPU {info['gpu']} (CUDA {info['cuda']})" if info.get("gpu") else ", no GPU"
    lines.append("")
    lines.append(f"Measured on {info['cpu']} ({info['cpus']} CPUs){gpu}; torch {info['torch']}.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--markdown", type=Path, help="also write the table here (it is always printed)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the suite")
    args = parser.parse_args(argv)
    info = hardware()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows = [
            lightning_row(args.quick, workdir),
            cache_row(args.quick, workdir),
            mlflow_row(args.quick, workdir),
            gpu_row(args.quick, workdir, bool(info["cuda_available"])),
        ]
    table = markdown(rows, info)
    print()
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"hardware": info, "quick": args.quick, "rows": [asdict(r) for r in rows]}, indent=2)
    )
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 1 if any(row.verdict == "failed" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
