import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from medres.synthetic import (
    CHEST_XRAY_FINDINGS,
    CT_FINDINGS,
    SynthSummary,
    render_chest_xray,
    render_ct,
    synth_chest_xray,
    synth_ct,
)
from medres.synthetic.luna16 import synth_luna16
from medres.synthetic.mimic import synth_mimic_cxr

# 14 patients at 96 px: a few seconds, and (for this seed) every encoding, photometric, modality
# and label value occurs at least once.
PATIENTS, SEED, SIZE = 14, 3, 96


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return synth_chest_xray(tmp_path_factory.mktemp("synth") / "archive", PATIENTS, SEED, SIZE)


@pytest.fixture(scope="module")
def datasets(archive: SynthSummary) -> dict[Path, pydicom.Dataset]:
    return {p: pydicom.dcmread(p) for p in sorted(archive.root.rglob("*.dcm"))}


def read_labels(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.*"))}


def test_layout_and_labels(archive: SynthSummary, datasets: dict[Path, pydicom.Dataset]) -> None:
    root = archive.root
    assert archive.labels_csv == root / "labels.csv"
    assert archive.patients == PATIENTS
    assert archive.instances == len(datasets)
    patient_dirs = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert patient_dirs == [f"patient_{i:04d}" for i in range(1, PATIENTS + 1)]
    for path in datasets:
        patient, study, series, image = path.relative_to(root).parts
        assert patient.startswith("patient_") and study in {"study_01", "study_02", "study_03"}
        assert series in {"series_01", "series_02"} and image == "image_0001.dcm"

    with archive.labels_csv.open() as f:
        assert f.readline().strip() == "StudyInstanceUID," + ",".join(CHEST_XRAY_FINDINGS)
    rows = read_labels(archive.labels_csv)
    assert len(rows) == archive.studies
    label_uids = [r["StudyInstanceUID"] for r in rows]
    assert len(set(label_uids)) == len(label_uids)
    assert set(label_uids) == {ds.StudyInstanceUID for ds in datasets.values()}

    # One to three studies a patient; each study one PA/AP series and at most one lateral.
    views_per_study: dict[str, list[str]] = {}
    for ds in datasets.values():
        views_per_study.setdefault(ds.StudyInstanceUID, []).append(ds.ViewPosition)
    for views in views_per_study.values():
        assert sorted(views) in (["PA"], ["AP"], ["LL", "PA"], ["AP", "LL"])
    studies_per_patient = Counter(study.parent.name for study in {path.parents[1] for path in datasets})
    assert set(studies_per_patient.values()) <= {1, 2, 3}
    assert sum(studies_per_patient.values()) == archive.studies


def test_headers_and_pixel_encodings(datasets: dict[Path, pydicom.Dataset]) -> None:
    syntaxes, photometrics, modalities = Counter(), Counter(), Counter()
    for ds in datasets.values():
        syntaxes[ds.file_meta.TransferSyntaxUID] += 1
        photometrics[ds.PhotometricInterpretation] += 1
        modalities[ds.Modality] += 1
        assert ds.preamble == b"\x00" * 128
        assert ds.SOPClassUID == {"CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1"}[ds.Modality]
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.BodyPartExamined == "CHEST" and ds.ViewPosition in {"PA", "AP", "LL"}
        assert 0.12 <= float(ds.PixelSpacing[0]) <= 0.2 and 0.14 <= float(ds.ImagerPixelSpacing[0]) <= 0.2
        assert len(ds.StudyDate) == 8 and ds.Manufacturer
        assert ds.BitsAllocated == 16 and ds.BitsStored in (12, 14, 16) and ds.PixelRepresentation == 0
        assert ds.RescaleType == "US" and float(ds.RescaleSlope) > 0
        assert 0.85 * SIZE <= ds.Rows <= 1.15 * SIZE and 0.85 * SIZE <= ds.Columns <= 1.15 * SIZE

        pixels = ds.pixel_array
        assert pixels.shape == (ds.Rows, ds.Columns) and pixels.dtype == np.uint16
        assert int(pixels.max()) < 2**ds.BitsStored
        # The stored range is used generously, so percentile normalisation has contrast to work with.
        assert int(pixels.max()) - int(pixels.min()) > 0.25 * 2**ds.BitsStored

    assert set(syntaxes) == {ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless}
    assert syntaxes[ExplicitVRLittleEndian] > max(syntaxes[RLELossless], syntaxes[JPEG2000Lossless])
    assert set(photometrics) == {"MONOCHROME1", "MONOCHROME2"}
    assert set(modalities) == {"CR", "DX"}
    assert len({(ds.Rows, ds.Columns) for ds in datasets.values()}) > 1


def test_monochrome1_looks_normal_after_inversion(datasets: dict[Path, pydicom.Dataset]) -> None:
    # After the modality LUT and MONOCHROME1 inversion every frontal film has dark air at its left and
    # right edges, dark lungs, and a bright mediastinum in the middle.
    for ds in datasets.values():
        if ds.ViewPosition == "LL":
            continue
        image = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            image = image.max() + image.min() - image
        rows, cols = image.shape
        middle = image[rows // 4 : rows // 2]  # band through the upper lungs
        air = np.r_[middle[:, : cols // 20].ravel(), middle[:, -cols // 20 :].ravel()].mean()
        lungs = np.r_[middle[:, cols // 4 : cols // 3].ravel(), middle[:, 2 * cols // 3 : 3 * cols // 4].ravel()].mean()
        mediastinum = middle[:, int(0.47 * cols) : int(0.53 * cols)].mean()
        assert air < lungs < mediastinum


def test_same_seed_same_bytes_other_seed_differs(archive: SynthSummary, tmp_path: Path) -> None:
    again = synth_chest_xray(tmp_path / "again", PATIENTS, SEED, SIZE)
    assert file_hashes(again.root) == file_hashes(archive.root)
    other = synth_chest_xray(tmp_path / "other", 3, SEED + 1, SIZE)
    first = file_hashes(archive.root)
    assert all(first.get(name) != digest for name, digest in file_hashes(other.root).items())


def test_patient_identifiers_stay_inside_the_dicom_files(
    archive: SynthSummary, datasets: dict[Path, pydicom.Dataset]
) -> None:
    identifiers = set()
    for ds in datasets.values():
        assert str(ds.PatientID).startswith("MRN") and len(ds.PatientID) == 10
        assert str(ds.AccessionNumber).startswith("ACC") and len(ds.AccessionNumber) == 11
        assert "^" in str(ds.PatientName) and ds.PatientSex in {"F", "M"}
        assert ds.InstitutionName and ds.ReferringPhysicianName and ds.OperatorsName
        identifiers |= {str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber}
        identifiers |= set(str(ds.PatientName).split("^"))
    # Each patient gets their own MRN; each study its own accession number.
    assert len({ds.PatientID for ds in datasets.values()}) == PATIENTS
    paths = "\n".join(str(p.relative_to(archive.root)) for p in archive.root.rglob("*"))
    labels = archive.labels_csv.read_text()
    for value in identifiers:
        assert value not in paths
        assert value not in labels


def test_labels_have_every_cell_kind_and_plausible_prevalence(archive: SynthSummary) -> None:
    rows = read_labels(archive.labels_csv)
    cells = Counter(r[f] for r in rows for f in CHEST_XRAY_FINDINGS)
    assert set(cells) == {"1", "0", "", "-1"}
    assert 0.15 < cells["1"] / sum(cells.values()) < 0.55


@pytest.mark.parametrize("view", ["PA", "LL"])
def test_each_finding_changes_only_its_own_region(view: str) -> None:
    rows, cols = 160, 150
    base = render_chest_xray({}, seed=7, view=view, rows=rows, cols=cols)
    assert base.shape == (rows, cols) and base.dtype == np.float32
    assert base.min() >= 0.0 and base.max() <= 1.0

    def diff(finding: str) -> np.ndarray:
        return render_chest_xray({finding: True}, seed=7, view=view, rows=rows, cols=cols) - base

    # Nodules: a few small, strongly brighter discs (each at least ~5 % of the width across).
    nodule = diff("nodule")
    bright = nodule > 0.1
    assert 0.002 * rows * cols < bright.sum() < 0.03 * rows * cols
    assert nodule.max() > 0.15

    # Effusion: the lower lung turns uniformly bright; the apices are untouched.
    effusion = diff("effusion")
    assert (effusion > 0.1).sum() > 0.02 * rows * cols
    assert np.abs(effusion[: rows // 4]).max() < 1e-3
    assert effusion[rows // 2 :].mean() > 0.01

    # Cardiomegaly: a larger heart covers lung in the lower half, nothing changes above it.
    heart = diff("cardiomegaly")
    assert (heart > 0.1).sum() > 0.02 * rows * cols
    assert np.abs(heart[: rows // 3]).max() < 1e-3

    # Pneumothorax: darker air at the top of a lung, bounded by a thin bright pleural line.
    pneumothorax = diff("pneumothorax")
    assert (pneumothorax < -0.05).sum() > 0.01 * rows * cols
    assert pneumothorax[: rows // 2].mean() < 0
    assert (pneumothorax > 0.03).sum() > 0  # the pleural line
    assert np.abs(pneumothorax[int(0.85 * rows) :]).max() < 1e-3


def test_findings_do_not_change_the_random_stream() -> None:
    all_findings = dict.fromkeys(CHEST_XRAY_FINDINGS, True)
    one = render_chest_xray(all_findings, seed=1)
    assert np.array_equal(one, render_chest_xray(all_findings, seed=1))
    assert not np.array_equal(one, render_chest_xray(all_findings, seed=2))
    with pytest.raises(ValueError, match="findings"):
        render_chest_xray({"fracture": True})


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"patients": 0}, "patients"), ({"image_size": 32}, "image_size"), ({"seed": -1}, "seed")]
)
def test_bad_arguments_name_the_argument(tmp_path: Path, kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        synth_chest_xray(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_refuses_to_write_into_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("someone's data")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        synth_chest_xray(tmp_path, 1, 0, 64)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    with pytest.raises(FileExistsError):
        synth_chest_xray(tmp_path / "keep.txt", 1, 0, 64)


def test_empty_existing_folder_is_accepted(tmp_path: Path) -> None:
    summary = synth_chest_xray(tmp_path, 1, 0, 64)
    assert summary.root == tmp_path and summary.instances >= 1 and summary.labels_csv.is_file()


# ---- CT ----------------------------------------------------------------------------------------
# 12 patients, 24 slices of 32 px: a second or two, and (for this seed) scouts, mixed-in scouts, thick
# reconstructions, oblique series and every transfer syntax occur.
CT_PATIENTS, CT_SEED, CT_SLICES, CT_SIZE = 12, 4, 24, 32
LOCALIZER = "LOCALIZER"


@pytest.fixture(scope="module")
def ct_archive(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return synth_ct(tmp_path_factory.mktemp("synth_ct") / "ct", CT_PATIENTS, CT_SEED, CT_SLICES, CT_SIZE)


@pytest.fixture(scope="module")
def ct_datasets(ct_archive: SynthSummary) -> dict[Path, pydicom.Dataset]:
    return {p: pydicom.dcmread(p) for p in sorted(ct_archive.root.rglob("*.dcm"))}


def ct_series(datasets: dict[Path, pydicom.Dataset]) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    """Axial slices per SeriesInstanceUID (scouts left out)."""
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for path, ds in datasets.items():
        if LOCALIZER not in ds.ImageType:
            series.setdefault(ds.SeriesInstanceUID, []).append((path, ds))
    return series


def normal_of(ds: pydicom.Dataset) -> np.ndarray:
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    return np.cross(iop[:3], iop[3:])


def test_ct_layout_labels_and_summary(ct_archive: SynthSummary, ct_datasets: dict[Path, pydicom.Dataset]) -> None:
    assert ct_archive.instances == len(ct_datasets) and ct_archive.patients == CT_PATIENTS
    with ct_archive.labels_csv.open() as f:
        assert f.readline().strip() == "StudyInstanceUID," + ",".join(CT_FINDINGS)
    rows = read_labels(ct_archive.labels_csv)
    assert len(rows) == ct_archive.studies
    assert {r["StudyInstanceUID"] for r in rows} == {ds.StudyInstanceUID for ds in ct_datasets.values()}
    assert {r[f] for r in rows for f in CT_FINDINGS} <= {"1", "0", "", "-1"}
    assert {r[f] for r in rows for f in CT_FINDINGS} >= {"1", "0"}
    assert ct_archive.series == len({ds.SeriesInstanceUID for ds in ct_datasets.values()})
    for path in ct_datasets:
        patient, study, series, image = path.relative_to(ct_archive.root).parts
        assert patient.startswith("patient_") and study.startswith("study_") and series.startswith("series_")
        assert image.startswith("image_")


def test_ct_headers_are_ct_image_storage_in_hounsfield_units(ct_datasets: dict[Path, pydicom.Dataset]) -> None:
    syntaxes = Counter()
    for ds in ct_datasets.values():
        syntaxes[ds.file_meta.TransferSyntaxUID] += 1
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" == ds.file_meta.MediaStorageSOPClassUID
        assert ds.Modality == "CT" and ds.BodyPartExamined == "CHEST" and ds.RescaleType == "HU"
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
        assert ds.FrameOfReferenceUID and len(ds.ImagePositionPatient) == 3 and len(ds.PixelSpacing) == 2
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        # Row and column cosines: unit length and orthogonal (PS3.3 C.7.6.2.1.1).
        assert np.allclose(np.linalg.norm(iop.reshape(2, 3), axis=1), 1, atol=1e-5) and abs(iop[:3] @ iop[3:]) < 1e-5
        hu = apply_modality_lut(ds.pixel_array, ds)
        assert hu.shape == (ds.Rows, ds.Columns) and hu.min() >= -2048 and hu.max() < 2000
    assert len(syntaxes) >= 3


def test_ct_series_geometry_is_realistic_and_shuffled(ct_datasets: dict[Path, pydicom.Dataset]) -> None:
    spacings, oblique, shuffled = set(), 0, 0
    for slices in ct_series(ct_datasets).values():
        n = normal_of(slices[0][1])
        assert all(np.allclose(normal_of(ds), n) for _, ds in slices)
        ordered = sorted(slices, key=lambda item: float(np.array(item[1].ImagePositionPatient, dtype=float) @ n))
        projections = [float(np.array(ds.ImagePositionPatient, dtype=float) @ n) for _, ds in ordered]
        steps = np.diff(projections)
        assert np.allclose(steps, steps[0], atol=0.01) and steps[0] > 1.0  # one volume, no gaps
        assert float(ordered[0][1].SliceThickness) >= steps[0] - 0.01
        # Positions step along the normal (no gantry shear): every slice sits on the first one's normal line.
        first = np.array(ordered[0][1].ImagePositionPatient, dtype=float)
        for _, ds in ordered:
            offset = np.array(ds.ImagePositionPatient, dtype=float) - first
            assert np.allclose(offset - (offset @ n) * n, 0, atol=0.01)
        spacings.add(round(float(steps[0]), 1))
        oblique += not np.allclose(n, [0, 0, 1])
        names = [path.name for path, _ in ordered]
        shuffled += names != sorted(names) and names != sorted(names, reverse=True)
    assert len(spacings) > 3 and oblique >= 1 and shuffled >= 1


def test_ct_has_scouts_some_mixed_into_the_axial_series(ct_datasets: dict[Path, pydicom.Dataset]) -> None:
    scouts = [ds for ds in ct_datasets.values() if LOCALIZER in ds.ImageType]
    axial_series = set(ct_series(ct_datasets))
    assert scouts and any(ds.SeriesInstanceUID in axial_series for ds in scouts)
    assert any(ds.SeriesInstanceUID not in axial_series for ds in scouts)
    for ds in scouts:
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 0, -1]  # coronal projection


def test_ct_hounsfield_values_of_tissues(ct_datasets: dict[Path, pydicom.Dataset]) -> None:
    for slices in ct_series(ct_datasets).values():
        n = normal_of(slices[0][1])
        ordered = sorted((ds for _, ds in slices), key=lambda ds: float(np.array(ds.ImagePositionPatient) @ n))
        ds = ordered[len(ordered) // 2]  # mid chest: lungs, mediastinum, spine, ribs
        hu = apply_modality_lut(ds.pixel_array, ds).astype(float)
        rows, cols = hu.shape
        yy, xx = np.mgrid[:rows, :cols]
        inside_fov = (yy - (rows - 1) / 2) ** 2 + (xx - (cols - 1) / 2) ** 2 <= (min(rows, cols) / 2) ** 2
        values = hu[inside_fov]
        assert (np.abs(values + 1000) < 100).mean() > 0.05  # air around the body
        assert ((values > -950) & (values < -700)).mean() > 0.05  # aerated lung
        assert ((values > -150) & (values < 120)).mean() > 0.05  # fat, muscle, mediastinum
        # Bone: vertebrae and ribs, somewhere in the series (a disc or coarse pixels can dim one slice).
        assert max(apply_modality_lut(ds.pixel_array, ds).max() for ds in ordered) > 200
        assert hu[0, 0] in (-2000.0, -1024.0)  # padding outside the reconstruction circle


def test_ct_each_finding_changes_only_its_own_region() -> None:
    base = render_ct({}, seed=3)
    assert base.shape == (32, 48, 48) and base.dtype == np.float32
    mass = render_ct({"mass": True}, seed=3) - base
    changed = np.abs(mass) > 1.0
    assert 10 < changed.sum() < 0.03 * base.size and mass.max() > 500  # soft tissue replacing lung
    effusion = render_ct({"effusion": True}, seed=3) - base
    posterior, anterior = effusion[:, 24:], effusion[:, :24]  # rows run anterior → posterior
    assert (posterior > 500).sum() > 50 and np.abs(anterior).max() < 300
    assert np.abs(effusion[-3:]).max() < 1.0  # the apices stay dry
    with pytest.raises(ValueError, match="findings"):
        render_ct({"nodule": True})


def test_ct_same_seed_same_bytes(ct_archive: SynthSummary, tmp_path: Path) -> None:
    again = synth_ct(tmp_path / "again", CT_PATIENTS, CT_SEED, CT_SLICES, CT_SIZE)
    assert file_hashes(again.root) == file_hashes(ct_archive.root)


def test_ct_identifiers_stay_inside_the_files(
    ct_archive: SynthSummary, ct_datasets: dict[Path, pydicom.Dataset]
) -> None:
    identifiers = set()
    for ds in ct_datasets.values():
        identifiers |= {str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber}
    paths = "\n".join(str(p.relative_to(ct_archive.root)) for p in ct_archive.root.rglob("*"))
    labels = ct_archive.labels_csv.read_text()
    for value in identifiers:
        assert value not in paths and value not in labels


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"patients": 0}, "patients"), ({"slices": 4}, "slices"), ({"size": 8}, "size"), ({"seed": -1}, "seed")],
)
def test_ct_bad_arguments_name_the_argument(tmp_path: Path, kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        synth_ct(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def _all_file_hashes(root: Path) -> dict[str, str]:
    # UID-named folders have dots in their names: hash files only.
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_luna16_same_seed_same_bytes_and_nodules_are_bright_at_their_centres(tmp_path: Path) -> None:
    first = synth_luna16(tmp_path / "a", scans=3, seed=7, size=24, slices=12, negative_fraction=0.0)
    again = synth_luna16(tmp_path / "b", scans=3, seed=7, size=24, slices=12, negative_fraction=0.0)
    assert _all_file_hashes(first.root) == _all_file_hashes(again.root) and first.nodules == again.nodules
    with pytest.raises(FileExistsError):
        synth_luna16(first.root, scans=1)
    for nodule in first.nodules:
        files = list(first.root.glob(f"LIDC-IDRI-*/*/{nodule.seriesuid}/*.dcm"))
        slices = [pydicom.dcmread(f) for f in files]
        # The slice nearest the centre (axial: z), then the pixel under it (columns along x, rows along y).
        ds = min(slices, key=lambda d: abs(float(d.ImagePositionPatient[2]) - nodule.centre[2]))
        x0, y0 = (float(v) for v in ds.ImagePositionPatient[:2])
        spacing = float(ds.PixelSpacing[0])
        col, row = round((nodule.centre[0] - x0) / spacing), round((nodule.centre[1] - y0) / spacing)
        hu = apply_modality_lut(ds.pixel_array, ds)
        assert hu[row, col] > -150 and np.median(hu) < -500  # soft tissue in aerated lung


def test_mimic_same_seed_same_bytes(tmp_path: Path) -> None:
    first = synth_mimic_cxr(tmp_path / "a", patients=2, seed=3, image_size=64)
    again = synth_mimic_cxr(tmp_path / "b", patients=2, seed=3, image_size=64)
    assert file_hashes(first.root) == file_hashes(again.root) and first.images == again.images >= 2
