import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from petalnet.metrics import confusion_matrix, summary


@pytest.mark.parametrize("seed", range(5))
def test_macro_scores_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    present = rng.choice(104, size=12, replace=False)
    y = rng.choice(present, 500)
    # mostly right, some wrong, some predicting classes absent from the labels
    p = np.where(rng.random(500) < 0.7, y, rng.integers(0, 104, 500))
    got = summary(confusion_matrix(torch.tensor(y), torch.tensor(p), 104))
    assert got["accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"), abs=1e-12)
    assert got["macro_precision"] == pytest.approx(precision_score(y, p, average="macro", zero_division=0), abs=1e-12)
    assert got["macro_recall"] == pytest.approx(recall_score(y, p, average="macro", zero_division=0), abs=1e-12)


def test_confusion_matrices_sum_across_shards():
    y = torch.tensor([1, 2, 2, 3, 3, 3])
    p = torch.tensor([1, 2, 3, 3, 3, 1])
    whole = confusion_matrix(y, p, 5)
    halves = confusion_matrix(y[:3], p[:3], 5) + confusion_matrix(y[3:], p[3:], 5)
    assert torch.equal(whole, halves) and whole[3, 1] == 1 and whole.sum() == 6
