from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, generate_uid

from medres.cli import main
from medres.data.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    _Parts,
    _row_via_pydicom,
    _row_via_scan,
    errors_path_for,
    index_archive,
    index_to_parquet,
    iter_archive_files,
    join_labels,
    manifest_root,
    patient_key,
    read_errors,
    read_manifest,
    read_manifest_row,
    write_manifest,
)
from medres.dicom import DicomReadError
from medres.dicom.header_scan import GiveUpError

SALT = "test-salt"


def make_dataset(patient_id: str, study_uid: str, rows: int = 16, cols: int = 12) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName = "Roe^Richard"
    ds.PatientID = patient_id
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PixelSpacing = [0.5, 0.25]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(rows * cols, dtype=np.uint16).tobytes()
    return ds


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    (root / "p1" / "s1").mkdir(parents=True)
    (root / "p2").mkdir()
    (root / ".hidden").mkdir()
    make_dataset("PATIENT-ONE", "1.2.3.1").save_as(root / "p1" / "s1" / "a.dcm", enforce_file_format=True)
    make_dataset("PATIENT-ONE", "1.2.3.1").save_as(root / "p1" / "s1" / "IM0002", enforce_file_format=True)
    rle = make_dataset("PATIENT-TWO", "1.2.3.2")
    rle.compress(RLELossless)
    rle.save_as(root / "p2" / "b.dcm", enforce_file_format=True)
    full = (root / "p2" / "b.dcm").read_bytes()
    (root / "p2" / "cut.dcm").write_bytes(full[: len(full) // 2])
    sr = make_dataset("PATIENT-TWO", "1.2.3.2")
    del sr.PixelData
    sr.save_as(root / "p2" / "report.dcm", enforce_file_format=True)
    (root / "notes.csv").write_text("a,b\n1,2\n")
    (root / "p1" / "junk.bin").write_bytes(bytes(range(256)) * 4)
    (root / ".hidden" / "x.dcm").write_bytes(full)  # hidden: never indexed
    (root / ".DS_Store").write_bytes(b"\0")
    return root


def test_iter_archive_files_sorted_and_skips_hidden(archive: Path) -> None:
    rel = [p.relative_to(archive).as_posix() for p in iter_archive_files(archive)]
    assert rel == ["notes.csv", "p1/junk.bin", "p1/s1/IM0002", "p1/s1/a.dcm", "p2/b.dcm", "p2/cut.dcm", "p2/report.dcm"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_index_archive_every_file_once(archive: Path, num_workers: int) -> None:
    manifest, errors = index_archive(archive, SALT, num_workers=num_workers)
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert list(errors.columns) == ["path", "kind", "message"]
    assert sorted(manifest["path"]) == ["p1/s1/IM0002", "p1/s1/a.dcm", "p2/b.dcm"]
    kinds = dict(zip(errors["path"], errors["kind"], strict=True))
    assert kinds == {
        "notes.csv": "not_dicom",
        "p1/junk.bin": "not_dicom",
        "p2/cut.dcm": "truncated",
        "p2/report.dcm": "no_pixel_data",
    }
    every = {p.relative_to(archive).as_posix() for p in iter_archive_files(archive)}
    assert set(manifest["path"]) | set(errors["path"]) == every
    assert not set(manifest["path"]) & set(errors["path"])

    row = manifest.set_index("path").loc["p2/b.dcm"]
    assert row["TransferSyntaxUID"] == RLELossless
    assert (row["Rows"], row["Columns"], row["NumberOfFrames"], row["BitsStored"]) == (16, 12, 1, 12)
    assert (row["spacing_row"], row["spacing_col"]) == (0.5, 0.25)
    assert (row["Modality"], row["BodyPartExamined"], row["ViewPosition"]) == ("DX", "CHEST", "PA")
    assert row["patient_key"] == patient_key("PATIENT-TWO", SALT)
    assert pd.isna(row["ImagePositionPatient"])


def test_patient_key_stable_salted_and_not_in_parquet(archive: Path, tmp_path: Path) -> None:
    assert patient_key("PATIENT-ONE", SALT) == patient_key("PATIENT-ONE", SALT)
    assert patient_key("PATIENT-ONE", SALT) != patient_key("PATIENT-ONE", "other-salt")
    assert patient_key("PATIENT-ONE", SALT) != patient_key("PATIENT-TWO", SALT)
    assert len(patient_key("PATIENT-ONE", SALT)) == 16

    manifest, _ = index_archive(archive, SALT)
    keys = manifest.groupby("patient_key")["path"].apply(sorted).to_dict()
    assert keys[patient_key("PATIENT-ONE", SALT)] == ["p1/s1/IM0002", "p1/s1/a.dcm"]
    out = tmp_path / "manifest.parquet"
    write_manifest(manifest, out)
    raw = out.read_bytes()
    for secret in (b"PATIENT-ONE", b"PATIENT-TWO", b"Roe^Richard", b"Roe"):
        assert secret not in raw

    back = read_manifest(out)
    assert list(back.columns) == list(MANIFEST_COLUMNS)
    pd.testing.assert_series_equal(back["path"], manifest["path"])
    assert back["Rows"].tolist() == manifest["Rows"].tolist()


def test_manifest_roundtrip_with_positions(tmp_path: Path) -> None:
    root = tmp_path / "ct"
    root.mkdir()
    ds = make_dataset("P", "1.2.9")
    ds.ImagePositionPatient = [-10.5, 20.0, 30.25]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.save_as(root / "slice.dcm", enforce_file_format=True)
    manifest, errors = index_archive(root, SALT)
    assert errors.empty and len(manifest) == 1
    write_manifest(manifest, tmp_path / "m.parquet")
    back = read_manifest(tmp_path / "m.parquet")
    assert list(back.loc[0, "ImagePositionPatient"]) == [-10.5, 20.0, 30.25]
    assert list(back.loc[0, "ImageOrientationPatient"]) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_empty_archive(tmp_path: Path) -> None:
    manifest, errors = index_archive(tmp_path, SALT)
    assert manifest.empty and errors.empty
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    write_manifest(manifest, tmp_path / "m.parquet")
    assert read_manifest(tmp_path / "m.parquet").empty


def ct_slice(z: float, number: int, *, implicit: bool = False) -> Dataset:
    """A CT slice with the geometry columns set, and an undefined-length sequence before them."""
    ds = make_dataset("PATIENT-CT", "1.2.3.7")
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.Modality = "CT"
    del ds.ViewPosition
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedImageSequence = [item]
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.SliceThickness = 1.25
    ds.SpacingBetweenSlices = 1.0
    ds.InstanceNumber = number
    ds.FrameOfReferenceUID = "1.2.3.7.1"
    ds.ImagePositionPatient = [-100.0, -120.5, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    return ds


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_geometry_columns(tmp_path: Path, implicit: bool) -> None:
    ct_slice(-42.5, 7, implicit=implicit).save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    fast = _row_via_scan(str(tmp_path / "ct.dcm"), "ct.dcm", SALT)  # the fast path reads it ...
    assert fast == _row_via_pydicom(str(tmp_path / "ct.dcm"), "ct.dcm", SALT)  # ... exactly as pydicom does
    manifest, errors = index_archive(tmp_path, SALT)
    assert errors.empty
    row = manifest.iloc[0]
    assert row["ImageType"] == "ORIGINAL\\PRIMARY\\AXIAL"
    assert (row["SliceThickness"], row["SpacingBetweenSlices"]) == (1.25, 1.0)
    assert (row["InstanceNumber"], row["SamplesPerPixel"]) == (7, 1)
    assert row["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"
    assert row["FrameOfReferenceUID"] == "1.2.3.7.1"
    assert list(row["ImagePositionPatient"]) == [-100.0, -120.5, -42.5]
    assert row["TransferSyntaxUID"] == (ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian)
    assert row["patient_key"] == patient_key("PATIENT-CT", SALT)
    assert read_manifest_row(tmp_path / "ct.dcm", tmp_path, SALT) == dict(zip(MANIFEST_COLUMNS, fast, strict=True))


def test_fast_header_path_agrees_with_pydicom_on_pydicom_test_files() -> None:
    """Wherever the fast path reads a file, pydicom (the reference) reads the same row."""
    fast = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about its deliberately broken test files
        for path in get_testdata_files():
            try:
                row = _row_via_scan(path, "x", SALT)
            except (GiveUpError, OSError):
                continue
            fast += 1
            try:
                reference = _row_via_pydicom(path, "x", SALT)
            except DicomReadError as exc:
                pytest.fail(f"fast path read {path}, pydicom says {exc.kind}: {exc.message}")
            assert row == reference, path
    assert fast >= 50  # most of them take the fast path


def test_read_manifest_fills_columns_added_later(tmp_path: Path) -> None:
    old_schema = pa.schema([f for f in MANIFEST_SCHEMA if f.name not in ("ImageType", "SOPClassUID")])
    pq.write_table(pa.Table.from_pylist([{"path": "a.dcm", "Rows": 3}], schema=old_schema), tmp_path / "m.parquet")
    back = read_manifest(tmp_path / "m.parquet")
    assert list(back.columns) == list(MANIFEST_COLUMNS)
    assert back.loc[0, "Rows"] == 3 and pd.isna(back.loc[0, "ImageType"]) and pd.isna(back.loc[0, "SOPClassUID"])


def all_paths(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in iter_archive_files(root)]


def test_index_to_parquet_streams_parts_into_one_file(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "manifest.parquet"
    summary = index_to_parquet(archive, out, SALT, part_rows=2)
    assert (summary.images, summary.errors, summary.resumed) == (3, 4, 0)
    assert summary.error_kinds == {"not_dicom": 2, "truncated": 1, "no_pixel_data": 1}
    assert summary.errors_path == tmp_path / "out" / "manifest.errors.parquet" == errors_path_for(out)
    assert not (tmp_path / "out" / ".manifest.parquet.parts").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.errors.parquet", "manifest.parquet"]
    assert pq.ParquetFile(out).metadata.num_row_groups == 2  # parts of ≤2 rows regrouped into groups of ≥2
    assert manifest_root(out) == archive.resolve()
    manifest, errors = read_manifest(out), read_errors(summary.errors_path)
    in_memory, in_memory_errors = index_archive(archive, SALT)
    pd.testing.assert_frame_equal(manifest, in_memory)
    pd.testing.assert_frame_equal(errors, in_memory_errors)
    assert manifest["path"].tolist() + errors["path"].tolist() != []
    assert sorted(manifest["path"].tolist() + errors["path"].tolist()) == sorted(all_paths(archive))
    assert "3 image(s)" in summary.line() and "not_dicom 2" in summary.line()


def test_outputs_inside_the_archive_are_not_indexed(archive: Path) -> None:
    out = archive / "index" / "manifest.parquet"
    first = index_to_parquet(archive, out, SALT)
    second = index_to_parquet(archive, out, SALT)
    assert (first.images, first.errors) == (second.images, second.errors) == (3, 4)
    assert not read_errors(second.errors_path)["path"].str.startswith("index/").any()


def test_resume_refuses_parts_of_another_archive(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifest.parquet"
    other = tmp_path / "other"
    other.mkdir()
    _Parts(out, other, SALT, resume=True)  # what a run on `other` killed before its first part leaves
    with pytest.raises(ValueError, match="another archive or salt; rerun with --no-resume"):
        index_to_parquet(archive, out, SALT)
    with pytest.raises(ValueError, match="another archive or salt"):
        index_to_parquet(other, out, "another salt")
    assert index_to_parquet(archive, out, SALT, resume=False).images == 3


def write_many(root: Path, n: int) -> None:
    """``n`` files in folders of 50: mostly small images, every 10th a text file, one truncated image."""
    template = make_dataset("PATIENT-MANY", "1.2.3.8", rows=4, cols=4)
    for i in range(n):
        folder = root / f"d{i // 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % 10 == 9:
            (folder / f"f{i:04d}.txt").write_text(f"note {i}\n")
            continue
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        template.InstanceNumber = i
        template.save_as(folder / f"f{i:04d}.dcm", enforce_file_format=True)
    whole = (root / "d00" / "f0000.dcm").read_bytes()
    (root / "d00" / "f0000.dcm").write_bytes(whole[:-10])


@pytest.mark.slow
def test_index_resumes_after_kill_9(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    write_many(root, 300)
    reference = index_to_parquet(root, tmp_path / "reference.parquet", SALT)
    assert (reference.images, reference.errors) == (269, 31)

    # A real `kill -9` of a process in the middle of indexing (one part per file to have many commits).
    out = tmp_path / "manifest.parquet"
    parts = tmp_path / ".manifest.parquet.parts"
    code = (
        "import sys; from pathlib import Path; from medres.data.manifest import index_to_parquet; "
        "index_to_parquet(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], part_rows=1)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(root), str(out), SALT], env=env)
    deadline = time.monotonic() + 120
    try:
        while len(list(parts.glob("*.manifest.parquet"))) < 20:
            assert proc.poll() is None, "the index finished before it could be killed"
            assert time.monotonic() < deadline, "no parts appeared"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and parts.is_dir()
    committed = sorted(parts.glob("*.manifest.parquet"))
    assert 20 <= len(committed) < 300
    # What a kill between the two renames of a part leaves: an errors half without its manifest half.
    number = int(committed[-1].name[:6]) + 1
    shutil.copy(parts / "000009.errors.parquet", parts / f"{number:06d}.errors.parquet")
    (parts / f".{number:06d}.manifest.parquet.tmp").write_bytes(b"half a parquet file")

    summary = index_to_parquet(root, out, SALT)  # the same command again
    assert summary.resumed >= 20 and summary.files == 300
    assert not parts.exists()
    manifest, errors = read_manifest(out), read_errors(summary.errors_path)
    pd.testing.assert_frame_equal(manifest, read_manifest(tmp_path / "reference.parquet"))
    pd.testing.assert_frame_equal(errors, read_errors(reference.errors_path))
    paths = manifest["path"].tolist() + errors["path"].tolist()
    assert len(paths) == len(set(paths)) == 300 and set(paths) == set(all_paths(root))


def test_index_command(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.parquet"
    main(["index", str(archive), "--out", str(out), "--no-resume"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("indexed 7 file(s) in ") and f"3 image(s) → {out}" in line
    assert "4 to the ledger (no_pixel_data 1, not_dicom 2, truncated 1)" in line
    assert len(read_manifest(out)) == 3 and len(read_errors(tmp_path / "m.errors.parquet")) == 4
    main(["index", str(archive), "--out", str(out), "--num_workers", "0"])  # nothing to resume: a fresh run
    assert capsys.readouterr().out.startswith("indexed 7 file(s)")


# -------------------------------------------------------------------------------------------- labels


def small_manifest() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": ["a.dcm", "b.dcm", "c.dcm", "d.dcm"],
            "StudyInstanceUID": ["1.1", "1.1", "1.2", "1.3"],
            "patient_key": ["k1", "k1", "k2", "k3"],
        }
    )


def test_join_labels_values(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("StudyInstanceUID,Effusion,Nodule,Cardiomegaly\n1.1,1,,0\n1.2,-1,0.0,1.0\n9.9,1,1,1\n")
    out = join_labels(small_manifest(), csv, findings=["Nodule", "Effusion"])
    assert out["path"].tolist() == ["a.dcm", "b.dcm", "c.dcm"]  # d.dcm: study 1.3 has no labels row
    assert out.attrs["unlabelled_dropped"] == 1
    assert out["Effusion"].dtype == np.float32 and out["Nodule"].dtype == np.float32
    np.testing.assert_array_equal(out["Effusion"].to_numpy(), [1, 1, -1])
    np.testing.assert_array_equal(out["Nodule"].to_numpy(), [np.nan, np.nan, 0])
    assert "Cardiomegaly" not in out.columns

    everything = join_labels(small_manifest(), csv)
    assert [c for c in everything.columns if c not in small_manifest().columns] == [
        "Effusion",
        "Nodule",
        "Cardiomegaly",
    ]


def test_join_labels_by_path(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("path,StudyInstanceUID,Effusion\nb.dcm,1.1,1\nd.dcm,1.3,0\n")
    out = join_labels(small_manifest(), csv)
    assert out["path"].tolist() == ["b.dcm", "d.dcm"]
    assert out["Effusion"].tolist() == [1.0, 0.0]


def test_join_labels_errors(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("Study,Effusion\n1.1,1\n")
    with pytest.raises(ValueError, match=r"labels\.csv.*StudyInstanceUID"):
        join_labels(small_manifest(), csv)

    csv.write_text("StudyInstanceUID,Effusion\n1.1,1\n")
    with pytest.raises(ValueError, match=r"labels\.csv.*'Nodule'"):
        join_labels(small_manifest(), csv, findings=["Nodule"])

    csv.write_text("StudyInstanceUID,Effusion\n1.1,1\n1.2,yes\n")
    with pytest.raises(
        ValueError, match=r"labels\.csv: column 'Effusion', line 3 \(StudyInstanceUID=1\.2\): value 'yes'"
    ):
        join_labels(small_manifest(), csv)

    csv.write_text("StudyInstanceUID,Effusion\n1.1,2\n")
    with pytest.raises(ValueError, match="'2' is not 1, 0, -1 or blank"):
        join_labels(small_manifest(), csv)

    csv.write_text("StudyInstanceUID,Effusion\n1.1,1\n1.1,0\n")
    with pytest.raises(ValueError, match="more than one row"):
        join_labels(small_manifest(), csv)
