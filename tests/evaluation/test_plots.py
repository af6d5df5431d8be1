from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from medres.evaluation.plots import DPI, plot_calibration, plot_confusion, plot_roc_pr

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pleural/other"]


@pytest.fixture
def predictions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    targets = (rng.random((120, 4)) < [0.2, 0.4, 0.5, 0.3]).astype(float)
    probs = np.clip(rng.normal(0.3 + 0.4 * targets, 0.2), 0, 1).astype(np.float32)
    targets[rng.random((120, 4)) < 0.1] = np.nan
    targets[:, 3] = np.where(np.isnan(targets[:, 3]), np.nan, 0.0)  # a finding without positives
    return probs, targets


def read_png(path: Path) -> np.ndarray:
    assert path.suffix == ".png" and path.stat().st_size > 5_000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.05  # something is drawn
    return image


def test_roc_pr_writes_one_png_per_finding(predictions: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    probs, targets = predictions
    paths = plot_roc_pr(probs, targets, FINDINGS, tmp_path / "roc", thresholds=[0.5, 0.4, 0.5, 0.5])
    assert [p.name for p in paths] == [
        "roc_pr_nodule.png",
        "roc_pr_effusion.png",
        "roc_pr_cardiomegaly.png",
        "roc_pr_pleural_other.png",  # '/' would make a folder
    ]
    for path in paths:
        assert read_png(path).shape[:2] == (round(4.6 * DPI), 10 * DPI)
    # Without thresholds no point is marked; the file still has both panels.
    (path,) = plot_roc_pr(probs[:, :1], targets[:, :1], ["nodule"], tmp_path / "plain")
    assert read_png(path).shape[:2] == (round(4.6 * DPI), 10 * DPI)


def test_confusion_grid(predictions: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    probs, targets = predictions
    path = plot_confusion(probs, targets, FINDINGS, [0.5] * 4, tmp_path / "confusion.png")
    assert path == tmp_path / "confusion.png"
    assert read_png(path).shape[:2] == (round((3.3 + 0.6) * DPI), round(4 * 3.4 * DPI))
    six = plot_confusion(
        np.tile(probs, (1, 2))[:, :6],
        np.tile(targets, (1, 2))[:, :6],
        [f"f{i}" for i in range(6)],
        [0.5] * 6,
        tmp_path / "six.png",
    )
    assert read_png(six).shape[:2] == (round((2 * 3.3 + 0.6) * DPI), round(4 * 3.4 * DPI))


def test_calibration_diagram(predictions: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    probs, targets = predictions
    path = plot_calibration(probs, targets, FINDINGS, tmp_path / "sub" / "calibration.png", bins=8)
    assert read_png(path).shape[:2] == (round(7.2 * DPI), round(6.4 * DPI))


def test_mismatched_names_are_refused(predictions: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    probs, targets = predictions
    with pytest.raises(ValueError, match="3 finding names for predictions with 4 columns"):
        plot_calibration(probs, targets, FINDINGS[:3], tmp_path / "c.png")
    with pytest.raises(ValueError, match="2 thresholds for predictions with 4 columns"):
        plot_confusion(probs, targets, FINDINGS, [0.5, 0.5], tmp_path / "c.png")
