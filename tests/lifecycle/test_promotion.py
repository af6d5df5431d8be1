"""Gated promotion of ``@champion``: real packages with known quality, a real SQLite store and a real server.

A small ResNet is trained in-test on the train split of a synthetic archive; a bad model is the same package with
its classifier negated (AUROC becomes 1 − AUROC on every finding), a model worse on one finding negates that
finding's row only, and a recalibrated one shifts every logit by a constant (same ranking, same AUROC). Every
promotion is judged on the test split that training held out, found through the training config in the package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from mlflow import MlflowClient

from medres.cli import main
from medres.data.datamodule import DicomDataModule
from medres.data.transforms import IMAGE_KEY, Preprocessing, eval_transforms
from medres.lifecycle.evaluate import HeldOutData
from medres.lifecycle.promotion import (
    EXIT_REFUSED,
    HISTORY_TAG,
    PROMOTION_EXPERIMENT,
    VERSION_TAGS,
    Gates,
    PromotionDecision,
    champion_history,
    judge,
    promote,
    rollback,
)
from medres.package import ModelPackage, build_backbone
from medres.synthetic import CHEST_XRAY_FINDINGS, synth_chest_xray
from medres.tracking.defaults import default_artifact_location
from medres.tracking.model_logging import log_model_package

from ..conftest import find_identifying, identifying_values

FINDINGS = list(CHEST_XRAY_FINDINGS)
PREPROCESSING = Preprocessing(spatial_size=(32, 32))
REPO = Path(__file__).resolve().parents[2]
MODEL = "cxr_gated"


# ---- models of known quality ---------------------------------------------------------------------
def train_package(archive: Path, work_dir: Path, steps: int = 30) -> ModelPackage:
    """A ResNet-10 fitted full-batch on the train split (seeded, deterministic on CPU), with its data config."""
    module = DicomDataModule(
        root=archive, findings=FINDINGS, work_dir=work_dir, preprocessing=PREPROCESSING, num_workers=0
    )
    module.prepare_data()
    module.setup()
    transform = eval_transforms(PREPROCESSING)
    images = torch.stack([transform({IMAGE_KEY: r[IMAGE_KEY]})[IMAGE_KEY] for r in module.samples["train"]])
    labels = torch.from_numpy(np.stack([r["label"] for r in module.samples["train"]]))
    known = (labels == 0) | (labels == 1)  # unknown and uncertain labels stay out of the loss
    torch.manual_seed(0)
    network = build_backbone("resnet10", {}, PREPROCESSING, len(FINDINGS))
    optimizer = torch.optim.AdamW(network.parameters(), lr=3e-3)
    network.train()
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(network(images), labels.clamp(0, 1).nan_to_num(0), weight=known)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # What `medres fit` would log: promote finds the archive's work dir and split settings through it.
    data = {"root": str(archive), "work_dir": str(work_dir), "split_fractions": [0.7, 0.15, 0.15], "split_seed": 0}
    return ModelPackage(
        backbone="resnet10",
        backbone_args={},
        findings=FINDINGS,
        preprocessing=PREPROCESSING,
        thresholds=[0.5] * len(FINDINGS),
        state_dict={k: v.detach().clone() for k, v in network.state_dict().items()},
        training_config=yaml.safe_dump({"data": data}),
    )


def negated(package: ModelPackage, findings: list[str] | None = None) -> ModelPackage:
    """The package with the classifier rows of ``findings`` (default all) negated: their AUROC becomes 1 − AUROC."""
    rows = [package.findings.index(f) for f in findings or package.findings]
    state = {k: v.clone() for k, v in package.state_dict.items()}
    state["fc.weight"][rows] *= -1
    state["fc.bias"][rows] *= -1
    return replace(package, state_dict=state)


def recalibrated(package: ModelPackage, shift: float = 1.0) -> ModelPackage:
    """Every logit shifted by ``shift``: other probabilities and thresholds, the same ranking and AUROC."""
    state = {k: v.clone() for k, v in package.state_dict.items()}
    state["fc.bias"] += shift
    return replace(package, state_dict=state, thresholds=[0.7] * len(package.findings))


def register(packages: list[ModelPackage], uri: str, name: str) -> list[str]:
    """Log each package into its own run of experiment ``name``-fits and register it; returns the versions."""
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(f"{name}-fits")
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(f"{name}-fits", artifact_location=default_artifact_location(uri))
    )
    versions = []
    for package in packages:
        run_id = client.create_run(experiment_id).info.run_id
        info = log_model_package(package, run_id, uri, registered_model_name=name)
        versions.append(str(info.registered_model_version))
    return versions


# ---- scenario ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 patients: a test split of about 19 images with both classes for every finding (12 gives 5 images)."""
    root = tmp_path_factory.mktemp("promotion") / "cxr40"
    synth_chest_xray(root, patients=40, seed=0, image_size=64)
    return root


