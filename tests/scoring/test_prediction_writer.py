"""``medres predict`` rows for a 3D model follow the series row contract of scoring."""

import pandas as pd
import pytorch_lightning as pl
import torch
from monai.data import DataLoader, Dataset

from medres.data.transforms import IMAGE_KEY, eval_transforms
from medres.scoring.prediction_writer import DetectionPredictionWriter
from medres.tasks.detection import MultiLabelDetection

from .ct_series import FINDINGS, PREPROCESSING, uid, write_series


def test_series_rows_have_no_sop_uid_and_count_their_files(tmp_path):
    study = uid()
    records = []
    for k, n in enumerate((8, 6)):
        series, files = write_series(tmp_path / "ct" / f"s{k}", study=study, n=n, seed=k)
        records.append(
            {
                "path": f"s{k}/slice_00.dcm",
                "SOPInstanceUID": "",  # as the data module collates series samples
                "SeriesInstanceUID": series,
                "StudyInstanceUID": study,
                "n_instances": n,
                IMAGE_KEY: [str(f) for f in files],
            }
        )
    torch.manual_seed(0)
    module = MultiLabelDetection(FINDINGS, PREPROCESSING, backbone="resnet20").eval()
    output = tmp_path / "predictions.parquet"
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[DetectionPredictionWriter(output)],
    )
    loader = DataLoader(Dataset(records, transform=eval_transforms(PREPROCESSING)), batch_size=2)
    trainer.predict(module, dataloaders=loader, return_predictions=False)

    rows = pd.read_parquet(output)
    assert list(rows["path"]) == ["s0/slice_00.dcm", "s1/slice_00.dcm"] and list(rows["n_instances"]) == [8, 6]
    assert rows["SOPInstanceUID"].isna().all() and (rows["StudyInstanceUID"] == study).all()
    assert rows[[f"prob_{f}" for f in FINDINGS]].stack().between(0, 1).all()
    assert list(rows.columns[:5]) == ["path", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "n_instances"]
