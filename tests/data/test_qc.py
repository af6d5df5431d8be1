from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medres.cli import main
from medres.data.manifest import errors_path_for, index_to_parquet, read_errors, read_manifest
from medres.data.qc import QC_COLUMNS, qc_manifest, qc_path, render_report

SALT = "qc-salt"
STUDY = "1.2.826.0.1.3680043.8.498.1"


def slice_dataset(
    series: str,
    z: float | None,
    number: int,
    *,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    samples: int = 1,
) -> Dataset:
    """A small CT slice (8×8) with full geometry; ``z=None`` leaves ImagePositionPatient out."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientID = "QC-PATIENT"
    ds.PatientName = "Doe^Jane"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = STUDY + ".9"
    ds.Modality = modality
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = number
    if z is not None:
        ds.ImagePositionPatient = [-10.0, -10.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 2.5
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = samples
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.zeros((8, 8, samples), dtype=np.uint16).tobytes()
    return ds


def write_series(folder: Path, zs: list[float | None], **kwargs: object) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for i, z in enumerate(zs):
        ds = slice_dataset(uid, z, i + 1, **kwargs)  # type: ignore[arg-type]
        ds.save_as(folder / f"IM{i:03d}_{uid[-6:]}.dcm", enforce_file_format=True)
    return uid


@pytest.fixture(scope="module")
def problem_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qc") / "archive"
    write_series(root / "clean", [0.0, 2.5, 5.0, 7.5, 10.0])
    write_series(root / "duplicate", [0.0, 2.5, 5.0, 5.0, 7.5, 10.0])
    write_series(root / "gap", [0.0, 2.5, 5.0, 12.5, 15.0])
    write_series(root / "no_ipp", [0.0, 2.5, None, 7.5])
    write_series(root / "mixed", [0.0, 2.5, 5.0])
    write_series(root / "mixed", [20.0, 22.5, 25.0])
    (root / "codec").mkdir()
    video = slice_dataset(generate_uid(), None, 1, modality="DX")
    video.file_meta.TransferSyntaxUID = MPEG2MPML
    video.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    video.save_as(root / "codec" / "video.dcm", enforce_file_format=True)
    (root / "colour").mkdir()
    cmyk = slice_dataset(generate_uid(), None, 1, modality="OT", photometric="CMYK", samples=4)
    cmyk.save_as(root / "colour" / "cmyk.dcm", enforce_file_format=True)
    # A palette image is supported (the reader applies its LUT): no row.
    (root / "palette").mkdir()
    slice_dataset(generate_uid(), None, 1, modality="US", photometric="PALETTE COLOR").save_as(
        root / "palette" / "palette.dcm", enforce_file_format=True
    )
    # Two radiograph views of one study in one folder are normal (not "several series").
    write_series(root / "views", [None], modality="DX")
    write_series(root / "views", [None], modality="DX")
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("not an image\n")
    whole = (root / "clean").iterdir().__next__().read_bytes()
    (root / "junk" / "cut.dcm").write_bytes(whole[: len(whole) - 40])
    return root


EXPECTED = {
    # folder: (severity, problems) per report row of that folder
    "codec": [("error", "unsupported_codec")],
    "colour": [("error", "unsupported_photometric")],
    "gap": [("error", "gap")],
    "junk": [("error", "not_dicom"), ("error", "truncated")],
    "no_ipp": [("error", "missing_geometry")],
    "duplicate": [("warning", "duplicate_positions")],
    "mixed": [("warning", "several_series"), ("warning", "several_series")],
}


def test_qc_finds_each_planted_problem_and_nothing_else(problem_archive: Path) -> None:
    report = qc_path(problem_archive, SALT)
    rows = report.rows
    assert list(rows.columns) == list(QC_COLUMNS)
    found = {
        folder: sorted(zip(group["severity"], group["problems"], strict=True))
        for folder, group in rows.groupby("folder")
    }
    assert found == {folder: sorted(expected) for folder, expected in EXPECTED.items()}
    # clean, palette and the two views have no row; every row names a file that exists.
    assert report.series == 11 and report.clean == 4 and report.unreadable == 2
    assert all((problem_archive / p).is_file() for p in rows["example_path"])

    by_folder = rows.set_index("folder")
    assert by_folder.loc["gap", "example_path"].startswith("gap/IM003")  # the slice after the gap
    assert "7.5 mm" in by_folder.loc["gap", "details"]
    assert "ImagePositionPatient" in by_folder.loc["no_ipp", "details"]
    assert "'CMYK'" in by_folder.loc["colour", "details"]
    assert "1.2.840.10008.1.2.4.100" in by_folder.loc["codec", "details"]
    assert by_folder.loc["duplicate", "files"] == 6
    assert rows["severity"].tolist() == sorted(rows["severity"], key=["error", "warning"].index)
    for column in ("details", "problems", "folder"):
        assert not rows[column].str.contains("Doe|QC-PATIENT").any()


def test_qc_of_a_clean_series_reports_nothing(tmp_path: Path) -> None:
    write_series(tmp_path / "a" / "ct", [float(z) for z in range(0, 30, 3)])
    report = qc_path(tmp_path / "a", SALT)
    assert report.rows.empty and list(report.rows.columns) == list(QC_COLUMNS)
    assert (report.series, report.clean, report.images, report.unreadable) == (1, 1, 10, 0)
    assert (
        report.line() == "qc: 1 series (10 images): 1 clean, 0 row(s) with errors, 0 with warnings; 0 unusable file(s)"
    )


def test_qc_of_a_manifest_uses_its_ledger(problem_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.parquet"
    index_to_parquet(problem_archive, out, SALT)
    from_manifest = qc_path(out, SALT)
    from_folder = qc_manifest(read_manifest(out), read_errors(errors_path_for(out)), root=problem_archive)
    pd.testing.assert_frame_equal(from_manifest.rows, from_folder.rows)
    assert from_manifest.rows["problems"].str.contains("not_dicom").any()
    without_ledger = qc_manifest(read_manifest(out))
    assert not without_ledger.rows["problems"].str.contains("not_dicom|truncated").any()


def test_qc_command_table_file_and_exit_codes(
    problem_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_csv = tmp_path / "report.csv"
    main(["qc", str(problem_archive), "--out", str(report_csv), "--salt", SALT])  # returns: exit code 0
    printed = capsys.readouterr().out
    assert "medres qc" in printed and "gap" in printed  # the table (folded to the 80 columns of a pipe)
    assert printed.strip().splitlines()[-1].startswith("qc: 11 series (") and str(report_csv) in printed
    written = pd.read_csv(report_csv)
    assert list(written.columns) == list(QC_COLUMNS) and len(written) == sum(map(len, EXPECTED.values()))

    report_parquet = tmp_path / "report.parquet"
    main(["qc", str(problem_archive), "--out", str(report_parquet), "--salt", SALT])
    assert len(pd.read_parquet(report_parquet)) == len(written)

    for bad in (["qc", str(tmp_path / "missing")], ["qc", str(problem_archive), "--out", str(tmp_path / "r.txt")]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(bad)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.startswith("medres qc: error:")


def test_render_report_truncates(problem_archive: Path) -> None:
    report = qc_path(problem_archive, SALT)
    parts = list(render_report(report, max_rows=3))
    assert len(parts) == 2 and parts[1].startswith(f"… {len(report.rows) - 3} more")
