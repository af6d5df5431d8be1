import io
import os
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pandas as pd
import pydicom
import pytest
import torch
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass

from medres.data.transforms import Preprocessing
from medres.package import CHECKPOINT_KEY
from medres.scoring.dicomweb import (
    PASSWORD_ENV,
    USERNAME_ENV,
    DicomWebSource,
    _check_stored,
    is_dicomweb_url,
    mirror,
    parse_dicomweb_url,
    score_dicomweb,
)
from medres.scoring.sr import PRIVATE_SCHEME, build_study_sr, finding_concept, read_study_findings, sr_identity
from medres.scoring.studies import aggregate_studies
from medres.synthetic import synth_chest_xray
from medres.tasks.detection import MultiLabelDetection

from ..conftest import dicom_files, find_identifying, identifying_values
from .orthanc import PASSWORD, USERNAME, Orthanc, requires_orthanc, running_orthanc

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]
THRESHOLDS = [0.5, 0.4, 0.6, 0.5]
CREDENTIALS = {USERNAME_ENV: USERNAME, PASSWORD_ENV: PASSWORD}


# ---- URL grammar -------------------------------------------------------------------------------------------------
def test_url_becomes_service_and_study_filters():
    source = parse_dicomweb_url(
        "dicomweb://pacs.example:8042/dicom-web/?StudyDate=20240101-20241231&ModalitiesInStudy=CR%5CDX", environ={}
    )
    assert source.url == "http://pacs.example:8042/dicom-web"
    assert source.filters == {"StudyDate": "20240101-20241231", "ModalitiesInStudy": "CR,DX"}  # QIDO-RS lists
    assert source.modalities == frozenset({"CR", "DX"})
    assert source.username is None and source.password is None
    secure = parse_dicomweb_url("dicomwebs://pacs.example/wado?ModalitiesInStudy=cr,dx", environ={})
    assert secure.url == "https://pacs.example/wado" and secure.modalities == frozenset({"CR", "DX"})
    assert parse_dicomweb_url("dicomweb://[::1]:8042/dw", environ={}).url == "http://[::1]:8042/dw"
    assert parse_dicomweb_url("dicomweb://h/dw", environ={}).modalities is None
    assert parse_dicomweb_url("dicomweb://h/dw?ModalitiesInStudy=", environ={}).modalities is None
    assert is_dicomweb_url("dicomweb://h/dw") and is_dicomweb_url("DICOMWEBS://h/dw")
    assert not is_dicomweb_url("/data/archive") and not is_dicomweb_url("dicomweb_archive/")


