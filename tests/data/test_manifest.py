from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from medres.data.manifest import (
    MANIFEST_COLUMNS,
    index_archive,
    iter_archive_files,
    join_labels,
    patient_key,
    read_manifest,
    write_manifest,
)

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
