"""``medres synth``, ``medres index`` and ``medres qc``: archives in, manifests and reports out."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser

from medres.cli.labels import SYNTH_LAYOUTS


def synth_chest_xray_command(out: Path, patients: int = 150, seed: int = 0, image_size: int = 320) -> None:
    """Write a synthetic chest X-ray DICOM archive with labels.csv.

    Args:
        out: Empty or new folder for the archive.
        patients: Number of patients.
        seed: Same seed, same bytes.
        image_size: Approximate rows/columns of each image.
    """
    from medres.synthetic import synth_chest_xray

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
    from medres.synthetic import synth_ct

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
    from medres.data.keys import patient_key_salt
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

    from medres.data.keys import patient_key_salt
    from medres.data.qc import qc_path, render_report, write_report

    if Path(out).suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"--out {out}: the report is written as .csv or .parquet")
    report = qc_path(target, salt or patient_key_salt(), num_workers=num_workers, root=root, progress=True)
    write_report(report, out)
    console = Console(width=None if sys.stdout.isatty() else 160)  # a pipe or file gets the full table
    if len(report.rows):
        console.print(*render_report(report))
    print(f"{report.line()} → {out}")


def synth(args: Sequence[str]) -> None:
    """``medres synth chest-xray|ct …``."""
    parser = ArgumentParser(prog="medres synth", description="Write a synthetic DICOM archive.", exit_on_error=False)
    subcommands = parser.add_subcommands(required=True, dest="kind")
    chest = ArgumentParser(exit_on_error=False)
    chest.add_function_arguments(synth_chest_xray_command)
    subcommands.add_subcommand("chest-xray", chest, help="Chest radiographs (CR/DX) with four findings.")
    ct = ArgumentParser(exit_on_error=False)
    ct.add_function_arguments(synth_ct_command)
    subcommands.add_subcommand("ct", ct, help="Chest CT series (HU, real geometry) with lung masses and effusions.")
    for name, (function, help_text) in SYNTH_LAYOUTS.items():
        layout = ArgumentParser(exit_on_error=False)
        layout.add_function_arguments(function)
        subcommands.add_subcommand(name, layout, help=help_text)
    config = parser.parse_args(list(args))
    commands: dict[str, Callable[..., None]] = {"ct": synth_ct_command, "chest-xray": synth_chest_xray_command}
    command = commands[config.kind] if config.kind in commands else SYNTH_LAYOUTS[config.kind][0]
    command(**config[config.kind].as_dict())


def index(args: Sequence[str]) -> None:
    """``medres index ARCHIVE --out FILE``."""
    parser = ArgumentParser(prog="medres index", description="Header-only archive index.", exit_on_error=False)
    parser.add_argument("archive", type=Path, help="Folder to index.")
    parser.add_argument("--out", type=Path, required=True, help="Manifest Parquet file.")
    parser.add_argument("--num_workers", type=int, default=0, help="Worker processes.")
    parser.add_argument(
        "--resume", action=ActionYesNo(no_prefix="no-"), default=True, help="Continue an interrupted run."
    )
    config = parser.parse_args(list(args))
    index_command(config.archive, config.out, config.num_workers, config.resume)


def qc(args: Sequence[str]) -> None:
    """``medres qc MANIFEST_OR_ARCHIVE``."""
    parser = ArgumentParser(prog="medres qc", description="Per-series archive QC report.", exit_on_error=False)
    parser.add_argument("target", type=Path, help="Manifest Parquet file or archive folder.")
    parser.add_argument("--out", type=Path, default=Path("qc_report.csv"), help="Report file (.csv or .parquet).")
    parser.add_argument("--salt", type=str, default=None, help="Patient-key salt (default MEDRES_PATIENT_KEY_SALT).")
    parser.add_argument("--num_workers", type=int, default=0, help="Index worker processes (folder input).")
    parser.add_argument("--root", type=Path, default=None, help="Archive root of a manifest (default: recorded).")
    config = parser.parse_args(list(args))
    qc_command(config.target, config.out, config.salt, config.num_workers, config.root)