@pytest.fixture(scope="module")
def models(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The trained (good) package; the others are derived from it where needed."""
    return {"good": train_package(archive, tmp_path_factory.mktemp("promotion_work") / "medres_work")}


@dataclass
class Scenario:
    uri: str
    versions: dict[str, str]
    decisions: dict[str, PromotionDecision]
    strongest: str
    champion_after: dict[str, str]
    history_after_promotions: list[Any]


def run_scenario(models: dict[str, Any], archive: Path, uri: str, name: str) -> Scenario:
    """Register good, bad, worse-on-one and recalibrated versions; promote each in turn against @champion."""
    good: ModelPackage = models["good"]
    data = HeldOutData(root=archive)  # work dir, fractions and seed come from the candidate's training config
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = dict(zip(["good", "bad"], register([good, negated(good)], uri, name), strict=True))
    decisions, champion_after = {}, {}
    decisions["first"] = promote(name, versions["good"], data, tracking_uri=uri)
    champion_after["first"] = str(client.get_model_version_by_alias(name, "champion").version)
    # The finding the good model ranks best: negating it alone must break non-inferiority.
    strongest = max(FINDINGS, key=lambda f: decisions["first"].candidate.auroc[f])
    versions.update(
        zip(
            ["worse", "recalibrated"],
            register([negated(good, [strongest]), recalibrated(good)], uri, name),
            strict=True,
        )
    )
    decisions["bad"] = promote(name, versions["bad"], data, tracking_uri=uri)
    champion_after["bad"] = str(client.get_model_version_by_alias(name, "champion").version)
    # Only non-inferiority judges this one: the absolute gate is off.
    decisions["worse"] = promote(name, versions["worse"], data, Gates(min_macro_auroc=0.0), tracking_uri=uri)
    champion_after["worse"] = str(client.get_model_version_by_alias(name, "champion").version)
    decisions["recalibrated"] = promote(name, versions["recalibrated"], data, tracking_uri=uri)
    champion_after["recalibrated"] = str(client.get_model_version_by_alias(name, "champion").version)
    return Scenario(uri, versions, decisions, strongest, champion_after, champion_history(name, uri))


@pytest.fixture(scope="module")
def scenario(models: dict[str, Any], archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    uri = f"sqlite:///{tmp_path_factory.mktemp('promotion_store') / 'mlflow.db'}"
    return run_scenario(models, archive, uri, MODEL)


# ---- gates without a store -----------------------------------------------------------------------
def test_judge_applies_absolute_gate_and_per_finding_margins() -> None:
    from medres.lifecycle.evaluate import Evaluation

    def evaluation(auroc: dict[str, float]) -> Evaluation:
        return Evaluation(list(auroc), auroc, {f: 5 for f in auroc}, {f: 5 for f in auroc})

    candidate = evaluation({"a": 0.80, "b": 0.70, "c": float("nan")})
    champion = evaluation({"a": 0.75, "b": 0.74, "c": 0.9})
    checks = {c.gate: c.passed for c in judge(candidate, champion, Gates(min_macro_auroc=0.7))}
    assert checks == {"min_macro_auroc": True, "non_inferiority:a": True, "non_inferiority:b": False}
    wider = Gates(min_macro_auroc=0.7, finding_margins={"b": 0.05})
    assert all(c.passed for c in judge(candidate, champion, wider))
    assert [c.passed for c in judge(candidate, None, Gates(min_macro_auroc=0.76))] == [False]
    with pytest.raises(ValueError, match="non_inferiority_margin"):
        Gates(non_inferiority_margin=-0.1)


# ---- the flow on the embedded SQLite store -------------------------------------------------------
def test_good_model_is_better_than_chance_on_the_test_split(scenario: Scenario) -> None:
    first = scenario.decisions["first"]
    assert first.fingerprint.split == "test"
    assert 15 <= first.fingerprint.samples <= 25 and 4 <= first.fingerprint.patients <= 8
    assert first.candidate.judged == FINDINGS  # every finding has both classes among the held-out labels
    assert first.candidate.macro > 0.6, "the in-test training did not learn; the gates below assume it does"
    assert first.candidate.auroc[scenario.strongest] > 0.6


def test_first_promotion_applies_only_the_absolute_gate(scenario: Scenario) -> None:
    first = scenario.decisions["first"]
    assert first.promoted and first.champion_version is None and first.champion is None
    assert [c.gate for c in first.checks] == ["min_macro_auroc"]
    assert scenario.champion_after["first"] == scenario.versions["good"]


def test_refused_by_min_macro_auroc(scenario: Scenario) -> None:
    bad, first = scenario.decisions["bad"], scenario.decisions["first"]
    assert not bad.promoted and bad.champion_version == scenario.versions["good"]
    for finding in FINDINGS:  # the negated classifier ranks every finding backwards, on the same samples
        assert bad.candidate.auroc[finding] == pytest.approx(1 - first.candidate.auroc[finding], abs=1e-6)
        assert bad.champion is not None
        assert bad.champion.auroc[finding] == pytest.approx(first.candidate.auroc[finding], abs=1e-6)
    assert not {c.gate: c for c in bad.checks}["min_macro_auroc"].passed
    assert scenario.champion_after["bad"] == scenario.versions["good"]


def test_refused_by_non_inferiority_on_one_finding(scenario: Scenario) -> None:
    worse = scenario.decisions["worse"]
    failed = [c.gate for c in worse.checks if not c.passed]
    assert failed == [f"non_inferiority:{scenario.strongest}"]
    assert worse.reasons[0].startswith(f"{scenario.strongest} AUROC")
    assert scenario.champion_after["worse"] == scenario.versions["good"]


def test_non_inferior_candidate_is_promoted(scenario: Scenario) -> None:
    recalibrated = scenario.decisions["recalibrated"]
    assert recalibrated.promoted and recalibrated.champion_version == scenario.versions["good"]
    assert recalibrated.candidate.auroc == pytest.approx(scenario.decisions["first"].candidate.auroc, abs=1e-6)
    assert scenario.champion_after["recalibrated"] == scenario.versions["recalibrated"]


def test_decisions_are_recorded_on_versions_runs_and_history(scenario: Scenario) -> None:
    client = MlflowClient(tracking_uri=scenario.uri, registry_uri=scenario.uri)
    v = scenario.versions
    bad = client.get_model_version(MODEL, v["bad"])
    # On the version only what a reviewer filters by; the evidence is in the description and the decision's run.
    assert set(bad.tags) == set(VERSION_TAGS), bad.tags
    assert bad.tags["medres.promotion.decision"] == "refused"
    assert bad.tags["medres.promotion.failed_gates"] == ",".join(
        c.gate for c in scenario.decisions["bad"].checks if not c.passed
    )
    assert "min_macro_auroc" in bad.tags["medres.promotion.failed_gates"]
    worse = client.get_model_version(MODEL, v["worse"])
    assert worse.tags["medres.promotion.failed_gates"] == f"non_inferiority:{scenario.strongest}"
    recalibrated = client.get_model_version(MODEL, v["recalibrated"])
    assert recalibrated.tags["medres.promotion.decision"] == "promoted"
    assert recalibrated.tags["medres.promotion.failed_gates"] == "none"
    refused = client.search_model_versions(f"name='{MODEL}' and tags.`medres.promotion.decision` = 'refused'")
    assert sorted(str(mv.version) for mv in refused) == sorted([v["bad"], v["worse"]])
    assert "refused as @champion" in (bad.description or "")
    assert "macro AUROC" in (bad.description or "")
    assert scenario.decisions["bad"].fingerprint.digest[:12] in (bad.description or "")
    good = client.get_model_version(MODEL, v["good"])
    assert "promoted to @champion (first champion)" in (good.description or "")
    assert f"replaced as @champion by version {v['recalibrated']}" in (good.description or "")

    run = client.get_run(bad.tags["medres.promotion.run_id"])
    assert client.get_experiment(run.info.experiment_id).name == PROMOTION_EXPERIMENT
    assert run.data.tags["medres.promotion.decision"] == "refused"
    assert run.data.metrics["champion/auroc_macro"] == pytest.approx(scenario.decisions["first"].candidate.macro)
    assert run.data.metrics["candidate/auroc_macro"] < 0.5 and run.data.metrics["promoted"] == 0.0
    assert run.data.params["champion_version"] == v["good"]
    assert run.data.params["data.split"] == "test" and len(run.data.params["data.fingerprint"]) == 64
    assert run.data.metrics["champion/auroc_nodule"] == pytest.approx(
        scenario.decisions["first"].candidate.auroc["nodule"], abs=1e-4
    )
    decision = json.loads(Path(client.download_artifacts(run.info.run_id, "decision.json")).read_text())
    assert (
        decision["decision"] == "refused"
        and decision["data"]["samples"] == scenario.decisions["bad"].fingerprint.samples
    )

    history = [(e.action, e.version, e.previous) for e in scenario.history_after_promotions]
    assert history == [
        ("promote", v["good"], None),
        ("refuse", v["bad"], v["good"]),
        ("refuse", v["worse"], v["good"]),
        ("promote", v["recalibrated"], v["good"]),
    ]


def test_rollback_restores_the_previous_champion_then_stops(scenario: Scenario) -> None:
    client = MlflowClient(tracking_uri=scenario.uri, registry_uri=scenario.uri)
    v = scenario.versions
    entry = rollback(MODEL, reason="drift on site B", tracking_uri=scenario.uri)
    assert (entry.action, entry.version, entry.previous) == ("rollback", v["good"], v["recalibrated"])
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == v["good"]
    restored = client.get_model_version(MODEL, v["good"])
    assert restored.tags["medres.rollback.from"] == v["recalibrated"]
    assert "again by rollback from version" in (restored.description or "")
    assert champion_history(MODEL, scenario.uri)[-1] == entry
    with pytest.raises(ValueError, match="first @champion"):
        rollback(MODEL, tracking_uri=scenario.uri)
    with pytest.raises(ValueError, match="no such registered version"):
        rollback(MODEL, to_version="99", tracking_uri=scenario.uri)


def test_rollback_without_history_and_bad_requests_fail_clearly(
    models: dict[str, Any], archive: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (version,) = register([models["good"]], uri, "cxr_fresh")
    with pytest.raises(ValueError, match="no champion history"):
        rollback("cxr_fresh", tracking_uri=uri)
    with pytest.raises(ValueError, match="no such registered model"):
        rollback("nobody", tracking_uri=uri)
    dry = promote("cxr_fresh", version, HeldOutData(root=archive), dry_run=True, tracking_uri=uri)
    assert dry.promoted and "would be promoted" in dry.line()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_registered_model("cxr_fresh").aliases == {}  # a dry run records nothing
    assert "medres.promotion.decision" not in client.get_model_version("cxr_fresh", version).tags
    promote("cxr_fresh", "latest", HeldOutData(root=archive), tracking_uri=uri)
    with pytest.raises(ValueError, match="already is @champion"):
        promote("cxr_fresh", version, HeldOutData(root=archive), tracking_uri=uri)


def test_nothing_identifying_in_the_registry(scenario: Scenario, archive: Path, tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=scenario.uri, registry_uri=scenario.uri)
    texts = [json.dumps(client.get_registered_model(MODEL).tags)]
    for version in client.search_model_versions(f"name='{MODEL}'"):
        texts += [json.dumps(version.tags), version.description or ""]
    texts.append(json.dumps([d.to_dict() for d in scenario.decisions.values()]))
    assert HISTORY_TAG in texts[0]
    assert find_identifying(identifying_values(archive), [], texts, tmp_path / "scan") == []


# ---- the same flow on a real mlflow server, and through the CLI and the pipeline ---------------------
@pytest.mark.slow
def test_same_flow_on_a_real_mlflow_server(models: dict[str, Any], archive: Path, mlflow_server: Any) -> None:
    scenario = run_scenario(models, archive, mlflow_server.uri, "cxr_gated_server")
    assert [d.promoted for d in scenario.decisions.values()] == [True, False, False, True]
    entry = rollback("cxr_gated_server", tracking_uri=mlflow_server.uri)
    assert entry.version == scenario.versions["good"]
    client = MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)
    assert str(client.get_model_version_by_alias("cxr_gated_server", "champion").version) == scenario.versions["good"]
    actions = [e.action for e in champion_history("cxr_gated_server", mlflow_server.uri)]
    assert actions == ["promote", "refuse", "refuse", "promote", "rollback"]


def cli(*args: str, uri: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``medres ARGS`` in this process (the entry point the console script calls): exit status, stdout, stderr."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        main(list(args))
        status = 0
    except SystemExit as exit:
        status = int(exit.code or 0)
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_promote_refuse_history_rollback(
    models: dict[str, Any], archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    good = models["good"]
    v1, v2, v3 = register([good, negated(good), recalibrated(good)], uri, "cxr_cli")
    data = ["--data.root", str(archive)]
    status, out, _ = cli("promote", "--model", "cxr_cli", "--version", v1, *data, uri=uri, capsys=capsys)
    assert status == 0 and f"models:/cxr_cli/{v1} promoted as @champion (no current champion)" in out
    status, out, _ = cli("promote", "--model", "cxr_cli", "--version", v2, *data, uri=uri, capsys=capsys)
    assert status == EXIT_REFUSED and f"models:/cxr_cli/{v2} refused as @champion against version {v1}" in out
    assert "FAIL" in out  # the table marks the failed gates
    margins = ["--gates.finding_margins", '{"nodule": 0.1}', "--gates.min_macro_auroc", "0.6"]
    status, out, _ = cli("promote", "--model", "cxr_cli", "--version", v3, *data, *margins, uri=uri, capsys=capsys)
    assert status == 0, out
    status, out, _ = cli("rollback", "--model", "cxr_cli", "--reason", "site B drift", uri=uri, capsys=capsys)
    assert status == 0 and f"models:/cxr_cli/{v1} is @champion again (was version {v3})" in out
    status, out, _ = cli("champion-history", "--model", "cxr_cli", uri=uri, capsys=capsys)
    rows = [line.split("│") for line in out.splitlines()]
    actions = [cells[2].strip() for cells in rows if len(cells) > 3 and cells[2].strip()]  # wrapped rows: blank
    assert status == 0 and actions == ["promote", "refuse", "promote", "rollback"], out
    status, _, err = cli("rollback", "--model", "cxr_cli", uri=uri, capsys=capsys)
    assert status == 2 and "first @champion" in err and len(err.strip().splitlines()) == 1
    status, _, err = cli("promote", "--model", "cxr_cli", "--version", "42", *data, uri=uri, capsys=capsys)
    assert status == 2 and "no such registered version" in err
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(client.get_model_version("cxr_cli", v3).tags["medres.promotion.run_id"])
    gates = json.loads(Path(client.download_artifacts(run.info.run_id, "decision.json", str(tmp_path))).read_text())[
        "gates"
    ]
    assert gates == {"finding_margins": {"nodule": 0.1}, "min_macro_auroc": 0.6, "non_inferiority_margin": 0.02,
                     "metric": "auroc"}  # fmt: skip


@pytest.mark.slow
def test_pipeline_tests_compares_and_promotes(models: dict[str, Any], archive: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    good, bad = register([models["good"], negated(models["good"])], uri, "cxr_pipeline")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MEDRES": str(Path(sys.executable).parent / "medres")}

    def pipeline(version: str) -> subprocess.CompletedProcess[str]:
        command = [str(REPO / "pipelines/promote.sh"), "cxr_pipeline", version, str(archive), "--data.batch_size", "8"]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    result = pipeline(good)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    steps = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    assert [s.split()[1] for s in steps] == ["test:", "compare:", "promote"]
    assert f"models:/cxr_pipeline/{good}: macro AUROC" in result.stdout  # the test step's line
    assert f"models:/cxr_pipeline/{good} would be promoted" in result.stdout  # the dry-run comparison
    assert f"models:/cxr_pipeline/{good} promoted as @champion" in result.stdout
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias("cxr_pipeline", "champion").version) == good
    assert "medres.promotion.decision" not in client.get_model_version("cxr_pipeline", bad).tags
