"""``medres`` entry point: LightningCLI for fit/validate/test/predict, plus synth, index, qc, score and reports.

Every command is a thin layer over a function of the Python API; configuration flows through
LightningCLI YAML (``--config`` files merge in order) into typed ``__init__`` arguments.
"""

from __future__ import annotations

import logging
import os
import sys
from argparse import ArgumentError
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionYesNo, ArgumentParser, lazy_instance
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from medres.data.datamodule import DicomDataModule
from medres.scoring.prediction_writer import DetectionPredictionWriter
from medres.scoring.studies import Aggregation
from medres.tasks.checkpointing import Checkpoint
from medres.tasks.detection import MLFLOW_RUN_KEY, MultiLabelDetection
from medres.tracking.config_logging import MLflowSaveConfig
from medres.tracking.defaults import disable_telemetry
from medres.tracking.evaluate import HeldOutData
from medres.tracking.logger import MLflowLogger
from medres.tracking.model_logging import RegisterModel
from medres.tracking.promotion import Gates
from medres.tracking.review import ReviewRun

TRAINER_SUBCOMMANDS = ("fit", "validate", "test", "predict")
log = logging.getLogger(__name__)


def checkpoint_mlflow_run(ckpt_path: str | Path | None) -> str | None:
    """The MLflow run id a medres checkpoint was written under, if ``ckpt_path`` is such a file."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return None  # "last"/"best" and missing files are Lightning's to resolve or refuse
    import torch

    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    run = checkpoint.get(MLFLOW_RUN_KEY) if isinstance(checkpoint, dict) else None
    return str(run["run_id"]) if run else None


def last_checkpoint(root_dir: str | Path, experiment_id: str) -> Path | None:
    """The newest ``last*.ckpt`` of an MLflow experiment's fits under a trainer's ``default_root_dir``.

    Checkpoints live in ``<root_dir>/<experiment_id>/<run_id>/checkpoints/`` (Lightning's layout for an MLflow logger).
    """
    found = [p for p in Path(root_dir).glob(f"{experiment_id}/*/checkpoints/last*.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_last_checkpoint(root_dir: str | Path, experiment_name: str, tracking_uri: str | None) -> Path | None:
    """``--ckpt_path last`` for an MLflow-logged fit: the newest ``last.ckpt`` of the experiment, if any.

    Lightning's own "last" looks only in the new run's checkpoint folder, which a fresh run id leaves empty.
    """
    from mlflow import MlflowClient

    from medres.tracking.defaults import resolve_tracking_uri

    experiment = MlflowClient(resolve_tracking_uri(tracking_uri)).get_experiment_by_name(experiment_name)
    return None if experiment is None else last_checkpoint(root_dir, experiment.experiment_id)


class MedresCLI(LightningCLI):
    """LightningCLI with medres's links and defaults: one MLflow run per fit, test after fit, registration."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link data → model settings and add the always-on callbacks as config groups."""
        # The model's label names and preprocessing come from the data: declared once, saved with the model.
        parser.link_arguments("data.findings", "model.findings")
        parser.link_arguments("data.preprocessing", "model.preprocessing")
        parser.link_arguments("data.selection", "model.selection")
        # last.ckpt follows every epoch, so `fit --ckpt_path last` after a preemption loses at most one epoch.
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/auroc_macro",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-{epoch:02d}",
                "checkpoint.save_last": True,
            }
        )
        parser.add_lightning_class_args(RegisterModel, "register")
        parser.add_lightning_class_args(ReviewRun, "review")
        parser.add_lightning_class_args(DetectionPredictionWriter, "predictions")

    def before_instantiate_classes(self) -> None:
        """``fit --ckpt_path FILE`` continues the MLflow run that wrote the checkpoint instead of starting one.

        ``--ckpt_path last`` first becomes the newest ``last.ckpt`` of the configured experiment under
        ``trainer.default_root_dir``; with none there (a first start of a job that requeues itself) the fit starts
        from scratch in a new run.
        """
        if self.subcommand != "fit":
            return
        config = self.config["fit"]
        logger = config.trainer.get("logger")
        if config.get("ckpt_path") == "last" and logger is not None and not isinstance(logger, bool | list):
            init_args = logger.get("init_args") or {}
            experiment = init_args.get("experiment_name")
            if experiment is not None:
                root_dir = config.trainer.get("default_root_dir") or "medres_work"
                found = resolve_last_checkpoint(root_dir, experiment, init_args.get("tracking_uri"))
                if found is None:
                    log.warning(
                        "--ckpt_path last: no last.ckpt of experiment %r under %s; starting a new fit",
                        experiment,
                        root_dir,
                    )
                config.ckpt_path = None if found is None else str(found)
                log.info("--ckpt_path last → %s", config.ckpt_path)
        run = checkpoint_mlflow_run(config.get("ckpt_path"))
        if run is None or logger is None or isinstance(logger, bool | list):
            return
        init_args = logger.get("init_args")
        if init_args is not None and "run_id" in init_args and init_args.run_id is None:
            init_args.run_id = run
            log.info("resuming MLflow run %s from %s", run, config.ckpt_path)

    def after_fit(self) -> None:
        """Evaluate the best checkpoint on the test split (when there is one) into the same MLflow run."""
        datamodule = self.datamodule
        if isinstance(datamodule, DicomDataModule) and datamodule.has_split("test") and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=datamodule, ckpt_path="best" if self._has_best() else None)

    def _has_best(self) -> bool:
        callback = self.trainer.checkpoint_callback
        return bool(getattr(callback, "best_model_path", ""))


