"""Scoring with a 3D package: one prediction row per series, every file in exactly one output."""

import random
import shutil

import pandas as pd
import pydicom
import pytest
import torch
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from medres.data.selection import SeriesSelection
from medres.data.transforms import IMAGE_KEY, eval_transforms
from medres.scoring import score_archive
from medres.synthetic import synth_ct

from ..conftest import find_identifying
from .ct_series import (
    CORONAL,
    FINDINGS,
    PATIENT_ID,
    PATIENT_NAME,
    PREPROCESSING,
    THRESHOLDS,
    uid,
    write_checkpoint,
    write_series,
    write_slice,
)


@pytest.fixture
def model(tmp_path):
    return write_checkpoint(tmp_path / "ct3d.ckpt")


@pytest.fixture
def archive(tmp_path):
    """Two studies: a good CT series with a scout and a duplicate slice, a CT series without geometry,
    a CT series with a gap, a good MR series, and a file that is not DICOM."""
    root = tmp_path / "ct"
    study_a, study_b = uid(), uid()
    series, files = write_series(root / "a" / "s1", study=study_a, seed=1)
    scout = root / "a" / "s1" / "scout.dcm"
    write_slice(scout, study=study_a, series=series, sop=f"{series}.99", z=0.0, pixels=torch.zeros(16, 16).numpy())
    ds = pydicom.dcmread(scout)
    ds.ImageOrientationPatient, ds.ImageType = list(CORONAL), ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.save_as(scout)
    # Same position as slice 3; its SOPInstanceUID sorts after the original's, so the plan keeps the original.
    original = pydicom.dcmread(files[3])
    write_slice(
        root / "a" / "s1" / "dup.dcm",
        study=study_a,
        series=series,
        sop=f"{series}.4.9",
        z=float(original.ImagePositionPatient[2]),
        pixels=original.pixel_array.astype("int32") - 1024,
    )
    write_series(root / "a" / "s2", study=study_a, seed=2, geometry=False)
    write_series(root / "b" / "s3", study=study_b, z=[0, 2, 4, 10, 12, 14], seed=3)
    write_series(root / "b" / "s4", study=study_b, seed=4, modality="MR")
    (root / "junk.dcm").write_bytes(b"not a DICOM file\n" * 20)
    return root


def score(model_path, root, output):
    return score_archive(str(model_path), root, output, batch_size=2, num_workers=0, progress=False)


def all_files(root):
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_one_row_per_series_and_every_file_exactly_once(model, archive, tmp_path):
    output = tmp_path / "preds.parquet"
    summary = score(model[0], archive, output)
    predictions = pd.read_parquet(output)
    errors = pd.read_parquet(tmp_path / "preds.errors.parquet")

    assert list(predictions["path"]) == ["a/s1/slice_00.dcm", "b/s4/slice_00.dcm"]  # first slice along the normal
    assert list(predictions["n_instances"]) == [8, 8]
    assert predictions["SOPInstanceUID"].isna().all() and predictions["SeriesInstanceUID"].notna().all()
    expected = {"path", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "n_instances"}
    expected |= {f"prob_{f}" for f in FINDINGS} | {f"finding_{f}" for f in FINDINGS} | {"model_name", "model_version"}
    assert set(predictions.columns) == expected

    kinds = dict(zip(errors["path"], errors["kind"], strict=True))
    assert kinds.pop("a/s1/scout.dcm") == "not_selected" and kinds.pop("a/s1/dup.dcm") == "duplicate"
    assert kinds.pop("junk.dcm") == "not_dicom"
    assert {path.split("/")[1]: kind for path, kind in kinds.items()} == {
        "s2": "missing_geometry",
        "s3": "inconsistent_series",
    }
    assert len(kinds) == 8 + 6
    messages = dict(zip(errors["path"], errors["message"], strict=True))
    assert "localizer" in messages["a/s1/scout.dcm"] and "gap" in messages["b/s3/slice_00.dcm"]
    assert errors.loc[errors["kind"] != "not_dicom", "SOPInstanceUID"].notna().all()

    # Every input file in exactly one place: a scored series' files count as scored.
    files = all_files(archive)
    scored = {p for p in files if p.startswith(("a/s1/slice_", "b/s4/"))}
    assert scored.isdisjoint(errors["path"]) and scored | set(errors["path"]) == files
    assert predictions["n_instances"].sum() + len(errors) == len(files) == 33
    assert (summary.predictions, summary.scored_files, summary.errors, summary.series) == (2, 16, 17, True)
    assert summary.error_kinds == {
        "not_selected": 1,
        "duplicate": 1,
        "missing_geometry": 8,
        "inconsistent_series": 6,
        "not_dicom": 1,
    }
    outputs = [output, tmp_path / "preds.errors.parquet"]
    assert find_identifying({PATIENT_NAME, PATIENT_ID}, outputs, [summary.line()], tmp_path / "scan") == []


