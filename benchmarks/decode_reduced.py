"""Decode only what the model sees: ``decode: reduced`` against ``full`` on a 2048² 12-bit JPEG 2000 archive (issue 19).

In one process, on the same machine, with the same trained model:

1. **codecs**: one 2048² lossless file decoded by pydicom (the ``full`` path), by imagecodecs/OpenJPEG at every
   ``reduce`` level with 1 and all threads, and by Pillow's OpenJPEG at ``reduce`` 0 and 2 (why imagecodecs,
   ``medres/dicom/reduced_decode.py``);
2. **model**: a small network trained on a synthetic chest X-ray set (uncompressed, 512 px, read through the
   ``full`` preprocessing at the model's input size), then packaged twice: ``decode: full`` and ``decode: reduced``
   (same weights);
3. **scoring** of a synthetic 2048² 12-bit lossless JPEG 2000 archive with labels, both ways, in turns: data side
   alone (decode s/image), forward alone (s/image), the bound ``1 / (decode + forward)`` (CPU) or
   ``1 / max(decode, forward)`` (GPU) as ``benchmarks/score_throughput.py`` computes it, and ``score_archive``
   files/s end to end;
4. **cache fill** (:class:`medres.data.cache.TensorCache.fill`, one worker per core) of the archive, both ways;
5. **fidelity**: largest and 99th-percentile |Δ probability| over every file and finding; macro AUROC of both with
   95 % percentile-bootstrap intervals (the same resamples for both, so the interval of the difference is paired)
   and each finding's AUROC interval from :func:`medres.evaluation.metrics.evaluate`; every file in exactly one of
   predictions or the ledger, both ways.

    .venv/bin/python benchmarks/decode_reduced.py [--files 80 --size 2048 --spatial 320 --train 320 --epochs 6]
        [--backbone resnet10 --width 8] [--workers N] [--repeats 1] [--device cpu|cuda]

Ends with one line ``reduced/full scoring 4.8x, cache fill 5.1x, p99 |dprob| 0.006, dAUROC 0.001`` and exits 1 when
an acceptance goal of issue 19 is missed (scoring and cache fill ≥ 4×, p99 |Δp| ≤ 0.02, |ΔAUROC| ≤ 0.005).
Measured with the defaults on the shared 2-core VM (load average about 17 from other jobs, so every time is about 3×
an idle machine's and the run took 32 min instead of about 10), one run: full decode 1014 ms/image, forward 43 ms,
bound 0.95 files/s, pipeline 0.80 files/s; reduced decode 134 ms/image (reduce=2, 512²), bound 5.67, pipeline
9.09 files/s; cache fill 74.1 s vs 6.7 s; |Δp| max 0.014, p99 0.008; macro AUROC 0.7635 [0.716, 0.810] full,
0.7630 [0.716, 0.810] reduced, difference −0.0005 [−0.0054, +0.0042]; 80 predictions + 1 ledger row both ways →
``reduced/full scoring 11.3x, cache fill 11.0x, p99 |dprob| 0.008, dAUROC 0.000``. (A pipeline above its bound
means the load changed between the measurements; the ratio of pipelines is the side-by-side number.)
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid
from sklearn.metrics import roc_auc_score

from medres.data.cache import TensorCache
from medres.data.transforms import IMAGE_KEY, Preprocessing, eval_transforms
from medres.dicom.reduced_decode import j2k_codestream_info
from medres.evaluation.metrics import evaluate
from medres.package import CHECKPOINT_KEY, ModelPackage, probability_column
from medres.synthetic import render_chest_xray
from medres.tasks.detection import MultiLabelDetection

sys.path.insert(0, str(Path(__file__).resolve().parent))
import score_throughput as bounds

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]
PREVALENCE = 0.35
GOALS = {"scoring": 4.0, "cache": 4.0, "p99": 0.02, "dauroc": 0.005}


# ---------------------------------------------------------------------------------------------- archives


def _dataset(stored: np.ndarray, bits: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined, ds.PatientID = "DX", "PA", "CHEST", "BENCH"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.ImagerPixelSpacing = [0.139, 0.139]
    ds.PixelData = stored.astype("<u2").tobytes()
    return ds


def _write_one(job: tuple[Path, int, int, bool, dict[str, bool]]) -> None:
    """Render one radiograph (12-bit, detector noise) and write it, JPEG 2000 lossless or uncompressed."""
    path, seed, size, j2k, findings = job
    image = render_chest_xray(findings, seed=seed, rows=size, cols=size)
    stored = np.clip(np.round((0.05 + 0.9 * image) * 4095), 0, 4095).astype(np.uint16)
    ds = _dataset(stored, 12)
    if j2k:
        ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_archive(root: Path, files: int, size: int, j2k: bool, seed: int, workers: int) -> pd.DataFrame:
    """``files`` labelled radiographs under ``root``; returns the labels by relative path.

    A folder that a previous ``--keep`` run completed with the same settings is reused as it is.
    """
    recipe = f"{files} {size} {j2k} {seed}"
    done, stamp = root.with_suffix(".labels.csv"), root.with_suffix(".recipe")  # beside the archive, not in it
    if done.is_file() and stamp.is_file() and stamp.read_text() == recipe:
        return pd.read_csv(done)
    rng = np.random.default_rng(seed)
    jobs, rows = [], []
    for i in range(files):
        findings = {f: bool(rng.random() < PREVALENCE) for f in FINDINGS}
        relative = f"f{i // 100:03d}/{i:05d}.dcm"
        jobs.append((root / relative, seed * 100_000 + i, size, j2k, findings))
        rows.append({"path": relative, **{f: float(v) for f, v in findings.items()}})
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_one, jobs))
    labels = pd.DataFrame(rows)
    labels.to_csv(done, index=False)
    stamp.write_text(recipe)
    return labels


# ------------------------------------------------------------------------------------------------ codecs


def codec_table(path: Path, repeats: int) -> list[str]:
    """Milliseconds per decode of one file by each candidate codec, best of ``repeats``."""
    from PIL import Image
    from pydicom.encaps import get_frame

    ds = pydicom.dcmread(path)
    frame = get_frame(ds.PixelData, 0, number_of_frames=1)
    info = j2k_codestream_info(frame)
    cores = os.cpu_count() or 1

    def best(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times) * 1e3

    def pillow(level: int) -> None:
        with Image.open(io.BytesIO(frame)) as image:
            image.reduce = level  # type: ignore[method-assign,assignment]  # Pillow's JPEG 2000 attribute
            image.load()

    lines = [f"codestream: {info.rows}×{info.columns}, {info.precision}-bit, {info.levels} decomposition levels"]
    lines.append(
        f"  pydicom pixel_array (the full path; gdcm first): {best(lambda: pydicom.dcmread(path).pixel_array):.0f} ms"
    )
    lines.append(
        "  Pillow/OpenJPEG "
        + ", ".join(
            f"reduce={r} ({-(-info.rows // 2**r)} px) {best(lambda r=r: pillow(r)):.0f} ms"
            for r in range(min(info.levels, 4) + 1)
        )
    )
    try:
        pillow(info.levels + 1)
    except OSError as err:
        lines.append(f"  Pillow reduce={info.levels + 1} (one more than the codestream's levels): OSError {err}")
    try:
        import imagecodecs  # not a medres dependency: measured only to show what OpenJPEG threads give a full decode
    except ImportError:
        lines.append("  imagecodecs not installed: OpenJPEG thread scaling not measured")
    else:
        one = best(lambda: imagecodecs.jpeg2k_decode(frame, numthreads=1))
        many = best(lambda: imagecodecs.jpeg2k_decode(frame, numthreads=cores))
        lines.append(
            f"  imagecodecs {imagecodecs.__version__} full (it has no reduce): {one:.0f} ms 1 thread, "
            f"{many:.0f} ms {cores} threads"
        )
    return lines


# ------------------------------------------------------------------------------------------------- model


def train_model(
    root: Path, labels: pd.DataFrame, preprocessing: Preprocessing, backbone: str, width: int, epochs: int
) -> Path:
    """Train on the ``full`` preprocessing's tensors with a plain loop (Lightning's would add only overhead here)."""
    torch.manual_seed(0)
    transform = eval_transforms(preprocessing)
    images = torch.stack([transform({IMAGE_KEY: str(root / p)})[IMAGE_KEY] for p in labels["path"]])
    targets = torch.tensor(labels[FINDINGS].to_numpy(), dtype=torch.float32)
    # A narrow network: the comparison is about the data side, and a CPU forward pass at 320² must not hide it.
    widths = [width * 2**i for i in range(4)]
    module = MultiLabelDetection(
        FINDINGS, preprocessing, backbone=backbone, backbone_args={"widths": widths, "stem_width": width}
    )
    optimiser = torch.optim.AdamW(module.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), 32):
            batch = order[start : start + 32]
            optimiser.zero_grad()
            loss = loss_fn(module(images[batch]), targets[batch])
            loss.backward()
            optimiser.step()
    module.eval()
    path = root.parent / "model-full.ckpt"
    torch.save({"state_dict": module.state_dict(), CHECKPOINT_KEY: module.to_package().contract()}, path)
    return path


def with_decode(checkpoint: Path, decode: str) -> Path:
    """The same weights, packaged with ``preprocessing.decode = decode``."""
    saved = torch.load(checkpoint, weights_only=False)
    saved[CHECKPOINT_KEY]["preprocessing"]["decode"] = decode
    path = checkpoint.with_name(f"model-{decode}.ckpt")
    torch.save(saved, path)
    return path


# ------------------------------------------------------------------------------------------------ fidelity


def macro_auroc_ci(
    labels: np.ndarray, full: np.ndarray, reduced: np.ndarray, resamples: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Macro AUROC (point, 2.5 %, 97.5 %) of both modes and of their difference, on the same resamples."""

    def macro(rows: np.ndarray, probs: np.ndarray) -> float:
        values = []
        for j in range(labels.shape[1]):
            y = labels[rows, j]
            if 0 < y.sum() < len(y):
                values.append(roc_auc_score(y, probs[rows, j]))
        return float(np.mean(values)) if values else float("nan")

    rng = np.random.default_rng(seed)
    everything = np.arange(len(labels))
    draws = [rng.integers(0, len(labels), len(labels)) for _ in range(resamples)]
    out = {}
    for name, fn in (
        ("full", lambda r: macro(r, full)),
        ("reduced", lambda r: macro(r, reduced)),
        ("difference", lambda r: macro(r, reduced) - macro(r, full)),
    ):
        values = np.array([fn(r) for r in draws])
        values = values[~np.isnan(values)]
        out[name] = (fn(everything), float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))
    return out