def run_trainer_cli(args: Sequence[str] | None = None) -> None:
    """``medres fit|validate|test|predict …``; ``args=None`` reads ``sys.argv``."""
    MedresCLI(
        MultiLabelDetection,
        DicomDataModule,
        save_config_callback=MLflowSaveConfig,
        save_config_kwargs={"save_to_log_dir": False},
        trainer_defaults={
            "logger": lazy_instance(MLflowLogger, experiment_name="medres"),
            "default_root_dir": "medres_work",
        },
        seed_everything_default=0,
        parser_kwargs={"exit_on_error": False},
        args=None if args is None else list(args),
    )


# ---- commands beside the trainer ---------------------------------------------------------------
def synth_chest_xray_command(out: Path, patients: int = 150, seed: int = 0, image_size: int = 320) -> None:
    """Write a synthetic chest X-ray DICOM archive with labels.csv.

    Args:
        out: Empty or new folder for the archive.
        patients: Number of patients.
        seed: Same seed, same bytes.
        image_size: Approximate rows/columns of each image.
    """
    from medres.data.synthetic import synth_chest_xray

    summary = synth_chest_xray(out, patients=patients, seed=seed, image_size=image_size)
    print(
        f"wrote {summary.instances} instance(s) in {summary.studies} studies of {summary.patients} patients "
        f"to {summary.root}; labels: {summary.labels_csv}"
    )


def synth_ct_command(out: Path, patients: int = 100, seed: int = 0, slices: int = 32, size: int = 48) -> None:
    """Write a synthetic chest CT DICOM archive (series in HU, lung masses and effusions) with labels.csv.

    Args:
        out: Empty or new folder for the archive.
        patients: Number of patients.
        seed: Same seed, same bytes.
        slices: Nominal slices of each study's main axial series (±15 %).
        size: Rows and columns of each axial image.
    """
    from medres.data.synthetic import synth_ct

    summary = synth_ct(out, patients=patients, seed=seed, slices=slices, size=size)
    print(
        f"wrote {summary.instances} instance(s) in {summary.series} series of {summary.studies} studies of "
        f"{summary.patients} patients to {summary.root}; labels: {summary.labels_csv}"
    )


def index_command(archive: Path, out: Path, num_workers: int = 0, resume: bool = True) -> None:
    """Index an archive header-only into a manifest Parquet file (error ledger beside it), streaming.

    Args:
        archive: Folder to index.
        out: Manifest Parquet file; the ledger goes to <out stem>.errors.parquet.
        num_workers: Worker processes (0: this process).
        resume: Continue an interrupted run of the same command (False: start over).
    """
    from medres.data.datamodule import patient_key_salt
    from medres.data.manifest import index_to_parquet

    summary = index_to_parquet(
        archive, out, salt=patient_key_salt(), num_workers=num_workers, resume=resume, progress=True
    )
    print(summary.line())


