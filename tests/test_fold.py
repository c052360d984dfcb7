"""BatchNorm folding is generic (not tied to our model classes) and exact to rounding."""

import copy

import pytest
import torch
from torch import nn

from vitdeploy.export.fold import count_batchnorm, fold_batchnorm, folded_copy


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.1 + torch.rand(m.running_var.shape, generator=g) * 3)
    return model.eval()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=True), nn.BatchNorm2d(16))
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU())
        # BN *before* the linear, with a dropout between (EfficientViT/timm NormLinear)
        self.head = nn.Sequential(nn.BatchNorm1d(32), nn.Dropout(0.1), nn.Linear(32, 10, bias=False))

    def forward(self, x):
        x = self.dw(self.stem(x))
        x = x.mean((2, 3))
        return self.head(self.mlp(x))


def test_all_three_patterns_fold_exactly():
    torch.manual_seed(0)
    m = _randomize_bn(Net())
    f = copy.deepcopy(m)
    counts = fold_batchnorm(f)
    assert counts == {"conv_bn": 2, "linear_bn": 1, "bn_linear": 1}
    assert count_batchnorm(f) == 0
    x = torch.randn(4, 3, 20, 20)
    with torch.no_grad():
        ref, out = m(x), f(x)
    rel = (ref - out).abs().max() / ref.abs().max()
    assert rel < 1e-5, rel


def test_folded_copy_leaves_original_untouched():
    m = _randomize_bn(Net())
    n_before = count_batchnorm(m)
    f = folded_copy(m)
    assert count_batchnorm(m) == n_before == 4
    assert count_batchnorm(f) == 0


def test_lone_batchnorm_is_not_touched():
    # a BN with nothing foldable next to it must stay (folding must never change the math)
    m = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4)).eval()
    counts = fold_batchnorm(m)
    assert sum(counts.values()) == 0 and count_batchnorm(m) == 1


def test_bn_without_running_stats_is_refused():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError):
        fold_batchnorm(m)


def test_model_specific_deploy_fusion_runs_after_folding():
    """EfficientViT's q scale moves into the depthwise conv only once BN is folded, exactly."""
    from vitdeploy.export.fold import fuse_for_deploy
    from vitdeploy.models.efficientvit import build_efficientvit
    from vitdeploy.models.registry import randomize_for_parity

    m = randomize_for_parity(build_efficientvit("efficientvit_m0"), seed=1).eval()
    unfused = copy.deepcopy(m)
    assert fuse_for_deploy(unfused) == 0  # BN still there: refuses (scale would land before the BN)
    f = folded_copy(m)
    scales = [a.scale for a in f.modules() if hasattr(a, "fuse_for_deploy")]
    assert scales and all(s == 1.0 for s in scales)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref, out = m(x), f(x)
    assert ((ref - out).abs().max() / ref.abs().max()) < 1e-5
