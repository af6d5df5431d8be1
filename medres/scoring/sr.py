"""Study results as DICOM Structured Reports: one Comprehensive 3D SR per study and model version.

The report is a TID 1500 Measurement Report (highdicom builds and validates the template tree): per
finding one TID 1501 group holding the study's probability as a numeric measurement (DCM "Probability",
UCUM "1") and the call at the package's operating threshold as a qualitative evaluation (SCT "Present" /
"Absent"), each group naming the algorithm (model name and version, medres version, threshold, study
aggregation). The image library and the evidence sequence list the scored instances of the study.

Finding names become SNOMED CT concepts where pydicom's code dictionary knows the name (``nodule`` →
SCT 27925004 "Nodule", ``pleural_effusion`` → SCT 60046008), else a code of the private scheme
``99MEDRES`` whose value is the name itself, so :func:`read_study_findings` maps either back to the name.

A detection model's boxes (the box rows of ``preds.boxes.parquet``, see :func:`boxes_from_rows`) add one
measurement group per box: a 2D box is a TID 1410 planar ROI whose region is an SCOORD POLYLINE, the closed
rectangle in the image's pixel coordinates, referencing its image; a 3D box is a TID 1411 volumetric ROI whose
surface is six SCOORD3D POLYGONs (the box's faces, patient LPS mm) in the series' frame of reference,
referencing its series. Each box group states the box's score (DCM "Probability") and its call (Present /
Absent) for its finding; :func:`read_study_boxes` reads them back.

UIDs are derived from (study UID, model name, model version) alone, so scoring the same study with the same
model again builds the same SR UIDs and the STOW step can tell that it is already stored. Given the same
``created`` time, the whole dataset is the same on every build, so a file written again is byte-identical.
The patient and study modules are copied from the source images: the SR belongs to the patient. It is the one
output that carries identifying data: it is sent to the PACS, or written to the folder ``--sr_dir`` names,
never beside the predictions.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
import pandas as pd
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID, generate_uid
from pydicom.valuerep import DA, DT, TM, validate_value

import medres
from medres.package import finding_column, probability_column

PRIVATE_SCHEME = "99MEDRES"
MANUFACTURER = "medres"
# High enough to sort after the acquisition series in a viewer's series list.
SR_SERIES_NUMBER = 9901
_PROCEDURE = codes.cid100.ImagingProcedure
_PRESENT, _ABSENT = codes.SCT.Present, codes.SCT.Absent
# Type 2 attributes of the patient and general study modules that highdicom copies from the first evidence
# header; a source file may lack them (type 2 means present, possibly empty), and the SR then carries them empty.
_TYPE2_COPIED = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)


def _copyable_header(header: Dataset) -> Dataset:
    """The first evidence header as highdicom may copy its patient and study modules into the SR.

    Type 2 attributes the source lacks are added empty. Values invalid for their VR are not copied: archives carry
    them (the RSNA Pneumonia release's PatientAge is a bare ``"51"`` where AS needs ``"051Y"``), and an SR holding
    them fails IOD validation. A type 2 attribute becomes empty, any other is left out; nothing is guessed. The
    caller's header is not changed: a copy (``Dataset(header)`` would share its element dict).
    """
    first = copy.deepcopy(header)
    for element in list(first):
        if element.VR in ("SQ", "OB", "OW", "UN") or element.value in (None, ""):
            continue
        values = element.value if element.VM > 1 else [element.value]
        try:
            for value in values:
                validate_value(element.VR, value, config.RAISE)
        except (ValueError, TypeError):
            if element.keyword in _TYPE2_COPIED:
                setattr(first, element.keyword, "")
            else:
                del first[element.tag]
    for keyword in _TYPE2_COPIED:
        if keyword not in first:
            setattr(first, keyword, "")
    return first


@dataclass(frozen=True)
class SRIdentity:
    """The UIDs of a study's SR for one model version (the same on every run)."""

    series_uid: UID
    sop_uid: UID


@dataclass(frozen=True)
class StudyFinding:
    """One finding as an SR states it."""

    probability: float
    present: bool


@dataclass(frozen=True)
class BoxRegion:
    """One predicted box as an SR states it.

    Attributes:
        finding: The finding's label name.
        score: The box's score (probability).
        present: The call at the box threshold.
        box: The box's index within its image (2D) or series (3D), as in the box rows.
        series_instance_uid: The series of the image (2D) or the series (3D) the box lies in.
        sop_instance_uid: 2D: the image the box lies in; 3D: None.
        sop_class_uid: 2D: that image's SOP Class UID; 3D: None.
        frame_of_reference_uid: 3D: the series' FrameOfReferenceUID (the box is in its patient coordinates); 2D:
            None (pixel coordinates need none).
        corners: 2D ``(x_min, y_min, x_max, y_max)``: stored-pixel edges, column then row, (0, 0) the top-left
            corner of the top-left pixel. 3D ``(x_min, y_min, z_min, x_max, y_max, z_max)``: patient LPS mm.
    """

    finding: str
    score: float
    present: bool
    box: int
    series_instance_uid: str
    sop_instance_uid: str | None
    sop_class_uid: str | None
    frame_of_reference_uid: str | None
    corners: tuple[float, ...]

    @property
    def spatial_dims(self) -> int:
        """2 for an image box, 3 for a box in patient space."""
        return len(self.corners) // 2


# The box-row contract of scoring (``preds.boxes.parquet``); 3D rows add z_min and z_max.
BOX_ROW_COLUMNS = (
    "path",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "finding",
    "box",
    "score",
    "call",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "model_name",
    "model_version",
)


# What highdicom's image library entry (TID 1602 descriptors) reads from an image of each kind: a projection
# radiograph's patient orientation and imager pixel spacing, a cross-sectional image's plane geometry.
_LIBRARY_NEEDS = {
    "projection": ("PatientOrientation", "ImagerPixelSpacing"),
    "cross_sectional": ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness"),
}
_PROJECTION = {"CR", "DX", "IO", "MG", "PX", "RF", "RG", "XA"}
_CROSS_SECTIONAL = {"CT", "MR", "PT"}


def library_images(evidence: Sequence[Dataset]) -> list[Dataset]:
    """The scored images the SR's image library (TID 1600) describes: those carrying what its descriptors need.

    The library is optional content; the evidence sequence references every scored image regardless. Archives are
    not always complete (a CR with ``PixelSpacing`` but no ``ImagerPixelSpacing``, a CT slice without
    ``SliceThickness``), and highdicom raises on such an image; it is left out of the library rather than given a
    value its header does not hold, and the SR is still written.
    """
    kept = []
    for ds in evidence:
        modality = str(getattr(ds, "Modality", ""))
        kind = "projection" if modality in _PROJECTION else "cross_sectional" if modality in _CROSS_SECTIONAL else None
        needs = _LIBRARY_NEEDS.get(kind, ()) if kind else ()
        if all(getattr(ds, keyword, None) not in (None, "") for keyword in needs):
            kept.append(ds)
    return kept


def boxes_from_rows(rows: pd.DataFrame, evidence: Sequence[Dataset]) -> list[BoxRegion]:
    """The boxes of one study's box rows, with the SOP class (2D) or frame of reference (3D) from its evidence.

    Args:
        rows: Box rows of one study and model version (columns :data:`BOX_ROW_COLUMNS`, plus ``z_min``, ``z_max``
            for 3D rows); may be empty.
        evidence: Headers of the study's scored instances (the same that :func:`build_study_sr` receives).

    Raises:
        ValueError: A missing column, or a box on an image (2D) or series (3D) that is not among the evidence
            (a box must refer to something the SR references).

    Returns:
        The boxes ordered by series, image, box index and finding (the order the SR states them in).
    """
    three_d = "z_min" in rows.columns
    required = [*BOX_ROW_COLUMNS, *(("z_min", "z_max") if three_d else ())]
    missing = [c for c in required if c not in rows.columns]
    if missing:
        raise ValueError(f"box rows lack column(s) {', '.join(missing)}")
    images = {str(ds.SOPInstanceUID): ds for ds in evidence}
    series = {str(ds.SeriesInstanceUID): ds for ds in evidence}
    corner_columns = (
        ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max") if three_d else ("x_min", "y_min", "x_max", "y_max")
    )
    boxes = []
    for row in rows.to_dict("records"):
        series_uid = str(row["SeriesInstanceUID"])
        sop_uid = None if three_d else str(row["SOPInstanceUID"])
        if three_d:
            source = series.get(series_uid)
            where = f"series {series_uid}"
        else:
            source = images.get(str(sop_uid))
            where = f"image {sop_uid}"
        if source is None:
            raise ValueError(f"box {row['box']} of {row['finding']}: {where} is not among the study's scored instances")
        frame_of_reference = getattr(source, "FrameOfReferenceUID", None)
        if three_d and not frame_of_reference:
            raise ValueError(f"box {row['box']} of {row['finding']}: {where} has no FrameOfReferenceUID")
        boxes.append(
            BoxRegion(
                finding=str(row["finding"]),
                score=float(row["score"]),
                present=bool(row["call"]),
                box=int(row["box"]),
                series_instance_uid=series_uid,
                sop_instance_uid=sop_uid,
                sop_class_uid=None if three_d else str(source.SOPClassUID),
                frame_of_reference_uid=str(frame_of_reference) if three_d else None,
                corners=tuple(float(row[c]) for c in corner_columns),
            )
        )
    # One order whatever order the rows came in (parts, ranks): the same boxes build the same SR.
    boxes.sort(key=lambda b: (b.series_instance_uid, b.sop_instance_uid or "", b.box, b.finding))
    return boxes


def sr_identity(study_uid: str, model_name: str, model_version: str) -> SRIdentity:
    """The SR's series and instance UIDs for a study and model version.

    pydicom's ``generate_uid`` with ``entropy_srcs`` hashes its inputs (SHA-512) into the UID, so the same
    inputs give the same UIDs on every machine and run, and a different study or version a different one.
    """
    sources = ["medres-sr", study_uid, model_name, model_version]
    return SRIdentity(
        series_uid=generate_uid(entropy_srcs=[*sources, "series"]),
        sop_uid=generate_uid(entropy_srcs=[*sources, "instance"]),
    )


def finding_concept(finding: str) -> hd.sr.CodedConcept:
    """SNOMED CT concept for a finding name pydicom knows (``pleural_effusion`` → PleuralEffusion), else private."""
    keyword = "".join(part.capitalize() for part in re.split(r"[^0-9A-Za-z]+", finding) if part)
    try:
        code = getattr(codes.SCT, keyword)
    except AttributeError:
        return hd.sr.CodedConcept(value=finding, scheme_designator=PRIVATE_SCHEME, meaning=finding)
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme_designator, meaning=code.meaning)


