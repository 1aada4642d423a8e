"""The count baselines on constructed token streams with known answers."""

from __future__ import annotations

import pytest

from acepilot.training.perplexity import BigramModel


def test_bigram_model_successors_and_perplexity() -> None:
    train = [1, 2, 1, 2, 1, 3, 4, 4, 4, 4]
    model = BigramModel(train, vocab=6)
    assert model.successor[1] == 2  # 1->2 twice, 1->3 once
    assert model.successor[3] == 4 and model.successor[4] == 4
    assert model.successor[5] == 4  # never seen as a context: the commonest token
    assert model.greedy(1, 3) == [2, 1, 2]
    seen = model.cross_entropy([[1, 2, 1, 2]])
    unseen = model.cross_entropy([[5, 0, 5, 0]])
    assert seen < unseen
    with pytest.raises(ValueError):
        BigramModel([1, 9], vocab=4)
