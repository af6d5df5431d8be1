"""``medres score``: a registered model over a folder or a PACS query, resumable, with an error ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from medres.scoring.studies import Aggregation


def score_command(
    model: str,
    input: str,
    output: Path,
    batch_size: int = 32,
    num_workers: int = 2,
    accelerator: str = "auto",
    precision: str = "32-true",
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    compile: bool = False,
    manifest: Path | None = None,
    chunk_files: int = 512,
    aggregation: Aggregation = "max",
    resume: bool = True,
    log_mlflow: bool | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    engine: Literal["lightning", "ray"] = "lightning",
    ray_address: str | None = None,
    num_gpus: float = 0,
    concurrency: int | None = None,
    sr_dir: Path | None = None,
) -> None:
    """Score every file under a folder with a registered model or a checkpoint; rerun the same command to resume.

    Args:
        model: models:/NAME/VERSION, models:/NAME/latest, models:/NAME@ALIAS or a .ckpt path.
        input: Folder to score, or dicomweb://HOST:PORT/PATH?StudyDate=…&ModalitiesInStudy=… (dicomwebs:// for https):
            a PACS query, mirrored beside --output, scored, one SR per study stored back (credentials from
            MEDRES_DICOMWEB_USERNAME and MEDRES_DICOMWEB_PASSWORD).
        output: Predictions folder of Parquet parts (e.g. preds.parquet); the error ledger (preds.errors.parquet)
            and the study table (preds.studies.parquet) go beside it.
        batch_size: Images per forward pass.
        num_workers: Header-reading and decoding worker processes.
        accelerator: Lightning accelerator (auto, cpu, gpu).
        precision: Lightning precision (32-true, bf16-mixed, 16-mixed).
        devices: Devices per node (2 with --strategy ddp scores on two GPUs or CPU processes).
        strategy: Lightning strategy (auto, ddp).
        num_nodes: Machines taking part.
        compile: Run the network through torch.compile.
        manifest: Manifest from medres index of the input folder, scored instead of walking it (2D models).
        chunk_files: Files per chunk, the unit of commit and resume (3D models: series per chunk).
        aggregation: Study score from its images: max or mean.
        resume: Continue the job found in --output (false: start it over).
        log_mlflow: Log a medres-scoring run (default: when a tracking store is named or the model is registered).
        tracking_uri: Registry and tracking store (default MLFLOW_TRACKING_URI or ./mlflow.db).
        progress: Show a progress bar with rate and ETA.
        engine: lightning (this machine, or DDP ranks with --strategy ddp) or ray (a Ray cluster through Ray Data:
            decoding as CPU tasks, the network in an actor pool; needs medres[ray]).
        ray_address: --engine ray: cluster to join (auto: the one this node belongs to); default a local one.
        num_gpus: --engine ray: GPUs for the network's actor pool (0: CPU actors).
        concurrency: --engine ray: actors in the pool (default: --num_gpus, at least 1).
        sr_dir: When the job is complete, write each study's DICOM SR (findings and any boxes, the same SR a
            DICOMweb input stores in the PACS) to SR_DIR/<StudyInstanceUID>/<SOPInstanceUID>.dcm, for a viewer to
            import; a rerun rewrites identical files. These files carry identifying data (the patient and study
            modules of the source images): they belong to the patient, like the PACS copy.
    """
    from medres.scoring.dicomweb import DicomWebScoreSummary, is_dicomweb_url, score_dicomweb
    from medres.scoring.score import score_archive
    from medres.scoring.summary import ScoreSummary

    options: dict[str, Any] = dict(
        batch_size=batch_size,
        num_workers=num_workers,
        accelerator=accelerator,
        precision=precision,
        tracking_uri=tracking_uri,
        progress=progress,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        compile_network=compile,
        manifest=manifest,
        chunk_files=chunk_files,
        aggregation=aggregation,
        resume=resume,
        log_mlflow=log_mlflow,
    )
    summary: ScoreSummary | DicomWebScoreSummary
    if engine == "ray":
        if is_dicomweb_url(input):
            raise ValueError("--engine ray scores a folder; mirror a DICOMweb query with the default engine")
        if devices != 1 or strategy != "auto" or num_nodes != 1 or compile:
            raise ValueError(
                "--engine ray sizes itself with --num_gpus/--concurrency; leave --devices, --strategy, "
                "--num_nodes and --compile at their defaults"
            )
        from medres.scoring.engines.ray import score_archive_ray

        ray_options = {k: options[k] for k in ("batch_size", "precision", "tracking_uri", "progress", "manifest")}
        ray_options |= {k: options[k] for k in ("chunk_files", "aggregation", "resume", "log_mlflow")}
        summary = score_archive_ray(
            model,
            Path(input),
            output,
            **ray_options,
            ray_address=ray_address,
            num_gpus=num_gpus,
            concurrency=concurrency,
        )
    elif is_dicomweb_url(input):  # a str, not a Path: Path would fold the URL's "//"
        summary = score_dicomweb(model, input, output, sr_dir=sr_dir, **options)
    else:
        summary = score_archive(model, Path(input), output, **options)
    if summary.rank != 0:  # under DDP every rank returns; the job's outputs and its line are rank 0's
        return
    print(summary.line())
    if sr_dir is not None and not is_dicomweb_url(input):  # a DICOMweb job wrote its files with its SRs
        from medres.scoring.sr_files import write_folder_srs
        from medres.tracking.registry import load_model

        package = load_model(model, tracking_uri=tracking_uri).package
        written = write_folder_srs(Path(input), output, package.findings, package.thresholds, sr_dir, aggregation)
        print(f"SRs: {len(written)} file(s) → {sr_dir}")
