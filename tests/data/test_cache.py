"""The on-disk tensor cache: content + preprocessing keys, atomic entries, damaged ones rebuilt, augmentation after."""

from __future__ import annotations

import logging
import multiprocessing
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from monai.data import Dataset

from medres.data.cache import WRITES_LOG, CachedDataset, TensorCache
from medres.data.datamodule import DicomDataModule
from medres.data.transforms import IMAGE_KEY, Augmentation2D, Preprocessing, eval_transforms, train_transforms

from ..conftest import dicom_files

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]
PRE = Preprocessing(spatial_size=(32, 32))


def make_dm(root: Path, tmp_path: Path, **kwargs: object) -> DicomDataModule:
    settings: dict = {
        "findings": FINDINGS,
        "work_dir": tmp_path / "work",
        "preprocessing": PRE,
        "augmentation": Augmentation2D(probability=1.0),
        "batch_size": 4,
        "num_workers": 0,
        "cache": "disk",
        "cache_dir": tmp_path / "cache",
        **kwargs,
    }
    return DicomDataModule(root, **settings)


def all_samples(dm: DicomDataModule) -> list[dict]:
    return [s for split in ("train", "val", "test") for s in dm.samples[split]]


def test_prepare_data_fills_once_then_every_load_is_a_hit(tiny_archive, tmp_path, caplog):
    dm = make_dm(tiny_archive, tmp_path)
    with caplog.at_level(logging.INFO, logger="medres.data.cache"):
        dm.prepare_data()
    dm.setup("fit")
    samples = all_samples(dm)
    cache = TensorCache(tmp_path / "cache", PRE)
    counts = cache.write_counts()
    assert len(counts) == len(samples) == len(cache.entries())
    assert set(counts.values()) == {1}
    # The size estimate came first and names the sample count.
    assert any(f"{len(samples)} samples ×" in r.getMessage() and "free" in r.getMessage() for r in caplog.records)

    dm.prepare_data()  # a second fit decodes nothing
    assert cache.write_counts() == counts
    loaders = [dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()]
    seen = sum(len(batch[IMAGE_KEY]) for loader in loaders for batch in loader)
    # The training loader's dataset wraps the cached one to seed augmentation per (epoch, index).
    caches = [getattr(loader.dataset, "dataset", loader.dataset).cache for loader in loaders]
    assert sum(c.stats.hits for c in caches) == seen >= len(samples) - dm.batch_size  # train drops its last batch
    assert sum(c.stats.writes for c in caches) == 0
    assert cache.write_counts() == counts


