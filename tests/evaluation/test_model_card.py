import re

import numpy as np
import pytest

from medres.evaluation.metrics import CI_METRICS, evaluate
from medres.evaluation.model_card import format_interval, render_model_card
from medres.evaluation.thresholds import ThresholdRule, choose_thresholds

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]
NUMBER = r"(-?\d+\.\d+)"


def predictions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, 4)) < [0.2, 0.3, 0.5, 0.15]).astype(float)
    probs = np.clip(rng.normal(0.3 + 0.35 * targets, 0.2), 0, 1).astype(np.float32)
    targets[rng.random((n, 4)) < 0.1] = np.nan
    return probs, targets


DATA = {
    "findings": FINDINGS,
    "samples": {"train": 200, "val": 80, "test": 90},
    "patients": {"train": 100, "val": 40, "test": 45},
    "counts": {
        split: {
            f: {"positive": 10 + i, "negative": 50 + i, "unknown": i, "uncertain": 0} for i, f in enumerate(FINDINGS)
        }
        for split in ("train", "val", "test")
    },
    "fingerprint": "ab" * 32,
}


@pytest.fixture(scope="module")
def card_inputs() -> tuple:
    val_probs, val_targets = predictions(80, 1)
    rule = ThresholdRule("specificity", target=0.8)
    points = choose_thresholds(val_probs, val_targets, rule)
    test_probs, test_targets = predictions(90, 2)
    groups = np.repeat(np.arange(45), 2).astype(str)  # two images per patient
    report = evaluate(test_probs, test_targets, FINDINGS, [p.threshold for p in points], groups=groups, resamples=300)
    return report, points, rule


def render(card_inputs: tuple, **kwargs: object) -> str:
    report, points, rule = card_inputs
    defaults: dict[str, object] = {
        "model_name": "chest_xray",
        "model_version": 3,
        "backbone": "resnet18",
        "parameters": 11_171_268,
        "spatial_dims": 2,
        "in_channels": 1,
        "preprocessing": {"spatial_size": (64, 64), "lower_percentile": 0.5, "name": "chest_xray"},
        "data_summary": DATA,
        "synthetic_data": True,
    }
    return render_model_card(report, points, rule, **{**defaults, **kwargs})  # type: ignore[arg-type]


def table_row(card: str, first_cell: str, header: str) -> list[str]:
    section = card[card.index(header) :]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} under {header!r}")


def test_metric_numbers_equal_the_computed_ones(card_inputs: tuple) -> None:
    report, _, _ = card_inputs
    card = render(card_inputs)
    for m in report.findings:
        cells = table_row(card, m.finding, "## Metrics on the test split")
        assert cells[1:3] == [str(m.positives), str(m.negatives)]
        for cell, metric in zip(cells[3:], CI_METRICS, strict=True):
            value, low, high = (float(x) for x in re.fullmatch(rf"{NUMBER} \({NUMBER}–{NUMBER}\)", cell).groups())
            ci = getattr(m, f"{metric}_ci")
            assert value == pytest.approx(getattr(m, metric), abs=5e-4)
            assert (low, high) == pytest.approx(ci, abs=5e-4)
    assert f"Mean AUROC over findings: {report.macro_auroc:.3f}." in card
    assert "95 % percentile bootstrap, 300 resamples of 45 patients (seed 0)" in card


def test_thresholds_and_calibration_equal_the_computed_ones(card_inputs: tuple) -> None:
    report, points, _ = card_inputs
    card = render(card_inputs)
    assert "Rule: specificity ≥ 0.80, applied to the validation split." in card
    for finding, point in zip(FINDINGS, points, strict=True):
        cells = table_row(card, finding, "## Operating thresholds")
        assert float(cells[1]) == pytest.approx(point.threshold, abs=5e-5)
        assert float(cells[2]) == pytest.approx(point.sensitivity, abs=5e-4)
        assert float(cells[3]) == pytest.approx(point.specificity, abs=5e-4)
        assert cells[4:6] == [str(point.positives), str(point.negatives)]
        assert float(table_row(card, finding, "## Calibration")[1]) == pytest.approx(report[finding].ece, abs=5e-4)


def test_card_sections_and_data(card_inputs: tuple) -> None:
    card = render(card_inputs)
    assert card.startswith("# Model card: chest_xray (version 3)\n")
    for heading in ("Intended use and limitations", "Model", "Data", "Operating thresholds", "Calibration"):
        assert f"\n## {heading}\n" in card
    assert "not a medical device" in card and "Synthetic data" in card
    assert "| Parameters | 11,171,268 |" in card and "| Backbone | `resnet18` |" in card
    assert "- `spatial_size`: (64, 64)" in card and "- `lower_percentile`: 0.5" in card
    assert table_row(card, "validation", "| Split | Samples") == ["validation", "80", "40"]
    assert table_row(card, "effusion", "| Finding | Split")[1:] == ["training", "11", "51", "1", "0"]
    assert "medres score --model models:/chest_xray@champion --input DIR --output predictions.parquet" in card
    assert "Trained and evaluated on 185 patients in all." in card
    digests = {split: f"{i}" * 64 for i, split in enumerate(("train", "val", "test"))}
    with_digests = render(card_inputs, data_summary={**DATA, "digests": digests})
    assert table_row(with_digests, "validation", "| Split | Samples") == ["validation", "80", "40", f"`{'1' * 16}`"]


def test_card_is_deterministic_and_minimal_inputs_work(card_inputs: tuple) -> None:
    assert render(card_inputs) == render(card_inputs)
    assert "Created" not in render(card_inputs)
    assert "Created: 2025-01-02" in render(card_inputs, created="2025-01-02")
    report, points, rule = card_inputs
    bare = render_model_card(report, points, rule)
    assert bare.startswith("# Model card: medres detection model\n")
    assert "## Data" not in bare and "Synthetic" not in bare and "models:/NAME@champion" in bare
    with pytest.raises(ValueError, match="3 operating points for 4 findings"):
        render_model_card(report, points[:3], rule)


def test_undefined_values_print_as_dashes() -> None:
    assert format_interval(float("nan"), (float("nan"), float("nan"))) == "–"
    assert format_interval(0.5, (float("nan"), float("nan"))) == "0.500"
    assert format_interval(0.91234, (0.8, 0.95)) == "0.912 (0.800–0.950)"
