"""Box regions in the study SR (TID 1410 SCOORD / TID 1411 SCOORD3D), stored in a PACS and written by --sr_dir."""

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
import torch

from medres.data.transforms import Preprocessing
from medres.package import CHECKPOINT_KEY
from medres.scoring.dicomweb import mirror, parse_dicomweb_url, write_study_srs
from medres.scoring.job import boxes_dir_for
from medres.scoring.score import score_archive
from medres.scoring.sr import (
    BoxRegion,
    boxes_from_rows,
    build_study_sr,
    read_study_boxes,
    read_study_findings,
    sr_identity,
)
from medres.synthetic import synth_chest_xray
from medres.tasks.detection import MultiLabelDetection

from ..conftest import dicom_files
from .ct_series import uid, write_series
from .orthanc import requires_orthanc, running_orthanc
from .test_dicomweb import CREDENTIALS, _srs_in

FINDINGS = ["nodule", "pleural_effusion"]
THRESHOLDS = [0.5, 0.4]
CREATED = dt.datetime(2026, 3, 4, 5, 6, 7)
DCIODVFY = shutil.which("dciodvfy")
BOX_SCHEMA_2D = pa.schema(
    [
        ("path", pa.string()),
        ("SOPInstanceUID", pa.string()),
        ("SeriesInstanceUID", pa.string()),
        ("StudyInstanceUID", pa.string()),
        ("finding", pa.string()),
        ("box", pa.int32()),
        ("score", pa.float32()),
        ("call", pa.bool_()),
        ("x_min", pa.float32()),
        ("y_min", pa.float32()),
        ("x_max", pa.float32()),
        ("y_max", pa.float32()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
    ]
)
_COLUMNS_2D = list(BOX_SCHEMA_2D)
BOX_SCHEMA_3D = pa.schema(
    [
        *_COLUMNS_2D[:10],
        pa.field("z_min", pa.float32()),
        *_COLUMNS_2D[10:12],
        pa.field("z_max", pa.float32()),
        *_COLUMNS_2D[12:],
    ]
)


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines of dciodvfy's report (dicom3tools) on ``path`` that name an error."""
    if DCIODVFY is None:
        pytest.skip("needs dciodvfy (apt-get install -y dicom3tools) to check the SR against the IOD")
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if "Error" in line]


def _study_row(study_uid: str, model_name: str = "det", model_version: str = "3") -> dict:
    row: dict = {"StudyInstanceUID": study_uid, "model_name": model_name, "model_version": model_version}
    for finding, p, t in zip(FINDINGS, [0.8, 0.2], THRESHOLDS, strict=True):
        row[f"prob_{finding}"], row[f"finding_{finding}"] = p, p >= t
    return row


def _box_table(rows: list[dict], schema: pa.Schema) -> pd.DataFrame:
    """Box rows as scoring's Parquet gives them back (float32 corners and score, int32 index)."""
    return pa.Table.from_pylist(rows, schema=schema).to_pandas()


def _scoord_points(ds: pydicom.Dataset, value_type: str) -> list[np.ndarray]:
    """GraphicData of every content item of ``value_type`` in the tree, as (N, 2|3) float32 arrays."""
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == value_type:
            found.append(np.asarray(item.GraphicData, dtype=np.float32).reshape(-1, 2 if value_type == "SCOORD" else 3))
        found += _scoord_points(item, value_type)
    return found


def _write_and_read(sr: pydicom.Dataset, path: Path) -> pydicom.Dataset:
    sr.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