def build_study_sr(
    study: Mapping[str, Any],
    findings: Sequence[str],
    thresholds: Sequence[float],
    evidence: Sequence[Dataset],
    aggregation: str = "max",
    boxes: Sequence[BoxRegion] = (),
    created: dt.datetime | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The SR reporting one study's aggregated result and, for a detection model, its boxes.

    Args:
        study: One row of :func:`medres.scoring.studies.aggregate_studies`: ``StudyInstanceUID``,
            ``prob_<finding>``, ``finding_<finding>``, ``model_name``, ``model_version``.
        findings: Label names, in the order of ``thresholds``.
        thresholds: The package's operating threshold per finding.
        evidence: Headers of the study's scored instances (pixel data not needed); the patient and study
            modules are copied from them.
        aggregation: How the study's probabilities were aggregated from its images (recorded in the SR).
        boxes: The study's predicted boxes (:func:`boxes_from_rows`); none for a classification model.
        created: Content and instance creation date and time (default now). The same value builds the same
            dataset, so callers pass the scoring job's start to write identical files on every rerun.

    Raises:
        ValueError: No evidence, evidence from another study, thresholds that do not match the findings, or a
            box whose corners are not ordered finite numbers.
    """
    study_uid = str(study["StudyInstanceUID"])
    if not evidence:
        raise ValueError(f"study {study_uid}: no scored instance to reference in its SR")
    foreign = {str(ds.StudyInstanceUID) for ds in evidence} - {study_uid}
    if foreign:
        raise ValueError(f"study {study_uid}: SR evidence includes instances of {len(foreign)} other study(ies)")
    if len(thresholds) != len(findings):
        raise ValueError(f"{len(thresholds)} threshold(s) for {len(findings)} finding(s): one per finding")
    evidence = [_copyable_header(evidence[0]), *evidence[1:]]
    model_name, model_version = str(study["model_name"]), str(study["model_version"])
    identity = sr_identity(study_uid, model_name, model_version)
    algorithm = f"medres {model_name}"
    groups: list[
        hd.sr.MeasurementsAndQualitativeEvaluations
        | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    ] = []
    for finding, threshold in zip(findings, thresholds, strict=True):
        concept = finding_concept(finding)
        algorithm_id = hd.sr.AlgorithmIdentification(
            name=algorithm,
            version=model_version,
            parameters=[f"medres {medres.__version__}", f"threshold {threshold:g}", f"aggregation {aggregation}"],
        )
        probability = hd.sr.Measurement(
            name=codes.DCM.Probability,
            value=float(study[probability_column(finding)]),
            unit=codes.UCUM.NoUnits,
            algorithm_id=algorithm_id,
        )
        call = hd.sr.QualitativeEvaluation(
            name=concept, value=_PRESENT if bool(study[finding_column(finding)]) else _ABSENT
        )
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=generate_uid(entropy_srcs=[identity.sop_uid, finding]), identifier=finding
                ),
                finding_type=concept,
                algorithm_id=algorithm_id,
                measurements=[probability],
                qualitative_evaluations=[call],
            )
        )
    box_algorithm = hd.sr.AlgorithmIdentification(
        name=algorithm, version=model_version, parameters=[f"medres {medres.__version__}"]
    )
    groups += [_box_group(box, identity, box_algorithm) for box in boxes]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["medres-device", model_name, model_version]),
            name=algorithm,
            manufacturer_name=MANUFACTURER,
            model_name=f"{model_name} {model_version}",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_PROCEDURE,
        imaging_measurements=groups,
        referenced_images=library_images(evidence) or None,
    )
    # TM keeps whole seconds: a time read back from a file equals the one written.
    now = (created or dt.datetime.now()).replace(microsecond=0)
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=report,
        series_instance_uid=identity.series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=identity.sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # machine output nobody has verified
        series_description=f"{algorithm} {model_version}"[:64],  # VR LO: 64 characters at most
        content_date=now.date(),
        content_time=now.time(),
    )
    # highdicom stamps the instance creation and its own contribution with the clock; the given time makes a
    # rebuilt SR identical.
    sr.InstanceCreationDate, sr.InstanceCreationTime = DA(now.date()), TM(now.time())
    for equipment in sr.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in equipment:
            equipment.ContributionDateTime = DT(now)
    return sr


def _box_group(
    box: BoxRegion, identity: SRIdentity, algorithm_id: hd.sr.AlgorithmIdentification
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """One box's measurement group: TID 1410 (2D, SCOORD region) or TID 1411 (3D, SCOORD3D surface)."""
    corners = box.corners
    low, high = corners[: len(corners) // 2], corners[len(corners) // 2 :]
    ordered = all(a <= b for a, b in zip(low, high, strict=True))
    if len(corners) not in (4, 6) or not all(map(math.isfinite, corners)) or not ordered:
        raise ValueError(f"box {box.box} of {box.finding}: corners {corners} are not (min…, max…) finite numbers")
    concept = finding_concept(box.finding)
    tracking = hd.sr.TrackingIdentifier(
        # unique within the SR and the same on every build; the readable identifier is the index only
        uid=generate_uid(
            entropy_srcs=[
                identity.sop_uid,
                "box",
                box.series_instance_uid,
                box.sop_instance_uid or "",
                str(box.box),
                box.finding,
            ]
        ),
        identifier=f"box {box.box}",
    )
    score = hd.sr.Measurement(
        name=codes.DCM.Probability, value=box.score, unit=codes.UCUM.NoUnits, algorithm_id=algorithm_id
    )
    call = hd.sr.QualitativeEvaluation(name=concept, value=_PRESENT if box.present else _ABSENT)
    common: dict[str, Any] = dict(
        tracking_identifier=tracking,
        finding_type=concept,
        algorithm_id=algorithm_id,
        measurements=[score],
        qualitative_evaluations=[call],
    )
    if box.spatial_dims == 2:
        if box.sop_instance_uid is None or box.sop_class_uid is None:
            raise ValueError(f"box {box.box} of {box.finding}: a 2D box names its image (SOP Instance and Class UID)")
        x_min, y_min, x_max, y_max = corners
        # SCOORD pixel coordinates are (column, row) with (0, 0) at the top-left corner of the top-left pixel:
        # exactly the stored-pixel-edge convention of the box rows, so the corners go in unchanged.
        rectangle = np.array(
            [[x_min, y_min], [x_max, y_min], [x_max, y_max], [x_min, y_max], [x_min, y_min]], dtype=np.float32
        )
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=rectangle,
            source_image=hd.sr.SourceImageForRegion(box.sop_class_uid, box.sop_instance_uid),
        )
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **common)
    if box.frame_of_reference_uid is None:
        raise ValueError(f"box {box.box} of {box.finding}: a 3D box names its series' frame of reference")
    surface = hd.sr.VolumeSurface(
        graphic_type=hd.sr.GraphicTypeValues3D.POLYGON,
        graphic_data=box_faces(corners),
        frame_of_reference_uid=box.frame_of_reference_uid,
        source_series=hd.sr.SourceSeriesForSegmentation(box.series_instance_uid),
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_volume_surface=surface, **common)


