"""Detection metrics against small cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medres.evaluation.detection_metrics import (
    HitRule,
    ImageBoxes,
    detection_bootstrap_ci,
    detection_metrics,
    froc,
    image_scores,
    mean_average_precision,
)


def _case() -> list[ImageBoxes]:
    # Image 1: lesion A (0-10), predicted at 0.9 exactly and by a duplicate at 0.6 (IoU 64/100 = 0.64),
    #          a false positive at 0.8.
    # Image 2: lesion B (20-40) found only at 0.3 (IoU 100/400 = 0.25), a false positive at 0.95.
    # Image 3: no lesion, no prediction.
    # Image 4: lesion C (50-60) missed entirely; a false positive at 0.5 far away.
    return [
        ImageBoxes(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [50, 50, 60, 60], [2, 2, 10, 10]]),
                   np.array([0.9, 0.8, 0.6])),
        ImageBoxes(np.array([[20, 20, 40, 40]]), np.array([[20, 20, 30, 30], [0, 0, 5, 5]]), np.array([0.3, 0.95])),
        ImageBoxes(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0)),
        ImageBoxes(np.array([[50, 50, 60, 60]]), np.array([[0, 0, 4, 4]]), np.array([0.5])),
    ]  # fmt: skip


def test_froc_by_hand() -> None:
    # Lesion best scores: A 0.9, B 0.3, C never. False positives: 0.95, 0.8, 0.5 (the 0.6 duplicate is neither).
    # Threshold 0.95: 1 FP (0.25/img), sens 0 | 0.9: 1 FP, 1/3 | 0.8: 2 FP (0.5), 1/3 | 0.5: 3 FP (0.75), 1/3
    # | 0.3: 3 FP, 2/3.  So: 1/8 -> 0 (only the empty threshold), 1/4 -> 1/3, 1/2 -> 1/3, >= 1 -> 2/3.
    result = froc(_case(), HitRule("iou", 0.1))
    np.testing.assert_allclose(result.sensitivities, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert result.cpm == pytest.approx((0 + 1 / 3 + 1 / 3 + 4 * 2 / 3) / 7)
    assert result.lesions == 3 and result.images == 4
    assert result.sensitivity_at(1.0) == pytest.approx(2 / 3)


def test_froc_hit_rule_changes_the_answer() -> None:
    # At IoU >= 0.3 lesion B's only hit (IoU 0.25) becomes a false positive at 0.3.
    strict = froc(_case(), HitRule("iou", 0.3))
    np.testing.assert_allclose(strict.sensitivities, [0, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3])
    # Centre rule: B's prediction centre (25, 25) lies inside B's inscribed circle (centre 30, radius 10).
    centre = froc(_case(), HitRule("centre"))
    np.testing.assert_allclose(centre.sensitivities, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])


def test_centre_rule_is_the_inscribed_ellipse() -> None:
    rule = HitRule("centre")
    truth = np.array([[0, 0, 20, 10]])  # centre (10, 5), half sides (10, 5)
    predicted = np.array([[17, 3, 21, 7], [6, 8, 10, 12], [-2, -2, 2, 2]])  # centres (19,5) (8,10) (0,0)
    # (19-10)/10 = 0.9 -> 0.81 inside; (8-10)/10, (10-5)/5 -> 0.04 + 1 = 1.04 outside; corner (0,0) -> 2 outside.
    assert rule.hits(predicted, truth)[:, 0].tolist() == [True, False, False]
    # A LUNA16-style cube: centre within the radius in 3D.
    cube = np.array([[0, 0, 0, 10, 10, 10]])
    near = np.array([[3, 3, 3, 9, 9, 9], [6, 6, 6, 12, 12, 12]])  # centres 6 (dist 1.73) and 9 (dist 6.9) vs 5
    assert rule.hits(near, cube)[:, 0].tolist() == [True, False]


def test_map_by_hand() -> None:
    # One lesion, predictions by score: 0.95 FP, 0.9 TP, 0.8 FP -> precision 1/2 at recall 1: AP = 0.5.
    images = [
        ImageBoxes(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0.9, 0.8])),
        ImageBoxes(np.zeros((0, 4)), np.array([[5, 5, 9, 9]]), np.array([0.95])),
    ]
    assert mean_average_precision(images) == pytest.approx({0.1: 0.5, 0.5: 0.5})
    # Shifted prediction: IoU 0.25 is a hit at 0.1 only; at 0.5 nothing is found.
    shifted = [ImageBoxes(np.array([[0, 0, 20, 20]]), np.array([[0, 0, 10, 10]]), np.array([0.7]))]
    assert mean_average_precision(shifted) == pytest.approx({0.1: 1.0, 0.5: 0.0})


def test_image_scores_are_the_top_box() -> None:
    assert image_scores(_case()).tolist() == [0.9, 0.95, 0.0, 0.5]


def test_bootstrap_draws_whole_patients() -> None:
    images = _case()
    point = detection_metrics(images)
    ci = detection_bootstrap_ci(images, groups=["p1", "p1", "p2", "p3"], resamples=60, seed=1)
    assert ci.clusters == 3 and ci.resamples == 60
    for name in ("cpm", "sens_at_1fp", "map_0.1"):
        assert ci.low[name] <= point[name] <= ci.high[name]
        assert ci.low[name] < ci.high[name]  # three patients with different outcomes: the interval has width
    with pytest.raises(ValueError, match="one key per image"):
        detection_bootstrap_ci(images, groups=["p1"])


def test_threshold_at_fp_rate_worked_by_hand() -> None:
    # Two images. Image 1: a lesion hit at 0.9, false positives at 0.8 and 0.3. Image 2: false positive at 0.6.
    from medres.evaluation.detection_metrics import threshold_at_fp_rate

    lesion = [0, 0, 10, 10]
    far = [50, 50, 60, 60]
    images = [
        ImageBoxes(np.array([lesion]), np.array([lesion, far, far]), np.array([0.9, 0.8, 0.3])),
        ImageBoxes(np.zeros((0, 4)), np.array([far]), np.array([0.6])),
    ]
    # FPs per image by threshold: 0.9 → 0, 0.8 → 0.5, 0.6 → 1.0, 0.3 → 1.5.
    assert threshold_at_fp_rate(images, 0.0) == 0.9
    assert threshold_at_fp_rate(images, 0.5) == 0.8
    assert threshold_at_fp_rate(images, 1.0) == 0.6
    assert threshold_at_fp_rate(images, 2.0) == 0.3
    with pytest.raises(ValueError, match="≥ 0"):
        threshold_at_fp_rate(images, -1)
