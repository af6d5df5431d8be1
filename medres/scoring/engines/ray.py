"""``medres score --engine ray``: the same scoring job on a Ray cluster, through Ray Data with an actor pool.

Discovery, header planning, the chunk commit protocol and the outputs are ``medres score``'s
(:mod:`medres.scoring.score`); what changes is who does the work:

- the driver (this process) walks the archive lazily into the job's chunks (:mod:`medres.scoring.discovery`; a 3D
  job plans its series first, as today), skips committed chunks, and cuts the others into slices of ``batch_size``
  files (:func:`medres.scoring.stream.slice_of`);
- Ray Data runs each slice's header reading, selection, decoding and preprocessing as a CPU task
  (:class:`medres.scoring.stream.SliceLoader`, the code the DataLoader workers run), then the network in an actor
  pool (:class:`_Scorer`): one actor per GPU with ``num_gpus``, CPU actors without;
- the driver gathers each chunk's slices and commits the chunk (:meth:`medres.scoring.job.ScoringJob.commit`:
  parts under temporary names, renamed, then the done marker).

Exactly once
    Only the driver writes, a chunk at a time, keyed by chunk id: the slices of a chunk are kept by their slice
    number, so a slice delivered twice (a task retried after a lost worker: Ray Data restarts a killed actor and
    retries its batch, ``max_restarts=-1``/``max_task_retries=-1``) replaces itself and is never appended twice,
    and a chunk's parts are written under the same names whoever writes them. A driver killed at any moment
    leaves committed chunks (marker present) and uncommitted ones (no marker, maybe a temporary part); the rerun
    skips the first and scores the second, exactly as ``medres score``'s resume. A job may be started by one engine
    and finished by the other: the job identity is the same.

Backpressure
    Ray Data's streaming executor bounds the blocks in flight between the CPU tasks and the actors (object-store
    budget per operator), and the driver hands it the archive a window of ``window_chunks`` chunks at a time
    (default: 4 per actor, at least 8), so neither the object store nor the driver holds more than a window of
    the archive however large it grows. A window's pool is started when the window starts (the model is loaded
    once per actor per window; at 512 files a chunk that is once per thousands of files). The start costs seconds
    (about 10 s a window on a busy 2-core machine with a tiny model), which is why windows are many chunks long.

Shared storage
    Workers read the input files, and the driver writes the outputs: the input folder must be mounted at the same
    path on every node (NFS, Lustre, a bucket through FUSE), as for DDP ranks.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from medres.data.selection import SeriesSelection
from medres.data.transforms import Preprocessing
from medres.package import ModelPackage
from medres.scoring.discovery import Chunk, count_inputs
from medres.scoring.job import ChunkRecord, ScoringJob
from medres.scoring.report import log_scoring_run
from medres.scoring.score import (
    check_arguments,
    chunk_source,
    open_job,
    outputs_inside,
    should_log,
    summarise,
    write_study_table,
)
from medres.scoring.stream import SliceLoader, chunk_slices, slice_of, slice_tag
from medres.scoring.studies import Aggregation
from medres.scoring.summary import ScoreSummary
from medres.scoring.writers import LEDGER_SCHEMA, prediction_rows, prediction_schema
from medres.tracking.registry import ResolvedModel, load_model

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

# Precision names as Lightning's (``--precision``), for the same command line under either engine.
_AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
# The columns a slice carries about its chunk from the driver to the actors and back.
_TAG = ("chunk", "slice", "slices", "chunk_files", "fingerprint")
# Slices a decoding worker process handles before Ray replaces it (each costs one process start per ~32k files).
DECODER_CALLS = 1000


def _require_ray() -> Any:
    try:
        import ray
        import ray.data  # Ray Data is its own extra of ray
    except ImportError as err:
        raise ImportError("--engine ray needs Ray Data: pip install 'medres[ray]'") from err
    return ray


def _prepare(
    row: dict[str, Any], root: str, selection: SeriesSelection, preprocessing: Preprocessing
) -> dict[str, Any]:
    """CPU task: one slice's headers, selection, decoding and preprocessing (the DataLoader workers' code).

    The images travel as raw float32 bytes and the rows as JSON (plain columns Ray Data stores as Arrow, nothing
    pickled per row); the slice's tag comes back untouched.
    """
    torch.set_num_threads(1)  # one slice per task; the cluster's CPUs give the parallelism
    piece = pickle.loads(row["piece"])  # written by this job's driver (see _slice_rows)
    batch = SliceLoader(Path(root), selection, preprocessing).load(piece)
    image = batch["image"].numpy().astype(np.float32, copy=False)
    return {
        **{key: row[key] for key in _TAG},
        "image": image.tobytes(),
        "shape": list(image.shape),
        "rows": json.dumps(batch["rows"]),
        "files": int(batch["files"]),
        "errors": json.dumps(batch["errors"]),
    }


class _Scorer:
    """Actor: the packaged network on this actor's device; one forward pass per slice.

    Args:
        package: The model package (its network is built once per actor).
        precision: ``32-true``, ``bf16-mixed`` or ``16-mixed``.
        threads: Intra-op threads on a CPU actor (its CPU share of the cluster).
    """

    def __init__(self, package: ModelPackage, precision: str, threads: int) -> None:
        import ray

        # The device is the one Ray gave this actor: a GPU when the pool asked for GPUs, else the CPU.
        gpus = ray.get_gpu_ids()
        self.device = torch.device("cuda" if gpus and torch.cuda.is_available() else "cpu")
        torch.set_num_threads(max(1, threads))
        self.network = package.build_model().eval().to(self.device)
        self.channels_last = self.device.type == "cuda" and package.preprocessing.spatial_dims == 2
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.autocast = _AUTOCAST[precision]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {key: [] for key in (*_TAG, "rows", "files", "errors", "probs")}
        for i in range(len(batch["chunk"])):
            shape = [int(n) for n in batch["shape"][i]]
            images = torch.from_numpy(np.frombuffer(batch["image"][i], dtype=np.float32).reshape(shape).copy())
            probs = self._forward(images) if shape[0] else np.zeros((0, 0), dtype=np.float32)
            for key in (*_TAG, "rows", "files", "errors"):
                out[key].append(batch[key][i])
            out["probs"].append(probs.tobytes())
        return out

    def _forward(self, images: torch.Tensor) -> np.ndarray:
        images = images.to(self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, self.autocast, enabled=self.autocast is not None):
            logits = self.network(images)
        return torch.sigmoid(logits.float()).cpu().numpy()


class _Committer:
    """The driver's half of the protocol: a chunk's slices by slice number, committed once all have come."""

    def __init__(self, resolved: ResolvedModel, job: ScoringJob, bar: tqdm[Any] | None) -> None:
        self.resolved = resolved
        self.job = job
        self.bar = bar
        package = resolved.package
        self.schema = prediction_schema(package.findings, series=package.preprocessing.spatial_dims == 3)
        self.pending: dict[int, dict[int, dict[str, Any]]] = {}

    def add(self, row: dict[str, Any]) -> None:
        """Keep a scored slice; commit its chunk when it completes it (a repeated slice replaces itself)."""
        slices = self.pending.setdefault(int(row["chunk"]), {})
        slices[int(row["slice"])] = row
        if len(slices) == int(row["slices"]):
            self._commit(int(row["chunk"]))

    def _commit(self, chunk: int) -> None:
        slices = self.pending.pop(chunk)
        package = self.resolved.package
        findings = len(package.findings)
        predictions: list[dict[str, Any]] = []
        ledger: list[dict[str, Any]] = []
        scored = 0
        for n in sorted(slices):
            row = slices[n]
            identities = json.loads(row["rows"])
            probs = np.frombuffer(row["probs"], dtype=np.float32).reshape(len(identities), findings)
            predictions += prediction_rows(
                identities,
                torch.from_numpy(probs.copy()),
                package.findings,
                package.thresholds,
                self.resolved.name,
                self.resolved.version,
            )
            ledger += json.loads(row["errors"])
            scored += int(row["files"])
        first = slices[min(slices)]
        files = int(first["chunk_files"])
        if scored + len(ledger) != files:  # the contract: every input in exactly one place
            raise RuntimeError(f"chunk {chunk}: scored {scored} + ledgered {len(ledger)} ≠ {files}")
        kinds = Counter(str(row["kind"]) for row in ledger)
        record = ChunkRecord(
            chunk, str(first["fingerprint"]), files, len(predictions), scored, len(ledger), dict(kinds)
        )
        self.job.commit(record, predictions, self.schema, ledger, LEDGER_SCHEMA)
        if self.bar is not None:
            self.bar.update(files)

    def check_drained(self) -> None:
        """After a window: every chunk handed to Ray must have come back whole."""
        if self.pending:
            chunk, slices = next(iter(self.pending.items()))
            raise RuntimeError(f"chunk {chunk}: only {len(slices)} of its slices came back from the Ray pipeline")


def _slice_rows(chunk: Chunk, batch_size: int) -> list[dict[str, Any]]:
    """The work rows of a chunk: one per slice, each with the slice's files (or planned series) and its tag."""
    slices = chunk_slices(chunk, batch_size)
    tag = slice_tag(chunk, slices)
    # The slice travels pickled, as Ray would ship it anyway (a manifest's header rows and planned series are Python
    # objects); as bytes it is one plain Arrow column rather than Ray's fallback for what Arrow cannot hold.
    return [{**tag, "slice": n, "piece": pickle.dumps(slice_of(chunk, n, batch_size))} for n in range(slices)]


