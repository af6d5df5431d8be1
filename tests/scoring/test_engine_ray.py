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
        str(model), archive, output, batch_size=BATCH_SIZE, chunk_files=CHUNK_FILES, progress=False, window_chunks=4
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