def box_faces(corners: Sequence[float]) -> list[np.ndarray]:
    """The six faces of a 3D box ``(x_min, y_min, z_min, x_max, y_max, z_max)``, each a closed 5-point polygon.

    Order: z_min, z_max, y_min, y_max, x_min, x_max faces; each polygon repeats its first point last (SCOORD3D
    POLYGON is closed that way).
    """
    x0, y0, z0, x1, y1, z1 = corners
    faces = (
        [[(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)] for z in (z0, z1)]
        + [[(x0, y, z0), (x1, y, z0), (x1, y, z1), (x0, y, z1)] for y in (y0, y1)]
        + [[(x, y0, z0), (x, y1, z0), (x, y1, z1), (x, y0, z1)] for x in (x0, x1)]
    )
    return [np.array([*face, face[0]], dtype=np.float32) for face in faces]


def read_study_findings(sr: Dataset) -> dict[str, StudyFinding]:
    """The findings an SR written by :func:`build_study_sr` states, keyed by finding name.

    Args:
        sr: The SR as read back (from the PACS or a file).

    Raises:
        ValueError: The SR's content is not a TID 1500 measurement report.
    """
    report = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise ValueError(f"SR {sr.SOPInstanceUID} is not a TID 1500 measurement report")
    result: dict[str, StudyFinding] = {}
    for group in report.get_image_measurement_groups():
        finding = str(group.tracking_identifier)
        (probability,) = group.get_measurements(name=codes.DCM.Probability)
        (call,) = group.get_qualitative_evaluations()
        result[finding] = StudyFinding(probability=float(probability.value), present=call.value == _PRESENT)
    return result


