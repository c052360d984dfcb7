"""Stages that mix dense and pruned block pairs, and deep stages whose later pairs prune more:
the configs `vitdeploy search` produces (e.g. [0, 0, 0.2, 0.2, 0.4, 0.4]), against the
independent slow reference of test_swin_model.py. Later blocks must take the *first* k of the
stage's sorted index set (the reference's ``w_index[:, :res_nW]``); taking the last k, or
recomputing the top-k per block, changes which windows run and fails here."""

from __future__ import annotations

import pytest
import torch
from test_swin_model import ref_forward, tiny

from conftest import rel_err as _rel

DEEP = (2, 2, 6, 2)  # Swin-T depths: stage 2 has three pairs


@pytest.mark.parametrize("img,ratios", [
    # dense pair, then two pruned pairs with shrinking prefixes (stage 2: 4 windows, keeps 3 then 2)
    (224, [[0, 0], [0, 0], [0, 0, 0.2, 0.2, 0.4, 0.4], [0, 0]]),
    # 448: stage 2 has 16 windows, keeps 12 then 9; stage 0 pruned too
    (448, [[0.3, 0.3], [0, 0], [0, 0, 0.2, 0.2, 0.4, 0.4], [0, 0]]),
    # every pair of the deep stage pruned (token-map path), three nested prefixes 14 > 11 > 8
    (448, [[0, 0], [0.2, 0.2], [0.1, 0.1, 0.3, 0.3, 0.5, 0.5], [0, 0]]),
    # padded stage 2 (20x20 map -> 21x21, 9 windows): dense, then keeps 6 and 3
    (320, [[0, 0], [0, 0], [0, 0, 0.3, 0.3, 0.6, 0.6], [0, 0]]),
])
def test_mixed_and_deep_stage_configs_match_slow_reference(img, ratios):
    m = tiny(img, ratios, task="backbone", depths=DEEP, seed=5)
    x = torch.randn(1, 3, img, img)
    with torch.no_grad():
        ys = m(x)
    for y, r in zip(ys, ref_forward(m, x, ratios)):
        assert y.shape == r.shape
        assert _rel(y, r) < 1e-5


def test_later_pairs_prune_a_different_window_set_than_the_first():
    """Guard that the configs above really exercise the prefix: with 4 windows kept 3 then 2,
    the first-2 and last-2 of the sorted index set are different windows for this input."""
    ratios = [[0, 0], [0, 0], [0, 0, 0.2, 0.2, 0.4, 0.4], [0, 0]]
    m = tiny(224, ratios, task="backbone", depths=DEEP, seed=5)
    rec = []
    ref_forward(m, torch.randn(1, 3, 224, 224), ratios, record=rec)
    stage2 = rec[4:10]  # blocks of stages 0, 1 come first (2 each)
    first, last = stage2[2][0].tolist(), stage2[4][0].tolist()
    assert len(first) == 3 and len(last) == 2 and last == first[:2]
    assert first[-2:] != first[:2]
