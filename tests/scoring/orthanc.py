"""A real Orthanc with its DICOMweb plugin on 127.0.0.1, started by the PACS scoring tests.

Debian's ``orthanc`` and ``orthanc-dicomweb`` packages provide the server and the plugin; the tests skip with
the reason when they are absent (CI installs them). Each server gets its own storage folder, a free HTTP port,
no DICOM (DIMSE) server, and HTTP basic authentication, so the tests also show that credentials reach the server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ..services import free_port, stop_process

# Debian installs it in /usr/sbin, which is not on every user's PATH.
ORTHANC_BINARY = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin") or "Orthanc"
# Where Debian's orthanc-dicomweb installs the plugin (`dpkg -L orthanc-dicomweb`).
PLUGIN_FOLDER = Path("/usr/share/orthanc/plugins")
USERNAME = "medres"
PASSWORD = "s3cret-pacs"
DICOMWEB_ROOT = "/dicom-web/"


@dataclass(frozen=True)
class Orthanc:
    """A running test Orthanc."""

    port: int
    storage: Path

    @property
    def rest(self) -> str:
        """Base URL of Orthanc's own REST API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        """``dicomweb://`` URL of the DICOMweb service (without filters)."""
        return f"dicomweb://127.0.0.1:{self.port}{DICOMWEB_ROOT.rstrip('/')}"

    def get(self, path: str) -> object:
        """GET a REST resource as JSON."""
        response = requests.get(f"{self.rest}{path}", auth=(USERNAME, PASSWORD), timeout=30)
        response.raise_for_status()
        return response.json()

    def count_instances(self) -> int:
        """Instances stored in Orthanc."""
        statistics = self.get("/statistics")
        assert isinstance(statistics, dict)
        return int(statistics["CountInstances"])

    def upload(self, files: list[Path]) -> None:
        """Store DICOM files byte for byte (Orthanc's REST ``POST /instances``, no transcoding)."""
        with requests.Session() as session:
            session.auth = (USERNAME, PASSWORD)
            for path in files:
                response = session.post(f"{self.rest}/instances", data=path.read_bytes(), timeout=30)
                response.raise_for_status()


def orthanc_available() -> bool:
    """Whether the Orthanc binary and its DICOMweb plugin are installed."""
    return shutil.which(ORTHANC_BINARY) is not None and any(PLUGIN_FOLDER.glob("libOrthancDicomWeb.so*"))


requires_orthanc = pytest.mark.skipif(
    not orthanc_available(),
    reason="needs Orthanc with its DICOMweb plugin (apt-get install -y orthanc orthanc-dicomweb)",
)


@contextmanager
def running_orthanc(folder: Path, timeout: float = 60.0) -> Iterator[Orthanc]:
    """Start ``Orthanc`` with a private config and storage under ``folder``; stop it on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "medres-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,  # loopback only
        "DicomServerEnabled": False,  # DICOMweb only; no DIMSE port to collide with other tests
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USERNAME: PASSWORD},
        "Plugins": [str(PLUGIN_FOLDER)],
        "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT},
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC_BINARY, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(port=port, storage=folder / "storage")
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {process.returncode}; see {folder / 'orthanc.log'}")
            try:
                server.get("/system")
                break
            except requests.RequestException as err:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Orthanc did not answer within {timeout}s; see {folder / 'orthanc.log'}"
                    ) from err
                time.sleep(0.2)
        yield server
    finally:
        stop_process(process)
        log.close()
