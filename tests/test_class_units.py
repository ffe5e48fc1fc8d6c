"""Codes against neurons at matched recall (workbench/evaluation/class_units.py), by hand."""

from __future__ import annotations

import torch

from workbench.evaluation.class_units import best_codes, best_unit_precision, precision_at_recall


def test_precision_at_recall_by_hand():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    positive = torch.tensor([True, False, True, False, False, True])
    assert precision_at_recall(scores, positive, 1 / 3) == 1.0          # the top item is positive
    assert precision_at_recall(scores, positive, 2 / 3) == 2 / 3        # two positives among the top three
    assert precision_at_recall(scores, positive, 1.0) == 0.5            # all three need all six
    both = precision_at_recall(torch.stack([scores, -scores]), positive, 1.0)
    assert both.tolist() == [0.5, 0.5]


def test_best_codes_and_the_neuron_at_their_recall():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    code_ids = torch.tensor([[3], [3], [3], [5], [7], [7], [7], [3]])   # code 3: class 0 (3 of 4, once wrong)
    match = best_codes(code_ids, labels, d_sae=8, n_classes=2)
    assert match.code.tolist() == [3, 7]
    torch.testing.assert_close(match.precision, torch.tensor([0.75, 1.0]))
    torch.testing.assert_close(match.recall, torch.tensor([0.75, 0.75]))
    neuron = torch.tensor([[1.0], [0.9], [0.1], [0.8], [0.7], [0.2], [0.3], [0.0]])   # high on class 0 mostly
    precision = best_unit_precision(neuron, labels, match.recall)
    # class 0 at recall 3/4: ranks 1.0, 0.9, 0.8 are all class 0 -> 1.0; class 1 read negated:
    # 0.0(1), 0.1(0), 0.2(1), 0.3(1) -> three class-1 items among four -> 0.75
    torch.testing.assert_close(precision, torch.tensor([1.0, 0.75]))