# ---- (a) 2D boxes --------------------------------------------------------------------------------------------------
def test_2d_boxes_are_scoord_rectangles_on_their_images(tiny_archive: Path, tmp_path: Path):
    by_study: dict[str, list[pydicom.Dataset]] = {}
    for path in dicom_files(tiny_archive):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        by_study.setdefault(ds.StudyInstanceUID, []).append(ds)
    evidence = next(v for v in by_study.values() if len(v) == 2)  # two views: a box on each
    frontal, lateral = evidence
    study_uid = frontal.StudyInstanceUID
    common = {"path": "x.dcm", "StudyInstanceUID": study_uid, "model_name": "det", "model_version": "3"}
    rows = _box_table(
        [
            {**common, "SOPInstanceUID": frontal.SOPInstanceUID, "SeriesInstanceUID": frontal.SeriesInstanceUID,
             "finding": "nodule", "box": 0, "score": 0.91, "call": True,
             "x_min": 3.3, "y_min": 7.25, "x_max": 20.7, "y_max": 31.0},
            {**common, "SOPInstanceUID": lateral.SOPInstanceUID, "SeriesInstanceUID": lateral.SeriesInstanceUID,
             "finding": "pleural_effusion", "box": 0, "score": 0.12, "call": False,
             "x_min": 0.0, "y_min": 40.5, "x_max": float(lateral.Columns), "y_max": float(lateral.Rows)},
        ],
        BOX_SCHEMA_2D,
    )  # fmt: skip
    boxes = boxes_from_rows(rows, evidence)
    sr = build_study_sr(_study_row(study_uid), FINDINGS, THRESHOLDS, evidence, boxes=boxes, created=CREATED)
    path = tmp_path / "sr.dcm"
    back = _write_and_read(sr, path)

    assert dciodvfy_errors(path) == []
    # the SCOORDs are the closed rectangles of the box corners, in (column, row) pixel-edge coordinates
    stated = read_study_boxes(back, FINDINGS)
    assert stated == boxes
    rows_of = {row["SOPInstanceUID"]: row for row in rows.to_dict("records")}
    rectangles = _scoord_points(back, "SCOORD")
    for rectangle, box in zip(rectangles, stated, strict=True):
        row = rows_of[box.sop_instance_uid]
        x0, y0, x1, y1 = (np.float32(row[c]) for c in ("x_min", "y_min", "x_max", "y_max"))
        assert rectangle.tolist() == [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    graphic_types = [i.GraphicType for g in back.ContentSequence for i in _items(g) if i.ValueType == "SCOORD"]
    assert graphic_types == ["POLYLINE", "POLYLINE"]

    by_finding = {b.finding: b for b in stated}
    assert {f: (b.present, b.box) for f, b in by_finding.items()} == {
        "nodule": (True, 0),
        "pleural_effusion": (False, 0),
    }
    assert by_finding["nodule"].score == pytest.approx(0.91, abs=1e-6)
    assert by_finding["pleural_effusion"].score == pytest.approx(0.12, abs=1e-6)
    assert by_finding["nodule"].sop_instance_uid == frontal.SOPInstanceUID
    assert by_finding["pleural_effusion"].sop_instance_uid == lateral.SOPInstanceUID
    assert {b.sop_class_uid for b in stated} == {frontal.SOPClassUID}
    assert by_finding["nodule"].corners == tuple(float(np.float32(v)) for v in (3.3, 7.25, 20.7, 31.0))
    assert by_finding["pleural_effusion"].corners == (0.0, 40.5, float(lateral.Columns), float(lateral.Rows))
    # rows in another order give the same SR
    shuffled = boxes_from_rows(rows.iloc[::-1], evidence)
    assert shuffled == boxes
    # the study-level findings are still there, and only there
    findings = read_study_findings(back)
    assert list(findings) == FINDINGS and [f.present for f in findings.values()] == [True, False]
    document = hd.sr.Comprehensive3DSR.from_dataset(back).content
    planar = document.get_planar_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in planar] == ["box 0", "box 0"]
    assert len({g.tracking_uid for g in planar}) == 2  # unique per box though the per-image index repeats

    # the same inputs and creation time build the same bytes (a rewritten file is identical)
    again = tmp_path / "again.dcm"
    build_study_sr(_study_row(study_uid), FINDINGS, THRESHOLDS, evidence, boxes=boxes, created=CREATED).save_as(
        again, enforce_file_format=True
    )
    assert again.read_bytes() == path.read_bytes()


def _items(item: pydicom.Dataset):
    yield item
    for child in item.get("ContentSequence", []):
        yield from _items(child)