def test_cached_tensors_equal_uncached_ones_exactly(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    samples = dm.samples["val"] + dm.samples["test"]
    cache = TensorCache(tmp_path / "cache", PRE)
    cached = CachedDataset(samples, eval_transforms(PRE), cache)
    plain = Dataset(samples, eval_transforms(PRE))
    for i in range(len(samples)):
        a, b = cached[i], plain[i]
        assert a[IMAGE_KEY].shape == (1, 32, 32)
        assert torch.equal(a[IMAGE_KEY], b[IMAGE_KEY])
        assert np.array_equal(a["label"], b["label"], equal_nan=True)
        assert a["path"] == b["path"]
    assert cache.stats.hits == len(samples) and cache.stats.writes == 0


def test_augmentation_still_varies_per_epoch_on_cached_tensors(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    dataset = dm.train_dataloader().dataset
    epoch0, epoch1 = dataset[(0, 0)][IMAGE_KEY], dataset[(1, 0)][IMAGE_KEY]
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(dataset[(0, 0)][IMAGE_KEY], epoch0)  # same (epoch, index), same augmentation
    inner = dataset.dataset
    assert inner.cache.stats.hits == 3 and inner.cache.stats.writes == 0
    unaugmented = inner.cache.get(dm.samples["train"][0][IMAGE_KEY])
    assert not torch.equal(epoch0, unaugmented)


def test_changed_preprocessing_uses_other_entries_never_stale_ones(tiny_archive, tmp_path):
    path = str(dicom_files(tiny_archive)[0])
    small = TensorCache(tmp_path / "cache", PRE)
    large = TensorCache(tmp_path / "cache", Preprocessing(spatial_size=(48, 48)))
    window = TensorCache(tmp_path / "cache", Preprocessing(spatial_size=(32, 32), upper_percentile=99.0))
    assert len({small.key(path), large.key(path), window.key(path)}) == 3
    assert small.get(path).shape == (1, 32, 32)
    assert large.get(path).shape == (1, 48, 48)
    assert not torch.equal(window.get(path), small.get(path))
    assert small.stats.hits == 1 and len(small.entries()) == 3


def test_changed_file_content_gives_a_new_entry(archive_copy, tmp_path):
    path = dicom_files(archive_copy)[0]
    cache = TensorCache(tmp_path / "cache", PRE)
    before_key, before = cache.key(str(path)), cache.get(str(path))
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    ds.PixelData = np.ascontiguousarray(pixels[::-1]).tobytes()  # same size, other content
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(path)
    after_key = cache.key(str(path))
    assert after_key != before_key
    after = cache.get(str(path))
    assert not torch.equal(after, before) and torch.equal(after, cache.decode(str(path)))
    assert cache.stats.writes == 2 and len(cache.entries()) == 2


def test_series_key_covers_every_file_in_any_order(archive_copy, tmp_path):
    files = [str(p) for p in dicom_files(archive_copy)[:3]]
    cache = TensorCache(tmp_path / "cache", PRE)
    key = cache.key(files)
    assert cache.key(files[::-1]) == key
    Path(files[2]).write_bytes(Path(files[2]).read_bytes() + b"\0\0")  # one slice changes
    assert cache.key(files) != key


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_entry_is_rebuilt_not_served(tiny_archive, tmp_path, damage, caplog):
    path = str(dicom_files(tiny_archive)[0])
    cache = TensorCache(tmp_path / "cache", PRE)
    original = cache.get(path)
    entry = cache.entry_path(cache.key(path))
    data = bytearray(entry.read_bytes())
    if damage == "truncate":
        entry.write_bytes(data[: len(data) // 2])
    else:
        data[-10] ^= 0xFF  # inside the image bytes: only the checksum can tell
        entry.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="medres.data.cache"):
        again = cache.get(path)
    assert torch.equal(again, original)
    assert cache.stats.rebuilt == 1 and cache.stats.writes == 2
    assert "damaged" in caplog.text and path not in caplog.text
    assert torch.equal(cache.load(cache.key(path)), original)  # the rebuilt entry is whole


def _fill(directory: str, images: list[str], start: Any) -> None:
    cache = TensorCache(Path(directory), PRE)
    start.wait()  # both processes hash, then decode and write the same entries at the same time
    cache.fill(images, num_workers=0)


def test_two_processes_filling_one_cache_leave_whole_entries(tiny_archive, tmp_path):
    images = [str(p) for p in dicom_files(tiny_archive)]
    context = multiprocessing.get_context("fork")  # spawn would need the tests package importable
    start = context.Barrier(2)
    processes = [context.Process(target=_fill, args=(str(tmp_path / "cache"), images, start)) for _ in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    cache = TensorCache(tmp_path / "cache", PRE)
    assert len(cache.entries()) == len(images)
    assert not list((tmp_path / "cache").glob("??/.tmp-*"))
    for image in images:
        assert torch.equal(cache.load(cache.key(image)), cache.decode(image))
    counts = cache.write_counts()
    assert set(counts) == {cache.key(i) for i in images} and max(counts.values()) <= 2
    assert (tmp_path / "cache" / WRITES_LOG).read_text().count("\n") == sum(counts.values())


def test_fill_estimate_and_cache_settings(tiny_archive, tmp_path):
    images = [str(p) for p in dicom_files(tiny_archive)]
    cache = TensorCache(tmp_path / "cache", PRE)
    estimate = cache.fill(images)
    entry_size = cache.entries()[0].stat().st_size
    assert (estimate.samples, estimate.missing, estimate.bytes_per_entry) == (len(images), len(images), entry_size)
    assert estimate.total_bytes == len(images) * entry_size and estimate.free_bytes > 0
    again = cache.fill(images)
    assert again.missing == 0 and again.needed_bytes == 0

    assert make_dm(tiny_archive, tmp_path, cache=True).cache == "memory"  # older configs still load
    assert make_dm(tiny_archive, tmp_path, cache=False).cache == "none"
    assert make_dm(tiny_archive, tmp_path, cache_dir=None).cache_dir == tmp_path / "work" / "tensor_cache"
    clone = pickle.loads(pickle.dumps(cache))  # spawned loader workers receive the cache pickled
    assert clone.get(images[0]).shape == (1, 32, 32) and clone.stats.hits == 1
    with pytest.raises(ValueError, match="data.cache='ram'"):
        make_dm(tiny_archive, tmp_path, cache="ram")
    with pytest.raises(ValueError, match="load_and_normalise"):
        CachedDataset([], train_transforms(Preprocessing(spatial_dims=3, spatial_size=(16, 16, 16)), None), cache)
