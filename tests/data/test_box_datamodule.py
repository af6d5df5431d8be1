"""BoxDataModule: box CSV → merged readers → derived labels → patient split → batches with boxes on the network grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medres.cli.trainer import is_box_config
from medres.data.box_datamodule import IMAGE_LABELS_FILE, BoxDataModule
from medres.data.box_transforms import BOX_KEY, BOX_LABEL_KEY
from medres.data.boxes import MergeRule, merge_readers, read_box_csv
from medres.data.importers import import_labels
from medres.data.transforms import IMAGE_KEY, Preprocessing
from medres.synthetic.rsna import synth_rsna_pneumonia
from medres.synthetic.vindr import synth_vindr_cxr

SMALL = Preprocessing(spatial_dims=2, spatial_size=(32, 32))


@pytest.fixture(scope="module")
def rsna(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rsna") / "release"
    synth_rsna_pneumonia(root, patients=12, seed=3, image_size=64, prevalence=0.5)
    summary = import_labels("rsna-pneumonia", root, root.parent / "labels")
    return root, summary.boxes_csv


def test_batches_carry_every_listed_image_with_its_boxes_on_the_network_grid(rsna, tmp_path) -> None:
    root, boxes_csv = rsna
    data = BoxDataModule(root, ["lung_opacity"], boxes=boxes_csv, work_dir=tmp_path, preprocessing=SMALL,
                         split_fractions=(0.5, 0.25, 0.25), batch_size=4, cache="none")  # fmt: skip
    data.prepare_data()
    data.setup("fit")
    derived = pd.read_csv(tmp_path / IMAGE_LABELS_FILE)
    assert len(derived) == 12 and set(derived.columns) == {"path", "lung_opacity"}
    assert sum(len(v) for v in data.samples.values()) == 12  # every listed image, in exactly one split
    patients = {s: {r["path"] for r in v} for s, v in data.samples.items()}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    truth = read_box_csv(boxes_csv)
    seen = 0
    for loader in (data.train_dataloader(), data.val_dataloader(), data.test_dataloader()):
        for batch in loader:
            assert batch[IMAGE_KEY].shape[1:] == (1, 32, 32)
            for boxes, labels, path, label in zip(
                batch[BOX_KEY], batch[BOX_LABEL_KEY], batch["path"], batch["label"], strict=True
            ):
                stored = truth.boxes(path, "lung_opacity")
                # 64 → 32 px: every stored pixel edge halves; MONAI's order is (row, column).
                np.testing.assert_allclose(boxes.numpy(), stored[:, [1, 0, 3, 2]] / 2, atol=1e-4)
                assert (labels.numpy() == 0).all() and float(label[0]) == float(len(stored) > 0)
                seen += 1
    assert seen >= 10  # the train loader drops a last short batch


def test_consensus_merge_decides_the_training_boxes(tmp_path) -> None:
    root = tmp_path / "vindr"
    synth_vindr_cxr(root, images=8, seed=1, image_size=64, readers_per_image=3)
    summary = import_labels("vindr-cxr", root, tmp_path / "labels")
    rule = MergeRule("consensus", min_readers=3, iou=0.3)
    data = BoxDataModule(root, ["lung_opacity"], boxes=summary.boxes_csv, merge=rule, work_dir=tmp_path / "w",
                         preprocessing=SMALL, split_fractions=(1.0, 0.0, 0.0), cache="none")  # fmt: skip
    data.prepare_data()
    data.setup("fit")
    merged = merge_readers(read_box_csv(summary.boxes_csv), rule)
    for record in data.samples["train"]:
        np.testing.assert_allclose(record[BOX_KEY], merged.boxes(record["path"], "lung_opacity"), atol=1e-4)


def test_bad_settings_name_the_setting(rsna, tmp_path) -> None:
    root, boxes_csv = rsna
    with pytest.raises(ValueError, match="data.cache='disk'"):
        BoxDataModule(root, ["lung_opacity"], boxes=boxes_csv, cache="disk")  # type: ignore[arg-type]
    volumes = Preprocessing(spatial_dims=3, spatial_size=(32, 32, 32))
    with pytest.raises(ValueError, match=r"image-keyed \(2D\) boxes, but data.preprocessing.spatial_dims=3"):
        BoxDataModule(root, ["lung_opacity"], boxes=boxes_csv, preprocessing=volumes, work_dir=tmp_path).prepare_data()
    data = BoxDataModule(root, ["pneumothorax"], boxes=boxes_csv, work_dir=tmp_path)
    with pytest.raises(ValueError, match=r"data.findings: \['pneumothorax'\] have no box in"):
        data.prepare_data()
    with pytest.raises(FileNotFoundError, match="data.boxes=.*missing.csv: no such file"):
        BoxDataModule(root, ["lung_opacity"], boxes=tmp_path / "missing.csv", work_dir=tmp_path).prepare_data()


def test_a_config_with_data_boxes_trains_a_detector(tmp_path) -> None:
    repo = Path(__file__).resolve().parents[2]
    assert is_box_config(["--config", str(repo / "configs/cxr_boxes.yaml")])
    assert is_box_config([f"--config={repo / 'configs/cxr_boxes.yaml'}", "--config", "x.yaml"])
    assert is_box_config(["--config", str(repo / "configs/chest_xray.yaml"), "--data.boxes", "b.csv"])
    assert not is_box_config(["--config", str(repo / "configs/chest_xray.yaml")])
    assert not is_box_config(["--config", str(repo / "configs/profiles/cpu_boxes.yaml")])  # a profile alone
    assert not is_box_config(["--config", str(tmp_path / "absent.yaml")])


def test_series_boxes_train_a_3d_detector_on_the_network_grid(tmp_path) -> None:
    from medres.data.box_transforms import boxes_to_patient_mm
    from medres.synthetic.luna16 import synth_luna16

    root = tmp_path / "luna"
    synth_luna16(root, scans=4, seed=2, size=32, slices=24, negative_fraction=0.25)
    boxes_csv = import_labels("luna16", root, tmp_path / "labels").boxes_csv
    assert boxes_csv is not None
    volumes = Preprocessing(spatial_dims=3, spatial_size=(32, 32, 32), target_spacing=(2.0, 2.0, 2.0),
                            intensity_window=(-1000.0, 400.0))  # fmt: skip
    data = BoxDataModule(root, ["nodule"], boxes=boxes_csv, work_dir=tmp_path / "w", preprocessing=volumes,
                         split_fractions=(1.0, 0.0, 0.0), batch_size=2, cache="none")  # fmt: skip
    data.prepare_data()
    data.setup("fit")
    truth = read_box_csv(boxes_csv)
    assert len(data.samples["train"]) == 4
    batch = next(iter(data._eval_loader("train")))
    assert batch[IMAGE_KEY].shape[1:] == (1, 32, 32, 32)
    for boxes, uid in zip(batch[BOX_KEY], batch["SeriesInstanceUID"], strict=True):
        assert len(boxes) == len(truth.boxes(uid, "nodule"))
    # The same chain with metadata kept: network boxes map back onto the LPS-mm truth within a voxel (2 mm).
    from medres.data.box_transforms import box_eval_transforms

    record = data.samples["train"][0]
    out = box_eval_transforms(volumes)({IMAGE_KEY: record[IMAGE_KEY], BOX_KEY: record[BOX_KEY],
                                        BOX_LABEL_KEY: record[BOX_LABEL_KEY]})  # fmt: skip
    back = boxes_to_patient_mm(out[BOX_KEY], out[IMAGE_KEY].affine)
    np.testing.assert_allclose(back, truth.boxes(record["SeriesInstanceUID"], "nodule"), atol=2.0)