def test_credentials_come_from_the_environment_and_stay_out_of_text():
    source = parse_dicomweb_url("dicomweb://h:1/dw?StudyDate=2024", environ={USERNAME_ENV: "u", PASSWORD_ENV: "pw-42"})
    assert (source.username, source.password) == ("u", "pw-42")
    assert "pw-42" not in repr(source) and "pw-42" not in source.describe()
    assert source.describe() == "http://h:1/dw?StudyDate=2024"
    assert source.client()._session.auth == ("u", "pw-42")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h/dw", "expected dicomweb://"),
        ("dicomweb://user:pw@h/dw", "MEDRES_DICOMWEB_USERNAME"),
        ("dicomweb:///dw", "no host"),
        ("dicomweb://h:port/dw", "Port"),
        ("dicomweb://h/dw?StudyDat=2024", "'StudyDat' is not a DICOM keyword"),
        ("dicomweb://h/dw?StudyDate=2024&StudyDate=2025", "'StudyDate' is given twice"),
    ],
)
def test_bad_urls_are_named(url, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_dicomweb_url(url, environ={})
    assert "user:pw" not in str(err.value)


def test_identifying_filter_values_stay_out_of_descriptions_and_errors():
    source = parse_dicomweb_url("dicomweb://h/dw?PatientID=MRN4711&StudyDate=2024&AccessionNumber=A77", environ={})
    assert source.filters == {"PatientID": "MRN4711", "StudyDate": "2024", "AccessionNumber": "A77"}
    assert source.describe() == "http://h/dw?PatientID=…&StudyDate=2024&AccessionNumber=…"
    with pytest.raises(ValueError, match="'PatientNme' is not a DICOM keyword") as err:
        parse_dicomweb_url("dicomweb://h/dw?PatientID=MRN4711&PatientNme=Doe", environ={})
    assert "MRN4711" not in str(err.value) and "Doe" not in str(err.value)


def test_half_the_credentials_is_refused():
    with pytest.raises(ValueError, match=f"set both {USERNAME_ENV} and {PASSWORD_ENV}"):
        parse_dicomweb_url("dicomweb://h/dw", environ={USERNAME_ENV: "u"})


# ---- SR ----------------------------------------------------------------------------------------------------------
def test_sr_uids_depend_on_study_model_and_version_only():
    first = sr_identity("1.2.3", "cxr", "4")
    assert first == sr_identity("1.2.3", "cxr", "4")
    others = {sr_identity("1.2.4", "cxr", "4"), sr_identity("1.2.3", "cxr", "5"), sr_identity("1.2.3", "ct", "4")}
    uids = {first.series_uid, first.sop_uid} | {u for o in others for u in (o.series_uid, o.sop_uid)}
    assert len(uids) == 8 and all(u.is_valid and len(u) <= 64 for u in uids)


def test_finding_names_become_snomed_where_known():
    assert (finding_concept("pneumothorax").value, finding_concept("pneumothorax").scheme_designator) == (
        "36118008",
        "SCT",
    )
    assert finding_concept("pleural_effusion").value == "60046008"
    private = finding_concept("tube_malposition")
    assert (private.value, private.scheme_designator, private.meaning) == (
        "tube_malposition",
        PRIVATE_SCHEME,
        "tube_malposition",
    )


def _study_row(study_uid: str, probs: list[float]) -> dict:
    row: dict = {"StudyInstanceUID": study_uid, "model_name": "cxr", "model_version": "7", "n_instances": 2}
    for finding, p, t in zip(FINDINGS, probs, THRESHOLDS, strict=True):
        row[f"prob_{finding}"], row[f"finding_{finding}"] = p, p >= t
    return row


def _two_view_study(archive: Path) -> list[pydicom.Dataset]:
    by_study: dict[str, list[pydicom.Dataset]] = {}
    for path in dicom_files(archive):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        by_study.setdefault(ds.StudyInstanceUID, []).append(ds)
    return next(v for v in by_study.values() if len(v) == 2)


def test_sr_states_each_finding_and_references_its_evidence(tiny_archive):
    evidence = _two_view_study(tiny_archive)
    study_uid = evidence[0].StudyInstanceUID
    sr = build_study_sr(_study_row(study_uid, [0.7, 0.1, 0.6, 0.49]), FINDINGS, THRESHOLDS, evidence)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, sr, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buffer.getvalue()))

    findings = read_study_findings(back)
    assert list(findings) == FINDINGS
    assert [f.probability for f in findings.values()] == pytest.approx([0.7, 0.1, 0.6, 0.49])
    assert [f.present for f in findings.values()] == [True, False, True, False]  # 0.6 ≥ 0.6, 0.49 < 0.5
    identity = sr_identity(study_uid, "cxr", "7")
    assert (back.SOPInstanceUID, back.SeriesInstanceUID) == (identity.sop_uid, identity.series_uid)
    assert back.Modality == "SR" and back.StudyInstanceUID == study_uid
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert back.CompletionFlag == "COMPLETE" and back.VerificationFlag == "UNVERIFIED"
    for tag in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):  # the SR belongs to the patient
        assert back[tag].value == evidence[0][tag].value
    referenced = {item[2] for item in hd.sr.Comprehensive3DSR.from_dataset(back).get_evidence()}
    assert referenced == {ds.SOPInstanceUID for ds in evidence}
    texts = _text_items(back)
    assert set(texts["Algorithm Name"]) == {"medres cxr"} and set(texts["Algorithm Version"]) == {"7"}
    parameters = set(texts["Algorithm Parameters"])
    assert {"threshold 0.5", "threshold 0.4", "threshold 0.6", "aggregation max"} <= parameters