def test_probabilities_are_the_models_and_do_not_depend_on_file_names_or_order(model, archive, tmp_path):
    model_path, network = model
    ordered = tmp_path / "ordered.parquet"
    score(model_path, archive, ordered)
    row = pd.read_parquet(ordered).set_index("path").loc["a/s1/slice_00.dcm"]

    # The same series with random names, flat in one folder, written in a random order.
    shuffled_root = tmp_path / "shuffled"
    shuffled_root.mkdir()
    files = sorted((archive / "a" / "s1").iterdir())
    rng = random.Random(7)
    rng.shuffle(files)
    for file in files:
        shutil.copy(file, shuffled_root / f"{rng.getrandbits(48):012x}.dcm")
    shuffled = tmp_path / "shuffled.parquet"
    score(model_path, shuffled_root, shuffled)
    (other,) = pd.read_parquet(shuffled).to_dict("records")
    assert other["n_instances"] == 8 and other["SeriesInstanceUID"] == row["SeriesInstanceUID"]

    slices = sorted(str(p) for p in (archive / "a" / "s1").glob("slice_*.dcm"))
    image = eval_transforms(PREPROCESSING)({IMAGE_KEY: slices})[IMAGE_KEY]
    assert tuple(image.shape) == (1, 16, 16, 8)
    with torch.no_grad():
        expected = torch.sigmoid(network(image[None])).numpy()[0]
    for j, finding in enumerate(FINDINGS):
        assert row[f"prob_{finding}"] == pytest.approx(float(expected[j]), abs=1e-5)
        assert other[f"prob_{finding}"] == pytest.approx(row[f"prob_{finding}"], abs=1e-6)
        assert bool(row[f"finding_{finding}"]) == bool(expected[j] >= THRESHOLDS[j])


def test_the_packaged_selection_rejects_series_with_their_reason(archive, tmp_path):
    model_path, _ = write_checkpoint(tmp_path / "ct_only.ckpt", SeriesSelection(modalities=("CT",)))
    output = tmp_path / "preds.parquet"
    score(model_path, archive, output)
    predictions = pd.read_parquet(output)
    errors = pd.read_parquet(tmp_path / "preds.errors.parquet").set_index("path")
    assert list(predictions["path"]) == ["a/s1/slice_00.dcm"]
    mr = errors.loc[[f"b/s4/slice_{k:02d}.dcm" for k in range(8)]]
    assert set(mr["kind"]) == {"not_selected"}
    assert mr["message"].str.contains("'MR'").all() and mr["message"].str.contains("modalities").all()
    assert predictions["n_instances"].sum() + len(errors) == len(all_files(archive))


def test_a_slice_that_fails_to_decode_fails_its_series_and_names_the_file(model, tmp_path):
    root = tmp_path / "ct"
    _, files = write_series(root / "s1", study=uid(), seed=5)
    # A valid header whose JPEG 2000 codestream is garbage: the header index accepts it, decoding does not.
    broken = pydicom.dcmread(files[2])
    broken.file_meta.TransferSyntaxUID = JPEG2000Lossless
    broken.PixelData = encapsulate([b"\x00garbage" * 20])
    broken["PixelData"].VR = "OB"
    broken.save_as(files[2])
    output = tmp_path / "preds.parquet"
    summary = score(model[0], root, output)
    errors = pd.read_parquet(tmp_path / "preds.errors.parquet").set_index("path")
    assert len(pd.read_parquet(output)) == 0 and len(errors) == 8 and summary.scored_files == 0
    failing = errors.loc["s1/slice_02.dcm"]
    assert failing["kind"] in {"decode_error", "unsupported_codec"}
    siblings = errors.drop(index="s1/slice_02.dcm")
    assert set(siblings["kind"]) == {"series_error"}
    assert siblings["message"].str.contains("s1/slice_02.dcm").all()


def test_a_synthetic_ct_archive_scores_one_series_per_study_with_prefer(tmp_path):
    root = tmp_path / "ct"
    summary = synth_ct(root, patients=3, seed=0, slices=8, size=32)
    model_path, _ = write_checkpoint(tmp_path / "thinnest.ckpt", SeriesSelection(modalities=("CT",), prefer="thinnest"))
    output = tmp_path / "preds.parquet"
    scored = score(model_path, root, output)
    predictions = pd.read_parquet(output)
    errors = pd.read_parquet(tmp_path / "preds.errors.parquet")

    assert sorted(predictions["StudyInstanceUID"]) == sorted(set(predictions["StudyInstanceUID"]))
    assert len(predictions) == summary.studies and predictions["n_instances"].ge(8 * 0.85 - 1).all()
    assert scored.scored_files + scored.errors == len(all_files(root)) == summary.instances + 1  # + labels.csv
    assert set(predictions["path"]).isdisjoint(errors["path"])
    assert set(errors["kind"]) <= {"not_selected", "duplicate", "not_dicom"}
    reasons = errors.loc[errors["kind"] == "not_selected", "message"]
    assert reasons.str.contains("selection.prefer=thinnest|localizer_dropped").all()
    assert errors.loc[errors["kind"] == "not_dicom", "path"].tolist() == ["labels.csv"]
