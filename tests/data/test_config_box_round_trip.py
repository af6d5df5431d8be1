"""Boxes through the evaluation chain of every detection config and back: within a pixel (2D) or a voxel (3D)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from medres.data.box_transforms import (
    BOX_KEY,
    BOX_LABEL_KEY,
    box_eval_transforms,
    boxes_to_patient_mm,
    boxes_to_stored_pixels,
)
from medres.data.boxes import read_box_csv
from medres.data.importers import import_labels
from medres.data.transforms import IMAGE_KEY, Preprocessing
from medres.dicom.series import plan_series_files
from medres.synthetic.luna16 import synth_luna16
from medres.synthetic.rsna import synth_rsna_pneumonia

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CHAINS = [
    ("cxr_boxes.yaml", None),
    ("cxr_boxes.yaml", "profiles/cpu_boxes.yaml"),
    ("ct_nodules.yaml", None),
    ("ct_nodules.yaml", "profiles/cpu_nodules.yaml"),
]


def preprocessing_of(config: str, profile: str | None) -> Preprocessing:
    """The data.preprocessing the configs resolve to (profile keys over the experiment's)."""
    settings = dict(yaml.safe_load((CONFIGS / config).read_text())["data"]["preprocessing"])
    if profile is not None:
        settings.update(yaml.safe_load((CONFIGS / profile).read_text())["data"].get("preprocessing") or {})
    return Preprocessing.from_dict(settings)


@pytest.fixture(scope="module")
def radiographs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rsna") / "release"
    synth_rsna_pneumonia(root, patients=8, seed=5, image_size=300, prevalence=0.9)
    boxes = import_labels("rsna-pneumonia", root, root.parent / "labels").boxes_csv
    assert boxes is not None
    return root, boxes


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("luna") / "release"
    synth_luna16(root, scans=3, seed=6, negative_fraction=0.0)
    boxes = import_labels("luna16", root, root.parent / "labels").boxes_csv
    assert boxes is not None
    return root, boxes


@pytest.mark.parametrize(("config", "profile"), CHAINS, ids=[f"{c}+{p}" for c, p in CHAINS])
def test_round_trip_of_every_config_chain(config, profile, radiographs, scans) -> None:
    preprocessing = preprocessing_of(config, profile)
    chain = box_eval_transforms(preprocessing)
    checked = 0
    if preprocessing.spatial_dims == 2:
        root, boxes_csv = radiographs
        labels = read_box_csv(boxes_csv)
        for key in labels.keys:
            stored = labels.boxes(key)
            if not len(stored):
                continue
            out = chain({IMAGE_KEY: str(root / key), BOX_KEY: stored, BOX_LABEL_KEY: np.zeros(len(stored), np.int64)})
            image = out[IMAGE_KEY]
            back = boxes_to_stored_pixels(out[BOX_KEY], image.affine, image.meta["original_affine"])
            assert np.abs(back - stored).max() <= 1.0, (config, profile, key)
            checked += len(stored)
    else:
        root, boxes_csv = scans
        labels = read_box_csv(boxes_csv)
        voxel = np.array(preprocessing.target_spacing * 2)
        for uid in labels.keys:
            (plan,) = plan_series_files([p for p in root.rglob("*.dcm") if p.parent.name == uid])
            stored = labels.boxes(uid)
            if not len(stored):
                continue
            out = chain({IMAGE_KEY: list(plan.paths), BOX_KEY: stored,
                         BOX_LABEL_KEY: np.zeros(len(stored), np.int64)})  # fmt: skip
            back = boxes_to_patient_mm(out[BOX_KEY], out[IMAGE_KEY].affine)
            assert (np.abs(back - stored) <= voxel).all(), (config, profile, uid)
            checked += len(stored)
    assert checked > 0