def test_box_rows_must_refer_to_scored_instances(tiny_archive: Path):
    ds = pydicom.dcmread(dicom_files(tiny_archive)[0], stop_before_pixels=True)
    row = {"path": "x", "SOPInstanceUID": "1.2.3", "SeriesInstanceUID": ds.SeriesInstanceUID,
           "StudyInstanceUID": ds.StudyInstanceUID, "finding": "nodule", "box": 2, "score": 0.5, "call": True,
           "x_min": 1.0, "y_min": 1.0, "x_max": 2.0, "y_max": 2.0, "model_name": "det",
           "model_version": "3"}  # fmt: skip
    with pytest.raises(ValueError, match="box 2 of nodule: image 1.2.3 is not among the study's scored instances"):
        boxes_from_rows(_box_table([row], BOX_SCHEMA_2D), [ds])
    with pytest.raises(ValueError, match="lack column"):
        boxes_from_rows(_box_table([row], BOX_SCHEMA_2D).drop(columns="score"), [ds])
    upside_down = BoxRegion("nodule", 0.5, True, 0, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID, None,
                            (5.0, 1.0, 2.0, 2.0))  # fmt: skip
    with pytest.raises(ValueError, match="corners"):
        build_study_sr(_study_row(ds.StudyInstanceUID), FINDINGS, THRESHOLDS, [ds], boxes=[upside_down])


# ---- (b) 3D boxes --------------------------------------------------------------------------------------------------
def test_3d_box_is_a_volume_surface_of_its_six_faces(tmp_path: Path):
    study_uid = uid()
    series_uid, files = write_series(tmp_path / "ct", study=study_uid, n=4)
    evidence = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    corners = {"x_min": -6.5, "y_min": -3.25, "z_min": 1.0, "x_max": 4.75, "y_max": 5.0, "z_max": 6.0}  # LPS mm
    row = {"path": "ct/slice_00.dcm", "SOPInstanceUID": None, "SeriesInstanceUID": series_uid,
           "StudyInstanceUID": study_uid, "finding": "nodule", "box": 1, "score": 0.66, "call": True, **corners,
           "model_name": "det3d", "model_version": "1"}  # fmt: skip
    boxes = boxes_from_rows(_box_table([row], BOX_SCHEMA_3D), evidence)
    study = _study_row(study_uid, "det3d", "1")
    path = tmp_path / "sr3d.dcm"
    back = _write_and_read(build_study_sr(study, FINDINGS, THRESHOLDS, evidence, boxes=boxes, created=CREATED), path)

    assert dciodvfy_errors(path) == []
    x0, y0, z0, x1, y1, z1 = (corners[k] for k in ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max"))
    expected_faces = [
        [(x0, y0, z0), (x1, y0, z0), (x1, y1, z0), (x0, y1, z0)],  # z_min
        [(x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)],  # z_max
        [(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)],  # y_min
        [(x0, y1, z0), (x1, y1, z0), (x1, y1, z1), (x0, y1, z1)],  # y_max
        [(x0, y0, z0), (x0, y1, z0), (x0, y1, z1), (x0, y0, z1)],  # x_min
        [(x1, y0, z0), (x1, y1, z0), (x1, y1, z1), (x1, y0, z1)],  # x_max
    ]
    faces = _scoord_points(back, "SCOORD3D")
    assert [face.tolist() for face in faces] == [[list(p) for p in [*f, f[0]]] for f in expected_faces]  # closed
    scoords = [i for g in back.ContentSequence for i in _items(g) if i.ValueType == "SCOORD3D"]
    assert {(i.GraphicType, i.ReferencedFrameOfReferenceUID) for i in scoords} == {
        ("POLYGON", evidence[0].FrameOfReferenceUID)
    }
    (source_series,) = [
        i.UID
        for g in back.ContentSequence
        for i in _items(g)
        if i.ValueType == "UIDREF" and i.ConceptNameCodeSequence[0].CodeValue == "121232"  # Source Series for Seg.
    ]
    assert source_series == series_uid

    (stated,) = read_study_boxes(back, FINDINGS)
    assert stated == boxes[0]
    assert (stated.finding, stated.present, stated.box, stated.score) == ("nodule", True, 1, pytest.approx(0.66))
    assert stated.corners == (x0, y0, z0, x1, y1, z1)


# ---- (c) and (d): a scored job's box rows, into the PACS and into --sr_dir -----------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    module = MultiLabelDetection(
        FINDINGS, Preprocessing(spatial_size=(32, 32)), backbone="resnet18", thresholds=THRESHOLDS
    )
    path = tmp_path_factory.mktemp("model") / "det.ckpt"
    torch.save({"state_dict": module.state_dict(), CHECKPOINT_KEY: module.to_package().contract()}, path)
    return path


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small") / "cxr"
    synth_chest_xray(root, patients=2, seed=3, image_size=64)
    return root


