"""Detection samples from imported RSNA (2D) and LUNA16 (3D) archives, through the box transforms, into a batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import Dataset
from torch.utils.data import DataLoader

from medres.data.box_samples import box_samples, collate_boxes
from medres.data.box_transforms import BOX_KEY, BOX_LABEL_KEY, box_eval_transforms
from medres.data.boxes import merge_readers, new_box_labels, read_box_csv
from medres.data.importers import import_labels
from medres.data.manifest import index_archive
from medres.data.transforms import IMAGE_KEY, Preprocessing
from medres.synthetic.luna16 import synth_luna16
from medres.synthetic.rsna import synth_rsna_pneumonia


def test_rsna_archive_to_detection_batches(tmp_path: Path) -> None:
    root = tmp_path / "rsna"
    synth_rsna_pneumonia(root, patients=6, seed=2, image_size=64, prevalence=0.5)
    summary = import_labels("rsna-pneumonia", root, tmp_path / "labels")
    manifest, _ = index_archive(root, salt="test")
    labels = merge_readers(read_box_csv(summary.boxes_csv))
    extra = manifest.iloc[:1].assign(path="elsewhere/unlisted.dcm")  # not in the box file: unknown, no sample
    samples = box_samples(root, pd.concat([manifest, extra]), labels, ["lung_opacity"])
    assert len(samples) == 6
    assert sum(len(s[BOX_KEY]) for s in samples) == summary.boxes
    preprocessing = Preprocessing(spatial_dims=2, spatial_size=(32, 32))
    loader = DataLoader(Dataset(samples, box_eval_transforms(preprocessing)), batch_size=3, collate_fn=collate_boxes)
    batches = list(loader)
    assert [tuple(b[IMAGE_KEY].shape) for b in batches] == [(3, 1, 32, 32)] * 2
    for batch in batches:
        for boxes, classes, path in zip(batch[BOX_KEY], batch[BOX_LABEL_KEY], batch["path"], strict=True):
            stored = labels.boxes(path, "lung_opacity")
            # 64 -> 32: every stored pixel edge halves; MONAI order is (row, column).
            np.testing.assert_allclose(boxes.numpy(), stored[:, [1, 0, 3, 2]] / 2, atol=1e-4)
            assert torch.equal(classes, torch.zeros(len(stored), dtype=torch.long))


def test_luna16_archive_to_3d_detection_batches(tmp_path: Path) -> None:
    summary = synth_luna16(tmp_path / "luna", scans=3, seed=5, size=24, slices=12, negative_fraction=0.3)
    imported = import_labels("luna16", summary.root, tmp_path / "labels")
    manifest, _ = index_archive(summary.root, salt="test")
    labels = merge_readers(read_box_csv(imported.boxes_csv))
    listed = set(summary.seriesuids[1:])  # the first series unlisted: unknown, no sample
    labels = new_box_labels(labels.key, labels.frame[labels.frame[labels.key].isin(listed)].itertuples(index=False))
    samples = box_samples(summary.root, manifest, labels, ["nodule"])
    assert [s["SeriesInstanceUID"] for s in samples] == sorted(listed)
    for sample in samples:
        uid = sample["SeriesInstanceUID"]
        assert len(sample[IMAGE_KEY]) == 12 and all(Path(p).is_absolute() for p in sample[IMAGE_KEY])
        assert sample["path"] == sample["files"][0] and uid in sample["path"]
        np.testing.assert_allclose(sample[BOX_KEY], labels.boxes(uid, "nodule"), atol=1e-4)
        assert sample[BOX_KEY].shape[1] == 6 and len(sample[BOX_LABEL_KEY]) == len(sample[BOX_KEY])
    preprocessing = Preprocessing(spatial_dims=3, spatial_size=(16, 16, 16), intensity_window=(-1000.0, 400.0))
    batch = collate_boxes([box_eval_transforms(preprocessing)(s) for s in samples])
    assert tuple(batch[IMAGE_KEY].shape) == (2, 1, 16, 16, 16)
    assert all(b.shape[1] == 6 for b in batch[BOX_KEY])
