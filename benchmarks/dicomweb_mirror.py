"""DICOMweb mirror speed: instances per second fetched from a real Orthanc with concurrent WADO-RS retrievals.

Loads a synthetic chest X-ray archive into a local Orthanc with its DICOMweb plugin (the test server of
``tests/scoring/orthanc.py``: 127.0.0.1, basic auth, private storage), then times
:func:`medres.scoring.dicomweb.mirror` of the whole archive into an empty staging folder with one retrieval
at a time (the baseline) and with ``--workers`` concurrent retrievals, and a rerun over the full staging
folder (listing only: what a resumed job pays). The server runs on the same machine, so the ratio shows what
overlapping requests gains when the PACS is close; a PACS across a network adds round-trip time per
request, which concurrency hides and a single stream cannot.

    .venv/bin/python benchmarks/dicomweb_mirror.py --patients 60 --size 256 --workers 4

Prints instances/s for each setting and the ratio concurrent / sequential; exits 0 either way.

Measured on 2 CPU cores (Orthanc 1.10.1, DICOMweb plugin 1.7; 187 instances, 22.5 MB): 77 instances/s one at a
time, 81 with 4 concurrent (1.05x: with the server on the same two cores the work is CPU-bound, Orthanc's
and ours), a rerun lists 291 instances/s and fetches none.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from medres.scoring.dicomweb import DicomWebSource, mirror, parse_dicomweb_url
from medres.synthetic import synth_chest_xray

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "scoring"))
from orthanc import PASSWORD, USERNAME, orthanc_available, running_orthanc


def timed_mirror(source: DicomWebSource, staging: Path, workers: int, repeats: int) -> tuple[float, int]:
    """Best seconds over ``repeats`` mirrors into a fresh folder, and the instances mirrored."""
    best, count = float("inf"), 0
    for _ in range(repeats):
        shutil.rmtree(staging, ignore_errors=True)
        started = time.perf_counter()
        summary = mirror(source, staging, page_size=100, workers=workers)
        best = min(best, time.perf_counter() - started)
        count = summary.fetched
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=60, help="synthetic patients (about 2.8 images each)")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels")
    parser.add_argument("--workers", type=int, default=4, help="concurrent retrievals to compare")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many mirrors per setting")
    args = parser.parse_args()
    if not orthanc_available():
        sys.exit("needs Orthanc with its DICOMweb plugin: apt-get install -y orthanc orthanc-dicomweb")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synth_chest_xray(root / "archive", patients=args.patients, seed=0, image_size=args.size)
        files = sorted((root / "archive").rglob("*.dcm"))
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        with running_orthanc(root / "orthanc") as server:
            server.upload(files)
            source = parse_dicomweb_url(
                server.dicomweb, environ={"MEDRES_DICOMWEB_USERNAME": USERNAME, "MEDRES_DICOMWEB_PASSWORD": PASSWORD}
            )
            staging = root / "staging"
            sequential, n = timed_mirror(source, staging, 1, args.repeats)
            concurrent, _ = timed_mirror(source, staging, args.workers, args.repeats)
            started = time.perf_counter()
            rerun = mirror(source, staging, workers=args.workers)
            listing = time.perf_counter() - started
    print(f"{n} instances ({megabytes:.1f} MB, {args.size} px) from Orthanc on 127.0.0.1")
    print(f"  1 retrieval at a time : {n / sequential:8.1f} instances/s ({sequential:.2f} s)")
    print(f"  {args.workers} concurrent         : {n / concurrent:8.1f} instances/s ({concurrent:.2f} s)")
    print(f"  rerun, all staged     : {rerun.present / listing:8.1f} instances/s listed ({listing:.2f} s, 0 fetched)")
    print(f"speed-up concurrent / sequential: {sequential / concurrent:.2f}x")


if __name__ == "__main__":
    main()