def _write_box_rows(output: Path, root: Path) -> pd.DataFrame:
    """A detection model's box rows by hand: two boxes on the first image of every study, one on the others."""
    rows = []
    seen: set[str] = set()
    for path in dicom_files(root):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        count = 1 if ds.StudyInstanceUID in seen else 2
        seen.add(ds.StudyInstanceUID)
        for box in range(count):
            rows.append(
                {
                    "path": path.relative_to(root).as_posix(),
                    "SOPInstanceUID": ds.SOPInstanceUID,
                    "SeriesInstanceUID": ds.SeriesInstanceUID,
                    "StudyInstanceUID": ds.StudyInstanceUID,
                    "finding": FINDINGS[box % 2],
                    "box": box,
                    "score": 0.3 + 0.4 * box,
                    "call": box == 1,
                    "x_min": 2.5 + box,
                    "y_min": 4.0,
                    "x_max": 30.25,
                    "y_max": 33.5 + box,
                    "model_name": "det",
                    "model_version": "checkpoint",
                }
            )
    folder = boxes_dir_for(output)
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=BOX_SCHEMA_2D), folder / "part-00000000.parquet")
    return pd.read_parquet(folder)


def _boxes_by_study(rows: pd.DataFrame) -> dict[str, list[tuple]]:
    """The boxes an SR states per study: the called ones (the rest stay in the box rows only)."""
    rows = rows[rows["call"]]
    return {
        study: sorted(
            (r.SOPInstanceUID, r.finding, r.box, float(r.x_min), float(r.y_min), float(r.x_max), float(r.y_max))
            for r in group.itertuples()
        )
        for study, group in rows.groupby("StudyInstanceUID")
    }


def _stated_boxes(sr: pydicom.Dataset) -> list[tuple]:
    return sorted((b.sop_instance_uid, b.finding, b.box, *b.corners) for b in read_study_boxes(sr, FINDINGS))


@requires_orthanc
def test_srs_with_boxes_are_stored_once(small_archive: Path, checkpoint: Path, tmp_path: Path):
    with running_orthanc(tmp_path / "orthanc") as pacs:
        pacs.upload(dicom_files(small_archive))
        images = pacs.count_instances()
        source = parse_dicomweb_url(pacs.dicomweb, environ=CREDENTIALS)
        staging = tmp_path / "staging"
        mirror(source, staging)
        output = tmp_path / "out" / "preds.parquet"
        scored = score_archive(str(checkpoint), staging, output, num_workers=0, accelerator="cpu", progress=False)
        assert scored.studies_path is not None
        studies = pd.read_parquet(scored.studies_path)
        expected = _boxes_by_study(_write_box_rows(output, staging))
        ledger = tmp_path / "out" / "preds.sr.parquet"

        def store(sr_dir: Path | None = None) -> int:
            summary = write_study_srs(
                source, staging, studies, set(), FINDINGS, THRESHOLDS, ledger, output=output, sr_dir=sr_dir
            )
            return summary.stored

        assert store() == len(studies) == len(expected)
        assert pacs.count_instances() == images + len(studies)
        srs = {sr.StudyInstanceUID: sr for sr in _srs_in(pacs)}  # QIDO-RS finds them, WADO-RS returns them
        assert set(srs) == set(expected)
        for study_uid, sr in srs.items():
            assert sr.SOPInstanceUID == sr_identity(study_uid, "det", "checkpoint").sop_uid
            assert _stated_boxes(sr) == expected[study_uid]
            assert all(b.present for b in read_study_boxes(sr, FINDINGS))

        assert store(tmp_path / "srs") == 0  # a second run adds none, and writes the files the PACS holds
        assert pacs.count_instances() == images + len(studies)
        assert (pd.read_parquet(ledger)["status"] == "existing").all()
        for study_uid, stored in srs.items():
            written = pydicom.dcmread(tmp_path / "srs" / study_uid / f"{stored.SOPInstanceUID}.dcm")
            assert (written.ContentDate, written.ContentTime) == (stored.ContentDate, stored.ContentTime)
            assert written.ContentSequence == stored.ContentSequence  # the same content tree


