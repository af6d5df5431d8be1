"""``--engine ray`` on a real local Ray cluster: equal to the single-process run, exactly once through an actor's
SIGKILL and through kill -9 of the driver followed by a rerun."""

import contextlib
import json
import os
import signal
import subprocess
import threading
import time

import psutil
import pytest

from .bulk import medres_score, run_score
from .engine_support import BATCH_SIZE, CHUNK_FILES, FILES, assert_same_job, build_archive, require

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage report from the test's cluster or the CLI's
ray = require("ray", "ray")
require("ray.data", "ray")

pytestmark = pytest.mark.slow
CHUNKS = -(-FILES // CHUNK_FILES)


@pytest.fixture(scope="module")
def job(tiny_archive, tmp_path_factory):
    return build_archive(tiny_archive, tmp_path_factory.mktemp("engine_ray"))


@pytest.fixture(scope="module")
def cluster():
    """A two-CPU Ray cluster on 127.0.0.1 in this process: no dashboard, a small object store."""
    ray.init(
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        object_store_memory=256 * 2**20,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def _markers(output):
    return len(list(output.with_name(f".{output.name}.job").joinpath("done").glob("*.json")))


def test_ray_equals_single_process(job, cluster, tmp_path):
    from medres.scoring.engines.ray import score_archive_ray

    archive, model, reference = job
    output = tmp_path / "preds.parquet"
    summary = score_archive_ray(
        str(model), archive, output, batch_size=BATCH_SIZE, chunk_files=CHUNK_FILES, progress=False, window_chunks=5
    )
    assert summary.files == FILES and summary.resumed == 0
    assert_same_job(output, reference, FILES)
    assert ray.is_initialized(), "a cluster the caller started is left running"


def _scorer_actors():
    """This test's Ray actor processes running the network (Ray titles them ray::MapWorker(MapBatches(_Scorer)))."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "_Scorer" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_sigkill_of_an_actor_mid_job_leaves_every_file_once(job, cluster, tmp_path):
    from medres.scoring.engines.ray import score_archive_ray

    archive, model, reference = job
    output = tmp_path / "preds.parquet"
    killed: list[tuple[int, int]] = []  # (pid, chunks committed at the kill)

    def kill_an_actor_once_chunks_commit():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            actors = _scorer_actors()
            if actors and _markers(output) >= 1:
                committed = _markers(output)
                os.kill(actors[0].pid, signal.SIGKILL)
                killed.append((actors[0].pid, committed))
            time.sleep(0.02)

    killer = threading.Thread(target=kill_an_actor_once_chunks_commit, daemon=True)
    killer.start()
    summary = score_archive_ray(
        str(model), archive, output, batch_size=BATCH_SIZE, chunk_files=CHUNK_FILES, progress=False
    )
    killer.join(timeout=5)
    assert killed, "no actor was killed"
    pid, committed = killed[0]
    assert 1 <= committed < CHUNKS, f"the kill came after {committed} of {CHUNKS} chunks: not mid-job"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert summary.files == FILES
    assert_same_job(output, reference, FILES)


def test_kill_9_of_the_driver_then_rerun_scores_every_file_once(job, tmp_path):
    """The CLI starts its own local cluster; SIGKILL of the driver, then the same command finishes the job."""
    archive, model, reference = job
    output = tmp_path / "killed" / "preds.parquet"
    args = ["--model", str(model), "--input", str(archive), "--output", str(output), "--engine", "ray"]
    args += ["--batch_size", str(BATCH_SIZE), "--chunk_files", str(CHUNK_FILES), "--progress", "false"]
    args += ["--log_mlflow", "false"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    # Its own session: the local Ray processes it starts can be found and ended after the kill.
    driver = subprocess.Popen(
        medres_score(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while _markers(output) < max(1, CHUNKS // 3) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        driver.kill()  # SIGKILL to the driver alone: no handler, no cleanup
        assert driver.wait() == -9, "the run finished or failed before the kill"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # what Ray left of the killed driver's local cluster
    committed = _markers(output)
    assert 1 <= committed < CHUNKS, f"the kill came after {committed} of {CHUNKS} chunks: not mid-job"
    markers = output.with_name(f".{output.name}.job").joinpath("done").glob("*.json")
    resumed = sum(json.loads(marker.read_text())["files"] for marker in markers)
    done = run_score(*args, timeout=400)
    assert f"({resumed} resumed)" in done.stdout, done.stdout
    assert_same_job(output, reference, FILES)


def test_ray_scores_3d_series_like_single_process(cluster, tmp_path):
    """A 3D package: the driver plans the series up front, slices of planned series go through the same pipeline."""
    import pandas as pd

    from medres.scoring import score_archive
    from medres.scoring.engines.ray import score_archive_ray

    from .ct_series import uid, write_series
    from .ct_series import write_checkpoint as write_ct_checkpoint

    root = tmp_path / "ct"
    write_series(root / "a" / "s1", study=uid(), seed=1)
    write_series(root / "b" / "s2", study=uid(), seed=2, geometry=False)  # every file to the ledger
    write_series(root / "c" / "s3", study=uid(), seed=3)
    (root / "junk.dcm").write_bytes(b"not a DICOM file\n" * 20)
    model, _ = write_ct_checkpoint(tmp_path / "ct3d.ckpt")
    settings = {"batch_size": 1, "chunk_files": 1, "progress": False}
    expected = score_archive(str(model), root, tmp_path / "single" / "preds.parquet", num_workers=0, **settings)
    got = score_archive_ray(str(model), root, tmp_path / "ray" / "preds.parquet", **settings)
    assert (got.predictions, got.scored_files, got.errors) == (
        expected.predictions,
        expected.scored_files,
        expected.errors,
    )
    for table in ("preds.parquet", "preds.errors.parquet"):
        ours = pd.read_parquet(tmp_path / "ray" / table).sort_values("path").reset_index(drop=True)
        theirs = pd.read_parquet(tmp_path / "single" / table).sort_values("path").reset_index(drop=True)
        pd.testing.assert_frame_equal(ours, theirs, check_exact=False, atol=1e-6, rtol=0)
    assert got.predictions == 2 and got.series


def test_engine_ray_refuses_rank_settings(tmp_path):
    from medres.cli.scoring import score_command

    with pytest.raises(ValueError, match="--engine ray sizes itself"):
        score_command("m.ckpt", str(tmp_path), tmp_path / "p.parquet", engine="ray", devices=2, strategy="ddp")
