"""No byte stops a job (issue 21, item 2): every path that touches an input, over a hostile corpus.

The corpus (:mod:`tests.fuzz_corpus`) holds good files and, built from them, truncated files, flipped bytes, lying
headers, deeply nested sequences, empty and junk files, odd names and entries that are not regular files. For
each path (the reader, the index, UID recovery for the ledger, ``medres score`` end to end, the tensor cache fill,
the pyfunc) the contract is the same: no crash, no hang, every entry accounted exactly once (a prediction or a
ledger row of one of :class:`~medres.dicom.DicomErrorKind`'s kinds), and memory bounded by what the file
holds, not by what its header claims. Entries that are not regular files (a FIFO, a symlink loop, a dangling
symlink) are never opened; they are ledgered as ``unreadable`` ("not a regular file").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from mlflow.pyfunc import PythonModelContext

from medres.data.cache import TensorCache
from medres.data.manifest import errors_path_for, index_to_parquet, read_manifest_row
from medres.data.selection import SeriesSelection
from medres.data.transforms import Preprocessing
from medres.dicom import DicomErrorKind, DicomReadError, read_header, read_image
from medres.package import CHECKPOINT_KEY, ModelPackage, build_backbone
from medres.scoring.samples import UID_KEYS, header_uids
from medres.scoring.serving import MedresPyfuncModel

from .fuzz_corpus import Corpus, build_corpus

KINDS = {str(kind) for kind in DicomErrorKind}
FINDINGS = ["nodule", "effusion"]
# Growth of the peak resident memory allowed while reading every lying file (each claims up to 60000 x 60000 x
# 1000 frames, i.e. terabytes): the files themselves are a few kB.
RSS_BOUND_MB = 256


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    base = tmp_path_factory.mktemp("fuzz")
    return build_corpus(base / "corpus", base / "scratch", seed=0)


@contextmanager
def deadline(seconds: int, what: str) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block takes longer than ``seconds``."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what}: still running after {seconds}s (a hang)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def everything(corpus: Corpus) -> set[str]:
    return set(corpus.regular) | set(corpus.special)


def assert_ledger_rows(rows: pd.DataFrame) -> None:
    scoring_kinds = {"preprocessing_error", "not_selected", "duplicate", "series_error"}
    assert set(rows["kind"]) <= KINDS | scoring_kinds, set(rows["kind"])
    assert rows["message"].str.len().gt(0).all()
    assert not rows["message"].str.contains("\n").any(), "a ledger message is one line"


def test_corpus_is_deterministic_and_covers_every_category(corpus: Corpus, tmp_path: Path) -> None:
    again = build_corpus(tmp_path / "corpus", tmp_path / "scratch", seed=0)
    assert again.regular == corpus.regular and again.special == corpus.special
    for rel in corpus.regular:
        assert (again.root / rel).read_bytes() == (corpus.root / rel).read_bytes(), rel
    folders = {rel.split("/")[0] for rel in corpus.regular}
    assert {"good", "trunc", "flip", "lie", "nest", "odd", "empty.dcm", "junk.dcm"} <= folders
    for source in ("native", "rle", "j2k"):
        assert sum(rel.startswith(f"trunc/{source}_") for rel in corpus.regular) >= 15
        assert sum(rel.startswith(f"flip/{source}_") for rel in corpus.regular) >= 20
        assert sum(rel.startswith(f"lie/{source}_") for rel in corpus.regular) >= 15
    assert len(corpus.liars) == 9 and len(corpus.special) == 4


def test_reader_gives_an_image_or_a_typed_error(corpus: Corpus) -> None:
    outcomes: dict[str, str] = {}
    with deadline(120, "reading the corpus"):
        for rel in corpus.regular:
            path = corpus.root / rel
            try:
                read_header(path)
                array, _ = read_image(path)
                outcomes[rel] = "ok"
                assert array.size > 0 and array.dtype == "float32"
            except DicomReadError as err:  # anything else fails the test
                assert err.kind in set(DicomErrorKind) and "\n" not in str(err) and err.path == str(path)
                outcomes[rel] = str(err.kind)
        for rel in corpus.special:  # never opened, so never blocking
            with pytest.raises(DicomReadError) as err:
                read_manifest_row(corpus.root / rel, corpus.root, "salt")
            assert err.value.kind == DicomErrorKind.UNREADABLE
    assert all(outcomes[rel] == "ok" for rel in corpus.good)
    assert all(outcomes[rel] != "ok" for rel in corpus.liars)
    assert outcomes["empty.dcm"] == "not_dicom" and outcomes["nest/depth_5000.dcm"] != "ok"
    assert sum(kind == "truncated" for kind in outcomes.values()) >= 30
    # The issue's file: a flipped VR byte in the SOP Instance UID's element.
    assert outcomes["flip/sop_uid_vr_native.dcm"] == "decode_error"


def test_uid_recovery_never_raises_and_keeps_what_is_readable(corpus: Corpus) -> None:
    with deadline(60, "recovering UIDs"):
        uids = {rel: header_uids(corpus.root / rel) for rel in sorted(everything(corpus))}
    assert all(set(found) == set(UID_KEYS) for found in uids.values())
    for source in ("native", "rle", "j2k"):
        damaged = uids[f"flip/sop_uid_vr_{source}.dcm"]
        # The damaged element costs its own UID only: the study and series still find the file in the PACS.
        assert damaged["SOPInstanceUID"] is None
        assert damaged["StudyInstanceUID"] == uids[f"good/{source}.dcm"]["StudyInstanceUID"] is not None
    assert all(value is None for rel in corpus.special for value in uids[rel].values())


def test_index_accounts_for_every_entry_once(corpus: Corpus, tmp_path: Path) -> None:
    out = tmp_path / "manifest.parquet"
    with deadline(120, "medres index"):
        summary = index_to_parquet(corpus.root, out, salt="salt", num_workers=0)
    manifest, errors = pd.read_parquet(out), pd.read_parquet(errors_path_for(out))
    paths = [*manifest["path"], *errors["path"]]
    assert len(paths) == len(set(paths)) == summary.files
    assert set(paths) == everything(corpus)
    assert set(corpus.good) <= set(manifest["path"])
    assert_ledger_rows(errors)
    special = errors.set_index("path").loc[corpus.special]
    assert set(special["kind"]) == {"unreadable"} and special["message"].str.startswith("not a regular file").all()
    assert dict(special["message"].str.extract(r"\((.*)\)")[0]) == {
        "special/dangling.dcm": "dangling symlink",
        "special/fifo.dcm": "FIFO",
        "special/loop_a.dcm": "symlink loop",
        "special/loop_b.dcm": "symlink loop",
    }


def test_index_with_worker_processes_gives_the_same_accounting(corpus: Corpus, tmp_path: Path) -> None:
    out = tmp_path / "manifest.parquet"
    with deadline(180, "medres index with workers"):
        index_to_parquet(corpus.root, out, salt="salt", num_workers=2)
    errors = pd.read_parquet(errors_path_for(out))
    assert set(pd.read_parquet(out)["path"]) | set(errors["path"]) == everything(corpus)


def test_lying_headers_do_not_allocate_what_they_claim(corpus: Corpus) -> None:
    # A fresh process: its peak resident set is a measure of this reading alone (decoders allocate natively,
    # where tracemalloc does not see them).
    code = textwrap.dedent(
        """
        import json, resource, sys
        from medres.dicom import DicomReadError, read_image
        read_image(sys.argv[1])  # warm: imports, decoder plugins
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kinds = {}
        for path in sys.argv[2:]:
            try:
                read_image(path)
                kinds[path] = "ok"
            except DicomReadError as err:
                kinds[path] = str(err.kind)
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(json.dumps({"grown_mb": grown, "kinds": kinds}))
        """
    )
    paths = [str(corpus.root / rel) for rel in sorted(corpus.liars)]
    done = subprocess.run(
        [sys.executable, "-c", code, str(corpus.root / "good/native.dcm"), *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["grown_mb"] < RSS_BOUND_MB, result
    assert set(result["kinds"].values()) <= KINDS - {"ok"}, result["kinds"]


def write_checkpoint(path: Path) -> Path:
    """A seeded 1-channel ResNet-10 at 16 px in a checkpoint (scoring needs no training)."""
    torch.manual_seed(0)
    package = tiny_package()
    state = {f"backbone.{k}": v for k, v in package.state_dict.items()}
    torch.save({"state_dict": state, CHECKPOINT_KEY: package.contract()}, path)
    return path


def tiny_package() -> ModelPackage:
    torch.manual_seed(0)
    preprocessing = Preprocessing(spatial_size=(16, 16))
    network = build_backbone("resnet10", {}, preprocessing, len(FINDINGS))
    return ModelPackage(
        backbone="resnet10",
        backbone_args={},
        findings=FINDINGS,
        preprocessing=preprocessing,
        thresholds=[0.5, 0.5],
        state_dict=network.state_dict(),
        selection=SeriesSelection(),
    )


@pytest.mark.slow
def test_medres_score_over_the_corpus_exits_0_with_every_entry_once(corpus: Corpus, tmp_path: Path) -> None:
    model = write_checkpoint(tmp_path / "tiny.ckpt")
    output = tmp_path / "preds.parquet"
    command = [sys.executable, "-m", "medres.cli", "score", "--model", str(model), "--input", str(corpus.root)]
    command += ["--output", str(output), "--batch_size", "8", "--chunk_files", "40", "--num_workers", "2"]
    command += ["--progress", "false", "--log_mlflow", "false"]
    # Without RUST_BACKTRACE (set on some CI machines): a caught panic of a Rust decoder then prints one line.
    env = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "MEDRES_DEBUG")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    predictions = pd.read_parquet(output)
    ledger = pd.read_parquet(tmp_path / "preds.errors.parquet")
    paths = [*predictions["path"], *ledger["path"]]
    assert len(paths) == len(set(paths)), "a file is in both, or twice"
    assert set(paths) == everything(corpus)
    assert set(corpus.good) <= set(predictions["path"]), "every good file, odd names included, is scored"
    assert set(corpus.liars) <= set(ledger["path"])
    assert_ledger_rows(ledger)
    special = ledger.set_index("path").loc[corpus.special]
    assert set(special["kind"]) == {"unreadable"}
    issue = ledger.set_index("path").loc["flip/sop_uid_vr_native.dcm"]
    assert issue["kind"] == "decode_error" and issue["StudyInstanceUID"] is not None


def test_cache_fill_ledgers_what_it_cannot_decode(corpus: Corpus, tmp_path: Path) -> None:
    cache = TensorCache(tmp_path / "cache", Preprocessing(spatial_size=(16, 16)))
    images = [str(corpus.root / rel) for rel in sorted(everything(corpus))]
    with deadline(180, "cache fill"):
        estimate = cache.fill(images, num_workers=0)
    failed = {row["path"]: row for row in estimate.failed}
    good = {str(corpus.root / rel) for rel in corpus.good}
    assert good.isdisjoint(failed)
    assert {str(corpus.root / rel) for rel in corpus.liars + corpus.special} <= set(failed)
    assert all(row["kind"] in KINDS | {"preprocessing_error"} and "\n" not in row["message"] for row in failed.values())
    # Every image is exactly one of: an entry, a failure; a second fill finds the entries and the same failures.
    for image in images:
        cached = image not in failed and cache.entry_path(cache.key(image)).is_file()
        assert cached != (image in failed), image
    assert len(failed) == len(estimate.failed), "one row per image"
    again = cache.fill(images, num_workers=0)
    assert {row["path"] for row in again.failed} == set(failed)


def test_cache_fill_in_worker_processes(corpus: Corpus, tmp_path: Path) -> None:
    cache = TensorCache(tmp_path / "cache", Preprocessing(spatial_size=(16, 16)))
    images = [str(corpus.root / rel) for rel in sorted(everything(corpus))[:60]]
    with deadline(180, "cache fill with workers"):
        estimate = cache.fill(images, num_workers=2)
    failed = {row["path"] for row in estimate.failed}
    assert failed and len(failed) < len(images)
    for image in images:
        assert (image in failed) != (image not in failed and cache.entry_path(cache.key(image)).is_file()), image


def pyfunc(folder: Path) -> Callable[[pd.DataFrame], pd.DataFrame]:
    model = MedresPyfuncModel()
    context = PythonModelContext(artifacts={"package": str(tiny_package().save(folder))}, model_config={})
    model.load_context(context)
    return lambda frame: model.predict(context, frame)


def test_pyfunc_answers_every_row_in_place(corpus: Corpus, tmp_path: Path) -> None:
    predict = pyfunc(tmp_path / "package")
    rels = sorted(everything(corpus))
    with deadline(180, "pyfunc over the corpus"):
        result = predict(pd.DataFrame({"path": [str(corpus.root / rel) for rel in rels]}))
    assert len(result) == len(rels)
    errors = dict(zip(rels, result["error"], strict=True))
    assert all(pd.isna(errors[rel]) for rel in corpus.good)
    assert all(not pd.isna(errors[rel]) for rel in corpus.liars + corpus.special)
    for rel, error in errors.items():
        if not pd.isna(error):
            assert error.split(":")[0] in KINDS | {"preprocessing_error", "not_selected"} and "\n" not in error, rel


@pytest.mark.slow
def test_3d_scoring_plans_series_around_damaged_members(corpus: Corpus, tmp_path: Path) -> None:
    from medres.scoring import score_archive

    from .scoring.ct_series import uid, write_series
    from .scoring.ct_series import write_checkpoint as write_ct_checkpoint

    archive = tmp_path / "ct"
    study = uid()
    _, good = write_series(archive / "good", study=study, n=6, seed=1)
    _, cut = write_series(archive / "cut", study=study, n=6, seed=2)
    _, flipped = write_series(archive / "flipped", study=study, n=6, seed=3)
    cut[2].write_bytes(cut[2].read_bytes()[: len(cut[2].read_bytes()) - 100])  # inside the pixel data
    data = flipped[0].read_bytes()
    at = data.find(b"\x08\x00\x18\x00UI", 132)
    flipped[0].write_bytes(data[: at + 4] + b"Q" + data[at + 5 :])  # the issue's byte, in a series
    # Plus the corpus's hostile entries, which are nobody's series.
    for rel in [*corpus.liars, "nest/depth_5000.dcm", "empty.dcm"]:
        target = archive / "junk" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((corpus.root / rel).read_bytes())
    os.mkfifo(archive / "junk" / "fifo.dcm")
    model, _ = write_ct_checkpoint(tmp_path / "ct.ckpt")
    output = tmp_path / "preds.parquet"
    with deadline(240, "3D scoring"):
        summary = score_archive(str(model), archive, output, batch_size=2, num_workers=0, progress=False)
    predictions = pd.read_parquet(output)
    ledger = pd.read_parquet(tmp_path / "preds.errors.parquet")
    entries = {p.relative_to(archive).as_posix() for p in archive.rglob("*") if not p.is_dir()}
    assert summary.scored_files + summary.errors == len(entries)
    assert set(ledger["path"]).isdisjoint(predictions["path"])  # a series row names its first slice
    assert set(ledger["path"]) <= entries and len(set(ledger["path"])) == len(ledger)
    kinds = dict(zip(ledger["path"], ledger["kind"], strict=True))
    assert kinds[cut[2].relative_to(archive).as_posix()] == "truncated"
    assert kinds[flipped[0].relative_to(archive).as_posix()] == "decode_error"
    assert kinds["junk/fifo.dcm"] == "unreadable"
    assert good[0].parent.name in " ".join(predictions["path"]), "the intact series is scored"
    assert_ledger_rows(ledger)
