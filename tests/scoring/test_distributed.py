"""Acceptance: two CPU processes (Lightning DDP over gloo) score what one process scores, each sample once."""

import json

import pandas as pd
import pytest

from medres.scoring import score_archive

from ..conftest import add_broken_files
from .bulk import FINDINGS, run_score, write_checkpoint


@pytest.mark.slow
def test_two_processes_give_the_single_process_predictions(archive_copy, tmp_path):
    add_broken_files(archive_copy)
    model = write_checkpoint(tmp_path / "tiny.ckpt", backbone="resnet10")
    single = tmp_path / "single" / "preds.parquet"
    alone = score_archive(str(model), archive_copy, single, batch_size=4, num_workers=0, chunk_files=5, progress=False)

    ddp = tmp_path / "ddp" / "preds.parquet"
    settings = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--num_workers", "1"]
    settings += ["--batch_size", "4", "--chunk_files", "5", "--progress", "false", "--log_mlflow", "false"]
    done = run_score("--model", str(model), "--input", str(archive_copy), "--output", str(ddp), *settings)
    assert done.stdout.count("scored ") == 1, done.stdout  # one summary line, from rank 0

    chunks = -(-alone.files // 5)
    assert len(list(ddp.glob("part-*.parquet"))) == chunks  # each chunk once
    markers = sorted((tmp_path / "ddp" / ".preds.parquet.job" / "done").glob("*.json"))
    ranks = [json.loads(m.read_text())["rank"] for m in markers]
    assert ranks == [i % 2 for i in range(chunks)]  # rank r scored the chunks i % 2 == r
    got = pd.read_parquet(ddp).sort_values("path").reset_index(drop=True)
    expected = pd.read_parquet(single).sort_values("path").reset_index(drop=True)
    assert got["path"].is_unique and len(got) == alone.predictions
    probabilities = [f"prob_{f}" for f in FINDINGS]
    pd.testing.assert_frame_equal(got.drop(columns=probabilities), expected.drop(columns=probabilities))
    pd.testing.assert_frame_equal(got[probabilities], expected[probabilities], check_exact=False, atol=1e-6, rtol=0)
    ledger = pd.read_parquet(tmp_path / "ddp" / "preds.errors.parquet").sort_values("path").reset_index(drop=True)
    single_ledger = pd.read_parquet(tmp_path / "single" / "preds.errors.parquet")
    pd.testing.assert_frame_equal(ledger, single_ledger.sort_values("path").reset_index(drop=True))
    studies = pd.read_parquet(tmp_path / "ddp" / "preds.studies.parquet")
    assert len(studies) == got["StudyInstanceUID"].nunique()
