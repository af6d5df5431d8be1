"""Decode once: a persistent on-disk cache of preprocessed tensors, shared by DDP ranks and runs.

An entry is the output of the deterministic head of the pipeline
(:func:`~medres.data.transforms.load_and_normalise`: read, resample, normalise, pad/crop) for one
sample, stored as ``<cache_dir>/<key[:2]>/<key>.safetensors``. The key is a SHA-256 over

- the content of the sample's file(s) (every file of a 3D series, order-independent), and
- the preprocessing namespace: :meth:`Preprocessing.to_dict` (its ``decode`` policy included), the head's
  transform classes, the cache format and the versions of medres, MONAI and pydicom, plus Pillow for
  ``decode="reduced"`` (a new decoder may give other pixels),

so a changed file or a changed transform never serves stale data; an orphaned entry is just unused.
Random augmentation and the network-input step run after the cache, on every access.

Why not ``monai.data.PersistentDataset``: it keys entries by the pickled data item (the path, the
labels and the sample index, not the file content), caches the whole item dict (labels included),
writes its temporary file in the system temp folder (``shutil.move`` across file systems is a copy,
not an atomic rename), stops on a truncated entry (only a bad magic number is rebuilt) and has no
up-front fill or size estimate. It keeps its ``torch.load(weights_only=True)`` safety idea: entries
here are safetensors files, which hold plain tensors and cannot execute code when read.

Safety under DDP: :meth:`TensorCache.fill` runs in ``prepare_data`` (local rank 0 only; the other
ranks wait at Lightning's barrier), so ranks find every entry written. Every write goes to a
temporary file in the entry's folder and is renamed over the entry (``os.replace``, atomic on POSIX),
so even concurrent writers leave a whole entry; a CRC-32 inside the entry catches a truncated or
damaged file, which is deleted and rebuilt rather than served. Each write appends the entry's key to
``writes.log`` (a record of duplicated work: a key listed twice was decoded twice).

Nothing patient-identifying enters the cache folder: entries and the log are named by hashes only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from stat import S_ISREG
from typing import Any

import safetensors.torch
import torch
from monai.data import Dataset
from monai.transforms import Compose
from safetensors import SafetensorError
from torch.utils.data import DataLoader
from tqdm import tqdm

import medres
from medres.data.transforms import IMAGE_KEY, Preprocessing, load_and_normalise
from medres.dicom import DicomErrorKind, DicomReadError

log = logging.getLogger(__name__)

# Bump when the entry layout or the key recipe changes: old entries then simply stop matching.
CACHE_FORMAT = 1
WRITES_LOG = "writes.log"
ENTRY_SUFFIX = ".safetensors"
_TEMP_PREFIX = ".tmp-"
_STALE_TEMP_S = 24 * 3600  # a temporary file this old belongs to a writer that died
# Ledger kind of an image that decoded but failed in the preprocessing head (as medres score's ledger names it).
PREPROCESSING_ERROR = "preprocessing_error"


class CacheSpaceError(RuntimeError):
    """The cache would not fit on its disk."""


@dataclass(frozen=True)
class CacheEstimate:
    """What a fill will write, known before it writes (the first missing sample decoded to measure it).

    Args:
        samples: Distinct entries the samples need (duplicated files count once).
        missing: Entries not in the cache yet.
        bytes_per_entry: Size of one entry on disk (every entry has the same shape).
        free_bytes: Free space on the cache's disk before the fill.
        failed: Ledger rows (``path``, ``kind``, ``message``) of the images that could not be cached, one per
            image given (a file that cannot be hashed or decoded): the fill goes on without them (issue 21).
    """

    samples: int
    missing: int
    bytes_per_entry: int
    free_bytes: int
    failed: tuple[dict[str, str], ...] = ()

    @property
    def total_bytes(self) -> int:
        """The whole cache for these samples."""
        return self.samples * self.bytes_per_entry

    @property
    def needed_bytes(self) -> int:
        """What the fill still has to write."""
        return self.missing * self.bytes_per_entry

    def __str__(self) -> str:
        return (
            f"{self.samples} samples × {_size(self.bytes_per_entry)} ≈ {_size(self.total_bytes)}; "
            f"{self.missing} to write ({_size(self.needed_bytes)}), {_size(self.free_bytes)} free"
        )


@dataclass
class CacheStats:
    """This process's cache traffic (each DataLoader worker counts its own)."""

    hits: int = 0
    writes: int = 0  # decodes whose result was stored
    rebuilt: int = 0  # corrupt or truncated entries deleted and decoded again


