"""Training order and augmentation depend on (seed, epoch, sample) only; balanced weights level the findings."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandGaussianNoised

from medres.data.datamodule import DicomDataModule
from medres.data.sampling import EpochSampler, EpochSeededDataset, balanced_weights, mix_seed
from medres.data.transforms import Augmentation2D, Preprocessing

NAN = math.nan
FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]


def test_mix_seed_is_stable_and_separates_neighbours() -> None:
    assert mix_seed(0, 1) == mix_seed(0, 1)
    assert len({mix_seed(s, e) for s in range(5) for e in range(5)}) == 25
    assert mix_seed(0, 3) != mix_seed(3, 0)


def test_epoch_sampler_order_is_a_function_of_seed_and_epoch() -> None:
    sampler = EpochSampler(10, seed=7)
    sampler.set_epoch(2)
    epoch2 = list(sampler)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    fresh = EpochSampler(10, seed=7)  # a resumed process: a new sampler, straight to epoch 2
    fresh.set_epoch(2)
    assert list(fresh) == epoch2
    assert [e for e, _ in epoch2] == [2] * 10 and sorted(i for _, i in epoch2) == list(range(10))
    assert [i for _, i in epoch0] != [i for _, i in epoch2]
    other_seed = EpochSampler(10, seed=8)
    other_seed.set_epoch(2)
    assert list(other_seed) != epoch2
    assert [i for _, i in EpochSampler(4, seed=0, shuffle=False)] == [0, 1, 2, 3]


def test_epoch_sampler_checks_its_input() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        EpochSampler(0, seed=0)
    with pytest.raises(ValueError, match="3 weights for 4 samples"):
        EpochSampler(4, seed=0, weights=[1.0, 1.0, 1.0])


def test_balanced_weights_follow_the_rarest_positive_finding() -> None:
    labels = np.array(
        [
            [1, 0, 0],  # common finding only (3 positives) → 1/3
            [1, 0, 0],
            [1, 1, 0],  # rarest positive is finding 1 (2 positives) → 1/2
            [0, 1, NAN],  # → 1/2
            [0, 0, 0],  # no positive (2 such samples) → 1/2
            [-1, NAN, 0],  # uncertain is not positive → no positive → 1/2
        ],
        dtype=np.float32,
    )
    weights = balanced_weights(labels)
    raw = np.array([1 / 3, 1 / 3, 1 / 2, 1 / 2, 1 / 2, 1 / 2])
    np.testing.assert_allclose(weights, raw / raw.sum())
    assert weights.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        balanced_weights(np.zeros((0, 3)))


def test_balanced_sampler_draws_rare_findings_about_as_often_as_common_ones() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((1000, 2), dtype=np.float32)
    labels[:300, 0] = 1  # 30 % common finding
    labels[300:320, 1] = 1  # 2 % rare finding
    rng.shuffle(labels)
    sampler = EpochSampler(len(labels), seed=0, weights=balanced_weights(labels))
    drawn = labels[[i for _, i in sampler]]
    rare, common, none = drawn[:, 1].mean(), drawn[:, 0].mean(), (drawn.sum(axis=1) == 0).mean()
    assert len(drawn) == 1000
    # three groups of equal expected mass: 1/3 each, up to sampling noise (±4.5 sd of a binomial)
    for share in (rare, common, none):
        assert share == pytest.approx(1 / 3, abs=0.07)
    sampler.set_epoch(1)
    again = EpochSampler(len(labels), seed=0, weights=balanced_weights(labels))
    again.set_epoch(1)
    assert list(sampler) == list(again)


def noisy_dataset() -> tuple[Dataset, Compose]:
    transform = Compose([RandGaussianNoised(keys="x", prob=1.0, std=1.0)])
    samples = [{"x": np.zeros((1, 4), dtype=np.float32), "i": i} for i in range(6)]
    return Dataset(samples, transform=transform), transform


def test_epoch_seeded_dataset_augments_by_key_not_by_call_order() -> None:
    dataset, transform = noisy_dataset()
    seeded = EpochSeededDataset(dataset, transform, seed=3)
    first = seeded[(1, 4)]["x"]
    seeded[(0, 2)]  # other draws in between must not matter
    seeded[(5, 4)]
    assert np.array_equal(seeded[(1, 4)]["x"], first)
    assert not np.array_equal(seeded[(2, 4)]["x"], first)  # another epoch, another augmentation
    assert not np.array_equal(EpochSeededDataset(dataset, transform, seed=4)[(1, 4)]["x"], first)
    assert seeded[4]["i"] == 4 and len(seeded) == 6
    with pytest.raises(TypeError, match="set_random_state"):
        EpochSeededDataset(dataset, object(), seed=0)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_do_not_depend_on_worker_count(num_workers: int) -> None:
    dataset, transform = noisy_dataset()
    sampler = EpochSampler(6, seed=0)
    sampler.set_epoch(3)

    def batches(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(
            EpochSeededDataset(dataset, transform, 0), batch_size=2, sampler=sampler, num_workers=workers
        )
        return [batch["x"] for batch in loader]

    for got, expected in zip(batches(num_workers), batches(0), strict=True):
        torch.testing.assert_close(got, expected)


def test_datamodule_train_loader_replays_an_epoch_exactly(tiny_archive: Path, tmp_path: Path) -> None:
    def epoch_batches(epoch: int) -> list[tuple[list[int], torch.Tensor]]:
        module = DicomDataModule(
            tiny_archive,
            FINDINGS,
            work_dir=tmp_path / "work",
            preprocessing=Preprocessing(spatial_size=(32, 32)),
            augmentation=Augmentation2D(probability=1.0),
            batch_size=4,
            num_workers=0,
            sampler_seed=5,
        )
        module.prepare_data()
        module.setup("fit")
        loader = module.train_dataloader()
        loader.sampler.set_epoch(epoch)  # type: ignore[union-attr]
        return [(batch["sample_index"].tolist(), batch["image"]) for batch in loader]

    first, again, other = epoch_batches(1), epoch_batches(1), epoch_batches(2)
    assert [i for i, _ in first] == [i for i, _ in again]
    for (_, a), (_, b) in zip(first, again, strict=True):
        torch.testing.assert_close(a, b)
    assert [i for i, _ in first] != [i for i, _ in other]


def test_datamodule_balanced_sampler_oversamples_rare_findings(tiny_archive: Path, tmp_path: Path) -> None:
    module = DicomDataModule(
        tiny_archive,
        FINDINGS,
        work_dir=tmp_path / "work",
        preprocessing=Preprocessing(spatial_size=(32, 32)),
        batch_size=4,
        num_workers=0,
        balanced_sampler=True,
        sampler_seed=0,
    )
    module.prepare_data()
    module.setup("fit")
    sampler = module.train_dataloader().sampler
    assert isinstance(sampler, EpochSampler) and sampler.weights is not None
    labels = np.stack([s["label"] for s in module.samples["train"]])
    expected = balanced_weights(labels)
    np.testing.assert_allclose(sampler.weights.numpy(), expected)
    counts = Counter(i for epoch in range(200) for i in _epoch(sampler, epoch))
    # over 200 epochs every sample is drawn in proportion to its weight
    total = sum(counts.values())
    for index, weight in enumerate(expected):
        assert counts[index] / total == pytest.approx(weight, abs=0.02)


def _epoch(sampler: EpochSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return [i for _, i in sampler]
