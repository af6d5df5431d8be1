"""DICOMweb staging of a damaged instance (issue 21): its bytes are staged as sent and scoring ledgers the file.

The service is a real HTTP server on 127.0.0.1 (the standard library's), answering the three DICOMweb requests a
mirror makes (QIDO-RS studies, QIDO-RS instances of a study, WADO-RS instance, PS3.18) from a folder of files;
no Orthanc is needed, since Orthanc itself refuses to store most damaged files.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

import pandas as pd
import pydicom
import pytest

from medres.scoring import score_archive
from medres.scoring.dicomweb import mirror, parse_dicomweb_url

from ..conftest import dicom_files
from .bulk import write_checkpoint

BOUNDARY = "medres-test-boundary"


def _flip_sop_uid_vr(data: bytes) -> bytes:
    at = data.find(b"\x08\x00\x18\x00UI", 132)
    assert at > 0
    return data[: at + 4] + b"Q" + data[at + 5 :]


class _Handler(BaseHTTPRequestHandler):
    instances: ClassVar[dict[tuple[str, str, str], bytes]] = {}

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def _json(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        offset = int(dict(q.split("=", 1) for q in url.query.split("&") if "=" in q).get("offset", 0))
        if parts == ["studies"]:
            studies = sorted({s for s, _, _ in self.instances})
            self._json([] if offset else [{"0020000D": {"vr": "UI", "Value": [s]}} for s in studies])
        elif len(parts) == 3 and parts[0] == "studies" and parts[2] == "instances":
            rows = [
                {
                    "0020000E": {"vr": "UI", "Value": [se]},
                    "00080018": {"vr": "UI", "Value": [sop]},
                    "00080060": {"vr": "CS", "Value": ["DX"]},
                }
                for s, se, sop in sorted(self.instances)
                if s == parts[1]
            ]
            self._json([] if offset else rows)
        elif len(parts) == 6 and parts[0] == "studies" and parts[4] == "instances":
            data = self.instances[(parts[1], parts[3], parts[5])]
            body = (
                f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + data
                + f"\r\n--{BOUNDARY}--\r\n".encode()
            )
            self.send_response(200)
            self.send_header("Content-Type", f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)


@pytest.fixture
def service(tiny_archive: Path) -> Iterator[tuple[str, dict[tuple[str, str, str], bytes]]]:
    instances = {}
    for path in dicom_files(tiny_archive)[:4]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        instances[(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))] = path.read_bytes()
    damaged = sorted(instances)[1]
    instances[damaged] = _flip_sop_uid_vr(instances[damaged])
    handler = type("Handler", (_Handler,), {"instances": instances})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"dicomweb://127.0.0.1:{server.server_address[1]}/", instances
    finally:
        server.shutdown()
        server.server_close()


def test_a_damaged_instance_is_staged_as_sent_and_ledgered_by_scoring(service, tmp_path: Path) -> None:
    url, instances = service
    staging = tmp_path / "staging"
    summary = mirror(parse_dicomweb_url(url, environ={}), staging)
    assert summary.instances == summary.fetched == len(instances)
    damaged = next(key for key, data in instances.items() if b"\x08\x00\x18\x00QI" in data)
    staged = staging / damaged[0] / damaged[1] / f"{damaged[2]}.dcm"
    assert staged.read_bytes() == instances[damaged], "the damaged instance's bytes, as the service sent them"

    output = tmp_path / "preds.parquet"
    model = write_checkpoint(tmp_path / "tiny.ckpt", backbone="resnet10", size=16)
    scored = score_archive(str(model), staging, output, batch_size=4, num_workers=0, progress=False)
    ledger = pd.read_parquet(tmp_path / "preds.errors.parquet")
    assert scored.predictions == len(instances) - 1 and len(ledger) == 1
    row = ledger.iloc[0]
    assert row["path"] == staged.relative_to(staging).as_posix() and row["kind"] == "decode_error"
    assert row["StudyInstanceUID"] == damaged[0] and pd.isna(row["SOPInstanceUID"])
