"""Decode once: training data-loading speed from the disk tensor cache against decoding JPEG 2000 every epoch.

Writes a synthetic chest X-ray archive (``medres.synthetic.synth_chest_xray``) and re-encodes
every image as JPEG 2000 lossless (the archive otherwise mixes uncompressed, RLE and J2K), then
iterates the training DataLoader of ``DicomDataModule`` (no model: data loading alone, with the
training augmentation, ``--workers`` worker processes) for:

- ``decode``: ``data.cache=none``, one epoch: every image decoded and preprocessed (the baseline);
- ``epoch 1``: ``data.cache=disk`` with an empty cache: decoded, then written to the cache;
- ``epoch 2``: the same loader again: every tensor read from the cache.

The archive's files are read once before timing so that both epochs find them in the page cache
(this measures decoding and preprocessing, not the disk). Prints seconds and samples/s per pass and
the speed-ups epoch 1 / epoch 2 and decode / epoch 2 against the 10× goal; exits 0 either way.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cache_speedup.py --patients 60 --image-size 1024 --workers 2

Measured with that command on 2 CPU cores shared with other work (176 samples per pass, 224 px, augmentation on):
decode 30.1 s, epoch 1 43.0 s, epoch 2 0.41 s: 106× epoch 1 / epoch 2, 74× decode / epoch 2; a second run
45.9 / 47.7 / 0.17 s (275×, 264×). Per sample in one process: 234 ms to decode and preprocess a 1024² JPEG 2000
image, 1.2 ms to hash its file (the key), 0.2 ms to read its entry back.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import JPEG2000Lossless
from torch.utils.data import DataLoader

from medres.data.datamodule import DicomDataModule
from medres.data.transforms import Augmentation2D, Preprocessing
from medres.synthetic import CHEST_XRAY_FINDINGS, synth_chest_xray

GOAL = 10.0


def write_j2k_archive(root: Path, patients: int, image_size: int) -> int:
    """A synthetic chest X-ray archive whose every image is JPEG 2000 lossless; returns the file count."""
    synth_chest_xray(root, patients=patients, seed=0, image_size=image_size)
    files = sorted(root.rglob("*.dcm"))
    for path in files:
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID != JPEG2000Lossless:
            # Same encoder call as synthetic.py's J2K branch, so files look like the archive's own J2K ones.
            ds.compress(JPEG2000Lossless, ds.pixel_array, encoding_plugin="pylibjpeg", generate_instance_uid=False)
            ds.save_as(path)
    return len(files)


def time_epoch(loader: DataLoader) -> tuple[float, int]:
    """(seconds, samples) of one pass over ``loader``."""
    started, samples = time.perf_counter(), 0
    for batch in loader:
        samples += len(batch["image"])
    return time.perf_counter() - started, samples


def main() -> None:
    """Write the archive, time a decoding epoch and the cache's cold and warm epochs, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=60, help="synthetic patients (about 1.5 images each)")
    parser.add_argument("--image-size", type=int, default=1024, help="stored image size in pixels")
    parser.add_argument("--size", type=int, default=224, help="network input size (preprocessing.spatial_size)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--batch", type=int, default=16, help="batch size")
    parser.add_argument("--no-augment", action="store_true", help="time loading without the training augmentation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        started = time.perf_counter()
        files = write_j2k_archive(root, args.patients, args.image_size)
        print(f"wrote {files} JPEG 2000 files of ~{args.image_size}² in {time.perf_counter() - started:.0f}s")
        for path in root.rglob("*.dcm"):  # page cache warm for every pass
            path.read_bytes()

        def module(cache: str) -> DicomDataModule:
            return DicomDataModule(
                root,
                list(CHEST_XRAY_FINDINGS),
                work_dir=Path(tmp) / "work",
                split_fractions=(1.0, 0.0, 0.0),  # every patient in train: the pass covers the whole archive
                preprocessing=Preprocessing(spatial_size=(args.size, args.size)),
                augmentation=None if args.no_augment else Augmentation2D(),
                cache=cache,  # type: ignore[arg-type]
                cache_dir=Path(tmp) / "cache",
                batch_size=args.batch,
                num_workers=args.workers,
            )

        plain = module("none")
        plain.prepare_data()  # index and split only: no disk cache for this module
        plain.setup("fit")
        decode, n = time_epoch(plain.train_dataloader())
        cached = module("disk")
        cached.setup("fit")  # no prepare_data: epoch 1 fills the cache itself, through the loader
        loader = cached.train_dataloader()
        cold, _ = time_epoch(loader)
        warm, _ = time_epoch(loader)
        entries = sorted((Path(tmp) / "cache").glob("??/*.safetensors"))
        size = sum(p.stat().st_size for p in entries)
        print(f"cache: {len(entries)} entries, {size / 2**20:.1f} MiB; {n} samples per pass, {args.workers} workers")
        for label, seconds in (("decode (cache=none)", decode), ("epoch 1 (cold cache)", cold), ("epoch 2", warm)):
            print(f"{label:<22s} {seconds:7.2f}s {n / seconds:8.1f} samples/s")
        for label, ratio in (("epoch 1 / epoch 2", cold / warm), ("decode / epoch 2", decode / warm)):
            verdict = "meets" if ratio >= GOAL else "below"
            print(f"speed-up {label:<18s} {ratio:6.1f}×  ({verdict} the {GOAL:.0f}× goal)")


if __name__ == "__main__":
    main()
