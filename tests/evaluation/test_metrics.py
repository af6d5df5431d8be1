import math
import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from medres.evaluation.metrics import CI_METRICS, _weighted_metrics, bootstrap_ci, calibration_bins, evaluate

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]


def random_predictions(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, 4)) < [0.2, 0.3, 0.5, 0.1]).astype(float)
    probs = np.clip(rng.normal(0.3 + 0.35 * targets, 0.2), 0, 1).astype(np.float32)
    targets[rng.random((n, 4)) < 0.1] = np.nan
    return probs, targets


def test_point_metrics_by_hand() -> None:
    # Scores with labels: 0.9 P, 0.8 N, 0.7 P, 0.4 N, 0.3 P, 0.1 N, plus one unknown.
    probs = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.1, 0.5])[:, None]
    targets = np.array([1, 0, 1, 0, 1, 0, np.nan])[:, None]
    m = evaluate(probs, targets, ["nodule"], [0.5], resamples=0)["nodule"]
    # At 0.5: calls 0.9 P, 0.8 N, 0.7 P -> TP 2, FP 1, FN 1, TN 2.
    assert (m.true_positives, m.false_positives, m.false_negatives, m.true_negatives) == (2, 1, 1, 2)
    assert (m.sensitivity, m.specificity, m.ppv, m.npv) == (2 / 3, 2 / 3, 2 / 3, 2 / 3)
    assert (m.positives, m.negatives, m.unknown) == (3, 3, 1)
    # Pairs (P, N) ranked right: 0.9 beats 3, 0.7 beats 2, 0.3 beats 1 -> 6 of 9.
    assert m.auroc == pytest.approx(6 / 9)
    # AP: recall steps at 0.9 (precision 1), 0.7 (2/3), 0.3 (3/5).
    assert m.average_precision == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert math.isnan(m.auroc_ci[0])


def test_weighted_metrics_equal_sklearn_with_sample_weight() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(80), 1).astype(np.float32)  # rounding makes many ties
    labels = rng.random(80) < 0.4
    weights = rng.multinomial(80, np.full(80, 1 / 80), size=5).astype(float)
    got = _weighted_metrics(scores, labels, 0.5, weights)
    for row, w in enumerate(weights):
        assert got["auroc"][row] == pytest.approx(roc_auc_score(labels, scores, sample_weight=w), abs=1e-12)
        assert got["average_precision"][row] == pytest.approx(
            average_precision_score(labels, scores, sample_weight=w), abs=1e-12
        )
        called = scores >= 0.5
        assert got["sensitivity"][row] == pytest.approx(w[labels & called].sum() / w[labels].sum())
        assert got["npv"][row] == pytest.approx(w[~labels & ~called].sum() / w[~called].sum())


def test_intervals_contain_the_estimate_and_are_reproducible() -> None:
    probs, targets = random_predictions()
    report = evaluate(probs, targets, FINDINGS, [0.5] * 4, resamples=500, seed=7)
    again = evaluate(probs, targets, FINDINGS, [0.5] * 4, resamples=500, seed=7)
    assert report == again
    for m in report.findings:
        for metric in CI_METRICS:
            low, high = getattr(m, f"{metric}_ci")
            assert low <= getattr(m, metric) <= high, (m.finding, metric)
            assert 0 < high - low < 0.5
    assert report.clusters == 300 and not report.grouped


