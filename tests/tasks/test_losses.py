import math

import pytest
import torch

from medres.tasks.losses import UncertainPolicy, masked_bce_with_logits, resolve_labels

NAN = float("nan")


def test_resolve_labels_policies():
    labels = torch.tensor([[1.0, 0.0, NAN, -1.0]])
    targets, mask = resolve_labels(labels, "ignore")
    assert mask.tolist() == [[True, True, False, False]]
    assert targets.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    targets, mask = resolve_labels(labels, UncertainPolicy.POSITIVE)
    assert mask.tolist() == [[True, True, False, True]]
    assert targets.tolist() == [[1.0, 0.0, 0.0, 1.0]]
    targets, mask = resolve_labels(labels, "negative")
    assert mask.tolist() == [[True, True, False, True]]
    assert targets.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    with pytest.raises(ValueError):
        resolve_labels(labels, "maybe")


def test_masked_bce_ignores_masked_entries():
    logits = torch.tensor([[2.0, -1.0, 100.0, -100.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, NAN, -1.0]])
    targets, mask = resolve_labels(labels, "ignore")
    loss = masked_bce_with_logits(logits, targets, mask)
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[0, 2] == 0 and logits.grad[0, 3] == 0  # unknown and uncertain get no gradient
    assert logits.grad[0, 0] != 0


def test_masked_bce_all_masked_is_zero_and_differentiable():
    logits = torch.zeros(2, 3, requires_grad=True)
    targets, mask = resolve_labels(torch.full((2, 3), NAN), "ignore")
    loss = masked_bce_with_logits(logits, targets, mask)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(2, 3))


def test_pos_weight_scales_positive_terms():
    logits = torch.zeros(1, 2)
    targets, mask = resolve_labels(torch.tensor([[1.0, 1.0]]), "ignore")
    plain = masked_bce_with_logits(logits, targets, mask)
    weighted = masked_bce_with_logits(logits, targets, mask, pos_weight=torch.tensor([3.0, 3.0]))
    assert weighted.item() == pytest.approx(3 * plain.item())
