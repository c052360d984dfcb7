"""Parity metrics: each failure mode is detected and reported with its number."""

import numpy as np

from vitdeploy.validation.parity import compare_outputs


def _logits(seed=0, n=16, k=100):
    return np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32) * 3


def test_identical_outputs_pass():
    a = _logits()
    r = compare_outputs({"logits": a}, {"logits": a.copy()}, reference="torch", candidate="ort")
    assert r.passed and r.outputs[0].max_abs_err == 0 and r.outputs[0].top1_agreement == 1.0


def test_small_noise_fp32_fails_but_fp16_passes():
    a = _logits()
    b = a + np.random.default_rng(1).standard_normal(a.shape).astype(np.float32) * 1e-3
    fp32 = compare_outputs({"logits": a}, {"logits": b}, reference="t", candidate="c", precision="fp32")
    assert not fp32.passed and "max_rel" in fp32.outputs[0].failures[0]
    fp16 = compare_outputs({"logits": a}, {"logits": b}, reference="t", candidate="c", precision="fp16")
    assert fp16.passed, fp16.table()


def test_top1_flip_is_caught():
    a = _logits()
    b = a.copy()
    i = int(a[0].argmax())
    b[0, i] -= 100  # the winner loses
    r = compare_outputs({"logits": a}, {"logits": b}, reference="t", candidate="c", precision="fp16")
    assert not r.passed
    assert r.outputs[0].top1_agreement == 15 / 16
    assert "FAIL" in r.table()


def test_shape_mismatch_and_missing_output_and_nan():
    a = _logits()
    r = compare_outputs({"logits": a, "x": a}, {"logits": a[:, :10]}, reference="t", candidate="c")
    assert not r.passed
    msgs = [f for o in r.outputs for f in o.failures]
    assert any("shape" in m for m in msgs) and any("no output" in m for m in msgs)
    b = a.copy()
    b[0, 0] = np.nan
    r = compare_outputs({"logits": a}, {"logits": b}, reference="t", candidate="c", precision="fp16")
    assert not r.passed


def test_feature_maps_have_no_topk_metrics():
    f = np.random.default_rng(0).standard_normal((2, 8, 4, 4)).astype(np.float32)
    r = compare_outputs({"features.0": f}, {"features.0": f}, reference="t", candidate="c", task="backbone")
    assert r.passed and r.outputs[0].top1_agreement is None