def _text_items(ds: pydicom.Dataset) -> dict[str, list[str]]:
    """Every TEXT content item of an SR tree, by concept name."""
    found: dict[str, list[str]] = {}
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "TEXT":
            found.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item.TextValue)
        for name, values in _text_items(item).items():
            found.setdefault(name, []).extend(values)
    return found


def test_sr_refuses_evidence_it_cannot_stand_on(tiny_archive):
    evidence = _two_view_study(tiny_archive)
    row = _study_row(evidence[0].StudyInstanceUID, [0.5] * 4)
    with pytest.raises(ValueError, match="no scored instance"):
        build_study_sr(row, FINDINGS, THRESHOLDS, [])
    with pytest.raises(ValueError, match="1 other study"):
        build_study_sr(_study_row("1.2.3.4", [0.5] * 4), FINDINGS, THRESHOLDS, evidence)
    with pytest.raises(ValueError, match="3 threshold"):
        build_study_sr(row, FINDINGS, THRESHOLDS[:3], evidence)


# ---- against a real Orthanc --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pacs_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four synthetic patients (CR and DX studies over several years, three transfer syntaxes)."""
    root = tmp_path_factory.mktemp("pacs") / "cxr"
    synth_chest_xray(root, patients=4, seed=0, image_size=64)
    return root


