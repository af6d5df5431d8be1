"""Study results as DICOM Structured Reports: one Comprehensive 3D SR per study and model version.

The report is a TID 1500 Measurement Report (highdicom builds and validates the template tree): per
finding one TID 1501 group holding the study's probability as a numeric measurement (DCM "Probability",
UCUM "1") and the call at the package's operating threshold as a qualitative evaluation (SCT "Present" /
"Absent"), each group naming the algorithm (model name and version, medres version, threshold, study
aggregation). The image library and the evidence sequence list the scored instances of the study.

Finding names become SNOMED CT concepts where pydicom's code dictionary knows the name (``nodule`` →
SCT 27925004 "Nodule", ``pleural_effusion`` → SCT 60046008), else a code of the private scheme
``99MEDRES`` whose value is the name itself, so :func:`read_study_findings` maps either back to the name.

UIDs are derived from (study UID, model name, model version) alone, so scoring the same study with the same
model again builds the same SR UIDs and the STOW step can tell that it is already stored. The patient and
study modules are copied from the source images: the SR belongs to the patient in the PACS. It is the one
output that carries identifying data, so it is sent to the PACS and never written beside the predictions.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID, generate_uid

import medres
from medres.package import finding_column, probability_column

PRIVATE_SCHEME = "99MEDRES"
MANUFACTURER = "medres"
# High enough to sort after the acquisition series in a viewer's series list.
SR_SERIES_NUMBER = 9901
_PROCEDURE = codes.cid100.ImagingProcedure
_PRESENT, _ABSENT = codes.SCT.Present, codes.SCT.Absent


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
) -> hd.sr.Comprehensive3DSR:
    """The SR reporting one study's aggregated result.

    Args:
        study: One row of :func:`medres.scoring.studies.aggregate_studies`: ``StudyInstanceUID``,
            ``prob_<finding>``, ``finding_<finding>``, ``model_name``, ``model_version``.
        findings: Label names, in the order of ``thresholds``.
        thresholds: The package's operating threshold per finding.
        evidence: Headers of the study's scored instances (pixel data not needed); the patient and study
            modules are copied from them.
        aggregation: How the study's probabilities were aggregated from its images (recorded in the SR).

    Raises:
        ValueError: No evidence, evidence from another study, or thresholds that do not match the findings.
    """
    study_uid = str(study["StudyInstanceUID"])
    if not evidence:
        raise ValueError(f"study {study_uid}: no scored instance to reference in its SR")
    foreign = {str(ds.StudyInstanceUID) for ds in evidence} - {study_uid}
    if foreign:
        raise ValueError(f"study {study_uid}: SR evidence includes instances of {len(foreign)} other study(ies)")
    if len(thresholds) != len(findings):
        raise ValueError(f"{len(thresholds)} threshold(s) for {len(findings)} finding(s): one per finding")
    model_name, model_version = str(study["model_name"]), str(study["model_version"])
    identity = sr_identity(study_uid, model_name, model_version)
    algorithm = f"medres {model_name}"
    groups = []
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
        referenced_images=list(evidence),
    )
    now = dt.datetime.now()
    return hd.sr.Comprehensive3DSR(
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