def score_archive_ray(
    model: str,
    input_dir: Path,
    output: Path,
    batch_size: int = 32,
    precision: str = "32-true",
    tracking_uri: str | None = None,
    progress: bool = True,
    *,
    manifest: Path | None = None,
    chunk_files: int = 512,
    aggregation: Aggregation = "max",
    resume: bool = True,
    log_mlflow: bool | None = None,
    ray_address: str | None = None,
    num_gpus: float = 0,
    concurrency: int | None = None,
    actor_cpus: float = 1.0,
    window_chunks: int | None = None,
) -> ScoreSummary:
    """Score every file under ``input_dir`` on a Ray cluster; the outputs and resume are ``medres score``'s.

    Args:
        model: ``models:/NAME/VERSION``, ``models:/NAME/latest``, ``models:/NAME@ALIAS`` or a ``.ckpt`` path.
        input_dir: Folder to score (on storage every Ray node mounts at this path).
        output: Predictions dataset folder; ledger and study table go beside it (written by this process).
        batch_size: Files (3D: series) per slice: one CPU task and one forward pass each.
        precision: ``32-true``, ``bf16-mixed`` or ``16-mixed`` (autocast on the actor's device).
        tracking_uri: Registry to resolve ``models:/`` references against, and store for the scoring run.
        progress: Show a progress bar of input files.
        manifest: A manifest from ``medres index`` of ``input_dir`` to score instead of walking it (2D packages).
        chunk_files: Input files per chunk (3D: series per chunk): the unit of commit and resume.
        aggregation: How a study's rows become its study row (``max`` or ``mean``).
        resume: Continue the job in ``output`` (False: start it over).
        log_mlflow: Log a ``medres-scoring`` run (``None``: as :func:`medres.scoring.score.score_archive`).
        ray_address: Cluster to join (``auto``: the one this node belongs to; ``ray://HOST:10001``: Ray Client);
            ``None``: the one this process already joined, else a local one on this machine.
        num_gpus: GPUs for the actor pool, shared out evenly over its actors (0: CPU actors).
        concurrency: Actors in the pool (default: ``num_gpus`` rounded up, at least 1).
        actor_cpus: CPUs each actor reserves (a CPU actor runs its forward pass on that many threads).
        window_chunks: Chunks handed to Ray Data at a time (default: 4 per actor, at least 8).

    Raises:
        ImportError: Ray Data is not installed.
        FileNotFoundError: ``input_dir`` or ``manifest`` does not exist.
        ValueError: a bad setting, or ``output`` holds another job.
    """
    started = time.perf_counter()
    ray = _require_ray()
    check_arguments(input_dir, manifest, chunk_files, batch_size, aggregation)
    if precision not in _AUTOCAST:
        raise ValueError(f"--precision {precision}: the ray engine takes {', '.join(_AUTOCAST)}")
    if num_gpus < 0 or (concurrency is not None and concurrency < 1) or actor_cpus < 0:
        raise ValueError(f"--num_gpus {num_gpus}, --concurrency {concurrency}: expected ≥ 0 and ≥ 1")
    actors = concurrency or max(1, int(np.ceil(num_gpus)))
    window = window_chunks or max(8, 4 * actors)
    if window < 1:
        raise ValueError(f"window_chunks {window_chunks}: must be at least 1")

    resolved = load_model(model, tracking_uri=tracking_uri)
    package = resolved.package
    spatial_dims = package.preprocessing.spatial_dims
    if package.is_detector:
        # Box rows need each image's geometry through the actors and a third committed part; the Lightning engine
        # has both, and detection archives are scored with it.
        raise ValueError(f"--model {model}: a lesion detector; score it with --engine lightning (the default)")
    if manifest is not None and spatial_dims == 3:
        raise ValueError(f"--manifest {manifest}: a 3D package plans series from the folder; leave --manifest out")
    # The same job as score_archive's (identity, chunks): a job started by one engine can be finished by the other.
    job = open_job(output, input_dir, manifest, resolved, chunk_files, resume)
    exclude = outputs_inside(input_dir, [output, job.errors, job.studies])
    chunks = chunk_source(input_dir, manifest, exclude, package, chunk_files, 0, progress)()

    resumed = job.resumed_files()
    bar = tqdm(desc="score", unit=" files", initial=resumed, dynamic_ncols=True) if progress else None
    if bar is not None:  # the total arrives from a names-only count, without delaying the start

        def count() -> None:
            bar.total = count_inputs(input_dir, manifest, exclude)

        threading.Thread(target=count, name="medres-score-count", daemon=True).start()
    committer = _Committer(resolved, job, bar)

    joined_here = not ray.is_initialized()
    if joined_here:
        # Ray reports usage to its authors unless told not to; medres runs next to patient data.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if ray_address is None:
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=ray_address, log_to_driver=False)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the files bar above is the job's
        pipeline = _Pipeline(ray, input_dir, package, precision, actors, num_gpus / actors, actor_cpus)
        n_chunks = n_files = 0
        todo: list[Chunk] = []
        for chunk in chunks:
            n_chunks, n_files = n_chunks + 1, n_files + len(chunk.paths)
            record = job.record(chunk.index)
            if record is not None:
                if record.fingerprint != chunk.fingerprint:
                    raise ValueError(
                        f"--output {output}: chunk {chunk.index} was scored from other files than the input "
                        "holds now (the archive changed); score into a new --output"
                    )
                continue
            todo.append(chunk)
            if len(todo) == window:
                pipeline.run([row for c in todo for row in _slice_rows(c, batch_size)], committer)
                todo = []
        if todo:
            pipeline.run([row for c in todo for row in _slice_rows(c, batch_size)], committer)
        job.write_walk(n_chunks, n_files)
    finally:
        if bar is not None:
            bar.close()
        if joined_here:
            ray.shutdown()

    summary = summarise(job, resolved, 0, started, resumed)
    write_study_table(job, package, summary, aggregation)
    if should_log(log_mlflow, tracking_uri, model):
        params = {"aggregation": aggregation, "chunk_files": str(chunk_files), "spatial_dims": str(spatial_dims)}
        params |= {"engine": "ray", "actors": str(actors), "num_gpus": str(num_gpus), "batch_size": str(batch_size)}
        summary.run_id = log_scoring_run(summary, input_dir, package.findings, package.thresholds, params, tracking_uri)
    return summary


