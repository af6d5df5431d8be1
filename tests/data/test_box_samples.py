"""Detection samples from an imported RSNA-layout archive, through the box transforms, into a batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import Dataset
from torch.utils.data import DataLoader

from medres.data.box_samples import box_samples, collate_boxes
from medres.data.box_transforms import BOX_KEY, BOX_LABEL_KEY, box_eval_transforms
from medres.data.boxes import merge_readers, read_box_csv
from medres.data.importers import import_labels
from medres.data.manifest import index_archive
from medres.data.transforms import IMAGE_KEY, Preprocessing
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
