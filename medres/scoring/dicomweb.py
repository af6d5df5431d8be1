r"""Scoring a PACS over DICOMweb: QIDO-RS search, WADO-RS retrieve into a staging folder, SRs back via STOW-RS.

URL grammar (``medres score --input``)::

    dicomweb://HOST[:PORT]/PATH[?KEYWORD=VALUE&...]     the service at http://HOST:PORT/PATH
    dicomwebs://HOST[:PORT]/PATH[?KEYWORD=VALUE&...]    the same over https

Each query parameter is a QIDO-RS study-level filter named by its DICOM keyword and passed to the server:
``StudyDate=20240101-20241231`` (a date range), ``ModalitiesInStudy=CR`` (several as ``CR,DX``; ``CR\DX`` is
read the same), ``StudyDescription=CHEST*``. With ``ModalitiesInStudy`` only the series of those modalities
are fetched. Series without pixels (SR, KO, PR) are never fetched: the SRs medres itself wrote
are among them. Credentials come from ``MEDRES_DICOMWEB_USERNAME`` and ``MEDRES_DICOMWEB_PASSWORD`` (HTTP basic
authentication), never from the URL, so they stay out of shell history and logs.

The query is mirrored into a staging folder as ``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``
in the transfer syntax the PACS stores (no transcoding). Listings are paged (``limit``/``offset``) and walked
as they arrive, so a query of millions of instances never sits in memory; each file is written under a hidden
temporary name and renamed into place, so an interrupted mirror leaves only whole files and a rerun fetches
only what is missing. The staging folder is then scored like any folder (which writes the study table,
:func:`medres.scoring.studies.aggregate_studies`), and one SR per study and model version
(:mod:`medres.scoring.sr`) is stored unless the PACS already holds it: a rerun adds nothing.

Logs and summaries carry counts and the redacted service URL only; identifying values reach nothing but the
staging folder (a copy of the PACS's own files) and the SRs sent back to the PACS.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import requests
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from dicomweb_client.web import _Transaction
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from tqdm import tqdm

from medres.scoring.sr import sr_identity
from medres.scoring.sr_files import read_box_rows, study_sr, write_sr_file
from medres.scoring.studies import Aggregation

if TYPE_CHECKING:  # scoring pulls in Lightning; imported when score_dicomweb runs
    from medres.scoring.summary import ScoreSummary

log = logging.getLogger(__name__)

SCHEMES = {"dicomweb": "http", "dicomwebs": "https"}
USERNAME_ENV = "MEDRES_DICOMWEB_USERNAME"
PASSWORD_ENV = "MEDRES_DICOMWEB_PASSWORD"
# Filters whose values say nothing about a patient; any other filter (PatientID=…, AccessionNumber=…) is
# written to logs and summaries as KEYWORD=… without its value.
PUBLIC_FILTERS = frozenset(
    {"StudyDate", "StudyTime", "ModalitiesInStudy", "SOPClassesInStudy", "Modality", "BodyPartExamined"}
)
# Filters that may list several values (``CR,DX``).
_LIST_FILTERS = frozenset({"ModalitiesInStudy", "Modality", "SOPClassesInStudy"})
# Objects without pixel data that a PACS keeps beside images; medres's own SRs are among them.
NON_IMAGE_MODALITIES = frozenset({"SR", "KO", "PR", "DOC"})
# QIDO-RS attribute tags (DICOM JSON model keys).
_STUDY_UID, _SERIES_UID, _SOP_UID, _MODALITY = "0020000D", "0020000E", "00080018", "00080060"
# Original transfer syntax: the PACS sends what it stores, so compressed images stay compressed.
_ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)
SR_LEDGER_SCHEMA = pa.schema(
    [
        ("StudyInstanceUID", pa.string()),
        ("SeriesInstanceUID", pa.string()),
        ("SOPInstanceUID", pa.string()),
        ("n_evidence", pa.int64()),
        ("status", pa.string()),
    ]
)


def is_dicomweb_url(value: str) -> bool:
    """Whether ``value`` names a DICOMweb source rather than a folder."""
    return value.split("://", 1)[0].lower() in SCHEMES and "://" in value


@dataclass(frozen=True)
class DicomWebSource:
    """A DICOMweb service and the study query to score.

    Attributes:
        url: The service's base URL (``http(s)://HOST:PORT/PATH``).
        filters: QIDO-RS study-level filters, keyword → value.
        username: HTTP basic-auth user, if any.
        password: Its password (left out of ``repr``).
    """

    url: str
    filters: dict[str, str] = field(default_factory=dict)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def modalities(self) -> frozenset[str] | None:
        """The modalities ``ModalitiesInStudy`` asks for, or None when it is not given."""
        modalities = frozenset(m.upper() for m in self.filters.get("ModalitiesInStudy", "").split(",") if m)
        return modalities or None  # an empty filter is QIDO's universal match

    def describe(self) -> str:
        """The URL and filters for logs: no credentials, and only the values of :data:`PUBLIC_FILTERS`."""
        query = "&".join(f"{k}={v if k in PUBLIC_FILTERS else '…'}" for k, v in self.filters.items())
        return f"{self.url}?{query}" if query else self.url

    def client(self) -> DICOMwebClient:
        """A dicomweb-client for the service, authenticated when credentials are set."""
        session = None
        if self.username is not None and self.password is not None:
            session = create_session_from_user_pass(self.username, self.password)
        return DICOMwebClient(self.url, session=session)


def parse_dicomweb_url(url: str, environ: Mapping[str, str] = os.environ) -> DicomWebSource:
    """Parse ``dicomweb(s)://HOST[:PORT]/PATH?KEYWORD=VALUE...`` (see the module docstring).

    Args:
        url: The ``--input`` value.
        environ: Where ``MEDRES_DICOMWEB_USERNAME`` / ``MEDRES_DICOMWEB_PASSWORD`` are read.

    Raises:
        ValueError: Another scheme, no host, credentials in the URL, a filter that is not a DICOM keyword, a
            repeated filter, or only one of the two credential variables.
    """
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        # the value would land in shell history and process lists; refuse before the URL is echoed anywhere
        raise ValueError(f"--input: credentials do not belong in the URL; set {USERNAME_ENV} and {PASSWORD_ENV}")
    named = url.split("?", 1)[0]  # messages name the service, never the query: a filter value may identify a patient
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"--input {named}: expected dicomweb://HOST:PORT/PATH or dicomwebs://HOST:PORT/PATH")
    if not parts.hostname:
        raise ValueError(f"--input {named}: no host")
    try:
        port = parts.port
    except ValueError as err:
        raise ValueError(f"--input {named}: {err}") from err
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    base = f"{scheme}://{host}{f':{port}' if port else ''}{parts.path.rstrip('/')}"
    filters: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if tag_for_keyword(key) is None:
            raise ValueError(f"--input {named}: filter {key!r} is not a DICOM keyword (e.g. StudyDate, Modality)")
        if key in filters:
            raise ValueError(f"--input {named}: filter {key!r} is given twice")
        if key in _LIST_FILTERS:  # QIDO-RS separates several values with commas; DICOM's own backslash too
            value = ",".join(v.strip() for v in value.replace("\\", ",").split(",") if v.strip())
        filters[key] = value
    username, password = environ.get(USERNAME_ENV), environ.get(PASSWORD_ENV)
    if (username is None) != (password is None):
        raise ValueError(f"set both {USERNAME_ENV} and {PASSWORD_ENV}, or neither")
    return DicomWebSource(base, filters, username, password)


class InstanceRef(NamedTuple):
    """One instance as QIDO-RS lists it."""

    study_uid: str
    series_uid: str
    sop_uid: str

    @property
    def relative_path(self) -> Path:
        """Where the instance goes in the staging folder."""
        return Path(self.study_uid, self.series_uid, f"{self.sop_uid}.dcm")


def _value(result: Mapping[str, Any], tag: str) -> str | None:
    values = result.get(tag, {}).get("Value") or [None]
    return None if values[0] is None else str(values[0])


def _paged(search: Callable[[int, int], list[dict[str, Any]]], page_size: int) -> Iterator[dict[str, Any]]:
    """Every result of a QIDO-RS search, one page (``limit``/``offset``) at a time.

    Stops at an empty page rather than a short one: a server may cap a page below ``limit`` and still hold
    more results.
    """
    offset = 0
    while True:
        page = search(page_size, offset)
        if not page:
            return
        yield from page
        offset += len(page)


def iter_instances(
    client: DICOMwebClient,
    filters: Mapping[str, str],
    modalities: frozenset[str] | None = None,
    page_size: int = 100,
) -> Iterator[InstanceRef]:
    """The image instances of the studies matching ``filters``, study by study.

    Args:
        client: The service.
        filters: QIDO-RS study-level filters.
        modalities: Only instances of these modalities (None: every image modality).
        page_size: QIDO-RS ``limit`` per request.
    """
    studies = _paged(
        lambda limit, offset: client.search_for_studies(
            limit=limit, offset=offset, search_filters=dict(filters), fields=["StudyInstanceUID"]
        ),
        page_size,
    )
    for study in studies:
        study_uid = _value(study, _STUDY_UID)
        if study_uid is None:
            continue
        instances = _paged(partial(_study_instances, client, study_uid), page_size)
        for instance in instances:
            series_uid, sop_uid = _value(instance, _SERIES_UID), _value(instance, _SOP_UID)
            modality = (_value(instance, _MODALITY) or "").upper()
            if series_uid is None or sop_uid is None or modality in NON_IMAGE_MODALITIES:
                continue
            if modalities is not None and modality not in modalities:
                continue
            yield InstanceRef(study_uid, series_uid, sop_uid)


def _study_instances(client: DICOMwebClient, study_uid: str, limit: int, offset: int) -> list[dict[str, Any]]:
    # One listing per study (not per series): the instance level names its series and modality.
    return client.search_for_instances(
        study_instance_uid=study_uid, limit=limit, offset=offset, fields=["SeriesInstanceUID", "Modality"]
    )


@dataclass
class MirrorSummary:
    """What a mirror did.

    Attributes:
        instances: Instances the query selects.
        fetched: Instances retrieved in this run.
        present: Instances already in the staging folder (an earlier, interrupted or complete run).
        studies: Studies with at least one selected instance.
    """

    instances: int = 0
    fetched: int = 0
    present: int = 0
    studies: int = 0
    seconds: float = 0.0


class _Fetcher:
    """WADO-RS retrieval into the staging folder, one client per thread (a requests session is not thread-safe)."""

    def __init__(self, source: DicomWebSource, staging: Path) -> None:
        self.source = source
        self.staging = staging
        self.local = threading.local()

    def __call__(self, ref: InstanceRef) -> None:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = self.source.client()
        target = self.staging / ref.relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        # Hidden temporary name: an interrupted write is never scored (hidden files are skipped) nor taken for
        # a fetched instance by a rerun.
        temporary = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
        try:
            dataset = client.retrieve_instance(
                ref.study_uid, ref.series_uid, ref.sop_uid, media_types=_ANY_TRANSFER_SYNTAX
            )
            sop_uid = str(dataset.SOPInstanceUID)
            if sop_uid == ref.sop_uid:
                dataset.save_as(temporary, enforce_file_format=True)
        except requests.RequestException:
            raise  # the service's failure: _service_errors names it
        except Exception:
            # The PACS holds a damaged instance that pydicom cannot parse or write back (a flipped VR byte raises
            # NotImplementedError on first use, issue 21). Stage its bytes as sent: scoring then gives the file
            # its ledger row, with the reader's kind, instead of one instance stopping the whole mirror.
            temporary.write_bytes(self._raw_instance(client, ref))
            sop_uid = ref.sop_uid
        if sop_uid != ref.sop_uid:
            raise RuntimeError(f"WADO-RS returned instance {sop_uid} for {ref.sop_uid}")
        os.replace(temporary, target)

    @staticmethod
    def _raw_instance(client: DICOMwebClient, ref: InstanceRef) -> bytes:
        """The instance's Part 10 bytes as the service sends them (WADO-RS, any transfer syntax), unparsed.

        dicomweb-client parses every instance it retrieves and offers no public call for the bytes; its URL
        builder and multipart decoder are used here, for this fallback only.
        """
        url = client._get_instances_url(_Transaction.RETRIEVE, ref.study_uid, ref.series_uid, ref.sop_uid)
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        response = client._http_get(url, headers={"Accept": accept})
        if response.headers.get("Content-Type", "").startswith("application/dicom"):  # a non-multipart answer
            return bytes(response.content)
        parts = list(client._decode_multipart_message(response, stream=False))
        if len(parts) != 1:
            raise RuntimeError(f"WADO-RS returned {len(parts)} parts for instance {ref.sop_uid}")
        return bytes(parts[0])


@contextmanager
def _service_errors(source: DicomWebSource) -> Iterator[None]:
    """HTTP failures become one-line errors that name the setting to fix.

    The message never carries the request URL: it holds the query, whose filter values may identify a patient.
    """
    try:
        yield
    except requests.HTTPError as err:
        response = err.response
        status = "?" if response is None else f"{response.status_code} {response.reason}".strip()
        if response is not None and response.status_code in (401, 403):
            given = "were refused" if source.username is not None else "are not set"
            raise ValueError(
                f"--input {source.describe()}: HTTP {status}; credentials {given} ({USERNAME_ENV}, {PASSWORD_ENV})"
            ) from err
        raise ValueError(f"--input {source.describe()}: the DICOMweb service answered HTTP {status}") from err
    except requests.ConnectionError as err:
        raise ValueError(f"--input {source.describe()}: cannot connect to the DICOMweb service") from err


def mirror(
    source: DicomWebSource, staging: Path, page_size: int = 100, workers: int = 4, progress: bool = False
) -> MirrorSummary:
    """Copy every instance the query selects into ``staging``; instances already there are not fetched again.

    Args:
        source: The service and query.
        staging: Folder receiving ``<study>/<series>/<sop>.dcm``.
        page_size: QIDO-RS page size and retrieval batch.
        workers: Concurrent WADO-RS retrievals.
        progress: Show a progress bar.
    """
    started = time.perf_counter()
    staging.mkdir(parents=True, exist_ok=True)
    summary = MirrorSummary()
    refs = iter_instances(source.client(), source.filters, source.modalities, page_size)
    fetch = _Fetcher(source, staging)
    seen_study = ""
    with (
        ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="wado") as pool,
        tqdm(desc="mirror", unit="instance", disable=not progress) as bar,
        _service_errors(source),
    ):
        # Batches of page_size: memory stays bounded however many instances the query selects.
        while batch := list(islice(refs, page_size)):
            missing = [ref for ref in batch if not (staging / ref.relative_path).is_file()]
            list(pool.map(fetch, missing))  # list(): re-raises the first failed retrieval
            for ref in batch:  # refs arrive study by study
                summary.studies += ref.study_uid != seen_study
                seen_study = ref.study_uid
            summary.instances += len(batch)
            summary.fetched += len(missing)
            summary.present += len(batch) - len(missing)
            bar.update(len(batch))
    summary.seconds = time.perf_counter() - started
    log.info(
        "mirrored %s: %d instance(s) of %d study(ies), %d fetched, %d already staged",
        source.describe(),
        summary.instances,
        summary.studies,
        summary.fetched,
        summary.present,
    )
    return summary


def instance_exists(client: DICOMwebClient, study_uid: str, sop_uid: str) -> bool:
    """Whether the service holds the instance (QIDO-RS by SOPInstanceUID within its study)."""
    found = client.search_for_instances(
        study_instance_uid=study_uid, search_filters={"SOPInstanceUID": sop_uid}, limit=1, fields=["SOPInstanceUID"]
    )
    return any(_value(result, _SOP_UID) == sop_uid for result in found)


@dataclass
class SRSummary:
    """What writing the SRs back did.

    Attributes:
        stored: SRs sent with STOW-RS.
        existing: SRs the PACS already held (same study and model version).
        ledger: Parquet file listing every study's SR UIDs and status (no identifying values).
    """

    stored: int
    existing: int
    ledger: Path


def sr_ledger_path_for(output: Path) -> Path:
    """The SR ledger beside the predictions: ``preds.parquet`` → ``preds.sr.parquet``."""
    return output.with_suffix(".sr.parquet")


def _staged_files(study_folder: Path) -> list[Path]:
    return sorted(p for p in study_folder.rglob("*.dcm") if not p.name.startswith("."))


def _check_stored(response: Dataset | None, sop_uid: str) -> None:
    """Refuse a STOW-RS answer that lists the SR as failed (a PACS may answer 200/202 and still reject it)."""
    for failed in (response or Dataset()).get("FailedSOPSequence", []):
        if str(failed.get("ReferencedSOPInstanceUID", "")) == sop_uid:
            reason = failed.get("FailureReason", "?")
            raise RuntimeError(f"the PACS refused SR {sop_uid} (STOW-RS failure reason {reason})")


def write_study_srs(
    source: DicomWebSource,
    staging: Path,
    studies: pd.DataFrame,
    unscored: set[str],
    findings: list[str],
    thresholds: list[float],
    ledger: Path,
    aggregation: Aggregation = "max",
    output: Path | None = None,
    sr_dir: Path | None = None,
) -> SRSummary:
    """Store one SR per study that the PACS does not hold yet; with ``sr_dir``, also write every study's SR file.

    Args:
        source: The service the staging folder mirrors.
        staging: The mirrored staging folder that was scored.
        studies: The study table of the scoring job (:func:`medres.scoring.studies.aggregate_studies` rows).
        unscored: Staging-relative paths that went to the error ledger (not evidence of any result).
        findings: The package's label names.
        thresholds: The package's operating thresholds.
        ledger: Where the SR ledger is written.
        aggregation: How the study table was aggregated from the images (recorded in each SR).
        output: The scoring job's predictions: its box rows (``preds.boxes.parquet``, a detection model's) go into
            the SRs, and its start is their content time. None: no boxes, and the clock's time.
        sr_dir: Also write each study's SR to ``sr_dir/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` (identifying:
            the SR belongs to the patient), whether or not the PACS already held it.
    """
    box_rows = None if output is None else read_box_rows(output)
    client = source.client()
    stored = existing = 0
    rows = []
    with _service_errors(source):
        for record in studies.to_dict("records"):
            study = {str(k): v for k, v in record.items()}
            study_uid = str(study["StudyInstanceUID"])
            identity = sr_identity(study_uid, str(study["model_name"]), str(study["model_version"]))
            evidence_paths = [
                p for p in _staged_files(staging / study_uid) if p.relative_to(staging).as_posix() not in unscored
            ]
            status = "existing"
            missing = not instance_exists(client, study_uid, identity.sop_uid)
            if missing or sr_dir is not None:
                evidence = [pydicom.dcmread(p, stop_before_pixels=True) for p in evidence_paths]
                sr = study_sr(study, findings, thresholds, evidence, aggregation, box_rows, output)
                if sr_dir is not None:
                    write_sr_file(sr, sr_dir)
                if missing:
                    _check_stored(client.store_instances([sr], study_instance_uid=study_uid), identity.sop_uid)
                    status = "stored"
            stored += status == "stored"
            existing += status == "existing"
            rows.append(
                {
                    "StudyInstanceUID": study_uid,
                    "SeriesInstanceUID": str(identity.series_uid),
                    "SOPInstanceUID": str(identity.sop_uid),
                    "n_evidence": len(evidence_paths),
                    "status": status,
                }
            )
    ledger.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SR_LEDGER_SCHEMA), ledger)
    log.info("SRs for %d study(ies): %d stored, %d already in the PACS → %s", len(rows), stored, existing, ledger)
    return SRSummary(stored=stored, existing=existing, ledger=ledger)


@dataclass
class DicomWebScoreSummary:
    """What ``medres score --input dicomweb://…`` did."""

    mirror: MirrorSummary
    scored: ScoreSummary
    srs: SRSummary | None  # None on the non-zero ranks of a multi-process job: rank 0 writes the SRs
    source: str

    @property
    def rank(self) -> int:
        """This process's rank in a multi-process job."""
        return self.scored.rank

    def line(self) -> str:
        """One human line for the terminal."""
        srs = "" if self.srs is None else f"; SRs: {self.srs.stored} stored, {self.srs.existing} already in the PACS"
        return (
            f"{self.source}: {self.mirror.instances} instance(s) in {self.mirror.studies} study(ies) "
            f"({self.mirror.fetched} fetched, {self.mirror.present} already staged); {self.scored.line()}{srs}"
            + ("" if self.srs is None else f" → {self.srs.ledger}")
        )