def check_every_file_once(root: Path, output: Path) -> tuple[int, int]:
    """Predictions and ledger split the archive's files with no overlap; returns their counts."""
    predictions = pd.read_parquet(output)
    ledger_path = output.with_suffix(".errors.parquet")
    ledger = pd.read_parquet(ledger_path) if ledger_path.exists() else pd.DataFrame({"path": []})
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert set(predictions["path"]).isdisjoint(ledger["path"]), "a file is in both predictions and ledger"
    assert set(predictions["path"]) | set(ledger["path"]) == files, "a file is in neither predictions nor ledger"
    assert len(predictions) + len(ledger) == len(files), "a file is listed twice"
    return len(predictions), len(ledger)


# --------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=80, help="JPEG 2000 files scored (default 80)")
    parser.add_argument("--size", type=int, default=2048, help="rows = columns of the archive (default 2048)")
    parser.add_argument("--spatial", type=int, default=320, help="the model's input size (default 320)")
    parser.add_argument("--train", type=int, default=320, help="training images, 512 px uncompressed (default 320)")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    parser.add_argument("--backbone", default="resnet10", help="registered backbone (default resnet10)")
    parser.add_argument("--width", type=int, default=8, help="first stage width; stages double it (default 8)")
    parser.add_argument("--batch", type=int, default=16, help="images per forward pass (default 16)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding workers (all cores)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each, in turns (median; default 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--keep", type=Path, help="write the scratch folder here instead of a temporary one")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medres-decode-reduced-") as tmp:
        scratch = args.keep or Path(tmp)
        scratch.mkdir(parents=True, exist_ok=True)
        print(
            f"{args.files} files of {args.size}² px 12-bit JPEG 2000 lossless, {args.backbone} (width {args.width}) at "
            f"{args.spatial}², "
            f"batch {args.batch}, {args.workers} worker(s), {torch.get_num_threads()} thread(s), device {args.device}"
        )
        archive = scratch / "archive"
        labels = write_archive(archive, args.files, args.size, j2k=True, seed=1, workers=args.workers)
        # One damaged file: it must land in the ledger, once, in both modes (the archive's files are then N + 1).
        whole = (archive / labels["path"][0]).read_bytes()
        (archive / "truncated.dcm").write_bytes(whole[: len(whole) // 2])
        print(f"[{time.perf_counter() - started:.0f}s] archive written")
        for line in codec_table(archive / labels["path"][0], repeats=3):
            print(line)

        train_root = scratch / "train"
        train_labels = write_archive(train_root, args.train, 512, j2k=False, seed=2, workers=args.workers)
        preprocessing = Preprocessing(spatial_size=(args.spatial, args.spatial))
        model_full = train_model(train_root, train_labels, preprocessing, args.backbone, args.width, args.epochs)
        models = {"full": model_full, "reduced": with_decode(model_full, "reduced")}
        print(f"[{time.perf_counter() - started:.0f}s] model trained (decode: full) on {args.train} images")

        runs: dict[str, dict[str, list[float]]] = {
            m: {"decode": [], "forward": [], "pipeline": [], "cache": []} for m in models
        }
        outputs = {m: scratch / f"{m}.parquet" for m in models}
        paths = [str(archive / p) for p in labels["path"]]
        for repeat in range(args.repeats):
            for mode, model in models.items():  # in turns, so that load from other jobs hits each alike
                package = ModelPackage.from_checkpoint(model)
                assert package.preprocessing.decode == mode
                run = runs[mode]
                run["decode"].append(
                    bounds.time_decode(archive, package, scratch, args.files, args.workers, args.batch)
                )
                run["forward"].append(bounds.time_forward(archive, package, scratch, args.device, args.batch, 3))
                run["pipeline"].append(
                    bounds.time_pipeline(
                        archive, model, outputs[mode], args.files, args.workers, args.batch, args.device
                    )
                )
                cache = TensorCache(scratch / f"cache-{mode}-{repeat}", package.preprocessing)
                t0 = time.perf_counter()
                cache.fill(paths, num_workers=args.workers)
                run["cache"].append(time.perf_counter() - t0)
                print(f"[{time.perf_counter() - started:.0f}s] {mode} measured (run {repeat + 1}/{args.repeats})")

        medians = {m: {k: statistics.median(v) for k, v in r.items()} for m, r in runs.items()}
        for mode, m in medians.items():
            bound = 1 / max(m["decode"], m["forward"]) if args.device == "cuda" else 1 / (m["decode"] + m["forward"])
            predicted, ledgered = check_every_file_once(archive, outputs[mode])
            print(
                f"{mode:>8}: decode {m['decode'] * 1e3:.1f} ms/image, forward {m['forward'] * 1e3:.1f} ms/image, "
                f"bound {bound:.2f} files/s, pipeline {m['pipeline']:.2f} files/s ({m['pipeline'] / bound:.2f} of the "
                f"bound); cache fill {m['cache']:.1f} s ({args.files / m['cache']:.2f} files/s); "
                f"{predicted} predictions + {ledgered} ledger row(s) = {predicted + ledgered} files"
            )
        scoring = medians["reduced"]["pipeline"] / medians["full"]["pipeline"]
        cache_ratio = medians["full"]["cache"] / medians["reduced"]["cache"]

        frames = {m: pd.read_parquet(outputs[m]).set_index("path").loc[labels["path"]] for m in models}
        columns = [probability_column(f) for f in FINDINGS]
        full, reduced = (frames[m][columns].to_numpy(dtype=np.float64) for m in ("full", "reduced"))
        dprob = np.abs(reduced - full).ravel()
        truth = labels[FINDINGS].to_numpy()
        aurocs = macro_auroc_ci(truth, full, reduced)
        print(
            f"|Δ probability| over {dprob.size} (file, finding) pairs: max {dprob.max():.4f}, "
            f"p99 {np.percentile(dprob, 99):.4f}, median {np.median(dprob):.5f}"
        )
        for mode, probs in (("full", full), ("reduced", reduced)):
            report = evaluate(probs, truth, FINDINGS, [0.5] * len(FINDINGS), resamples=1000)
            point, low, high = aurocs[mode]
            per = ", ".join(
                f"{m.finding} {m.auroc:.3f} [{m.auroc_ci[0]:.3f}, {m.auroc_ci[1]:.3f}]" for m in report.findings
            )
            print(f"{mode:>8}: macro AUROC {point:.4f} [{low:.4f}, {high:.4f}]; {per}")
        point, low, high = aurocs["difference"]
        print(f"reduced − full macro AUROC {point:+.4f} [{low:+.4f}, {high:+.4f}] (paired bootstrap, 1000 resamples)")
        p99 = float(np.percentile(dprob, 99))
        dauroc = abs(point)
        print(f"[{time.perf_counter() - started:.0f}s] done")
        failed = (
            scoring < GOALS["scoring"] or cache_ratio < GOALS["cache"] or p99 > GOALS["p99"] or dauroc > GOALS["dauroc"]
        )
        print(
            f"reduced/full scoring {scoring:.1f}x, cache fill {cache_ratio:.1f}x, p99 |dprob| {p99:.3f}, "
            f"dAUROC {dauroc:.3f}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
