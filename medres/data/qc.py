"""Archive quality control: what would go wrong in training or scoring, per series, before it does.

Header-only: works on a manifest (and its error ledger), so a million-file archive is checked in the
time the index takes. One report row per series that has something to report, plus one per
(folder, ledger error kind) for files that are not usable images; a clean series gets no row.

Checks, and the ``problems`` names they report (``severity`` ``error``: the series or files fail in
training or scoring; ``warning``: they load, but maybe not as meant):

- ``unsupported_codec`` (error): a transfer syntax with no pixel data decoder available here
  (``pydicom.pixels.get_decoder(ts).is_available``; a syntax pydicom has no decoder for at all, such as
  MPEG video or a private one, counts too).
- ``unsupported_photometric`` (error): a PhotometricInterpretation the reader does not convert
  (:data:`SUPPORTED_PHOTOMETRIC`), or one whose SamplesPerPixel does not match it.
- geometry, for CT/MR/PT series only (radiographs have no patient geometry): the issues of
  :func:`medres.dicom.series.plan_series` under their own names — ``missing_geometry``, ``gap``,
  ``duplicate_positions``, ``mixed_spacing``, ``mixed_orientation``, ``mixed_shape``,
  ``mixed_frame_of_reference``, ``localizer_only`` are errors when the planner calls them fatal, warnings
  otherwise (``localizer_dropped``, ``single_slice``, ``gantry_tilt``, a few duplicates).
- ``several_series`` (warning): the series shares its folder with other series (tools that take a
  folder as a series would mix them).
- ``split_series`` (warning): the series' files lie in several folders.
- the ledger's kinds (error), per folder: ``not_dicom``, ``truncated``, ``no_pixel_data``, ...

Privacy: rows hold folders, paths, UIDs, modality and counts; never patient tags (the manifest has none).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from pydicom.pixels import get_decoder

from medres.data.manifest import errors_path_for, index_to_parquet, manifest_root, read_errors, read_manifest
from medres.dicom import DicomReadError
from medres.dicom.series import plan_series

__all__ = [
    "QC_COLUMNS",
    "SUPPORTED_PHOTOMETRIC",
    "VOLUME_MODALITIES",
    "QCReport",
    "qc_manifest",
    "qc_path",
    "render_report",
    "write_report",
]

QC_COLUMNS: tuple[str, ...] = (
    "severity",  # error | warning
    "problems",  # problem names, "; "-separated
    "folder",  # POSIX, relative to the archive root
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "files",
    "details",  # one line per problem, "; "-separated
    "example_path",  # a file to look at
)

# What medres.dicom.read_image converts (grey, RGB-like via pydicom, palette via its LUT), with the
# SamplesPerPixel each must have (PS3.3 C.7.6.3.1.2).
SUPPORTED_PHOTOMETRIC: dict[str, int] = {
    "MONOCHROME1": 1,
    "MONOCHROME2": 1,
    "PALETTE COLOR": 1,
    "RGB": 3,
    "YBR_FULL": 3,
    "YBR_FULL_422": 3,
    "YBR_ICT": 3,
    "YBR_RCT": 3,
}
# Modalities whose series are volumes: their slices must carry patient geometry (PS3.3 C.7.6.2).
VOLUME_MODALITIES = frozenset({"CT", "MR", "PT"})
# Secondary Capture image storage SOP classes (PS3.4 B.5): screenshots and scanned films, no geometry even
# when Modality says CT.
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True)
class QCReport:
    """The QC result.

    Attributes:
        rows: one row per series with something to report and per (folder, ledger kind); ``QC_COLUMNS``.
        series: series checked.
        clean: series with nothing to report.
        images: manifest rows checked.
        unreadable: ledger rows (files that are not usable images).
    """

    rows: pd.DataFrame
    series: int
    clean: int
    images: int
    unreadable: int

    @property
    def errors(self) -> int:
        """Report rows of severity ``error``."""
        return int((self.rows["severity"] == "error").sum())

    def line(self) -> str:
        """One-line summary."""
        warnings = len(self.rows) - self.errors
        return (
            f"qc: {self.series} series ({self.images} images): {self.clean} clean, "
            f"{self.errors} row(s) with errors, {warnings} with warnings; {self.unreadable} unusable file(s)"
        )


@dataclass
class _Finding:
    kind: str
    message: str
    error: bool
    path: str | None = None


def _folder(path: str) -> str:
    parent = str(PurePosixPath(path).parent)
    return "" if parent == "." else parent


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    return text or None


def _codec_findings(rows: pd.DataFrame) -> list[_Finding]:
    findings = []
    for ts, group in rows.groupby(rows["TransferSyntaxUID"].fillna(""), sort=True):
        if not ts:
            continue  # no file meta: the reader infers the encoding, and the ledger has any failure
        try:
            decoder = get_decoder(ts)
            missing = "" if decoder.is_available else f"; missing {', '.join(decoder.missing_dependencies)}"
            available = decoder.is_available
        except NotImplementedError:
            available, missing = False, "; pydicom has no decoder for it"
        if not available:
            message = f"{len(group)} file(s) in transfer syntax {ts} cannot be decoded here{missing}"
            findings.append(_Finding("unsupported_codec", message, True, str(group["path"].iloc[0])))
    return findings


def _photometric_findings(rows: pd.DataFrame) -> list[_Finding]:
    findings = []
    photometric = rows["PhotometricInterpretation"].fillna("").str.strip().str.upper()
    samples = rows["SamplesPerPixel"]
    for value, group in rows.groupby(photometric, sort=True):
        expected = SUPPORTED_PHOTOMETRIC.get(str(value))
        path = str(group["path"].iloc[0])
        if expected is None:
            name = repr(value) if value else "missing"
            message = f"{len(group)} file(s) with photometric interpretation {name}, which the reader does not convert"
            findings.append(_Finding("unsupported_photometric", message, True, path))
            continue
        wrong = group[samples.loc[group.index].notna() & (samples.loc[group.index] != expected)]
        if len(wrong):
            message = (
                f"{len(wrong)} {value} file(s) with SamplesPerPixel {int(wrong['SamplesPerPixel'].iloc[0])}, "
                f"expected {expected}"
            )
            findings.append(_Finding("unsupported_photometric", message, True, str(wrong["path"].iloc[0])))
    return findings


def _geometry_findings(rows: pd.DataFrame, root: Path | None) -> list[_Finding]:
    try:
        plan = plan_series(rows, root=root)
    except DicomReadError as exc:  # a multi-frame file whose per-frame geometry cannot be read
        return [_Finding(str(exc.kind), exc.message, True, exc.path)]
    findings = []
    for issue in plan.issues:
        path = issue.path
        if path is not None and root is not None:
            path = Path(path).relative_to(root).as_posix() if Path(path).is_relative_to(root) else path
        findings.append(_Finding(issue.kind, issue.message, issue.fatal, path))
    return findings


def _row(findings: list[_Finding], folder: str, rows: pd.DataFrame | None, files: int) -> dict[str, Any]:
    first = rows.iloc[0] if rows is not None else None
    return {
        "severity": "error" if any(f.error for f in findings) else "warning",
        "problems": "; ".join(dict.fromkeys(f.kind for f in findings)),
        "folder": folder,
        "StudyInstanceUID": _text(first["StudyInstanceUID"]) if first is not None else None,
        "SeriesInstanceUID": _text(first["SeriesInstanceUID"]) if first is not None else None,
        "Modality": _text(first["Modality"]) if first is not None else None,
        "files": files,
        "details": "; ".join(f.message for f in findings),
        "example_path": next((f.path for f in findings if f.path), None),
    }


def qc_manifest(manifest: pd.DataFrame, errors: pd.DataFrame | None = None, root: Path | None = None) -> QCReport:
    """Check an indexed archive.

    Args:
        manifest: manifest rows (``medres.data.manifest.MANIFEST_COLUMNS``).
        errors: the index's error ledger (``path, kind, message``), if any.
        root: archive root the manifest paths are relative to; needed to read the per-frame geometry
            of multi-frame CT/MR files.

    Returns:
        The report; rows sorted errors first, then by folder and series.
    """
    out: list[dict[str, Any]] = []
    manifest = manifest.assign(folder=manifest["path"].map(_folder))
    series_key = manifest["SeriesInstanceUID"].fillna("")
    folders_of_series = manifest.groupby(series_key)["folder"].nunique()
    volume = manifest.groupby(series_key, group_keys=False)[["Modality", "SOPClassUID"]].transform("first")
    is_volume = volume["Modality"].isin(VOLUME_MODALITIES) & ~volume["SOPClassUID"].fillna("").str.startswith(
        _SECONDARY_CAPTURE
    )
    # Only volumes count: radiograph views of one study share a folder as separate series by design.
    series_in_folder = manifest[is_volume].groupby("folder")["SeriesInstanceUID"].nunique()
    clean = 0
    for uid, rows in manifest.groupby(series_key, sort=True):
        findings = _codec_findings(rows) + _photometric_findings(rows)
        volume_series = bool(is_volume.loc[rows.index[0]])
        if volume_series:
            findings += _geometry_findings(rows, root)
        folders = sorted(rows["folder"].unique())
        crowded = [f for f in folders if volume_series and series_in_folder.get(f, 0) > 1]
        if crowded:
            message = f"folder {crowded[0] or '.'!r} holds {series_in_folder[crowded[0]]} series"
            findings.append(_Finding("several_series", message, False, str(rows["path"].iloc[0])))
        if uid and folders_of_series[uid] > 1:
            message = f"files spread over {folders_of_series[uid]} folders"
            findings.append(_Finding("split_series", message, False, str(rows["path"].iloc[0])))
        if findings:
            out.append(_row(findings, folders[0], rows, len(rows)))
        else:
            clean += 1
    if errors is not None and len(errors):
        ledger = errors.assign(folder=errors["path"].map(_folder))
        for (folder, kind), group in ledger.groupby(["folder", "kind"], sort=True):
            message = f"{len(group)} file(s) {kind}: {group['message'].iloc[0]}"
            out.append(
                _row([_Finding(str(kind), message, True, str(group["path"].iloc[0]))], str(folder), None, len(group))
            )
    rows_df = pd.DataFrame(out, columns=list(QC_COLUMNS))
    if len(rows_df):
        rows_df = rows_df.sort_values(
            ["severity", "folder", "SeriesInstanceUID"], key=_severity_first, na_position="first", kind="stable"
        ).reset_index(drop=True)
    rows_df["files"] = rows_df["files"].astype("int64")
    return QCReport(
        rows=rows_df,
        series=int(series_key.nunique()),
        clean=clean,
        images=len(manifest),
        unreadable=0 if errors is None else len(errors),
    )


def _severity_first(column: pd.Series) -> pd.Series:
    return column.map({"error": 0, "warning": 1}) if column.name == "severity" else column


def qc_path(
    target: Path, salt: str, num_workers: int = 0, root: Path | None = None, progress: bool = False
) -> QCReport:
    """QC a manifest Parquet file (its ledger beside it is used when present) or an archive folder.

    A folder is indexed first, into a temporary folder (``medres index`` then ``medres qc`` on its
    manifest does the same and keeps the manifest).

    Args:
        target: ``manifest.parquet`` or an archive folder.
        salt: patient-key salt for indexing a folder (the report holds no keys; the index needs one).
        num_workers: index worker processes.
        root: archive root for a manifest; default the root recorded in the manifest by the index.
        progress: show the index progress bar.

    Raises:
        FileNotFoundError: ``target`` does not exist.
    """
    target = Path(target)
    if target.is_dir():
        with tempfile.TemporaryDirectory(prefix="medres-qc-") as tmp:
            out = Path(tmp) / "manifest.parquet"
            index_to_parquet(target, out, salt, num_workers=num_workers, resume=False, progress=progress)
            return qc_manifest(read_manifest(out), read_errors(errors_path_for(out)), root=target)
    if not target.is_file():
        raise FileNotFoundError(f"{target}: no such manifest file or archive folder")
    ledger = errors_path_for(target)
    errors = read_errors(ledger) if ledger.is_file() else None
    return qc_manifest(read_manifest(target), errors, root=root or manifest_root(target))


def write_report(report: QCReport, out: Path) -> None:
    """Write the report rows to ``.csv`` or ``.parquet`` (by extension).

    Raises:
        ValueError: another extension.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"--out {out}: the report is written as .csv or .parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        report.rows.to_csv(out, index=False)
    else:
        report.rows.to_parquet(out, index=False)


def render_report(report: QCReport, max_rows: int = 50) -> Iterable[Any]:
    """Rich renderables for the terminal: the table (first ``max_rows`` rows), then what was left out."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="medres qc")
    table.add_column("severity", no_wrap=True)
    table.add_column("problems", overflow="fold", max_width=28)
    table.add_column("folder", overflow="fold", max_width=32)
    table.add_column("Modality", no_wrap=True)
    table.add_column("files", justify="right", no_wrap=True)
    table.add_column("details", overflow="fold")
    for row in report.rows.head(max_rows).itertuples(index=False):
        colour = "red" if row.severity == "error" else "yellow"
        # Text, not markup: details may hold brackets that rich would parse as styles.
        table.add_row(
            Text(str(row.severity), style=colour),
            Text(str(row.problems)),
            Text(_text(row.folder) or "."),
            Text(_text(row.Modality) or ""),
            Text(str(row.files)),
            Text(str(row.details)),
        )
    yield table
    if len(report.rows) > max_rows:
        yield f"… {len(report.rows) - max_rows} more row(s) in the report file"