def test_patient_clusters_do_not_narrow_the_interval() -> None:
    probs, targets = random_predictions(n=120)
    # Every patient imaged five times with the same result: five times the rows, no new information.
    copies = 5
    many_probs, many_targets = np.repeat(probs, copies, axis=0), np.repeat(targets, copies, axis=0)
    patients = np.repeat([f"key{i:03d}" for i in range(120)], copies)
    single = bootstrap_ci(probs, targets, [0.5] * 4, resamples=400, seed=3)
    clustered = bootstrap_ci(many_probs, many_targets, [0.5] * 4, groups=patients, resamples=400, seed=3)
    naive = bootstrap_ci(many_probs, many_targets, [0.5] * 4, resamples=400, seed=3)
    # Drawing patients draws the same counts as drawing the original rows: identical intervals.
    for metric in CI_METRICS:
        np.testing.assert_allclose(clustered.low[metric], single.low[metric], rtol=1e-12)
        np.testing.assert_allclose(clustered.high[metric], single.high[metric], rtol=1e-12)
    width = {name: r.high["auroc"] - r.low["auroc"] for name, r in {"clustered": clustered, "naive": naive}.items()}
    assert (width["naive"] < 0.7 * width["clustered"]).all()  # about 1/sqrt(5) as wide if rows were resampled
    assert clustered.clusters == 120 and naive.clusters == 600


def test_single_class_resamples_are_skipped_and_counted() -> None:
    n = 40
    probs = np.linspace(0.01, 0.99, n)[:, None]
    targets = np.zeros((n, 1))
    targets[-1] = 1  # one positive: about (1 - 1/40)^40 ≈ 36 % of resamples miss it
    result = bootstrap_ci(probs, targets, [0.5], resamples=1000, seed=0)
    assert 300 < result.skipped[0] < 420
    report = evaluate(probs, targets, ["nodule"], [0.5], resamples=1000, seed=0)
    assert report["nodule"].bootstrap_skipped == result.skipped[0]
    assert report.to_dict()["bootstrap_skipped_nodule"] == float(result.skipped[0])


def test_bootstrap_is_fast_enough() -> None:
    probs, targets = random_predictions(n=300)
    start = time.perf_counter()
    bootstrap_ci(probs, targets, [0.5] * 4, resamples=1000, seed=0)
    assert time.perf_counter() - start < 2.0


def test_to_dict_is_flat_and_matches_the_dataclasses() -> None:
    probs, targets = random_predictions(n=100)
    report = evaluate(probs, targets, FINDINGS, [0.4, 0.5, 0.6, 0.5], resamples=200)
    flat = report.to_dict(prefix="test/")
    m = report["effusion"]
    assert flat["test/auroc_effusion"] == m.auroc
    assert flat["test/auroc_effusion_ci_low"] == m.auroc_ci[0]
    assert flat["test/npv_effusion_ci_high"] == m.npv_ci[1]
    assert flat["test/threshold_effusion"] == 0.5 and flat["test/ece_effusion"] == m.ece
    assert flat["test/unknown_effusion"] == float(np.isnan(targets[:, 1]).sum())
    assert flat["test/auroc_macro"] == pytest.approx(np.mean([f.auroc for f in report.findings]))
    assert all(isinstance(v, float) for v in flat.values())
    assert len(flat) == 4 * (8 + 12 + 3 + 1) + 1
    with pytest.raises(KeyError, match="no finding 'mass'"):
        report["mass"]


def test_calibration_bins_and_ece_by_hand() -> None:
    probs = np.array([0.05, 0.15, 0.15, 0.95, 1.0])
    labels = np.array([0.0, 0.0, 1.0, 1.0, 1.0])
    bins = calibration_bins(probs, labels, bins=10)
    assert bins.counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins.mean_predicted[1] == pytest.approx(0.15) and bins.fraction_positive[1] == 0.5
    assert math.isnan(bins.mean_predicted[5])
    # |0.05-0|·1 + |0.15-0.5|·2 + |0.975-1|·2, over 5
    assert bins.ece == pytest.approx((0.05 + 0.7 + 0.05) / 5)
    report = evaluate(probs[:, None], labels[:, None], ["nodule"], [0.5], resamples=0)
    assert report["nodule"].ece == bins.ece


def test_mismatched_inputs_are_refused() -> None:
    probs, targets = random_predictions(n=20)
    with pytest.raises(ValueError, match="3 findings and 4 thresholds for predictions with 4 columns"):
        evaluate(probs, targets, FINDINGS[:3], [0.5] * 4)
    with pytest.raises(ValueError, match="one key per row"):
        bootstrap_ci(probs, targets, [0.5] * 4, groups=["a", "b"])
