"""``medres score``: apply a model package to every file under a folder, streamed, resumable and distributed.

Every input file ends up in exactly one of the predictions or the error ledger; a broken or non-DICOM file
never stops the run. The network runs through ``Trainer.predict``, so accelerator, precision (AMP),
devices, strategy (DDP across GPUs or nodes) and nodes are Trainer settings.

Streaming and resuming
    Discovery (:mod:`medres.scoring.discovery`) walks the folder, or reads a manifest from ``medres index``,
    lazily and in a deterministic order, cut into chunks of ``chunk_files`` files. DataLoader workers read each
    chunk's headers, apply the package's selection and decode only what it keeps (:mod:`medres.scoring.stream`);
    the chunk's prediction and ledger rows are committed as Parquet parts with a done marker
    (:mod:`medres.scoring.job`). Memory holds the chunks in flight, never the archive. After an interruption,
    even ``kill -9``, the same command skips committed chunks and scores the rest; every input lands once.

Distributed
    Rank ``r`` of ``world_size`` scores the chunks ``i % world_size == r`` and commits its own parts; no sample is
    scored twice (no ``DistributedSampler``, whose padding would duplicate samples). The job is finished by rank 0
    once every rank is through.

2D and 3D
    A 2D package scores one prediction row per selected instance, streamed as above. A 3D package scores one row
    per series, and a series needs every one of its files' headers first (their order, spacing and duplicates
    decide the volume), which may lie anywhere in the walk: a 3D job therefore plans the whole folder header-only
    up front (:func:`medres.scoring.samples.plan_scoring`, memory grows with the header count) and then streams and
    resumes by chunks of ``chunk_files`` series. A manifest input is for 2D packages.

Outputs, for ``--output preds.parquet`` (see :mod:`medres.scoring.job` for the layout)
    ``preds.parquet/`` predictions, ``preds.errors.parquet/`` the error ledger (both Parquet dataset folders:
    ``pd.read_parquet`` reads each as one table), ``preds.studies.parquet`` one row per study
    (:func:`medres.scoring.studies.aggregate_studies`), and, when tracking is on, a run in the
    ``medres-scoring`` MLflow experiment (:mod:`medres.scoring.report`).

Prediction row columns
    ``path`` (relative to the input folder; a series row names its first file in slice order),
    ``SOPInstanceUID`` (null in a series row), ``SeriesInstanceUID``, ``StudyInstanceUID``,
    ``n_instances`` (series rows only: files scored as that series), ``prob_<finding>`` (float32),
    ``finding_<finding>`` (probability ≥ the package's threshold), ``model_name``, ``model_version``.

Ledger row columns
    ``path``, ``SOPInstanceUID``, ``SeriesInstanceUID``, ``StudyInstanceUID`` (null where unreadable),
    ``kind``, ``message`` (one line). Kinds: the reader's (``not_dicom``, ``no_pixel_data``,
    ``unsupported_codec``, ``truncated``, ``unsupported_image``, ``decode_error``, ``unreadable``,
    ``inconsistent_series``, ``missing_geometry``), ``preprocessing_error``, ``not_selected`` (the
    selection rules or a dropped localizer; the message is the reason), ``duplicate`` (a repeated slice
    position), ``series_error`` (a readable file whose series failed on another member, named in the message).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader
from tqdm import tqdm

from medres.data.box_transforms import boxes_to_patient_mm, boxes_to_stored_pixels
from medres.models.detector import BOX, LABEL, SCORES, detect
from medres.models.inference import probabilities
from medres.package import ModelPackage, probability_column
from medres.scoring.discovery import Chunk, count_inputs, folder_chunks, manifest_chunks, plan_chunks
from medres.scoring.job import ChunkRecord, ScoringJob, studies_path_for, sum_kinds
from medres.scoring.report import log_scoring_run
from medres.scoring.samples import plan_scoring
from medres.scoring.stream import ChunkStream
from medres.scoring.studies import Aggregation, aggregate_studies
from medres.scoring.summary import ScoreSummary
from medres.scoring.writers import LEDGER_SCHEMA, N_INSTANCES, box_rows, box_schema, prediction_rows, prediction_schema
from medres.tracking.registry import ResolvedModel, load_model

log = logging.getLogger(__name__)


class _ScoringModule(pl.LightningModule):
    """Wraps the packaged network for ``Trainer.predict``; batches may hold zero scorable images."""

    def __init__(self, package: ModelPackage, compile_network: bool = False) -> None:
        super().__init__()
        self.network = package.build_model()
        self.detector = package.is_detector
        self.num_findings = len(package.findings)
        self.spatial_dims = package.preprocessing.spatial_dims
        self.compile_network = compile_network

    def on_predict_start(self) -> None:
        """channels_last for 2D convolutions on a GPU (cuDNN's fast layout); torch.compile when asked."""
        self.channels_last = self.device.type == "cuda" and self.spatial_dims == 2
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.compile_network:
            self.network = torch.compile(self.network)  # type: ignore[assignment]

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        images = batch["image"]
        if self.channels_last and len(batch["rows"]):
            images = images.contiguous(memory_format=torch.channels_last)
        if self.detector:
            return self._detect(batch, images)
        # (n_ok, F); a batch whose files all went to the ledger has no image to run
        probs = probabilities(self.network, images) if batch["rows"] else torch.zeros((0, self.num_findings))
        return {**{k: v for k, v in batch.items() if k != "image"}, "probs": probs.cpu()}

    def _detect(self, batch: dict[str, Any], images: torch.Tensor) -> dict[str, Any]:
        """Boxes per image, mapped back to stored pixels; each finding's image probability is its top box score."""
        outputs = detect(self.network, images) if batch["rows"] else []  # type: ignore[arg-type]
        probs = torch.zeros((len(outputs), self.num_findings))
        detections = []
        for i, (output, (network_affine, stored_affine)) in enumerate(zip(outputs, batch["geometry"], strict=True)):
            labels, scores = output[LABEL].cpu().numpy(), output[SCORES].float().cpu().numpy()
            boxes = output[BOX].float().cpu()
            if self.spatial_dims == 3:  # series boxes are reported in patient LPS mm
                stored = boxes_to_patient_mm(boxes, network_affine)
            else:
                stored = boxes_to_stored_pixels(boxes, network_affine, stored_affine)
            for f in range(self.num_findings):
                if (labels == f).any():
                    probs[i, f] = float(scores[labels == f].max())
            detections.append((stored, labels, scores))
        rest = {k: v for k, v in batch.items() if k not in ("image", "geometry")}
        return {**rest, "probs": probs, "detections": detections}


class _ChunkWriter(BasePredictionWriter):
    """Gathers each chunk's rows as its batches come and commits the chunk once all its slices have come."""

    def __init__(self, model: ResolvedModel, job: ScoringJob, stream: ChunkStream, progress: bool) -> None:
        super().__init__(write_interval="batch")
        self.model = model
        self.job = job
        self.stream = stream
        self.progress = progress
        self.schema = prediction_schema(model.package.findings, series=model.package.preprocessing.spatial_dims == 3)
        dims = model.package.preprocessing.spatial_dims
        self.box_schema = box_schema(dims) if model.package.is_detector else None
        # chunk → (prediction rows, ledger rows, [files scored, slices seen]) until its last slice comes
        self.pending: dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]] = {}
        self.pending_boxes: dict[int, list[dict[str, Any]]] = {}
        self.bar: tqdm[Any] | None = None
        self.total: list[int | None] = [None]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Tell the stream its rank before the DataLoader workers start (they copy it)."""
        self.stream.rank, self.stream.world_size = trainer.global_rank, trainer.world_size

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Rank 0 shows a bar of input files with rate and ETA (the total arrives from a names-only count)."""
        if self.progress and trainer.is_global_zero:
            resumed = self.job.resumed_files()
            self.bar = tqdm(desc="score", unit=" files", initial=resumed, dynamic_ncols=True, smoothing=0.1)
            self.world_size = trainer.world_size

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        package = self.model.package
        predictions, ledger, seen = self.pending.setdefault(prediction["chunk"], ([], [], [0, 0]))
        predictions += prediction_rows(
            prediction["rows"],
            prediction["probs"],
            package.findings,
            package.thresholds,
            self.model.name,
            self.model.version,
        )
        ledger += prediction["errors"]
        if self.box_schema is not None:
            boxes = self.pending_boxes.setdefault(prediction["chunk"], [])
            for identity, (corners, labels, scores) in zip(prediction["rows"], prediction["detections"], strict=True):
                boxes += box_rows(
                    identity,
                    corners,
                    labels,
                    scores,
                    package.findings,
                    package.thresholds,
                    self.model.name,
                    self.model.version,
                )
        seen[0] += prediction["files"]
        seen[1] += 1
        if seen[1] == prediction["slices"]:  # a chunk's slices may come from several workers, in any order
            self._commit(prediction)

    def _commit(self, batch: dict[str, Any]) -> None:
        chunk = batch["chunk"]
        predictions, ledger, (scored, _) = self.pending.pop(chunk)
        if scored + len(ledger) != batch["chunk_files"]:  # the contract: every input in exactly one place
            raise RuntimeError(f"chunk {chunk}: scored {scored} + ledgered {len(ledger)} ≠ {batch['chunk_files']}")
        kinds = Counter(str(row["kind"]) for row in ledger)
        record = ChunkRecord(
            chunk,
            batch["fingerprint"],
            batch["chunk_files"],
            len(predictions),
            scored,
            len(ledger),
            dict(kinds),
            rank=self.stream.rank,
        )
        boxes = self.pending_boxes.pop(chunk, [])
        self.job.commit(record, predictions, self.schema, ledger, LEDGER_SCHEMA, boxes, self.box_schema)
        if self.bar is not None:
            if self.total[0] is not None and self.bar.total is None:  # per rank: its share of the job
                self.bar.total = -(-self.total[0] // self.world_size)
            self.bar.update(batch["chunk_files"])

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


def outputs_inside(root: Path, paths: list[Path]) -> list[str]:
    """Relative paths of this job's outputs that lie under ``root`` (never scored as inputs)."""
    base = root.resolve()
    return [p.resolve().relative_to(base).as_posix() for p in paths if p.resolve().is_relative_to(base)]


def _count_in_background(root: Path, manifest: Path | None, exclude: list[str], into: list[int | None]) -> None:
    """Count the inputs on a daemon thread: the bar gets its total (hence an ETA) without delaying the start."""

    def count() -> None:
        into[0] = count_inputs(root, manifest, exclude)

    threading.Thread(target=count, name="medres-score-count", daemon=True).start()


# Niceness of the decoding workers when the network runs on the CPU too (19: the lowest priority).
CPU_WORKER_NICENESS = 19


def _decoding_worker(worker_id: int, niceness: int = 0) -> None:
    """Set up a decoding worker: one intra-op thread, and on a CPU-only job the lowest scheduling priority.

    When the forward pass runs on the same cores, a worker that preempts one of its threads stalls the others at
    OpenMP's next barrier. At the lowest priority the workers decode while the forward waits for a batch and
    yield to it otherwise, so the two take turns with every core, which is the bound ``1 / (decode + forward)``
    per image (``benchmarks/score_throughput.py``, 2 cores, 2 workers, ResNet-18 at 128²: an uncompressed
    archive went from 0.86 to 0.99 of that bound, JPEG 2000 from 0.87-0.95 to 0.97). On a machine shared with
    other work, the workers also yield to it.
    """
    torch.set_num_threads(1)
    if niceness and hasattr(os, "nice"):  # POSIX only
        os.nice(niceness)


def _barrier(trainer: pl.Trainer) -> None:
    """Wait for every rank (the job is finished once all ranks have committed their chunks)."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def score_archive(
    model: str,
    input_dir: Path,
    output: Path,
    batch_size: int = 32,
    num_workers: int = 2,
    accelerator: str = "auto",
    precision: str = "32-true",
    tracking_uri: str | None = None,
    progress: bool = True,
    *,
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    compile_network: bool = False,
    manifest: Path | None = None,
    chunk_files: int = 512,
    aggregation: Aggregation = "max",
    resume: bool = True,
    log_mlflow: bool | None = None,
) -> ScoreSummary:
    """Score every file under ``input_dir`` (or every file of ``manifest``) with a registered model or a checkpoint.

    Rerunning the same call after an interruption finishes the job (see the module docstring).

    Args:
        model: ``models:/NAME/VERSION``, ``models:/NAME/latest``, ``models:/NAME@ALIAS`` or a ``.ckpt`` path.
        input_dir: Folder to score (every file below it, hidden ones excepted); paths are relative to it.
        output: Predictions dataset folder (e.g. ``preds.parquet``); ledger and study table go beside it.
        batch_size: Images (2D) or volumes (3D) per forward pass.
        num_workers: DataLoader worker processes (header reading and decoding); 3D: also the header index.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ``16-mixed``).
        tracking_uri: Registry to resolve ``models:/`` references against, and store for the scoring run.
        progress: Show a progress bar (rate and ETA).
        devices: Lightning devices per node (``2``, ``auto``, ...).
        strategy: Lightning strategy (``auto``, ``ddp``).
        num_nodes: Machines taking part.
        compile_network: Run the network through ``torch.compile``.
        manifest: A manifest from ``medres index`` of ``input_dir`` to score instead of walking it (2D packages).
        chunk_files: Input files per chunk (3D: series per chunk): the unit of commit and resume.
        aggregation: How a study's rows become its study row (``max`` or ``mean``).
        resume: Continue the job in ``output`` (False: start it over).
        log_mlflow: Log a ``medres-scoring`` run; ``None`` logs when a store is named (``tracking_uri``,
            ``MLFLOW_TRACKING_URI``) or the model came from the registry.

    Raises:
        FileNotFoundError: ``input_dir`` or ``manifest`` does not exist.
        ValueError: a bad setting, or ``output`` holds another job (see :class:`~medres.scoring.job.ScoringJob`).
    """
    started = time.perf_counter()
    check_arguments(input_dir, manifest, chunk_files, batch_size, aggregation)
    resolved = load_model(model, tracking_uri=tracking_uri)
    package = resolved.package
    spatial_dims = package.preprocessing.spatial_dims
    if manifest is not None and spatial_dims == 3:
        raise ValueError(f"--manifest {manifest}: a 3D package plans series from the folder; leave --manifest out")
    job = open_job(output, input_dir, manifest, resolved, chunk_files, resume)
    exclude = outputs_inside(input_dir, [output, job.errors, job.boxes, job.studies])
    chunks = chunk_source(input_dir, manifest, exclude, package, chunk_files, num_workers, progress)
    stream = ChunkStream(
        input_dir,
        chunks,
        job,
        spatial_dims,
        package.selection,
        package.preprocessing,
        batch_size=batch_size,
        keep_geometry=package.is_detector,
    )
    writer = _ChunkWriter(resolved, job, stream, progress)
    if progress:
        _count_in_background(input_dir, manifest, exclude, writer.total)
    resumed = job.resumed_files()
    devices_spec = _Devices(accelerator, devices, num_nodes, strategy, precision)
    trainer = _predict(stream, writer, package, num_workers, devices_spec, compile_network)
    _barrier(trainer)
    summary = summarise(job, resolved, trainer.global_rank, started, resumed)
    if summary.rank == 0:  # every rank's parts are committed; rank 0 finishes the job
        write_study_table(job, package, summary, aggregation)
        if should_log(log_mlflow, tracking_uri, model):
            params = {"aggregation": aggregation, "chunk_files": str(chunk_files), "spatial_dims": str(spatial_dims)}
            summary.run_id = log_scoring_run(
                summary, input_dir, package.findings, package.thresholds, params, tracking_uri
            )
    return summary


# ---- the steps of a scoring job (shared with the Ray engine, medres.scoring.engines.ray) ----------------
def check_arguments(
    input_dir: Path, manifest: Path | None, chunk_files: int, batch_size: int, aggregation: Aggregation
) -> None:
    """Refuse bad settings before anything is loaded, each with one line naming the setting."""
    if not input_dir.is_dir():
        raise FileNotFoundError(f"--input {input_dir}: no such folder")
    if manifest is not None and not manifest.is_file():
        raise FileNotFoundError(f"--manifest {manifest}: no such file")
    if chunk_files < 1 or batch_size < 1:
        raise ValueError(f"--chunk_files {chunk_files}, --batch_size {batch_size}: both must be at least 1")
    if aggregation not in ("max", "mean"):
        raise ValueError(f"--aggregation {aggregation}: expected max or mean")


def open_job(
    output: Path, input_dir: Path, manifest: Path | None, resolved: ResolvedModel, chunk_files: int, resume: bool
) -> ScoringJob:
    """The job in ``output``: a new one, or the interrupted one with the same identity (refused if it differs)."""
    identity = {
        "format": 1,
        "input": str(input_dir.resolve()),
        "manifest": str(manifest.resolve()) if manifest is not None else None,
        "model_name": resolved.name,
        "model_version": resolved.version,
        "chunk_files": chunk_files,
        "spatial_dims": resolved.package.preprocessing.spatial_dims,
    }
    job = ScoringJob(output, identity)
    # Under DDP every rank runs this; opening an existing job only reads, and a new job.json is written atomically.
    job.open(resume=resume or "LOCAL_RANK" in os.environ)
    return job


def chunk_source(
    input_dir: Path,
    manifest: Path | None,
    exclude: list[str],
    package: ModelPackage,
    chunk_files: int,
    num_workers: int,
    progress: bool,
) -> Callable[[], Iterator[Chunk]]:
    """What yields the job's chunks, afresh on each call (each DataLoader worker iterates its own).

    2D: the folder walk (or the manifest) cut into chunks lazily. 3D: series are planned from the whole folder's
    headers first (a series' files may lie anywhere), then cut into chunks of series.
    """
    if package.preprocessing.spatial_dims == 2:
        if manifest is not None:
            return lambda: manifest_chunks(manifest, chunk_files)
        return lambda: folder_chunks(input_dir, chunk_files, exclude)
    plan = plan_scoring(input_dir, package.selection, num_workers=num_workers, progress=progress)
    planned = plan_chunks(plan, chunk_files)
    if len(planned) == 1 and not planned[0].paths:
        planned = []
    return lambda: iter(planned)


@dataclass(frozen=True)
class _Devices:
    """The Lightning Trainer settings of a scoring job: where and in what precision the network runs."""

    accelerator: str
    devices: int | str
    num_nodes: int
    strategy: str
    precision: str


def _predict(
    stream: ChunkStream,
    writer: _ChunkWriter,
    package: ModelPackage,
    num_workers: int,
    devices: _Devices,
    compile_network: bool,
) -> pl.Trainer:
    """Run the chunks through the network with ``Trainer.predict``; the writer commits each chunk as it completes."""
    trainer = pl.Trainer(
        accelerator=devices.accelerator,
        devices=devices.devices,
        num_nodes=devices.num_nodes,
        strategy=devices.strategy,
        precision=devices.precision,  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,  # the writer's bar counts files, with an ETA
        use_distributed_sampler=False,  # ranks split chunks themselves: a sampler's padding would duplicate
        callbacks=[writer],
    )
    niceness = CPU_WORKER_NICENESS if isinstance(trainer.accelerator, CPUAccelerator) else 0
    worker_init = functools.partial(_decoding_worker, niceness=niceness)
    loader = DataLoader(stream, batch_size=None, num_workers=num_workers, worker_init_fn=worker_init)
    with warnings.catch_warnings():
        # Lightning cannot infer batch indices from an iterable dataset; rows carry their own identity.
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
        trainer.predict(_ScoringModule(package, compile_network), dataloaders=loader, return_predictions=False)
    return trainer


def summarise(job: ScoringJob, resolved: ResolvedModel, rank: int, started: float, resumed: int) -> ScoreSummary:
    """The job's counts over all its runs and ranks; refuses a job in which a file is neither scored nor ledgered."""
    records, files = job.totals()
    summary = ScoreSummary(
        predictions=sum(r.predictions for r in records),
        scored_files=sum(r.scored_files for r in records),
        errors=sum(r.errors for r in records),
        error_kinds=sum_kinds(records),
        output=job.output,
        errors_path=job.errors,
        seconds=time.perf_counter() - started,
        series=resolved.package.preprocessing.spatial_dims == 3,
        files=files,
        studies_path=studies_path_for(job.output),
        resumed=resumed,
        rank=rank,
        model_name=resolved.name,
        model_version=resolved.version,
    )
    if summary.scored_files + summary.errors != files:
        raise RuntimeError(f"scored {summary.scored_files} + ledgered {summary.errors} ≠ {files} input files")
    return summary


def write_study_table(job: ScoringJob, package: ModelPackage, summary: ScoreSummary, aggregation: Aggregation) -> None:
    """Tidy the job's parts and write one row per study (rank 0, after every rank committed its chunks)."""
    schema = prediction_schema(package.findings, series=summary.series)
    job.tidy(schema, LEDGER_SCHEMA)
    # The study table needs each study's rows together, and a study's files may lie anywhere in the walk: read
    # the few columns it needs (not the archive: one row per scored sample).
    columns = ["StudyInstanceUID", *(probability_column(f) for f in package.findings), "model_name", "model_version"]
    rows = pd.read_parquet(job.output, columns=columns + ([N_INSTANCES] if summary.series else []))
    studies = aggregate_studies(rows, package.findings, package.thresholds, method=aggregation)
    partial = job.studies.with_name(f".{job.studies.name}.tmp")
    studies.to_parquet(partial, index=False)
    os.replace(partial, job.studies)  # a kill while writing leaves no half table; the rerun rewrites it
    summary.studies = len(studies)


def should_log(log_mlflow: bool | None, tracking_uri: str | None, model: str) -> bool:
    """``--log_mlflow`` as given, else: when a store is named or the model came from the registry."""
    if log_mlflow is not None:
        return log_mlflow
    return bool(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or model.startswith("models:/"))
