"""Acceptance: ``kill -9`` the scoring of a 2,000-file archive at three random moments; the reruns finish it exactly."""

import random
import subprocess
import time

import pandas as pd
import pytest

from medres.scoring import score_archive

from ..conftest import dicom_files
from .bulk import medres_score, run_score, write_bulk_archive, write_checkpoint

FILES = 2000


@pytest.mark.slow
def test_kill_9_at_three_random_moments_loses_and_duplicates_nothing(tiny_archive, tmp_path):
    archive = tmp_path / "archive"
    write_bulk_archive(archive, dicom_files(tiny_archive)[0], FILES)
    model = write_checkpoint(tmp_path / "tiny.ckpt", backbone="resnet10", size=16)  # 16 px: a quick forward pass
    settings = ["--batch_size", "32", "--chunk_files", "64", "--num_workers", "2", "--progress", "false"]
    settings += ["--log_mlflow", "false"]

    reference = tmp_path / "reference" / "preds.parquet"
    score_archive(str(model), archive, reference, batch_size=32, num_workers=2, chunk_files=64, progress=False)

    output = tmp_path / "killed" / "preds.parquet"
    command = medres_score("--model", str(model), "--input", str(archive), "--output", str(output), *settings)
    markers = tmp_path / "killed" / ".preds.parquet.job" / "done"
    chunks = -(-FILES // 64)
    rng = random.Random(7)
    committed = [0]
    for kill in range(3):
        # A random moment: after a random number of further chunk commits (leaving work for the later runs),
        # plus a random fraction of a chunk's time, so that kills land anywhere in a chunk's write cycle.
        target = committed[-1] + rng.randint(1, (chunks - committed[-1]) // (4 - kill))
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while len(list(markers.glob("*.json"))) < target and process.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        process.kill()  # SIGKILL: no handler, no cleanup
        assert process.wait() == -9, "the run finished or failed before the kill"
        committed.append(len(list(markers.glob("*.json"))))
    assert 0 < committed[1] < committed[2] < committed[3] < chunks, committed
    done = run_score(*command[4:])
    assert "resumed" in done.stdout

    predictions = pd.read_parquet(output)
    ledger = pd.read_parquet(tmp_path / "killed" / "preds.errors.parquet")
    paths = [*predictions["path"], *ledger["path"]]
    assert len(paths) == FILES and len(set(paths)) == FILES
    assert set(ledger["kind"]) == {"not_dicom"} and len(ledger) == FILES // 97
    ordered = predictions.sort_values("path").reset_index(drop=True)
    expected = pd.read_parquet(reference).sort_values("path").reset_index(drop=True)
    pd.testing.assert_frame_equal(ordered, expected)
    assert not list(output.glob(".*")), "no temporary part is left behind"
