"""Bad invocations of every command: exit 2 and one line naming the setting, never a traceback.

In process (``main(argv)``) for speed, with one real subprocess to check the whole of stderr is that line.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from medres.cli import main


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with an MLflow store holding ``chest_xray`` with no versions, an empty archive and a plain file."""
    root = tmp_path_factory.mktemp("bad_invocations")
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    client.create_registered_model("chest_xray")
    (root / "archive").mkdir()
    (root / "a_file.txt").write_text("not a folder\n")
    return root


SCORE_A = ["score", "--model", "models:/a/1", "--input", "{w}/archive", "--output", "{w}/p"]

CASES = [
    # (argv, text the one line must contain); {w} is the work folder
    (["score", "--model", "models:/nope/1", "--input", "{w}/archive", "--output", "{w}/p"], "--model models:/nope/1"),
    (["score", "--model", "models:/chest_xray/7", "--input", "{w}/archive", "--output", "{w}/p"], "chest_xray/7"),
    (["score", "--model", "models:/chest_xray@nope", "--input", "{w}/archive", "--output", "{w}/p"], "@nope"),
    (["score", "--model", "models:/chest_xray/latest", "--input", "{w}/archive", "--output", "{w}/p"], "no versions"),
    (["score", "--model", "models:/chest_xray/x1", "--input", "{w}/archive", "--output", "{w}/p"], "'x1'"),
    (
        [*SCORE_A, "--tracking_uri", "sqlite:///{w}/no_store_here/mlflow.db"],
        "no MLflow store at",
    ),
    (["score", "--model", "{w}/missing.ckpt", "--input", "{w}/archive", "--output", "{w}/p"], "missing.ckpt"),
    (["score", "--model", "m", "--input", "{w}/no_such_folder", "--output", "{w}/p"], "--input"),
    (["score", "--model", "m", "--input", "{w}/archive", "--output", "{w}/p", "--batch_size", "abc"], "batch_size"),
    (["score", "--model", "m", "--input", "{w}/archive", "--output", "{w}/p", "--batch_size", "0"], "--batch_size 0"),
    (["score", "--model", "m", "--input", "{w}/archive", "--output", "{w}/p", "--bogus", "1"], "--bogus"),
    (
        ["score", "--model", "m", "--input", "{w}/archive", "--output", "{w}/p", "--aggregation", "median"],
        "aggregation",
    ),
    (["score", "--input", "{w}/archive", "--output", "{w}/p"], "model"),
    (["index", "{w}/no_such_folder", "--out", "{w}/m.parquet"], "no_such_folder"),
    (["index", "{w}/archive", "--out", "{w}/a_file.txt/m.parquet"], "a_file.txt"),
    (["index", "{w}/archive"], "required: out"),
    (["index", "{w}/archive", "--out", "{w}/m.parquet", "--num_workers", "many"], "num_workers"),
    (["qc", "{w}/no_such_manifest.parquet"], "no_such_manifest.parquet"),
    (["qc", "{w}/archive", "--out", "{w}/report.txt"], "--out"),
    (["synth", "chest-xray", "--out", "{w}/s", "--patients", "abc"], "patients"),
    (["synth", "mri", "--out", "{w}/s"], "mri"),
    (["synth", "ct", "--out", "{w}/s", "--slices", "-3"], "slices"),
    (["synth", "luna16", "--out", "{w}/s", "--orientation", "oblique"], "orientation"),
    (["labels", "import", "luna16", "{w}/missing", "--out", "{w}/l"], "annotations.csv"),
    (["evaluate", "--model", "models:/nope/1", "--data.root", "{w}/archive"], "--model models:/nope/1"),
    (["evaluate", "--model", "models:/nope/1"], "data.root"),
    (["promote", "--model", "nope", "--version", "1", "--data.root", "{w}/archive"], "nope"),
    (
        ["promote", "--model", "chest_xray", "--version", "1", "--data.root", "{w}/archive", "--gates.x", "1"],
        "Option 'x'",
    ),
    (["rollback", "--model", "nope"], "--model nope"),
    (["champion-history", "--model", "nope"], "--model nope"),
    (["champion-history", "--model", "nope", "--tracking_uri", "sqlite:///{w}/elsewhere.db"], "elsewhere.db"),
    (["report-degradation", "--experiment", "nope"], "nope"),
    (["fit", "--config", "{w}/missing.yaml"], "missing.yaml"),
    (["fit", "--config", "configs/chest_xray.yaml", "--trainer.max_epochs", "abc"], "trainer.max_epochs"),
    (["fit", "--config", "configs/chest_xray.yaml", "--data.batch_sise", "3"], "batch_sise"),
    (
        ["fit", "--config", "configs/chest_xray.yaml", "--data.root", "{w}/archive", "--model.backbone", "resnet_nope"],
        "resnet_nope",
    ),
    (
        [
            "fit",
            "--config",
            "configs/cxr_boxes.yaml",
            "--data.root",
            "{w}/archive",
            "--data.boxes",
            "{w}/no_boxes.csv",
            "--trainer.logger",
            "false",
        ],
        "no_boxes.csv: no such file",
    ),
    (
        ["fit", "--config", "configs/cxr_boxes.yaml", "--data.root", "{w}/archive", "--data.cache", "disk"],
        'Parser key "data.cache"',
    ),
    (
        ["fit", "--config", "configs/cxr_boxes.yaml", "--data.root", "{w}/archive", "--model.threshold_fp_rate", "-1"],
        "model.threshold_fp_rate=-1.0",
    ),
    (["frobnicate"], "frobnicate"),
]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[" ".join(c[0][:3]) + f" [{c[1]}]" for c in CASES])
def test_bad_invocation_is_one_line_and_exit_2(argv, expected, workdir, capfd, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # configs/ paths as the README gives them
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    monkeypatch.delenv("MEDRES_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main([arg.format(w=workdir) for arg in argv])
    out, err = capfd.readouterr()
    assert exit_info.value.code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.startswith(f"medres {argv[0]}: error:")]
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert not (workdir / "no_store_here").exists()  # reading never creates a store


def test_debug_shows_the_traceback(workdir, capfd, monkeypatch):
    monkeypatch.setenv("MEDRES_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["index", str(workdir / "no_such_folder"), "--out", str(workdir / "m.parquet")])


@pytest.mark.slow
def test_a_real_process_prints_exactly_the_one_line(workdir):
    env = {k: v for k, v in os.environ.items() if k not in ("MEDRES_DEBUG", "MLFLOW_TRACKING_URI")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medres.cli",
            "score",
            "--model",
            "models:/nope/1",
            "--input",
            "archive",
            "--output",
            "p",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"medres score: error: --model models:/nope/1: Model Version (name=nope, version=1) not found "
        f"(tracking URI sqlite:///{workdir / 'mlflow.db'})"
    ]
