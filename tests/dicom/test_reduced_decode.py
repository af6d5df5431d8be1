"""Reduced-resolution decoding (issue 19): level choice, the codestream's own limits, fidelity and fallback."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, generate_uid

from medres.data.cache import TensorCache
from medres.data.transforms import IMAGE_KEY, Preprocessing, eval_transforms, load_and_normalise
from medres.dicom import DicomReader, ReadOptions
from medres.dicom.reduced_decode import (
    covering_targets,
    decode_j2k_reduced,
    decode_reduced,
    j2k_codestream_info,
    j2k_level,
    level_shape,
)
from medres.synthetic import render_chest_xray

ROWS, COLS = 600, 520  # not powers of two: levels round up


def _stored(rows: int = ROWS, cols: int = COLS, bits: int = 12, seed: int = 3) -> np.ndarray:
    image = render_chest_xray({"effusion": True, "nodule": True}, seed=seed, rows=rows, cols=cols)
    return np.round((0.05 + 0.9 * image) * (2**bits - 1)).astype(np.uint16)


def _pillow_j2k(stored: np.ndarray, resolutions: int) -> bytes:
    """A lossless codestream with ``resolutions - 1`` decomposition levels (Pillow's encoder lets us choose)."""
    out = io.BytesIO()
    Image.fromarray(stored).save(out, "JPEG2000", num_resolutions=resolutions, irreversible=False, no_jp2=True)
    return out.getvalue()


def _dataset(stored: np.ndarray, bits: int, photometric: str = "MONOCHROME2") -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if stored.dtype == np.uint8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-100"
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.PixelData = stored.tobytes()
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _copies(tmp_path: Path, photometric: str = "MONOCHROME2") -> tuple[Path, Path]:
    """The same 12-bit image, uncompressed and lossless JPEG 2000 (pydicom's pylibjpeg encoder)."""
    stored = _stored()
    plain = _save(_dataset(stored, 12, photometric), tmp_path / "plain.dcm")
    ds = _dataset(stored, 12, photometric)
    ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg")
    return plain, _save(ds, tmp_path / "j2k.dcm")


# ------------------------------------------------------------------------------------------ levels


@pytest.mark.parametrize(("shape", "longest"), [((2048, 2048), 320), ((2000, 1600), 512), ((601, 333), 96)])
def test_level_is_the_coarsest_that_covers_the_resize_per_axis(shape, longest):
    level = j2k_level(shape, longest, available=8)
    targets = covering_targets(shape, longest)
    chosen, finer = level_shape(shape, level), level_shape(shape, level + 1)
    assert chosen[0] >= targets[0] and chosen[1] >= targets[1]  # the area resize after it never upscales
    assert finer[0] < targets[0] or finer[1] < targets[1]  # and one level coarser would
    assert j2k_level((2048, 2048), 320, available=8) == 2  # 512 covers 320; 256 does not


def test_level_never_exceeds_the_codestream_levels():
    assert j2k_level((4096, 4096), 64, available=1) == 1
    assert j2k_level((4096, 4096), 64, available=0) == 0


def test_levels_are_read_from_the_cod_marker(tmp_path):
    stored = _stored(128, 96)
    for resolutions in (1, 2, 4):
        info = j2k_codestream_info(_pillow_j2k(stored, resolutions))
        assert (info.rows, info.columns, info.levels, info.signed) == (128, 96, resolutions - 1, False)
    _, j2k = _copies(tmp_path)
    frame = pydicom.encaps.get_frame(pydicom.dcmread(j2k).PixelData, 0, number_of_frames=1)
    info = j2k_codestream_info(frame)
    assert (info.rows, info.columns, info.precision, info.levels) == (ROWS, COLS, 12, 5)


def test_reduce_beyond_levels_is_refused_and_never_asked_for():
    """Issue 19's "broken data stream": Pillow's reduce=2 on a codestream with one decomposition level."""
    stored = _stored(256, 200)
    frame = _pillow_j2k(stored, resolutions=2)  # one level: reduce 0 and 1 only
    with Image.open(io.BytesIO(frame)) as image:
        image.reduce = 2  # type: ignore[method-assign,assignment]
        with pytest.raises(OSError, match="broken data stream"):
            image.load()
    # 256 → 32 would like reduce=3; the codestream has one level, so we decode that one.
    array = decode_j2k_reduced(frame, 256, 200, longest_side=32)
    assert array.shape == (128, 100)


def test_reduced_level_is_the_block_mean_of_the_lossless_image():
    stored = _stored(bits=12)
    frame = _pillow_j2k(stored, resolutions=6)
    array = decode_j2k_reduced(frame, ROWS, COLS, longest_side=96)  # 600 → 150 covers 1.5 × 96 → level 2
    assert array.shape == (150, 130) and array.dtype == np.uint16
    block_mean = stored.astype(np.float64).reshape(150, 4, 130, 4).mean(axis=(1, 3))
    # The 5/3 wavelet's low-pass is not a box filter: they differ at edges and in the detector noise, but without bias.
    difference = array - block_mean
    assert abs(difference.mean()) < 0.001 * 4095
    assert np.median(np.abs(difference)) < 0.005 * 4095 and np.percentile(np.abs(difference), 99) < 0.1 * 4095


# ------------------------------------------------------------------------------------------ reader


def test_uncompressed_and_lossless_j2k_copies_give_the_same_tensor(tmp_path):
    """The tolerance, on the [0, 1] network input: ``full`` ≤ 1e-6 everywhere (the same pixels); ``reduced``: mean
    |Δ| ≤ 0.01, 99th percentile ≤ 0.1, max ≤ 0.2 (measured 0.007, 0.068, 0.156: the wavelet low-pass is not the
    area resize's box, which shows on the sharpest synthetic edges; the model-level effect is measured by
    benchmarks/decode_reduced.py).
    """
    plain, j2k = _copies(tmp_path, photometric="MONOCHROME1")
    for decode, tolerances in (("full", (1e-6, 1e-6, 1e-6)), ("reduced", (0.01, 0.1, 0.2))):
        transform = eval_transforms(Preprocessing(spatial_size=(96, 96), decode=decode))
        a, b = (transform({IMAGE_KEY: str(p)})[IMAGE_KEY] for p in (plain, j2k))
        assert a.shape == b.shape == (1, 96, 96)
        difference = (a - b).abs()
        measured = (float(difference.mean()), float(torch.quantile(difference, 0.99)), float(difference.max()))
        assert all(m <= t for m, t in zip(measured, tolerances, strict=True)), (decode, measured)
    # The reduced read really was reduced: 600 × 520 → level 2 (150 × 130) still covers 1.5 × (96 × 84).
    reader = DicomReader(ReadOptions(colour="luminance", reduced_longest_side=96))
    array, meta = reader.get_data(reader.read(str(j2k)))
    assert array.shape == (150, 130)
    assert np.allclose(meta["spacing"], [0.6, 0.6])  # the same anatomy over 4× bigger pixels
    plain_array, _ = reader.get_data(reader.read(str(plain)))
    assert plain_array.shape == (ROWS, COLS)  # uncompressed decodes in full


def test_baseline_jpeg_decodes_at_a_dct_scale(tmp_path):
    stored = np.round(render_chest_xray({}, seed=5, rows=ROWS, cols=COLS) * 255).astype(np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(stored).save(encoded, "JPEG", quality=95)
    ds = _dataset(stored, 8)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([encoded.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    path = _save(ds, tmp_path / "jpeg.dcm")
    reduced = decode_reduced(pydicom.dcmread(path), longest_side=96)
    assert reduced is not None and reduced.shape == (150, 130)  # the 1/4 DCT scale
    block_mean = stored.astype(np.float64).reshape(150, 4, 130, 4).mean(axis=(1, 3))
    assert np.median(np.abs(reduced - block_mean)) < 3  # 8-bit units
    full, _ = DicomReader(ReadOptions()).get_data(DicomReader(ReadOptions()).read(str(path)))
    assert full.shape == (ROWS, COLS)


def test_a_codestream_that_cannot_reduce_decodes_in_full_and_says_so_in_the_debug_log(tmp_path, caplog):
    stored = _stored(bits=16)
    ds = _dataset(stored, 16)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([_pillow_j2k(stored, resolutions=1)])  # no decomposition level at all
    ds["PixelData"].VR = "OB"
    path = _save(ds, tmp_path / "flat.dcm")
    reader = DicomReader(ReadOptions(reduced_longest_side=64))
    with caplog.at_level(logging.DEBUG, logger="medres.dicom.reduced_decode"):
        array, _ = reader.get_data(reader.read(str(path)))
    assert array.shape == (ROWS, COLS)
    assert np.array_equal(array, stored.astype(np.float32) * 2 - 100)
    assert any("decoding in full" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
    assert not any(r.levelno > logging.DEBUG for r in caplog.records)


# ------------------------------------------------------------------------------------------ contract


def test_decode_policy_is_in_the_contract_the_reader_and_the_cache_key(tmp_path):
    assert Preprocessing.from_dict({"spatial_size": [64, 64]}).decode == "full"  # packages before issue 19
    reduced = Preprocessing(spatial_size=(64, 48), decode="reduced")
    assert Preprocessing.from_dict(reduced.to_dict()) == reduced
    assert reduced.read_options().reduced_longest_side == 64
    assert Preprocessing(spatial_size=(64, 48)).read_options().reduced_longest_side is None
    assert load_and_normalise(reduced)[0].loader.reader.options.reduced_longest_side == 64  # training, cache fill
    with pytest.raises(ValueError, match="decode='reduced'"):
        Preprocessing(spatial_dims=3, spatial_size=(32, 32, 32), decode="reduced")
    with pytest.raises(ValueError, match="must be 'full' or 'reduced'"):
        Preprocessing(decode="half")  # type: ignore[arg-type]
    plain, _ = _copies(tmp_path)
    full_key = TensorCache(tmp_path / "cache", Preprocessing(spatial_size=(64, 48))).key(plain)
    reduced_key = TensorCache(tmp_path / "cache", reduced).key(plain)
    assert full_key != reduced_key
    assert isinstance(TensorCache(tmp_path / "cache", reduced).get(plain), torch.Tensor)
    assert math.isfinite(float(TensorCache(tmp_path / "cache", reduced).get(plain).mean()))
