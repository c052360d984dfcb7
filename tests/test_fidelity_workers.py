"""The search's fidelity workers: configs scored on spawned one-thread processes come back in the
caller's order with the scores this process computes (to float rounding), and a batch closed early
stops."""

from __future__ import annotations

import numpy as np
import pytest

from vitdeploy.models.registry import randomize_for_parity
from vitdeploy.models.swin import SwinTransformer
from vitdeploy.search.fidelity import FidelityEvaluator
from vitdeploy.search.fidelity_workers import FidelityWorkers, split_contiguous
from vitdeploy.search.space import SearchSpace


@pytest.fixture(scope="module")
def setup():
    m = SwinTransformer(32, (2, 2, 4, 2), (1, 2, 4, 8), num_classes=10, img_size=224, task="backbone",
                        variant="tiny")
    m = randomize_for_parity(m.eval(), seed=0)
    sp = SearchSpace.for_model(m.depths, 224, (0, 0.3, 0.7))
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    rng = np.random.default_rng(1)
    genes = list(dict.fromkeys(sp.sample(rng) for _ in range(12)))
    return m, sp, x, genes


def test_workers_score_what_this_process_scores_in_order(setup):
    m, sp, x, genes = setup
    here = FidelityEvaluator(m, sp, x)
    want = [here(g) for g in genes]
    with FidelityWorkers(m, sp, x, workers=2) as w:
        got = list(w.score(genes))
        again = list(w.score(genes[::-1]))  # a second batch on the same (now warm) workers
    assert len(got) == len(genes) and len({f.score for f in want}) > 3  # configs that differ
    for a, b in zip(got, want):
        assert a.score == pytest.approx(b.score, abs=1e-5)
        assert a.details["cosine_per_stage"] == pytest.approx(b.details["cosine_per_stage"], abs=1e-5)
    assert [f.score for f in again] == [f.score for f in got[::-1]]


def test_one_worker_is_this_process(setup):
    m, sp, x, genes = setup
    w = FidelityWorkers(m, sp, x, workers=1)
    assert [f.score for f in w.score(genes[:3])] == [FidelityEvaluator(m, sp, x)(g).score for g in genes[:3]]
    assert not w._pools


def test_closing_a_batch_early_keeps_the_workers_usable(setup):
    m, sp, x, genes = setup
    with FidelityWorkers(m, sp, x, workers=2) as w:
        it = w.score(genes)
        first = next(it)
        it.close()  # a time limit or Ctrl-C between two configs
        assert list(w.score(genes[:1]))[0].score == first.score


def test_split_is_contiguous_in_sorted_order_and_balanced():
    genes = [(3, 1), (0, 2), (1, 0), (0, 1), (2, 2)]
    w = split_contiguous(genes, 2)
    by_worker = [sorted(g for g, i in zip(genes, w) if i == k) for k in (0, 1)]
    assert by_worker == [[(0, 1), (0, 2), (1, 0)], [(2, 2), (3, 1)]]
    assert split_contiguous(genes[:1], 4) == [0]
