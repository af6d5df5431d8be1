"""Promotion gates on a lesion detector's CPM or mAP (issue 18): held-out boxes through each model's own chain."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from medres.data.box_datamodule import BoxDataModule
from medres.data.importers import import_labels
from medres.data.transforms import Preprocessing
from medres.evaluation.detection_metrics import detection_metrics
from medres.lifecycle.evaluate import Evaluation, HeldOutData, load_held_out, package_detections
from medres.lifecycle.promotion import Gates, judge, promote
from medres.package import ModelPackage
from medres.synthetic.rsna import synth_rsna_pneumonia
from medres.tasks.lesions import LesionDetection

from .test_promotion import register

PREPROCESSING = Preprocessing(spatial_dims=2, spatial_size=(64, 64))


def test_judge_reads_the_gate_metric() -> None:
    def evaluation(cpm: dict[str, float]) -> Evaluation:
        auroc = {f: 0.9 for f in cpm}
        return Evaluation(list(cpm), auroc, {f: 5 for f in cpm}, {f: 5 for f in cpm}, {"cpm": cpm}, "cpm")

    candidate, champion = evaluation({"a": 0.62, "b": math.nan}), evaluation({"a": 0.70, "b": 0.8})
    checks = judge(candidate, champion, Gates(min_macro_auroc=0.6, metric="cpm"))
    assert [(c.gate, c.passed) for c in checks] == [("min_macro_auroc", True), ("non_inferiority:a", False)]
    assert checks[0].detail == "macro CPM 0.6200 ≥ 0.6000"
    assert checks[1].detail == "a CPM 0.6200 < champion 0.7000 − 0.0200"
    with pytest.raises(ValueError, match="predicts no boxes"):
        Evaluation(["a"], {"a": 0.9}, {"a": 1}, {"a": 1}, gate_metric="map_0.1").scores()


@pytest.mark.slow
def test_promotion_on_cpm_promotes_a_detector_and_refuses_a_worse_one(tmp_path: Path) -> None:
    root = tmp_path / "release"
    synth_rsna_pneumonia(root, patients=80, seed=4, image_size=96, prevalence=0.5)
    boxes = import_labels("rsna-pneumonia", root, tmp_path / "labels").boxes_csv
    work = tmp_path / "work"
    data = BoxDataModule(root, ["lung_opacity"], boxes=boxes, work_dir=work, preprocessing=PREPROCESSING, batch_size=8)
    torch.manual_seed(0)
    module = LesionDetection(
        ["lung_opacity"], PREPROCESSING, "resnet10", {"widths": [8, 16, 32, 64], "stem_width": 8},
        fpn_channels=16, anchor_shapes=((12, 10), (18, 12)), bootstrap_resamples=0,
        optimizer=partial(torch.optim.AdamW, lr=3e-3),
    )  # fmt: skip
    trainer = pl.Trainer(max_epochs=12, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=data)
    good = module.to_package()
    # The same detector with its classification logits negated: scores rank background above lesions.
    state = dict(good.state_dict)
    for name in [n for n in state if n.startswith("classification_head.cls_logits.")]:
        state[name] = -state[name]
    worse = replace(good, state_dict=state)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    versions = register([good, worse], uri, "boxes")
    held_out = HeldOutData(root=root, boxes=boxes, work_dir=work)

    gates = Gates(metric="cpm", min_macro_auroc=0.5)
    first = promote("boxes", versions[0], held_out, gates, tracking_uri=uri)
    # The gate's number is the detector's CPM on the test split, as detection_metrics computes it from its boxes.
    samples = load_held_out(replace(held_out), good)
    expected = detection_metrics(package_detections(good, samples, held_out)[0])["cpm"]
    assert first.candidate.detection["cpm"]["lung_opacity"] == pytest.approx(expected)
    assert first.promoted and expected >= 0.5, first.line()
    assert first.reasons[0].startswith("macro CPM ")

    second = promote("boxes", versions[1], held_out, gates, tracking_uri=uri)
    assert not second.promoted
    failed = {c.gate: c.detail for c in second.checks if not c.passed}
    assert "non_inferiority:lung_opacity" in failed and " CPM " in failed["non_inferiority:lung_opacity"]

    on_map = promote("boxes", versions[1], held_out, Gates(metric="map_0.1", min_macro_auroc=0.0), tracking_uri=uri,
                     dry_run=True)  # fmt: skip
    assert on_map.champion is not None and np.isfinite(on_map.champion.macro)
    assert on_map.champion.macro > on_map.candidate.macro

    classifier_gate = Gates(metric="auroc", min_macro_auroc=0.0)
    assert promote("boxes", versions[1], held_out, classifier_gate, tracking_uri=uri, dry_run=True).candidate.auroc


def test_detection_gate_needs_a_detector() -> None:
    evaluation = Evaluation(["a"], {"a": 0.8}, {"a": 3}, {"a": 3})
    assert evaluation.scores() == {"a": 0.8} and isinstance(ModelPackage, type)
    with pytest.raises(ValueError, match="lesion-detection metric"):
        evaluation.scores("cpm")