def default_staging_for(output: Path) -> Path:
    """The staging folder beside the predictions: ``preds.parquet`` → ``preds.staging``."""
    return output.with_suffix(".staging")


def score_dicomweb(
    model: str,
    url: str,
    output: Path,
    staging: Path | None = None,
    aggregation: Aggregation = "max",
    page_size: int = 100,
    fetch_workers: int = 4,
    sr_dir: Path | None = None,
    **score_options: Any,
) -> DicomWebScoreSummary:
    """Score the studies a DICOMweb query selects and store one SR per study back into the PACS.

    Args:
        model: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or a ``.ckpt`` path.
        url: ``dicomweb(s)://HOST:PORT/PATH?FILTERS`` (see the module docstring).
        output: Predictions Parquet; the error ledger and the SR ledger go beside it.
        staging: Folder the query is mirrored into (default ``output`` with suffix ``.staging``); reused by a
            rerun, which then fetches only what is missing. One query per staging folder: everything in it is
            scored. A rerun that fetched nothing resumes an interrupted scoring job; one that fetched new
            instances (the PACS gained images) scores the staging folder again from the start.
        aggregation: How a study's image probabilities become the study's (``max`` or ``mean``).
        page_size: QIDO-RS page size.
        fetch_workers: Concurrent WADO-RS retrievals.
        sr_dir: Also write each study's SR as a file there (see :mod:`medres.scoring.sr_files`).
        **score_options: Passed to :func:`medres.scoring.score.score_archive` (batch_size, num_workers, …).
    """
    from medres.scoring.score import score_archive
    from medres.tracking.registry import load_model

    source = parse_dicomweb_url(url)
    staging = staging or default_staging_for(output)
    progress = bool(score_options.get("progress", True))
    mirrored = mirror(source, staging, page_size=page_size, workers=fetch_workers, progress=progress)
    if mirrored.fetched and score_options.get("resume", True):
        # The scoring job resumes only over the very files it started on; new instances mean a new job.
        log.info("%d instance(s) newly staged: scoring %s afresh", mirrored.fetched, staging)
        score_options["resume"] = False
    scored = score_archive(model, staging, output, aggregation=aggregation, **score_options)
    if scored.rank != 0:
        return DicomWebScoreSummary(mirror=mirrored, scored=scored, srs=None, source=source.describe())
    if scored.studies_path is None:
        raise RuntimeError(f"--output {output}: the scoring job wrote no study table")
    package = load_model(model, tracking_uri=score_options.get("tracking_uri")).package
    errors = scored.errors_path
    unscored = set(pd.read_parquet(errors, columns=["path"])["path"]) if errors.exists() else set()
    srs = write_study_srs(
        source,
        staging,
        pd.read_parquet(scored.studies_path),
        unscored,
        package.findings,
        package.thresholds,
        sr_ledger_path_for(output),
        aggregation,
        output=output,
        sr_dir=sr_dir,
    )
    return DicomWebScoreSummary(mirror=mirrored, scored=scored, srs=srs, source=source.describe())