@pytest.fixture(scope="module")
def read_only_pacs(pacs_archive: Path, tmp_path_factory: pytest.TempPathFactory):
    """An Orthanc holding the archive, shared by the tests that only read from it (stopping one takes seconds)."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        server.upload(dicom_files(pacs_archive))
        yield server


def _headers(archive: Path) -> dict[str, pydicom.Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in dicom_files(archive))}


def _staged(staging: Path) -> dict[str, Path]:
    return {p.stem: p for p in staging.rglob("*.dcm")}


@requires_orthanc
def test_mirror_copies_every_instance_as_stored_and_resumes(
    read_only_pacs: Orthanc, pacs_archive: Path, tmp_path: Path
):
    source = parse_dicomweb_url(read_only_pacs.dicomweb, environ=CREDENTIALS)
    staging = tmp_path / "staging"
    summary = mirror(source, staging, page_size=2, workers=2)  # pages of 2: several QIDO pages per listing

    originals = _headers(pacs_archive)
    staged = _staged(staging)
    assert set(staged) == set(originals) and summary.instances == summary.fetched == len(originals) == 11
    assert summary.studies == len({ds.StudyInstanceUID for ds in originals.values()}) and summary.present == 0
    for sop, path in staged.items():
        ds, original = pydicom.dcmread(path), originals[sop]
        assert path.relative_to(staging).parts == (original.StudyInstanceUID, original.SeriesInstanceUID, f"{sop}.dcm")
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID  # no transcoding
        assert ds.PixelData == original.PixelData
    assert len({ds.file_meta.TransferSyntaxUID for ds in originals.values()}) == 3

    # an interrupted run: one file never arrived, a temporary one was left behind
    lost = sorted(staged.values())[3]
    lost.unlink()
    (lost.parent / f".{lost.name}.1.2.partial").write_bytes(b"half a file")
    again = mirror(source, staging, page_size=5, workers=1)
    assert (again.instances, again.fetched, again.present) == (11, 1, 10)
    assert lost.is_file() and pydicom.dcmread(lost).SOPInstanceUID == lost.stem


@requires_orthanc
@pytest.mark.parametrize(
    ("query", "keep"),
    [
        ("StudyDate=20200101-20221231", lambda ds: "20200101" <= ds.StudyDate <= "20221231"),
        ("ModalitiesInStudy=DX", lambda ds: ds.Modality == "DX"),
        ("ModalitiesInStudy=CR&StudyDate=20221001-", lambda ds: ds.Modality == "CR" and ds.StudyDate >= "20221001"),
        ("ModalitiesInStudy=DX%5CCR&StudyDate=20130101-20221001", lambda ds: "20130101" <= ds.StudyDate <= "20221001"),
    ],
)
def test_mirror_applies_date_range_and_modality(
    read_only_pacs: Orthanc, pacs_archive: Path, tmp_path: Path, query, keep
):
    source = parse_dicomweb_url(f"{read_only_pacs.dicomweb}?{query}", environ=CREDENTIALS)
    summary = mirror(source, tmp_path / "staging", page_size=3)
    expected = {sop for sop, ds in _headers(pacs_archive).items() if keep(ds)}
    assert 0 < len(expected) < 11
    assert set(_staged(tmp_path / "staging")) == expected and summary.fetched == len(expected)


@requires_orthanc
def test_missing_or_wrong_credentials_are_named(read_only_pacs: Orthanc, tmp_path: Path):
    with pytest.raises(ValueError, match=f"HTTP 401 Unauthorized; credentials are not set \\({USERNAME_ENV}"):
        mirror(parse_dicomweb_url(read_only_pacs.dicomweb, environ={}), tmp_path / "staging")
    wrong = DicomWebSource(
        parse_dicomweb_url(read_only_pacs.dicomweb, environ={}).url, username=USERNAME, password="nope"
    )
    with pytest.raises(ValueError, match="HTTP 401 Unauthorized; credentials were refused") as err:
        mirror(wrong, tmp_path / "staging")
    assert "nope" not in str(err.value)
    elsewhere = parse_dicomweb_url(f"{read_only_pacs.dicomweb}-nowhere?PatientID=MRN1", environ=CREDENTIALS)
    with pytest.raises(ValueError, match="the DICOMweb service answered HTTP 404 Not Found") as err:
        mirror(elsewhere, tmp_path / "staging")
    assert "MRN1" not in str(err.value)  # the request URL (with the query) is not repeated


def test_a_stow_answer_that_lists_the_sr_as_failed_is_an_error():
    failed = pydicom.Dataset()
    failed.ReferencedSOPInstanceUID, failed.FailureReason = "1.2.3", 0xA700  # out of resources
    response = pydicom.Dataset()
    response.FailedSOPSequence = [failed]
    with pytest.raises(RuntimeError, match="the PACS refused SR 1.2.3 .*reason 42752"):
        _check_stored(response, "1.2.3")
    _check_stored(response, "1.2.4")  # another instance's failure is not this SR's
    _check_stored(None, "1.2.3")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    module = MultiLabelDetection(
        FINDINGS, Preprocessing(spatial_size=(32, 32)), backbone="resnet18", thresholds=THRESHOLDS
    )
    path = tmp_path / "cxr.ckpt"
    torch.save({"state_dict": module.state_dict(), CHECKPOINT_KEY: module.to_package().contract()}, path)
    return path


def _medres_score(url: str, checkpoint: Path, output: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **CREDENTIALS}
    command = [sys.executable, "-m", "medres.cli", "score", "--model", str(checkpoint), "--input", url]
    command += ["--output", str(output), "--num_workers", "0", "--accelerator", "cpu", "--batch_size", "4"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _srs_in(pacs: Orthanc) -> list[pydicom.Dataset]:
    client = DICOMwebClient(
        pacs.dicomweb.replace("dicomweb://", "http://"), session=create_session_from_user_pass(USERNAME, PASSWORD)
    )
    found = client.search_for_instances(search_filters={"Modality": "SR"})
    return [
        client.retrieve_instance(r["0020000D"]["Value"][0], r["0020000E"]["Value"][0], r["00080018"]["Value"][0])
        for r in found
    ]


@requires_orthanc
@pytest.mark.slow
def test_medres_score_dicomweb_writes_one_sr_per_study_and_a_rerun_adds_none(
    pacs_archive: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    files = dicom_files(pacs_archive)
    late = [f for f in files if f.parts[-4:-2] == ("patient_0004", "study_03")]  # a study that arrives later
    assert len(late) == 1
    with running_orthanc(tmp_path / "orthanc") as pacs:
        pacs.upload([f for f in files if f not in late])
        images = pacs.count_instances()
        output = tmp_path / "out" / "preds.parquet"
        first = _medres_score(pacs.dicomweb, checkpoint, output)

        predictions = pd.read_parquet(output)
        originals = {sop: ds for sop, ds in _headers(pacs_archive).items() if ds.filename not in map(str, late)}
        assert len(predictions) == images == len(originals) == 10  # every instance in the PACS was scored
        assert set(predictions["SOPInstanceUID"]) == set(originals)
        studies = aggregate_studies(predictions, FINDINGS, THRESHOLDS).set_index("StudyInstanceUID")
        srs = _srs_in(pacs)
        assert pacs.count_instances() == images + len(studies)
        assert sorted(sr.StudyInstanceUID for sr in srs) == sorted(studies.index)  # one SR per study
        for sr in srs:
            assert sr.SOPInstanceUID == sr_identity(sr.StudyInstanceUID, "cxr", "checkpoint").sop_uid
            stated = read_study_findings(sr)
            expected = studies.loc[sr.StudyInstanceUID]
            assert [stated[f].probability for f in FINDINGS] == pytest.approx([expected[f"prob_{f}"] for f in FINDINGS])
            assert [stated[f].present for f in FINDINGS] == [bool(expected[f"finding_{f}"]) for f in FINDINGS]
            patients = {ds.PatientID for ds in originals.values() if ds.StudyInstanceUID == sr.StudyInstanceUID}
            assert {sr.PatientID} == patients  # the SR belongs to the study's patient
        ledger = pd.read_parquet(output.with_suffix(".sr.parquet"))
        assert (ledger["status"] == "stored").all() and len(ledger) == len(studies)
        evidence = {u: n for u, n in zip(ledger["StudyInstanceUID"], ledger["n_evidence"], strict=True)}
        assert evidence == studies["n_instances"].to_dict()

        second = _medres_score(pacs.dicomweb, checkpoint, output)
        assert pacs.count_instances() == images + len(studies)  # the rerun added none
        assert (pd.read_parquet(output.with_suffix(".sr.parquet"))["status"] == "existing").all()
        assert "(0 fetched" in second.stdout and f"{len(studies)} already in the PACS" in second.stdout

        # the late study arrives; in-process this time (the CLI path is covered above)
        pacs.upload(late)
        monkeypatch.setenv(USERNAME_ENV, USERNAME)
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        third = score_dicomweb(str(checkpoint), pacs.dicomweb, output, num_workers=0, accelerator="cpu", progress=False)
        assert (third.mirror.fetched, third.mirror.present) == (1, images)
        assert third.srs is not None and (third.srs.stored, third.srs.existing) == (1, len(studies))
        assert pacs.count_instances() == images + 1 + len(studies) + 1
        assert len(pd.read_parquet(output)) == images + 1

    # identifying values went into the SRs in the PACS, and nowhere else
    leaks = find_identifying(
        identifying_values(pacs_archive),
        [p for p in output.parent.iterdir() if p.suffix == ".parquet" or p.name.startswith(".")],
        [first.stdout, first.stderr, second.stdout, second.stderr],
        tmp_path / "scratch",
    )
    assert leaks == []


def test_medres_score_names_a_bad_dicomweb_input_in_one_line(checkpoint, tmp_path, capsys):
    from medres.cli import main

    with pytest.raises(SystemExit) as exit_:
        url = "dicomweb://h:8042/dw?StudyDat=2024"
        main(["score", "--model", str(checkpoint), "--input", url, "--output", str(tmp_path / "p.parquet")])
    assert exit_.value.code == 2
    stderr = capsys.readouterr().err.strip()
    assert "\n" not in stderr and stderr.startswith("medres score: error: --input dicomweb://h:8042/dw: filter")
    assert "'StudyDat' is not a DICOM keyword" in stderr and not (tmp_path / "p.staging").exists()
