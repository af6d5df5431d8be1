"""Training order and augmentation as functions of (seed, epoch, sample) only, so a resumed fit replays exactly.

Lightning restores weights, optimizer, scheduler and loop counters from a checkpoint, but no random stream: not
torch's, not a DataLoader worker's, not MONAI's transform state (``monai.data.DataLoader`` seeds the transforms
once, when the loader is built). A fit killed after epoch k and resumed would therefore shuffle and augment epochs
k+1.. differently from the uninterrupted fit. Here nothing depends on a stream that lives across epochs:

- :class:`EpochSampler` draws epoch e's order from a generator seeded with (seed, e); Lightning calls its
  ``set_epoch`` before every epoch, and under DDP wraps it in ``DistributedSamplerWrapper`` (which forwards
  ``set_epoch`` and shards the same order across ranks).
- The sampler yields ``(epoch, index)`` keys; :class:`EpochSeededDataset` seeds the MONAI transforms with
  (seed, epoch, index) before loading sample ``index``, in whichever worker process loads it. Worker count and
  worker restarts no longer change the augmentation.
- :func:`seed_epoch` reseeds torch's global generator (dropout, stochastic depth) at each epoch start.

Balanced sampling for multi-label data (:func:`balanced_weights`): each sample is weighted by the inverse frequency
of its rarest positive finding; samples with no positive finding by the inverse frequency of such samples. Each
"rarest finding" group and the no-positive group then have about the same expected share of every epoch.
Draws are with replacement, as many per epoch as the split has samples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

# Lightning's seed_everything exports the seed here, for every process of a DDP job.
GLOBAL_SEED_ENV = "PL_GLOBAL_SEED"


def mix_seed(*parts: int) -> int:
    """A well-mixed 32-bit seed from integers (numpy's ``SeedSequence`` hashing, not Python's salted ``hash``).

    Neighbouring inputs give unrelated seeds, so epoch 3 of seed 0 does not replay epoch 0 of seed 3.
    """
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, dtype=np.uint32)[0])


def global_seed(default: int = 0) -> int:
    """The run's seed as ``seed_everything`` set it (``PL_GLOBAL_SEED``), else ``default``."""
    value = os.environ.get(GLOBAL_SEED_ENV)
    return int(value) if value else default


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Reseed torch's global generator (CPU and CUDA) from (seed, epoch, rank) at the start of a training epoch.

    The rank keeps dropout masks different across DDP ranks, as independent replicas' would be.
    """
    torch.manual_seed(mix_seed(seed, epoch, rank))


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Sampling weights (summing to 1) that level the findings of a multi-label split.

    Args:
        labels: (N, F) labels: 1 positive, 0 negative, NaN unknown, -1 uncertain. Only 1 counts as positive.

    Returns:
        (N,) weights: a sample with positives gets 1 / (number of samples positive for its rarest positive finding);
        a sample with none gets 1 / (number of samples with no positive finding). Normalised to sum 1.

    Raises:
        ValueError: If ``labels`` is not two-dimensional or has no rows.
    """
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2 or len(labels) == 0:
        raise ValueError(f"balanced sampling needs (samples, findings) labels, got shape {labels.shape}")
    positive = labels == 1
    per_finding = positive.sum(axis=0)  # (F,) samples positive for each finding
    # The rarest positive finding has the largest 1/count; findings a sample lacks contribute 0.
    inverse = np.where(positive, 1.0 / np.maximum(per_finding, 1), 0.0).max(axis=1)  # (N,)
    none = ~positive.any(axis=1)
    if none.any():
        inverse[none] = 1.0 / none.sum()
    return inverse / inverse.sum()


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` keys in an order that depends only on (seed, epoch).

    Args:
        num_samples: Size of the dataset.
        seed: The run's seed.
        shuffle: A fresh permutation per epoch; False keeps dataset order (and still yields epoch keys).
        weights: Optional (N,) sampling weights (see :func:`balanced_weights`): draws with replacement.
        draws: Keys per epoch with ``weights``; default ``num_samples``.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        shuffle: bool = True,
        weights: Sequence[float] | np.ndarray | None = None,
        draws: int | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"EpochSampler needs at least one sample, got {num_samples}")
        if weights is not None and len(weights) != num_samples:
            raise ValueError(f"EpochSampler got {len(weights)} weights for {num_samples} samples")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        self.draws = draws if draws is not None else num_samples
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields (Lightning calls it before every epoch)."""
        self.epoch = epoch

    def order(self) -> list[int]:
        """The sample indices of the current epoch, in order."""
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        if self.weights is not None:
            return torch.multinomial(self.weights, self.draws, replacement=True, generator=generator).tolist()
        if self.shuffle:
            return torch.randperm(self.num_samples, generator=generator).tolist()
        return list(range(self.num_samples))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """``(epoch, index)`` for every index of :meth:`order`."""
        epoch = self.epoch
        return iter([(epoch, index) for index in self.order()])

    def __len__(self) -> int:
        """Keys per epoch."""
        return self.draws if self.weights is not None else self.num_samples


class EpochSeededDataset(Dataset[Any]):
    """Seeds a dataset's random transforms from (seed, epoch, index) before each ``(epoch, index)`` item.

    Plain integer keys (evaluation, a user's own sampler) pass through unseeded.

    Args:
        dataset: The wrapped dataset (a MONAI ``Dataset``, ``CacheDataset``, ...).
        transform: The transform ``dataset`` applies, the same object (a MONAI ``Compose``); its
            ``set_random_state`` reseeds every random transform inside it.
        seed: The run's seed.
    """

    def __init__(self, dataset: Any, transform: Any, seed: int) -> None:
        if not callable(getattr(transform, "set_random_state", None)):
            raise TypeError(
                f"EpochSeededDataset: the transform {type(transform).__name__} has no set_random_state; "
                "give the MONAI Compose the dataset applies"
            )
        self.dataset = dataset
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        """Samples in the wrapped dataset."""
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        """Sample ``index`` augmented with the stream of (seed, epoch, index); an int key loads it as is."""
        if isinstance(key, tuple):
            epoch, index = key
            self.transform.set_random_state(seed=mix_seed(self.seed, epoch, index))
            return self.dataset[index]
        return self.dataset[key]