def qc_command(
    target: Path,
    out: Path = Path("qc_report.csv"),
    salt: str | None = None,
    num_workers: int = 0,
    root: Path | None = None,
) -> None:
    """Report, per series, what would go wrong in training or scoring (a table and a file).

    Args:
        target: Manifest Parquet file (its .errors.parquet ledger is used too) or an archive folder (indexed first).
        out: Report file, .csv or .parquet.
        salt: Patient-key salt for indexing a folder; default MEDRES_PATIENT_KEY_SALT.
        num_workers: Index worker processes for a folder.
        root: Archive root of a manifest; default the one the index recorded.
    """
    from rich.console import Console

    from medres.data.datamodule import patient_key_salt
    from medres.data.qc import qc_path, render_report, write_report

    if Path(out).suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"--out {out}: the report is written as .csv or .parquet")
    report = qc_path(target, salt or patient_key_salt(), num_workers=num_workers, root=root, progress=True)
    write_report(report, out)
    console = Console(width=None if sys.stdout.isatty() else 160)  # a pipe or file gets the full table
    if len(report.rows):
        console.print(*render_report(report))
    print(f"{report.line()} → {out}")


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
    """
    from medres.scoring.dicomweb import DicomWebScoreSummary, is_dicomweb_url, score_dicomweb
    from medres.scoring.score import ScoreSummary, score_archive

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
        summary = score_dicomweb(model, input, output, **options)
    else:
        summary = score_archive(model, Path(input), output, **options)
    if summary.rank == 0:  # under DDP every rank returns; one line is the job's
        print(summary.line())


def report_degradation_command(
    experiment: str = "degradation",
    out: Path = Path("docs/degradation"),
    networks: list[str] | None = None,
    tracking_uri: str | None = None,
) -> None:
    """Report the degradation experiment: table, training curves and verdict from its MLflow runs.

    Args:
        experiment: MLflow experiment holding the fits.
        out: Folder for README.md and training_curves.png.
        networks: Two plain and two residual backbones of two depths (default plain20 plain56 resnet20 resnet56).
        tracking_uri: MLflow store; default MLFLOW_TRACKING_URI, else ./mlflow.db.
    """
    from medres.tracking.degradation import DEFAULT_NETWORKS, report_degradation

    report = report_degradation(experiment, out, networks or DEFAULT_NETWORKS, tracking_uri)
    print(f"wrote {report.readme} and {report.plot}; logged to run {report.report_run_id}")
    print("effect holds" if report.verdict.holds else "effect does NOT hold", end=": ")
    print(f"plain gap {report.verdict.plain_gap:+.4f}, residual gap {report.verdict.residual_gap:+.4f}")


def evaluate_command(model: str, data: HeldOutData, tracking_uri: str | None = None) -> None:
    """Evaluate a registered model on held-out data: AUROC per finding and macro.

    Args:
        model: models:/NAME/VERSION, models:/NAME/latest, models:/NAME@ALIAS or a .ckpt path.
        data: The held-out data (default the test split of the model's training archive).
        tracking_uri: MLflow store; default MLFLOW_TRACKING_URI, else ./mlflow.db.
    """
    from rich.console import Console
    from rich.table import Table

    from medres.tracking.evaluate import evaluate_package, load_held_out, resolve_held_out
    from medres.tracking.registry import load_model

    resolved = load_model(model, tracking_uri)
    held_out = resolve_held_out(data, resolved.package)
    samples = load_held_out(held_out, resolved.package)
    evaluation = evaluate_package(resolved.package, samples, held_out)
    held = samples.fingerprint
    table = Table(title=f"{model} on held-out {held.split}: {held.samples} samples, {held.patients} patients")
    for column in ("finding", "pos", "neg", "AUROC"):
        table.add_column(column, justify="left" if column == "finding" else "right")
    for finding in evaluation.findings:
        auroc = evaluation.auroc[finding]  # NaN: the held-out labels of this finding hold one class only
        counts = [str(evaluation.positives[finding]), str(evaluation.negatives[finding])]
        table.add_row(finding, *counts, "n/a" if auroc != auroc else f"{auroc:.4f}")
    table.add_row("macro", "", "", f"{evaluation.macro:.4f}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    print(f"{model}: macro AUROC {evaluation.macro:.4f} on {held.samples} held-out samples (data {held.digest[:12]})")


def promote_command(
    model: str,
    version: str,
    data: HeldOutData,
    gates: Gates | None = None,
    alias: str = "champion",
    dry_run: bool = False,
    tracking_uri: str | None = None,
) -> None:
    """Promote a registered version to @champion if it passes the gates against the current champion.

    Exits 0 when promoted, 3 when a gate refuses it (a dry run: when it would be refused), 2 on bad input.

    Args:
        model: Registered model name.
        version: Candidate version (a number or latest).
        data: The held-out data both models are evaluated on (default the test split of the candidate's archive).
        gates: Minimum macro AUROC and non-inferiority margins (default 0.5 and 0.02).
        alias: The champion alias.
        dry_run: Evaluate, compare and print the decision; record nothing, move nothing.
        tracking_uri: MLflow store; default MLFLOW_TRACKING_URI, else ./mlflow.db.
    """
    from rich.console import Console

    from medres.tracking.promotion import EXIT_REFUSED, promote

    decision = promote(model, version, data, gates, alias=alias, tracking_uri=tracking_uri, dry_run=dry_run)
    Console(width=None if sys.stdout.isatty() else 160).print(decision.table())
    for note in decision.notes:
        print(f"note: {note}")
    print(decision.line() + (f" (run {decision.run_id})" if decision.run_id else ""))
    if not decision.promoted:
        raise SystemExit(EXIT_REFUSED)


def rollback_command(
    model: str,
    to: str | None = None,
    reason: str | None = None,
    alias: str = "champion",
    tracking_uri: str | None = None,
) -> None:
    """Move @champion back to the champion before the current one, or to a named version (no gates).

    Args:
        model: Registered model name.
        to: Version to restore; default the champion the current one replaced.
        reason: Why, recorded in the history and on the versions.
        alias: The champion alias.
        tracking_uri: MLflow store; default MLFLOW_TRACKING_URI, else ./mlflow.db.
    """
    from medres.tracking.promotion import rollback

    entry = rollback(model, to_version=to, reason=reason, alias=alias, tracking_uri=tracking_uri)
    print(f"models:/{model}/{entry.version} is @{alias} again (was version {entry.previous})")


def champion_history_command(model: str, tracking_uri: str | None = None) -> None:
    """Print the recorded promotions, refusals and rollbacks of @champion, oldest first.

    Args:
        model: Registered model name.
        tracking_uri: MLflow store; default MLFLOW_TRACKING_URI, else ./mlflow.db.
    """
    from rich.console import Console

    from medres.tracking.promotion import champion_history, history_table

    entries = champion_history(model, tracking_uri)
    if not entries:
        print(f"{model}: no recorded champion history")
        return
    Console(width=None if sys.stdout.isatty() else 160).print(history_table(model, entries))


def _synth(args: Sequence[str]) -> None:
    parser = ArgumentParser(prog="medres synth", description="Write a synthetic DICOM archive.", exit_on_error=False)
    subcommands = parser.add_subcommands(required=True, dest="kind")
    chest = ArgumentParser(exit_on_error=False)
    chest.add_function_arguments(synth_chest_xray_command)
    subcommands.add_subcommand("chest-xray", chest, help="Chest radiographs (CR/DX) with four findings.")
    ct = ArgumentParser(exit_on_error=False)
    ct.add_function_arguments(synth_ct_command)
    subcommands.add_subcommand("ct", ct, help="Chest CT series (HU, real geometry) with lung masses and effusions.")
    config = parser.parse_args(list(args))
    command = synth_ct_command if config.kind == "ct" else synth_chest_xray_command
    command(**config[config.kind].as_dict())


def _function_command(function: Callable[..., None], prog: str) -> Callable[[Sequence[str]], None]:
    def run(args: Sequence[str]) -> None:
        parser = ArgumentParser(prog=prog, description=(function.__doc__ or "").splitlines()[0], exit_on_error=False)
        parser.add_function_arguments(function, as_positional=False)
        config = parser.parse_args(list(args))
        function(**config.as_dict())

    return run


def _dataclass_command(function: Callable[..., None], prog: str) -> Callable[[Sequence[str]], None]:
    """Like :func:`_function_command`, with dataclass arguments built from ``--data.root``, ``--gates.…`` options."""

    def run(args: Sequence[str]) -> None:
        parser = ArgumentParser(prog=prog, description=(function.__doc__ or "").splitlines()[0], exit_on_error=False)
        parser.add_function_arguments(function, as_positional=False)
        config = parser.instantiate(parser.parse_args(list(args)))
        function(**config.as_dict())

    return run


def _index(args: Sequence[str]) -> None:
    parser = ArgumentParser(prog="medres index", description="Header-only archive index.", exit_on_error=False)
    parser.add_argument("archive", type=Path, help="Folder to index.")
    parser.add_argument("--out", type=Path, required=True, help="Manifest Parquet file.")
    parser.add_argument("--num_workers", type=int, default=0, help="Worker processes.")
    parser.add_argument(
        "--resume", action=ActionYesNo(no_prefix="no-"), default=True, help="Continue an interrupted run."
    )
    config = parser.parse_args(list(args))
    index_command(config.archive, config.out, config.num_workers, config.resume)


def _qc(args: Sequence[str]) -> None:
    parser = ArgumentParser(prog="medres qc", description="Per-series archive QC report.", exit_on_error=False)
    parser.add_argument("target", type=Path, help="Manifest Parquet file or archive folder.")
    parser.add_argument("--out", type=Path, default=Path("qc_report.csv"), help="Report file (.csv or .parquet).")
    parser.add_argument("--salt", type=str, default=None, help="Patient-key salt (default MEDRES_PATIENT_KEY_SALT).")
    parser.add_argument("--num_workers", type=int, default=0, help="Index worker processes (folder input).")
    parser.add_argument("--root", type=Path, default=None, help="Archive root of a manifest (default: recorded).")
    config = parser.parse_args(list(args))
    qc_command(config.target, config.out, config.salt, config.num_workers, config.root)


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {
    "synth": _synth,
    "index": _index,
    "qc": _qc,
    "score": _function_command(score_command, "medres score"),
    "report-degradation": _function_command(report_degradation_command, "medres report-degradation"),
    "evaluate": _dataclass_command(evaluate_command, "medres evaluate"),
    "promote": _dataclass_command(promote_command, "medres promote"),
    "rollback": _function_command(rollback_command, "medres rollback"),
    "champion-history": _function_command(champion_history_command, "medres champion-history"),
}

USAGE = """usage: medres COMMAND [options]

Train residual networks on DICOM archives, track them in MLflow, score archives.

commands:
  fit | validate | test | predict   Lightning trainer commands (--config FILE ..., --print_config, --help)
  synth chest-xray                  write a synthetic chest X-ray archive
  synth ct                          write a synthetic chest CT archive (series)
  index ARCHIVE --out FILE          header-only manifest of an archive (streaming, resumable)
  qc MANIFEST_OR_ARCHIVE [--out F]  per-series report of what would fail in training or scoring
  score --model M --input DIR --output DIR    score every file under DIR (resumable; --devices 2 --strategy ddp)
  score --model M --input dicomweb://HOST:PORT/PATH?FILTERS --output DIR   score a PACS query, SRs back
  report-degradation --experiment E --out DIR  table, curves and verdict of the degradation experiment
  evaluate --model M --data.root DIR        AUROC per finding on held-out data (default: the test split)
  promote --model NAME --version V --data.root DIR   gated move of @champion (exit 3: refused; --dry_run true)
  rollback --model NAME [--to V]            move @champion back to the previous champion
  champion-history --model NAME             promotions, refusals and rollbacks of @champion

Run `medres COMMAND --help` for a command's options.
"""


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch ``medres COMMAND``; errors in arguments or configs exit 2 with one line naming the problem."""
    from_command_line = argv is None
    args = list(sys.argv[1:] if argv is None else argv)
    disable_telemetry()
    # MLflow draws a progress bar per model download; in batch jobs' logs it is noise (a user may still set it).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # INFO for medres's own messages only: codec libraries log every tile at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("medres").setLevel(logging.INFO)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return
    command, rest = args[0], args[1:]
    try:
        if command in TRAINER_SUBCOMMANDS:
            run_trainer_cli(None if from_command_line else args)
        elif command in COMMANDS:
            COMMANDS[command](rest)
        else:
            raise _UsageError(f"unknown command {command!r}; expected one of {[*TRAINER_SUBCOMMANDS, *COMMANDS]}")
    except (_UsageError, ArgumentError, ValueError, FileNotFoundError) as err:
        # Bad input names the file or setting in one line; MEDRES_DEBUG=1 shows the traceback instead.
        if os.environ.get("MEDRES_DEBUG"):
            raise
        _die(command, err)


class _UsageError(Exception):
    pass


def _die(command: str, err: BaseException) -> None:
    message = " ".join(str(err).split())  # one line, however the library formatted it
    print(f"medres {command}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
