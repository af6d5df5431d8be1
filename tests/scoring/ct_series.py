"""Tiny CT series written with pydicom (16×16 slices, a few per series) and a tiny 3D model, for the scoring tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medres.data.selection import SeriesSelection
from medres.data.transforms import Preprocessing
from medres.package import CHECKPOINT_KEY, ModelPackage, build_backbone

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
PATIENT_NAME = "Testpatient^Scoring"
PATIENT_ID = "SCORE-PID-4711"
FINDINGS = ["nodule", "effusion"]
THRESHOLDS = [0.5, 0.3]
# (x, y, z) in RAS order: 16 columns, 16 rows, 8 slices; HU window of a soft-tissue CT preset.
PREPROCESSING = Preprocessing(spatial_dims=3, spatial_size=(16, 16, 8), intensity_window=(-200.0, 400.0))


def uid() -> str:
    """A fresh UID short enough that the ``.N`` suffixes used here stay within the 64 characters of VR UI."""
    return generate_uid()[:48]


def write_slice(
    path: Path,
    *,
    study: str,
    series: str,
    sop: str,
    z: float,
    pixels: np.ndarray,
    modality: str = "CT",
    orientation: Sequence[float] = AXIAL,
    image_type: str = "ORIGINAL\\PRIMARY\\AXIAL",
    geometry: bool = True,
    instance_number: int = 1,
) -> Path:
    """Write one single-frame slice whose pixels are stored HU + 1024 (RescaleIntercept -1024)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = study + ".0"
    ds.Modality = modality
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.BodyPartExamined = "CHEST"
    ds.ImageType = image_type.split("\\")
    ds.InstanceNumber = instance_number
    ds.Rows, ds.Columns = pixels.shape
    if geometry:
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = [-8.0, -8.0, z]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 2.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = (pixels + 1024).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    *,
    study: str,
    n: int = 8,
    z: Sequence[float] | None = None,
    seed: int = 0,
    names: Sequence[str] | None = None,
    **slice_args: object,
) -> tuple[str, list[Path]]:
    """Write an axial series of ``n`` slices 2 mm apart (or at ``z``); returns its UID and files in z order.

    The pixels are a seeded random HU field with a bright blob, so two different series score differently.
    """
    rng = np.random.default_rng(seed)
    series = uid()
    positions = list(z) if z is not None else [2.0 * k for k in range(n)]
    volume = rng.normal(40.0, 20.0, size=(len(positions), 16, 16))
    volume[:, 4 + seed % 6 : 9 + seed % 6, 5:10] += 300.0
    files = []
    for k, position in enumerate(positions):
        name = names[k] if names is not None else f"slice_{k:02d}.dcm"
        sop = f"{series}.{k + 1}"
        files.append(
            write_slice(
                folder / name,
                study=study,
                series=series,
                sop=sop,
                z=position,
                pixels=volume[k],
                instance_number=len(positions) - k,  # counts backwards: order must come from positions
                **slice_args,  # type: ignore[arg-type]
            )
        )
    return series, files


def write_checkpoint(path: Path, selection: SeriesSelection | None = None) -> tuple[Path, torch.nn.Module]:
    """A medres checkpoint of a random-weight 3D CIFAR ResNet-20 (as ``medres fit`` embeds its package)."""
    torch.manual_seed(0)
    network = build_backbone("resnet20", {}, PREPROCESSING, len(FINDINGS)).eval()
    package = ModelPackage(
        backbone="resnet20",
        backbone_args={},
        findings=FINDINGS,
        preprocessing=PREPROCESSING,
        thresholds=THRESHOLDS,
        state_dict=network.state_dict(),
        selection=selection or SeriesSelection(),
    )
    state = {f"backbone.{k}": v for k, v in network.state_dict().items()}
    torch.save({"state_dict": state, CHECKPOINT_KEY: package.contract()}, path)
    return path, network
