import pandas as pd
import pydicom
import pytest
import torch

from medres.data.selection import SeriesSelection
from medres.data.transforms import IMAGE_KEY, Preprocessing, eval_transforms
from medres.package import CHECKPOINT_KEY
from medres.scoring import score_archive
from medres.tasks.detection import MultiLabelDetection

from ..conftest import add_broken_files, dicom_files

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    module = MultiLabelDetection(
        FINDINGS, Preprocessing(spatial_size=(32, 32)), backbone="resnet18", thresholds=[0.5, 0.4, 0.6, 0.5]
    ).eval()
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), CHECKPOINT_KEY: module.to_package().contract()}, path)
    return path, module


def test_every_file_lands_exactly_once(checkpoint, archive_copy, tmp_path):
    path, _ = checkpoint
    add_broken_files(archive_copy)
    (archive_copy / ".hidden").write_text("skipped: hidden files are not archive content")
    empty = archive_copy / "empty.dcm"
    empty.write_bytes(b"")
    output = tmp_path / "preds.parquet"
    summary = score_archive(str(path), archive_copy, output, batch_size=5, num_workers=0, progress=False)

    predictions = pd.read_parquet(output)
    errors = pd.read_parquet(tmp_path / "preds.errors.parquet")
    all_files = {p.relative_to(archive_copy).as_posix() for p in archive_copy.rglob("*") if p.is_file()}
    all_files.discard(".hidden")
    assert set(predictions["path"]).isdisjoint(errors["path"])
    assert set(predictions["path"]) | set(errors["path"]) == all_files
    assert len(predictions) + len(errors) == len(all_files)
    kinds = dict(zip(errors["path"], errors["kind"], strict=True))
    assert kinds["junk.dcm"] == "not_dicom" and kinds["empty.dcm"] == "not_dicom"
    assert kinds["patient_9999/truncated.dcm"] == "truncated" and kinds["labels.csv"] == "not_dicom"
    assert errors["message"].str.len().gt(0).all() and not errors["message"].str.contains("\n").any()
    assert summary.predictions == len(predictions) and summary.errors == len(errors)
    assert summary.error_kinds == {"not_dicom": 3, "truncated": 1}
    assert set(predictions["model_name"]) == {"model"} and set(predictions["model_version"]) == {"checkpoint"}
    expected_columns = {"path", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "model_name"}
    expected_columns |= {"model_version"} | {f"prob_{f}" for f in FINDINGS} | {f"finding_{f}" for f in FINDINGS}
    assert set(predictions.columns) == expected_columns
    assert not (tmp_path / "preds.parquet.partial").exists()


def test_probabilities_match_the_model_and_thresholds_apply(checkpoint, tiny_archive, tmp_path):
    path, module = checkpoint
    output = tmp_path / "preds.parquet"
    score_archive(str(path), tiny_archive, output, batch_size=3, num_workers=0, progress=False)
    predictions = pd.read_parquet(output).set_index("path")
    sample = dicom_files(tiny_archive)[:3]
    transform = eval_transforms(Preprocessing(spatial_size=(32, 32)))
    images = torch.stack([transform({IMAGE_KEY: str(p)})[IMAGE_KEY] for p in sample])
    with torch.no_grad():
        expected = torch.sigmoid(module(images)).numpy()
    for row, file in zip(expected, sample, strict=True):
        got = predictions.loc[file.relative_to(tiny_archive).as_posix()]
        for j, finding in enumerate(FINDINGS):
            assert got[f"prob_{finding}"] == pytest.approx(float(row[j]), abs=1e-5)
            assert bool(got[f"finding_{finding}"]) == bool(row[j] >= [0.5, 0.4, 0.6, 0.5][j])


def test_missing_input_folder_is_named(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        score_archive(str(checkpoint[0]), tmp_path / "nope", tmp_path / "p.parquet", progress=False)


def test_bad_model_reference_is_named(tmp_path):
    with pytest.raises(ValueError, match="models:/NAME/VERSION"):
        score_archive("models:/a/b/c", tmp_path, tmp_path / "p.parquet", progress=False)


def test_a_2d_package_applies_its_selection_before_decoding(checkpoint, tiny_archive, tmp_path):
    module = checkpoint[1]
    contract = module.to_package().contract()
    contract["selection"] = SeriesSelection(view_positions=("PA", "AP")).to_dict()
    frontal_only = tmp_path / "frontal.ckpt"
    torch.save({"state_dict": module.state_dict(), CHECKPOINT_KEY: contract}, frontal_only)
    output = tmp_path / "preds.parquet"
    summary = score_archive(str(frontal_only), tiny_archive, output, batch_size=4, num_workers=0, progress=False)

    predictions = pd.read_parquet(output)
    errors = pd.read_parquet(tmp_path / "preds.errors.parquet")
    views = {
        p.relative_to(tiny_archive).as_posix(): pydicom.dcmread(p, stop_before_pixels=True).ViewPosition
        for p in dicom_files(tiny_archive)
    }
    laterals = {p for p, view in views.items() if view == "LL"}
    assert laterals and set(predictions["path"]) == set(views) - laterals
    not_selected = errors[errors["kind"] == "not_selected"]
    assert set(not_selected["path"]) == laterals
    assert not_selected["message"].str.contains("'LL' not in selection.view_positions").all()
    assert not_selected["SOPInstanceUID"].notna().all()
    assert summary.scored_files == summary.predictions == len(predictions) and not summary.series
    assert len(predictions) + len(errors) == len(views) + 1  # + labels.csv, not DICOM