def _finding_names(findings: Sequence[str]) -> dict[tuple[str, str], str]:
    names: dict[tuple[str, str], str] = {}
    for finding in findings:
        concept = finding_concept(finding)
        names[(concept.value, concept.scheme_designator)] = finding
    return names


def read_study_boxes(sr: Dataset, findings: Sequence[str]) -> list[BoxRegion]:
    """The boxes an SR written by :func:`build_study_sr` states, in the SR's order (2D groups, then 3D).

    Args:
        sr: The SR as read back (from the PACS or a file).
        findings: The package's label names: a box's finding concept is mapped back to the name whose
            :func:`finding_concept` it is (a SNOMED CT concept does not spell the label name).

    Raises:
        ValueError: Not a TID 1500 measurement report, or a box of a finding not in ``findings``.
    """
    document = hd.sr.Comprehensive3DSR.from_dataset(sr)
    report = document.content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise ValueError(f"SR {sr.SOPInstanceUID} is not a TID 1500 measurement report")
    names = _finding_names(findings)
    series_of = {sop_uid: series_uid for _, series_uid, sop_uid, _ in document.get_evidence()}
    boxes = []
    planar = report.get_planar_roi_measurement_groups()
    volumetric = report.get_volumetric_roi_measurement_groups()
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    ] = [*planar, *volumetric]
    for group in groups:
        concept = group.finding_type
        if concept is None or (concept.value, concept.scheme_designator) not in names:
            raise ValueError(f"SR {sr.SOPInstanceUID}: a box of finding {concept} that is not among {list(findings)}")
        (score,) = group.get_measurements(name=codes.DCM.Probability)
        (call,) = group.get_qualitative_evaluations()
        finding = names[(concept.value, concept.scheme_designator)]
        index = int(str(group.tracking_identifier).removeprefix("box "))
        roi = group.roi
        sop_uid: str | None = None
        sop_class_uid: str | None = None
        frame_of_reference: str | None = None
        if isinstance(roi, hd.sr.ImageRegion):  # a 2D box
            points = np.asarray(roi.value)
            reference = roi.ContentSequence[0].ReferencedSOPSequence[0]
            sop_uid, sop_class_uid = str(reference.ReferencedSOPInstanceUID), str(reference.ReferencedSOPClassUID)
            series_uid = str(series_of.get(UID(sop_uid), ""))
        elif isinstance(roi, hd.sr.VolumeSurface):  # a 3D box
            points = np.concatenate(roi.graphic_data)
            series = roi.source_series_for_segmentation
            series_uid = "" if series is None else str(series.value)
            frame_of_reference = str(roi.frame_of_reference_uid)
        else:
            raise ValueError(f"SR {sr.SOPInstanceUID}: box {index} has a region medres does not write")
        boxes.append(
            BoxRegion(
                finding=finding,
                score=float(score.value),
                present=call.value == _PRESENT,
                box=index,
                series_instance_uid=series_uid,
                sop_instance_uid=sop_uid,
                sop_class_uid=sop_class_uid,
                frame_of_reference_uid=frame_of_reference,
                corners=tuple(float(c) for c in (*points.min(axis=0), *points.max(axis=0))),
            )
        )
    return boxes
