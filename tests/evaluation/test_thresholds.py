import math

import numpy as np
import pytest
import torch

from medres.evaluation.thresholds import OperatingPoint, ThresholdRule, choose_thresholds


def recomputed(probs: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    called = probs >= threshold
    positive = labels == 1
    return float(called[positive].mean()), float((~called[~positive]).mean())


# Six samples, one finding. Scores high to low with their labels:
#   0.9 P, 0.8 P, 0.7 N, 0.6 P, 0.4 N, 0.2 N        (3 positives, 3 negatives)
# threshold  sens  spec  J
#   0.9      1/3   1     1/3
#   0.8      2/3   1     2/3   <- Youden (2/3 also at 0.6: tie, higher wins)
#   0.7      2/3   2/3   1/3
#   0.6      1     2/3   2/3
#   0.4      1     1/3   1/3
#   0.2      1     0     0
PROBS = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.2])
LABELS = np.array([1, 1, 0, 1, 0, 0], dtype=float)


def one(rule: ThresholdRule, probs: np.ndarray = PROBS, labels: np.ndarray = LABELS) -> OperatingPoint:
    (point,) = choose_thresholds(probs[:, None], labels[:, None], rule)
    return point


def test_youden_picks_max_j_and_breaks_ties_to_the_higher_threshold() -> None:
    point = one(ThresholdRule("youden"))
    assert point == OperatingPoint(0.8, 2 / 3, 1.0, 3, 3, "")


def test_sensitivity_takes_the_highest_threshold_reaching_the_target() -> None:
    assert one(ThresholdRule("sensitivity", target=1.0)).threshold == 0.6
    assert one(ThresholdRule("sensitivity", target=0.6)).threshold == 0.8  # 2/3 ≥ 0.6
    assert one(ThresholdRule("sensitivity", target=0.3)).threshold == 0.9


def test_specificity_takes_the_lowest_threshold_reaching_the_target() -> None:
    point = one(ThresholdRule("specificity", target=0.6))
    assert (point.threshold, point.sensitivity, point.specificity) == (0.6, 1.0, 2 / 3)
    assert one(ThresholdRule("specificity", target=1.0)).threshold == 0.8
    assert one(ThresholdRule("specificity", target=0.3)).threshold == 0.4


def test_exact_rate_targets_are_reached_without_rounding_trouble() -> None:
    # 10 positives: sensitivity 9/10 must count as reaching 0.9, and 7/10 as reaching 0.7.
    probs = np.linspace(0.05, 0.95, 20)
    labels = np.array([0] * 10 + [1] * 10, dtype=float)
    labels[[9, 10]] = labels[[10, 9]]  # one positive ranked below one negative
    for target in (0.9, 0.7, 0.3):
        point = one(ThresholdRule("sensitivity", target=target), probs, labels)
        assert point.sensitivity == pytest.approx(target) and point.sensitivity >= target
        point = one(ThresholdRule("specificity", target=target), probs, labels)
        assert point.specificity >= target


def test_specificity_one_with_a_top_scoring_negative_calls_nothing() -> None:
    probs = np.array([0.9, 0.5, 0.3])
    labels = np.array([0.0, 1.0, 0.0])
    point = one(ThresholdRule("specificity", target=1.0), probs, labels)
    assert point.threshold > 0.9 and point.threshold <= 1.0
    assert (point.sensitivity, point.specificity) == (0.0, 1.0)
    assert (probs >= point.threshold).sum() == 0


def test_call_nothing_cut_point_holds_in_float32() -> None:
    # A float64 nextafter would round back to the float32 maximum and call it.
    probs = np.array([0.7, 0.2, 0.1], dtype=np.float32)
    labels = np.array([0.0, 1.0, 0.0])
    point = one(ThresholdRule("specificity", target=1.0), probs, labels)
    assert (probs >= np.float32(point.threshold)).sum() == 0
    assert (probs >= point.threshold).sum() == 0
    assert point.specificity == 1.0


def test_negative_at_probability_one_is_reported_honestly() -> None:
    probs = np.array([1.0, 0.8, 0.1])
    labels = np.array([0.0, 1.0, 0.0])
    point = one(ThresholdRule("specificity", target=1.0), probs, labels)
    assert point.threshold == 1.0
    assert point.specificity == 0.5 and "no threshold reaches specificity 1.00" in point.note