def test_sr_dir_writes_each_studys_sr_and_a_rerun_rewrites_the_same_bytes(
    small_archive: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from medres.cli import main

    output = tmp_path / "out" / "preds.parquet"
    expected = _boxes_by_study(_write_box_rows(output, small_archive))  # the detection model's rows
    sr_dir = tmp_path / "srs"
    command = ["score", "--model", str(checkpoint), "--input", str(small_archive), "--output", str(output)]
    command += ["--num_workers", "0", "--accelerator", "cpu", "--progress", "false", "--sr_dir", str(sr_dir)]
    main(command)
    assert f"SRs: {len(expected)} file(s) → {sr_dir}" in capsys.readouterr().out

    files = sorted(sr_dir.rglob("*.dcm"))
    studies = pd.read_parquet(output.with_suffix(".studies.parquet")).set_index("StudyInstanceUID")
    assert [f.parent.name for f in files] == sorted(studies.index)
    first = {f: f.read_bytes() for f in files}
    originals: dict[str, list[pydicom.Dataset]] = {}
    for ds in map(pydicom.dcmread, dicom_files(small_archive)):
        originals.setdefault(ds.StudyInstanceUID, []).append(ds)
    for path in files:
        sr = pydicom.dcmread(path)
        study_uid = path.parent.name
        assert path.name == f"{sr_identity(study_uid, 'det', 'checkpoint').sop_uid}.dcm"
        assert sr.StudyInstanceUID == study_uid and sr.PatientID == originals[study_uid][0].PatientID
        assert _stated_boxes(sr) == expected[study_uid]
        stated = read_study_findings(sr)
        assert [stated[f].probability for f in FINDINGS] == pytest.approx(
            [studies.loc[study_uid, f"prob_{f}"] for f in FINDINGS]
        )
        referenced = {item[2] for item in hd.sr.Comprehensive3DSR.from_dataset(sr).get_evidence()}
        assert referenced == {ds.SOPInstanceUID for ds in originals[study_uid]}  # every scored image of the study
    assert [line for path in files for line in dciodvfy_errors(path)] == []

    main(command)  # the job is complete: the rerun only writes the files again
    assert {f: f.read_bytes() for f in sorted(sr_dir.rglob("*.dcm"))} == first


def test_images_missing_library_descriptors_still_get_an_sr(tiny_archive: Path, tmp_path: Path):
    """A CR without ImagerPixelSpacing (the RSNA release's images have only PixelSpacing) is evidence, not library."""
    from medres.scoring.sr import library_images

    by_study: dict[str, list[pydicom.Dataset]] = {}
    for path in dicom_files(tiny_archive):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        by_study.setdefault(ds.StudyInstanceUID, []).append(ds)
    evidence = next(v for v in by_study.values() if len(v) == 2)
    complete, partial = evidence
    assert library_images(evidence) == evidence
    del partial.ImagerPixelSpacing
    assert library_images(evidence) == [complete]
    sr = build_study_sr(_study_row(complete.StudyInstanceUID), FINDINGS, THRESHOLDS, evidence, created=CREATED)
    path = tmp_path / "sr.dcm"
    back = _write_and_read(sr, path)
    assert dciodvfy_errors(path) == []
    evidence_uids = {
        sop.ReferencedSOPInstanceUID
        for study in back.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert evidence_uids == {complete.SOPInstanceUID, partial.SOPInstanceUID}


def test_invalid_patient_values_are_not_copied(tiny_archive: Path, tmp_path: Path):
    """The RSNA release's PatientAge is a bare "51" (AS needs "051Y"): left out of the SR, which stays valid."""
    ds = pydicom.dcmread(dicom_files(tiny_archive)[0], stop_before_pixels=True)
    ds.PatientAge = "55"
    ds.PatientSex = "M"
    sr = build_study_sr(_study_row(ds.StudyInstanceUID), FINDINGS, THRESHOLDS, [ds], created=CREATED)
    path = tmp_path / "sr.dcm"
    back = _write_and_read(sr, path)
    assert dciodvfy_errors(path) == []
    assert "PatientAge" not in back and back.PatientSex == "M" and back.PatientID == ds.PatientID
    assert ds.PatientAge == "55"  # the caller's header is unchanged
