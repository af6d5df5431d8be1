"""Public label layouts in, unchanged: synthetic RSNA, VinDr-CXR, LUNA16 and MIMIC-CXR archives and their importers."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medres.cli import main
from medres.data.boxes import MergeRule, merge_readers, read_box_csv
from medres.data.importers import import_labels
from medres.data.importers.vindr import finding_name
from medres.data.manifest import index_archive, join_labels
from medres.synthetic.luna16 import LUNA_ANNOTATIONS, LUNA_HEADER, LUNA_SERIESUIDS, LunaSummary, synth_luna16
from medres.synthetic.mimic import (
    MIMIC_CHEXPERT,
    MIMIC_CHEXPERT_HEADER,
    MIMIC_METADATA_HEADER,
    MimicSummary,
    synth_mimic_cxr,
)
from medres.synthetic.rsna import RSNA_CLASSES, RSNA_IMAGES, RSNA_LABEL_HEADER, synth_rsna_pneumonia
from medres.synthetic.vindr import TRUTH_CSV, VINDR_ANNOTATIONS, VINDR_HEADER, synth_vindr_cxr


@pytest.fixture(scope="module")
def rsna(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rsna") / "release"
    synth_rsna_pneumonia(root, patients=12, seed=3, image_size=64, prevalence=0.5)
    return root


@pytest.fixture(scope="module")
def vindr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vindr") / "release"
    synth_vindr_cxr(root, images=10, seed=1, image_size=64)
    return root


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_rsna_layout_is_the_releases(rsna: Path) -> None:
    labels = _rows(rsna / "stage_2_train_labels.csv")
    assert tuple(labels[0]) == RSNA_LABEL_HEADER
    files = sorted((rsna / RSNA_IMAGES).iterdir())
    assert len(files) == 12
    stems = {f.stem for f in files}
    assert {r[0] for r in labels[1:]} == stems  # every image has rows, keyed by the file stem
    for patient, x, y, w, h, target in labels[1:]:
        ds = pydicom.dcmread(rsna / RSNA_IMAGES / f"{patient}.dcm")
        assert ds.PatientID == patient and ds.Rows == ds.Columns == 64 and ds.BitsStored == 8
        if target == "0":
            assert (x, y, w, h) == ("", "", "", "")
            continue
        x0, y0, x1, y1 = float(x), float(y), float(x) + float(w), float(y) + float(h)
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        # The box holds the opacity: brighter inside than in the same lung's rim around it.
        pixels = ds.pixel_array.astype(float)
        inside = pixels[int(y0) : int(y1), int(x0) : int(x1)].mean()
        assert inside > np.percentile(pixels[8:56, 8:56], 25)
    classes = _rows(rsna / RSNA_CLASSES)
    assert classes[0] == ["patientId", "class"] and len(classes) == len(labels)
    assert {c for _, c in classes[1:]} <= {"Lung Opacity", "Normal", "No Lung Opacity / Not Normal"}
    positives = {r[0] for r in labels[1:] if r[5] == "1"}
    assert positives == {p for p, c in classes[1:] if c == "Lung Opacity"}
    assert 0 < len(positives) < 12


def test_rsna_same_seed_same_bytes(rsna: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synth_rsna_pneumonia(again, patients=12, seed=3, image_size=64, prevalence=0.5)
    for f in (rsna / RSNA_IMAGES).iterdir():
        assert (again / RSNA_IMAGES / f.name).read_bytes() == f.read_bytes()


def test_rsna_import_keys_by_file_stem_and_joins_the_manifest(rsna: Path, tmp_path: Path) -> None:
    summary = import_labels("rsna-pneumonia", rsna, tmp_path / "out")
    labels = _rows(rsna / "stage_2_train_labels.csv")
    positives = {r[0] for r in labels[1:] if r[5] == "1"}
    assert summary.images == 12 and summary.positives == len(positives)
    assert summary.boxes == sum(r[5] == "1" for r in labels[1:])
    boxes = read_box_csv(summary.boxes_csv)
    first = next(r for r in labels[1:] if r[5] == "1")
    x, y, w, h = map(float, first[1:5])
    got = boxes.boxes(f"{RSNA_IMAGES}/{first[0]}.dcm", "lung_opacity")
    assert [x, y, x + w, y + h] in got.tolist()

    manifest, ledger = index_archive(rsna, salt="test")
    # The release's CSVs sit in the archive root: the index ledgers them, every image is a manifest row.
    assert sorted(ledger["path"]) == ["stage_2_detailed_class_info.csv", "stage_2_train_labels.csv"]
    joined = join_labels(manifest, summary.labels_csv, ["lung_opacity"])
    assert len(joined) == 12
    truth = {f"{RSNA_IMAGES}/{p}.dcm" for p in positives}
    assert {p for p, v in zip(joined["path"], joined["lung_opacity"], strict=True) if v == 1.0} == truth


def _broken_copy(rsna: Path, tmp_path: Path, line: int, column: str, value: str) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(rsna, copy)
    rows = _rows(copy / "stage_2_train_labels.csv")
    rows[line - 1][rows[0].index(column)] = value
    with (copy / "stage_2_train_labels.csv").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return copy


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("Target", "2", "column 'Target': '2' is not 0 or 1"),
        ("patientId", "0000-missing", "column 'patientId': no image stage_2_train_images/0000-missing.dcm"),
        ("x", "abc", None),
    ],
)
def test_rsna_import_errors_name_file_line_and_column(
    rsna: Path, tmp_path: Path, column: str, value: str, message: str | None
) -> None:
    rows = _rows(rsna / "stage_2_train_labels.csv")
    line = next(i for i, r in enumerate(rows, start=1) if i > 1 and (r[5] == "1" or column != "x"))
    broken = _broken_copy(rsna, tmp_path, line, column, value)
    with pytest.raises(ValueError) as err:
        import_labels("rsna-pneumonia", broken, tmp_path / "out")
    text = str(err.value)
    assert text.startswith(f"{broken / 'stage_2_train_labels.csv'}: line {line}, column {column!r}")
    if message:
        assert message in text


def test_rsna_import_refuses_a_box_outside_the_image(rsna: Path, tmp_path: Path) -> None:
    rows = _rows(rsna / "stage_2_train_labels.csv")
    line = next(i for i, r in enumerate(rows, start=1) if i > 1 and r[5] == "1")
    broken = _broken_copy(rsna, tmp_path, line, "width", "500.0")
    with pytest.raises(ValueError, match=rf"line {line}, column 'x': box .* lies outside .* \(64 x 64 pixels\)"):
        import_labels("rsna-pneumonia", broken, tmp_path / "out")


def test_vindr_layout_has_three_readers_and_no_finding_rows(vindr: Path) -> None:
    rows = _rows(vindr / VINDR_ANNOTATIONS)
    assert tuple(rows[0]) == VINDR_HEADER
    images = {f.stem for f in (vindr / "train").iterdir()}
    assert len(images) == 10 and all(len(i) == 32 for i in images)
    readers: dict[str, set[str]] = {}
    for image_id, rad_id, class_name, *corners in rows[1:]:
        readers.setdefault(image_id, set()).add(rad_id)
        assert (class_name == "No finding") == (corners == ["", "", "", ""])
    assert set(readers) == images and {len(r) for r in readers.values()} == {3}
    assert any(r[2] == "No finding" for r in rows[1:]) and any(r[2] != "No finding" for r in rows[1:])


def test_vindr_consensus_recovers_the_true_boxes(vindr: Path, tmp_path: Path) -> None:
    summary = import_labels("vindr-cxr", vindr, tmp_path / "out", merge=MergeRule("consensus", 2, 0.4))
    raw = read_box_csv(summary.boxes_csv)
    assert "" not in set(raw.frame["reader"]) and len(set(raw.frame["reader"])) > 3
    merged = merge_readers(raw, MergeRule("consensus", 2, 0.4))
    truth = _rows(vindr / TRUTH_CSV)[1:]
    matched = 0
    for image_id, class_name, *corners in truth:
        found = merged.boxes(f"train/{image_id}.dicom", finding_name(class_name))
        box = np.array(list(map(float, corners)))
        if len(found) and np.abs(found - box).max(axis=1).min() < 0.2 * (box[2] - box[0] + box[3] - box[1]):
            matched += 1
    # Readers miss 12 % of lesions each: two of three agree on about 96 % of them.
    assert matched >= 0.8 * len(truth)
    assert summary.findings == tuple(sorted({finding_name(r[1]) for r in truth} | set(summary.findings)))


def test_vindr_reader_saying_no_finding_and_boxing_is_refused(vindr: Path, tmp_path: Path) -> None:
    copy = tmp_path / "broken"
    shutil.copytree(vindr, copy)
    rows = _rows(copy / VINDR_ANNOTATIONS)
    boxed = next(r for r in rows[1:] if r[2] != "No finding")
    rows.append([boxed[0], boxed[1], "No finding", "", "", "", ""])
    with (copy / VINDR_ANNOTATIONS).open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    with pytest.raises(ValueError, match=rf"line {len(rows)}, column 'class_name': {boxed[1]} says 'No finding'"):
        import_labels("vindr-cxr", copy, tmp_path / "out")


def test_cli_synth_and_labels_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["synth", "rsna-pneumonia", "--out", str(tmp_path / "a"), "--patients", "4", "--image_size", "64"])
    main(["labels", "import", "rsna-pneumonia", str(tmp_path / "a"), "--out", str(tmp_path / "labels")])
    assert "4 images" in capsys.readouterr().out
    assert (tmp_path / "labels" / "boxes.csv").is_file() and (tmp_path / "labels" / "labels.csv").is_file()
    (tmp_path / "a" / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["labels", "import", "rsna-pneumonia", str(tmp_path / "a"), "--out", str(tmp_path / "labels")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medres labels: error:") and "line 1: missing column(s) ['Target']" in err
    assert "\n" not in err


@pytest.fixture(scope="module")
def luna(tmp_path_factory: pytest.TempPathFactory) -> LunaSummary:
    return synth_luna16(tmp_path_factory.mktemp("luna") / "release", scans=6, seed=2, size=24, slices=12)


def test_luna16_layout_is_lidc_idri_folders_and_lps_annotations(luna: LunaSummary) -> None:
    root = luna.root
    assert tuple(_rows(root / LUNA_ANNOTATIONS)[0]) == LUNA_HEADER
    assert [r[0] for r in _rows(root / LUNA_SERIESUIDS)] == list(luna.seriesuids)  # no header line
    assert luna.negatives >= 1 and len({n.seriesuid for n in luna.nodules}) == luna.scans - luna.negatives
    for n in luna.nodules:
        assert 3.0 <= n.diameter_mm <= 12.0
    files = sorted(root.glob("LIDC-IDRI-*/*/*/*.dcm"))
    assert len(files) == 6 * 12
    case, study, series, name = files[0].relative_to(root).parts
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert (ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID) == (case, study, series)
    assert name == f"{int(ds.InstanceNumber):06d}.dcm"


def test_luna16_import_gives_the_true_cubes_and_negatives(luna: LunaSummary, tmp_path: Path) -> None:
    summary = import_labels("luna16", luna.root, tmp_path / "out")
    boxes = read_box_csv(summary.boxes_csv)
    assert boxes.key == "SeriesInstanceUID" and boxes.spatial_dims == 3
    assert summary.images == luna.scans and summary.positives == luna.scans - luna.negatives
    assert summary.boxes == len(luna.nodules) and summary.findings == ("nodule",)
    for uid in luna.seriesuids:
        truth = [n for n in luna.nodules if n.seriesuid == uid]
        expected = np.array([[*(np.array(n.centre) - n.diameter_mm / 2), *(np.array(n.centre) + n.diameter_mm / 2)]
                             for n in truth]).reshape(-1, 6)  # fmt: skip
        np.testing.assert_allclose(boxes.boxes(uid, "nodule"), expected, atol=1e-6)
    labels = {r[0]: r[1] for r in _rows(summary.labels_csv)[1:]}
    assert _rows(summary.labels_csv)[0] == ["SeriesInstanceUID", "nodule"]
    assert labels == {uid: "1" if any(n.seriesuid == uid for n in luna.nodules) else "0" for uid in luna.seriesuids}
    manifest, _ = index_archive(luna.root, salt="test")
    joined = join_labels(manifest, summary.labels_csv, ["nodule"])
    assert len(joined) == len(manifest)  # every file of every listed series takes its series' label


def _broken_luna(luna: LunaSummary, tmp_path: Path, column: str, value: str) -> tuple[Path, int]:
    copy = tmp_path / "broken"
    shutil.copytree(luna.root, copy)
    rows = _rows(copy / LUNA_ANNOTATIONS)
    rows[2][rows[0].index(column)] = value
    with (copy / LUNA_ANNOTATIONS).open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return copy, 3


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("seriesuid", "1.2.3.4", "column 'seriesuid': no series 1.2.3.4 under"),
        ("coordY", "twelve", "column 'coordY': 'twelve' is not a number"),
        ("diameter_mm", "0", "column 'diameter_mm': 0 is not positive"),
        ("coordZ", "900", "column 'coordZ': centre ("),
    ],
)
def test_luna16_import_errors_name_file_line_and_column(
    luna: LunaSummary, tmp_path: Path, column: str, value: str, message: str
) -> None:
    broken, line = _broken_luna(luna, tmp_path, column, value)
    with pytest.raises(ValueError) as err:
        import_labels("luna16", broken, tmp_path / "out")
    text = str(err.value)
    assert text.startswith(f"{broken / LUNA_ANNOTATIONS}: line {line}, column {column!r}") and "\n" not in text
    assert message in text


def test_luna16_unknown_listed_scan_is_refused(luna: LunaSummary, tmp_path: Path) -> None:
    copy = tmp_path / "broken"
    shutil.copytree(luna.root, copy)
    with (copy / LUNA_SERIESUIDS).open("a") as f:
        f.write("1.2.840.99\n")
    with pytest.raises(ValueError, match=rf"seriesuids.csv: line {luna.scans + 1}, column 1: no series 1.2.840.99"):
        import_labels("luna16", copy, tmp_path / "out")


@pytest.fixture(scope="module")
def mimic(tmp_path_factory: pytest.TempPathFactory) -> MimicSummary:
    return synth_mimic_cxr(tmp_path_factory.mktemp("mimic") / "release", patients=5, seed=4, image_size=64)


def test_mimic_layout_is_the_releases(mimic: MimicSummary) -> None:
    chexpert = _rows(mimic.chexpert_csv)
    metadata = _rows(mimic.metadata_csv)
    assert tuple(chexpert[0]) == MIMIC_CHEXPERT_HEADER and tuple(metadata[0]) == MIMIC_METADATA_HEADER
    assert len(chexpert) - 1 == mimic.studies and len(metadata) - 1 == mimic.images
    assert {c for r in chexpert[1:] for c in r[2:]} <= {"1.0", "0.0", "-1.0", ""}
    for dicom_id, subject, study, *_ in metadata[1:]:
        path = mimic.root / f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.dcm"
        assert path.is_file() and len(dicom_id.split("-")) == 5
        assert pydicom.dcmread(path, stop_before_pixels=True).PatientID == subject


def test_mimic_import_keys_images_by_path_with_the_studys_labels(mimic: MimicSummary, tmp_path: Path) -> None:
    summary = import_labels("mimic-cxr", mimic.root, tmp_path / "out")
    assert summary.boxes_csv is None and not (tmp_path / "out" / "boxes.csv").exists()
    rows = _rows(summary.labels_csv)
    assert rows[0][:3] == ["path", "atelectasis", "cardiomegaly"] and "pleural_effusion" in rows[0]
    assert len(rows) - 1 == mimic.images == summary.images
    study_cells = {(r[0], r[1]): r[2:] for r in _rows(mimic.chexpert_csv)[1:]}
    back = {"1.0": "1", "0.0": "0", "-1.0": "-1", "": ""}
    for path, *cells in rows[1:]:
        _, _, subject, study, _ = path.split("/")
        assert cells == [back[c] for c in study_cells[(subject[1:], study[1:])]]
    manifest, _ = index_archive(mimic.root, salt="test")
    joined = join_labels(manifest, summary.labels_csv, ["pleural_effusion", "cardiomegaly"])
    assert len(joined) == mimic.images


def _broken_mimic(mimic: MimicSummary, tmp_path: Path, column: str, value: str) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(mimic.root, copy)
    rows = _rows(copy / MIMIC_CHEXPERT)
    rows[2][rows[0].index(column)] = value
    with (copy / MIMIC_CHEXPERT).open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return copy


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("study_id", "59999999", "no folder s59999999 under"),
        ("Pleural Effusion", "yes", "'yes' is not 1.0, 0.0, -1.0 or blank"),
        ("subject_id", "19999999", "19999999 disagrees with the folder of study"),
    ],
)
def test_mimic_import_errors_name_file_line_and_column(
    mimic: MimicSummary, tmp_path: Path, column: str, value: str, message: str
) -> None:
    broken = _broken_mimic(mimic, tmp_path, column, value)
    with pytest.raises(ValueError) as err:
        import_labels("mimic-cxr", broken, tmp_path / "out")
    text = str(err.value)
    assert text.startswith(f"{broken / MIMIC_CHEXPERT}: line 3, column {column!r}") and "\n" not in text
    assert message in text


def test_cli_synth_and_labels_import_3d_and_image_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["synth", "luna16", "--out", str(tmp_path / "l"), "--scans", "2", "--size", "16", "--slices", "8"])
    main(["labels", "import", "luna16", str(tmp_path / "l"), "--out", str(tmp_path / "ll")])
    assert "2 series" in capsys.readouterr().out
    assert read_box_csv(tmp_path / "ll" / "boxes.csv").key == "SeriesInstanceUID"
    main(["synth", "mimic-cxr", "--out", str(tmp_path / "m"), "--patients", "2", "--image_size", "64"])
    main(["labels", "import", "mimic-cxr", str(tmp_path / "m"), "--out", str(tmp_path / "ml")])
    assert "image-level labels only, no boxes" in capsys.readouterr().out
    assert (tmp_path / "ml" / "labels.csv").is_file() and not (tmp_path / "ml" / "boxes.csv").exists()