def test_unknown_labels_are_left_out() -> None:
    labels = LABELS.copy()
    probs = PROBS.copy()
    # An unknown sample with a score that would otherwise become a cut point and change the counts.
    probs = np.append(probs, 0.85)
    labels = np.append(labels, np.nan)
    point = one(ThresholdRule("youden"), probs, labels)
    assert point == OperatingPoint(0.8, 2 / 3, 1.0, 3, 3, "")


def test_single_class_findings_fall_back_to_fixed() -> None:
    probs = np.array([[0.9, 0.9, 0.3], [0.2, 0.4, 0.6], [0.7, 0.1, 0.8]])
    targets = np.array([[1, 0, np.nan], [1, 0, np.nan], [1, 0, np.nan]])
    no_neg, no_pos, none = choose_thresholds(probs, targets, ThresholdRule("youden", fixed=0.5))
    assert no_neg.threshold == 0.5 and no_neg.note == "no negative labels: fixed 0.50 used"
    assert no_neg.sensitivity == 2 / 3 and math.isnan(no_neg.specificity)
    assert no_pos.note == "no positive labels: fixed 0.50 used"
    assert no_pos.specificity == 2 / 3 and math.isnan(no_pos.sensitivity)
    assert none.note == "no labelled samples: fixed 0.50 used" and (none.positives, none.negatives) == (0, 0)


def test_fixed_rule_reports_its_own_operating_point() -> None:
    point = one(ThresholdRule("fixed", fixed=0.65))
    assert point == OperatingPoint(0.65, 2 / 3, 2 / 3, 3, 3, "")


@pytest.mark.parametrize(
    "rule",
    [ThresholdRule("youden"), ThresholdRule("sensitivity", 0.85), ThresholdRule("specificity", 0.95)],
    ids=lambda r: r.describe(),
)
def test_reported_rates_equal_recomputed_ones_on_random_data(rule: ThresholdRule) -> None:
    rng = np.random.default_rng(3)
    targets = (rng.random((300, 4)) < [0.1, 0.3, 0.5, 0.05]).astype(float)
    targets[rng.random((300, 4)) < 0.1] = np.nan
    probs = np.clip(rng.normal(0.35 + 0.3 * np.nan_to_num(targets), 0.2), 0, 1).astype(np.float32)
    probs[:5, 0] = probs[5:10, 1] = probs[10:15, 2]  # ties between samples
    points = choose_thresholds(torch.from_numpy(probs), torch.from_numpy(targets), rule)
    for column, point in enumerate(points):
        keep = ~np.isnan(targets[:, column])
        sens, spec = recomputed(probs[keep, column], targets[keep, column], point.threshold)
        assert (point.sensitivity, point.specificity) == (sens, spec)
        assert 0.0 <= point.threshold <= 1.0 and point.note == ""
        if rule.method == "sensitivity":
            assert sens >= rule.target
            # Highest such threshold: the next score above calls fewer positives and misses the target.
            higher = np.unique(probs[keep, column])
            higher = higher[higher > point.threshold]
            if len(higher):
                assert recomputed(probs[keep, column], targets[keep, column], higher[0])[0] < rule.target
        if rule.method == "specificity":
            assert spec >= rule.target
            lower = np.unique(probs[keep, column])
            lower = lower[lower < point.threshold]
            if len(lower):
                assert recomputed(probs[keep, column], targets[keep, column], lower[-1])[1] < rule.target


def test_rule_validation_and_description() -> None:
    assert ThresholdRule().describe() == "Youden's J"
    assert ThresholdRule("specificity", 0.9).describe() == "specificity ≥ 0.90"
    assert ThresholdRule("fixed", fixed=0.5).describe() == "fixed 0.50"
    with pytest.raises(ValueError, match=r"model\.threshold_rule\.target must be in \(0, 1\], got 0"):
        ThresholdRule("sensitivity", target=0.0)
    with pytest.raises(ValueError, match=r"model\.threshold_rule\.fixed must be in \[0, 1\], got 1.5"):
        ThresholdRule(fixed=1.5)
    with pytest.raises(ValueError, match=r"model\.threshold_rule\.method"):
        ThresholdRule("f1")  # type: ignore[arg-type]


def test_bad_inputs_are_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="must both be"):
        choose_thresholds(np.zeros((3, 2)), np.zeros((3, 1)), ThresholdRule())
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        choose_thresholds(np.full((3, 1), 1.2), np.zeros((3, 1)), ThresholdRule())
    with pytest.raises(ValueError, match=r"1, 0 or NaN .*\[-1.0\]"):
        choose_thresholds(np.zeros((3, 1)), np.array([[1.0], [-1.0], [0.0]]), ThresholdRule())