class _Pipeline:
    """The Ray Data plan of one window: slices → CPU tasks (decode) → actor pool (network) → the driver (commit)."""

    def __init__(
        self,
        ray: Any,
        root: Path,
        package: ModelPackage,
        precision: str,
        actors: int,
        gpus_per_actor: float,
        actor_cpus: float,
    ) -> None:
        self.ray = ray
        self.root = root
        self.package = package
        self.precision = precision
        self.actors = actors
        self.gpus_per_actor = gpus_per_actor
        self.actor_cpus = actor_cpus

    def dataset(self, rows: list[dict[str, Any]]) -> ray.data.Dataset:
        """The lazy plan over ``rows`` (one per slice)."""
        data = self.ray.data
        preprocessing = self.package.preprocessing
        kwargs = {"root": str(self.root), "selection": self.package.selection, "preprocessing": preprocessing}
        # One block per slice: a slice is a task's worth of decoding, and Ray Data balances blocks over the CPUs.
        ds = data.from_items(rows, override_num_blocks=len(rows))
        # A decoding worker process is replaced after DECODER_CALLS slices: native codecs (GDCM, OpenJPEG) may leak,
        # and a long job must not grow. Ray Data fuses consecutive steps whose remote arguments are equal; this
        # argument being the decoders' own also keeps decoding on the cluster's CPU tasks rather than fused into
        # the network's few actors. A task lost with its worker is retried by Ray Data; its slice is committed once.
        ds = ds.map(_prepare, fn_kwargs=kwargs, num_cpus=1, max_calls=DECODER_CALLS)
        threads = max(1, int(self.actor_cpus))
        return ds.map_batches(
            _Scorer,
            fn_constructor_kwargs={"package": self.package, "precision": self.precision, "threads": threads},
            batch_size=1,  # one slice (already batch_size images) per forward pass
            compute=data.ActorPoolStrategy(size=self.actors),
            num_gpus=self.gpus_per_actor or None,
            num_cpus=self.actor_cpus,
            batch_format="numpy",
        )

    def run(self, rows: list[dict[str, Any]], committer: _Committer) -> None:
        """Score the window's slices; the driver commits each chunk as its last slice comes back."""
        for row in self.dataset(rows).iter_rows():
            committer.add(row)
        committer.check_drained()