class TensorCache:
    """Preprocessed tensors on disk, keyed by file content and the preprocessing.

    Args:
        directory: Cache folder (created); may be shared by archives and runs, since keys are content hashes.
        preprocessing: The preprocessing whose deterministic head the entries hold.
    """

    def __init__(self, directory: Path, preprocessing: Preprocessing) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"data.cache_dir={self.directory}: not a folder")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.head = Compose(load_and_normalise(preprocessing))
        self.namespace = preprocessing_digest(preprocessing, self.head.transforms)
        self.stats = CacheStats()
        # Per-process memo of file digests keyed by (path, size, mtime_ns, inode): a run hashes each file's
        # content once, not on every epoch; a rewritten file changes its mtime_ns and is hashed again.
        self._digests: dict[tuple[str, int, int, int], str] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for spawned DataLoader workers: the lock stays behind (each process makes its own)."""
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore in a worker process with a fresh lock."""
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ---- keys ----------------------------------------------------------------------------------
    def key(self, image: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> str:
        """The entry key of a sample's image: one file's path (2D) or a series' paths (3D, any order)."""
        paths = [image] if isinstance(image, str | os.PathLike) else list(image)
        if not paths:
            raise ValueError("a cache key needs at least one file")
        # Sorted: the series reader orders slices itself, so the file order must not change the key.
        contents = sorted(self._file_digest(Path(p)) for p in paths)
        return hashlib.sha256(json.dumps([self.namespace, contents]).encode()).hexdigest()

    def entry_path(self, key: str) -> Path:
        """Where the entry for ``key`` lives (two-character fan-out keeps folders small)."""
        return self.directory / key[:2] / f"{key}{ENTRY_SUFFIX}"

    # ---- entries -------------------------------------------------------------------------------
    def load(self, key: str) -> torch.Tensor | None:
        """The cached tensor, or ``None`` when absent; a damaged entry is deleted (and reported) and gives ``None``."""
        path = self.entry_path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return _decode_entry(data)
        except (SafetensorError, KeyError, ValueError) as err:
            log.warning("cache entry %s is damaged (%s); rebuilding it", path.name, err)
            path.unlink(missing_ok=True)
            self.stats.rebuilt += 1
            return None

    def store(self, key: str, tensor: torch.Tensor) -> int:
        """Write the entry atomically (temporary file in the same folder, then rename); returns its size in bytes."""
        path = self.entry_path(key)
        path.parent.mkdir(exist_ok=True)
        data = _encode_entry(tensor)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX, suffix=".part")
        try:
            # No fsync: the rename is atomic for every reader; after a power cut the CRC catches a lost write.
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        # One short O_APPEND write per line: lines of concurrent writers do not interleave.
        with open(self.directory / WRITES_LOG, "a", encoding="ascii") as journal:
            journal.write(f"{key}\n")
        self.stats.writes += 1
        return len(data)

    def get(self, image: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> torch.Tensor:
        """The preprocessed tensor of ``image``: from the cache, else decoded, stored and returned."""
        key = self.key(image)
        cached = self.load(key)
        if cached is not None:
            self.stats.hits += 1
            return cached
        tensor = self.decode(image)
        self.store(key, tensor)
        return tensor

    def decode(self, image: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> torch.Tensor:
        """Run the deterministic head on ``image``: a plain contiguous tensor, no MONAI metadata."""
        out = self.head({IMAGE_KEY: image})
        value = out[IMAGE_KEY]
        tensor = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
        return tensor.detach().contiguous()

    def write_counts(self) -> Counter[str]:
        """How many times each key was written, from ``writes.log`` (more than once: duplicated work)."""
        journal = self.directory / WRITES_LOG
        if not journal.is_file():
            return Counter()
        return Counter(line for line in journal.read_text(encoding="ascii").splitlines() if line)

    def entries(self) -> list[Path]:
        """Every entry file in the cache (of any preprocessing)."""
        return sorted(self.directory.glob(f"??/*{ENTRY_SUFFIX}"))

    # ---- filling -------------------------------------------------------------------------------
    def fill(self, images: Sequence[Any], num_workers: int = 0, progress: bool = False) -> CacheEstimate:
        """Write every missing entry for ``images`` (each a path or a series' paths) before training.

        Hashes the files (threads), decodes one missing sample to measure an entry, logs the size
        estimate, refuses when it would not fit on the disk, then decodes the rest with
        ``num_workers`` processes.

        Raises:
            CacheSpaceError: If the missing entries need more than the free space of the cache's disk.
        """
        self._remove_stale_temporaries()
        with ThreadPoolExecutor(max_workers=max(2, num_workers)) as pool:  # hashing is I/O and releases the GIL
            keyed = list(pool.map(self._key_or_failure, images))
        failed = [row for row in keyed if isinstance(row, dict)]
        by_key: dict[str, list[Any]] = {}
        for key, image in zip(keyed, images, strict=True):
            if isinstance(key, str):
                by_key.setdefault(key, []).append(image)
        unique = {key: same[0] for key, same in by_key.items()}
        missing = [(k, img) for k, img in unique.items() if not self.entry_path(k).is_file()]
        free = shutil.disk_usage(self.directory).free
        # The first missing sample that decodes measures an entry; those before it failed.
        tensor: torch.Tensor | None = None
        while missing and tensor is None:
            first_key, first_image = missing[0]
            try:
                tensor = self.decode(first_image)
            except Exception as err:  # one bad file: its ledger row, and the fill goes on
                failed += _rows_for(by_key[first_key], _failure(first_image, err))
                missing = missing[1:]
        if tensor is None:
            present = next((self.entry_path(k) for k in unique if self.entry_path(k).is_file()), None)
            estimate = CacheEstimate(len(unique), 0, present.stat().st_size if present else 0, free, tuple(failed))
            log.info("tensor cache %s: complete, %s", self.directory, estimate)
            _log_failures(failed)
            return estimate
        size = len(_encode_entry(tensor))
        estimate = CacheEstimate(len(unique), len(missing), size, free)
        log.info("tensor cache %s: %s", self.directory, estimate)
        if estimate.needed_bytes > free:
            raise CacheSpaceError(
                f"data.cache_dir={self.directory}: the cache needs {_size(estimate.needed_bytes)} more but the disk "
                f"has {_size(free)} free; free space or point data.cache_dir at a larger disk"
            )
        self.store(missing[0][0], tensor)
        rest = _FillDataset(self, missing[1:])
        loader = DataLoader(rest, batch_size=None, num_workers=num_workers if len(rest) > 1 else 0)
        started = time.perf_counter()
        written = 1
        with tqdm(total=len(missing), initial=1, desc="tensor cache", unit=" samples", disable=not progress) as bar:
            for index, (_, error) in enumerate(loader):  # in job order, whatever the workers
                if error is not None:
                    failed += _rows_for(by_key[rest.jobs[index][0]], error)
                written += error is None
                bar.update(1)
        log.info("tensor cache: wrote %d entries in %.1fs", written, time.perf_counter() - started)
        _log_failures(failed)
        return replace(estimate, failed=tuple(failed))

    def _key_or_failure(self, image: Any) -> str | dict[str, str]:
        """The image's key, or its ledger row when a file cannot be hashed (gone, unreadable, not a regular file)."""
        try:
            return self.key(image)
        except Exception as err:
            return _failure(image, err)

    # ---- helpers -------------------------------------------------------------------------------
    def _file_digest(self, path: Path) -> str:
        stat = path.stat()
        if not S_ISREG(stat.st_mode):  # never open a FIFO (it blocks) or a device
            raise DicomReadError(DicomErrorKind.UNREADABLE, path, "not a regular file; not opened")
        memo_key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        with self._lock:
            digest = self._digests.get(memo_key)
        if digest is None:
            with path.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            with self._lock:
                self._digests[memo_key] = digest
        return digest

    def _remove_stale_temporaries(self) -> None:
        cutoff = time.time() - _STALE_TEMP_S
        for temp in self.directory.glob(f"??/{_TEMP_PREFIX}*"):
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
            except FileNotFoundError:  # another process removed or renamed it meanwhile
                pass


class CachedDataset(Dataset):
    """A MONAI dataset whose transform's deterministic head is served from a :class:`TensorCache`.

    The first ``len(cache.head)`` transforms of ``transform`` must be the cache's head (the data
    module builds both from the same :class:`Preprocessing`); the rest (augmentation, channel repeat,
    typing) runs on every access. ``transform`` stays the dataset's ``transform`` attribute so MONAI's
    DataLoader seeds its random transforms per worker as usual.

    Args:
        data: Sample dicts, each with the image path(s) under ``"image"``.
        transform: The full pipeline (head, then the per-access tail).
        cache: The tensor cache.

    Raises:
        ValueError: If ``transform`` does not start with the cache's head.
    """

    def __init__(self, data: Sequence[Mapping[str, Any]], transform: Compose, cache: TensorCache) -> None:
        super().__init__(data, transform=transform)
        head = [type(t) for t in cache.head.transforms]
        if [type(t) for t in transform.transforms[: len(head)]] != head:
            raise ValueError("CachedDataset: the transform does not start with the cache's load_and_normalise steps")
        self.cache = cache
        self.head_length = len(head)

    def _transform(self, index: int) -> Any:
        item = dict(self.data[index])
        item[IMAGE_KEY] = self.cache.get(item[IMAGE_KEY])
        if self.head_length == len(self.transform.transforms):
            return item
        return self.transform(item, start=self.head_length)


class _FillDataset(torch.utils.data.Dataset[tuple[int, dict[str, str] | None]]):
    """Decode-and-store jobs for :meth:`TensorCache.fill`'s worker processes; yields bytes written."""

    def __init__(self, cache: TensorCache, jobs: Sequence[tuple[str, Any]]) -> None:
        self.cache = cache
        self.jobs = list(jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> tuple[int, dict[str, str] | None]:
        """(bytes written, None), or (0, the image's ledger row) when it cannot be decoded."""
        key, image = self.jobs[index]
        if self.cache.entry_path(key).is_file():  # another node's rank 0 on a shared disk got there first
            return 0, None
        try:
            tensor = self.cache.decode(image)
        except Exception as err:  # a worker must not die on one file: the fill reports it and goes on
            return 0, _failure(image, err)
        return self.cache.store(key, tensor), None


def _first(image: Any) -> str:
    return str(image) if isinstance(image, str | os.PathLike) else str(next(iter(image), ""))


def _failure(image: Any, err: BaseException) -> dict[str, str]:
    """A ledger row for an image that could not be cached: the reader's kind, else ``preprocessing_error``.

    The path is the failing file when the reader names it (a series' member), else the image's first file.
    """
    seen: BaseException | None = err
    while seen is not None and not isinstance(seen, DicomReadError):  # MONAI's Compose wraps transform errors
        seen = seen.__cause__ or seen.__context__
    if isinstance(seen, DicomReadError):
        return {"path": seen.path, "kind": str(seen.kind), "message": seen.message}
    message = " ".join(f"{type(err).__name__}: {err}".split())
    kind = str(DicomErrorKind.UNREADABLE) if isinstance(err, OSError) else PREPROCESSING_ERROR
    return {"path": _first(image), "kind": kind, "message": message}


def _rows_for(images: Sequence[Any], row: Mapping[str, str]) -> list[dict[str, str]]:
    """``row`` for every image that shares the failed entry (files of equal content share a key).

    A 2D image is one file, which the row names; a series keeps the member the reader named.
    """
    return [{**row, "path": str(image)} if isinstance(image, str | os.PathLike) else dict(row) for image in images]


def _log_failures(failed: Sequence[Mapping[str, str]]) -> None:
    if failed:
        kinds = Counter(row["kind"] for row in failed)
        log.warning("tensor cache: %d image(s) could not be cached %s; they are left out", len(failed), dict(kinds))


def preprocessing_digest(preprocessing: Preprocessing, head: Sequence[Any]) -> str:
    """The namespace of a preprocessing's entries: its settings, the head's transforms and the decoding libraries."""
    recipe: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "preprocessing": preprocessing.to_dict(),
        "head": [f"{type(t).__module__}.{type(t).__qualname__}" for t in head],
        "versions": {"medres": medres.__version__, "monai": version("monai"), "pydicom": version("pydicom")},
    }
    if preprocessing.decode == "reduced":  # these decode the reduced levels (medres.dicom.reduced_decode)
        recipe["versions"]["pillow"] = version("pillow")
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _encode_entry(tensor: torch.Tensor) -> bytes:
    crc = zlib.crc32(tensor.numpy().data)
    return safetensors.torch.save({IMAGE_KEY: tensor, "crc32": torch.tensor([crc], dtype=torch.int64)})


def _decode_entry(data: bytes) -> torch.Tensor:
    tensors = safetensors.torch.load(data)
    image = tensors[IMAGE_KEY]
    if zlib.crc32(image.numpy().data) != int(tensors["crc32"][0]):
        raise ValueError("checksum mismatch")
    return image


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
