"""INT8 / FP8 Q/DQ exports (vitdeploy.export.quantize, issue 11).

Tier 1: every Q/DQ of the exported graphs is checked against TensorRT's explicit-quantization
rules (written out here, independently of the pass that places them); ORT CPU parity of int8 and
fp8 against the unfolded PyTorch fp32 model (EfficientViT-M0, a pruned Swin-T backbone); the CLI
end to end with calibration images; bad inputs exit 2 with one line.
Tier 3 (`tensorrt`): the Q/DQ graphs built as strongly typed engines, parity vs PyTorch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from vitdeploy import jobs
from vitdeploy.export import quantize
from vitdeploy.models.preprocess import random_images
from vitdeploy.validation.parity import THRESHOLDS, parity_class

from conftest import requires_trt, smooth_images

ROOT = Path(__file__).resolve().parents[1]
# 224 px: stages 0/1 have 64/16 windows, stage 2 (4 windows) stays dense.
RATIOS = {"ratios": [[0.3, 0.3], [0.3, 0.3], [0] * 6, [0, 0]]}
# Pruned Swin with random weights: every window scores the same to ~0.1 % (LayerNorm'd tokens),
# so quantization noise swaps a few near-tied windows at the TopK cut and those windows differ
# entirely. Measured per-map cosine at 224 (batch 4): int8 0.9963-0.9989, fp8 similar; a dense
# Swin-T at 224 passes the int8 gate (>= 0.9997). So the pruned graph is gated here on a cosine
# that a swap of a few windows passes and a broken layer does not; see README "Precision".
PRUNED_MIN_COSINE = 0.99
# (export, precision) pairs quantized once per module; dense Swin only int8 (the fast path that
# has the 0.999 gate to meet; fp8 is covered by EfficientViT and the pruned Swin).
CASES = [("m0", "int8"), ("m0", "fp8"), ("swin", "int8"), ("swin", "fp8"), ("swin_dense", "int8")]
FLOAT_ONLY_OPS = {"LayerNormalization", "Softmax", "Gelu", "TopK", "ReduceL2", "ReduceMean", "Abs",
                  "Sigmoid", "Gather", "ScatterND", "Add", "Mul", "Relu", "Cast"}
MATMUL_LIKE = {"Conv", "MatMul", "Gemm"}


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """fp32 exports (EfficientViT-M0 classify, pruned Swin-T backbone) and their references."""
    d = tmp_path_factory.mktemp("q")
    cfg = d / "sparsity.json"
    cfg.write_text(json.dumps(RATIOS))
    out = {}
    for key, model, kw in (("m0", "efficientvit_m0", {}),
                           ("swin", "swin_t", dict(img_size=224, task="backbone", sparsity=str(cfg))),
                           ("swin_dense", "swin_t", dict(img_size=224, task="backbone"))):
        p = d / f"{key}.onnx"
        jobs.export(model, p, validate=False, **kw)
        ref = jobs.build_reference(model, img_size=kw.get("img_size"), task=kw.get("task", "classify"),
                                   sparsity=kw.get("sparsity"))
        out[key] = (p, ref, kw.get("task", "classify"), kw.get("img_size", 224))
    return out


@pytest.fixture(scope="module")
def quantized(exports, tmp_path_factory):
    """(key, precision) -> (path, QuantizeResult): calibrated on 8 random inputs (seed 1)."""
    d = tmp_path_factory.mktemp("qq")
    out = {}
    for key, (p, _, _, img) in exports.items():
        proto = onnx.load(str(p))
        calib = random_images(8, img, seed=1)
        for prec in [pr for k, pr in CASES if k == key]:
            res = quantize.quantize_with_images(proto, calib, precision=prec)
            meta = {m.key: m.value for m in res.model.metadata_props}
            meta["vitdeploy.precision"] = prec
            del res.model.metadata_props[:]
            for k, v in meta.items():
                res.model.metadata_props.add(key=k, value=v)
            q = d / f"{key}_{prec}.onnx"
            onnx.save(res.model, str(q))
            out[key, prec] = (q, res)
    return out


# ----------------------------------------------------------------------------- Q/DQ rules

def _init(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _init_types(model):
    return {t.name: t.data_type for t in model.graph.initializer}


def _out_channel_axis(node, weight_ndim):
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return weight_ndim - 1  # MatMul [.., K, N]


def check_qdq_rules(model, precision):
    """Every violation of TensorRT's explicit-quantization rules, as readable strings."""
    g = model.graph
    init, types = _init(model), _init_types(model)
    qtype = TensorProto.INT8 if precision == "int8" else TensorProto.FLOAT8E4M3FN
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    errors = []
    outputs = {o.name for o in g.output}
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = f"{n.op_type} {n.name}"
        if len(n.input) < 3 or types.get(n.input[2]) != qtype:
            errors.append(f"{where}: zero point is not {TensorProto.DataType.Name(qtype)}")
        elif np.any(init[n.input[2]].astype(np.float32) != 0):
            errors.append(f"{where}: zero point not 0 (asymmetric)")
        scale = init.get(n.input[1])
        if scale is None or scale.dtype != np.float32 or np.any(scale <= 0):
            errors.append(f"{where}: scale must be a positive float32 initializer")
            continue
        if n.op_type == "QuantizeLinear":
            if n.input[0] in init:
                errors.append(f"{where}: quantizes a constant (weights must be stored quantized)")
            if scale.size != 1:
                errors.append(f"{where}: activation scale is not per-tensor")
            src = producer.get(n.input[0])
            if src is not None and src.op_type in ("QuantizeLinear", "DequantizeLinear"):
                errors.append(f"{where}: chained Q/DQ")
            continue
        # DequantizeLinear
        if n.output[0] in outputs:
            errors.append(f"{where}: a graph output is dequantized")
        users = consumers.get(n.output[0], [])
        if not users:
            errors.append(f"{where}: unused")
        for c, slot in users:
            if c.op_type not in MATMUL_LIKE or slot not in (0, 1):
                errors.append(f"{where}: feeds {c.op_type} {c.name} input {slot} (only Conv/MatMul/Gemm "
                              "data and weight inputs may read dequantized tensors)")
        if n.input[0] in init:  # weight
            w = init[n.input[0]]
            if types[n.input[0]] != qtype:
                errors.append(f"{where}: weight not {TensorProto.DataType.Name(qtype)}")
            for c, slot in users:
                if slot != 1:
                    errors.append(f"{where}: weight DQ on a data input")
                    continue
                axis = next((a.i for a in n.attribute if a.name == "axis"), 1) % w.ndim
                if scale.size != w.shape[_out_channel_axis(c, w.ndim)] or axis != _out_channel_axis(c, w.ndim):
                    errors.append(f"{where}: weight scale is not per output channel of {c.op_type} "
                                  f"(axis {axis}, {scale.size} scales, weight {list(w.shape)})")
        else:
            q = producer.get(n.input[0])
            if q is None or q.op_type != "QuantizeLinear" or list(q.input[1:]) != list(n.input[1:]):
                errors.append(f"{where}: not paired with a QuantizeLinear of the same scale")
    for n in g.node:  # a quantized Conv/MatMul/Gemm has every data/weight input quantized
        if n.op_type in MATMUL_LIKE:
            dq = [producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input[:2]]
            if any(dq) and not all(dq):
                errors.append(f"{n.op_type} {n.name}: only some inputs quantized")
        if n.op_type in FLOAT_ONLY_OPS or n.domain == "vitdeploy":
            for i in n.input:
                if i in producer and producer[i].op_type == "DequantizeLinear":
                    errors.append(f"{n.domain or ''}{n.op_type} {n.name}: reads a dequantized tensor")
    for f in model.functions:
        for n in f.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                errors.append(f"function {f.name}: contains {n.op_type}")
    return errors


@pytest.mark.parametrize("key,precision", CASES)
def test_every_qdq_follows_tensorrt_rules(quantized, exports, key, precision):
    path, res = quantized[key, precision]
    model = onnx.load(str(path))
    assert check_qdq_rules(model, precision) == []
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DequantizeLinear") > 0 and ops.count("QuantizeLinear") > 0
    # every Conv/MatMul/Gemm of the float graph is quantized (none excluded by default)
    fp32 = onnx.load(str(exports[key][0]))
    assert sum(res.quantized_nodes.values()) == sum(n.op_type in MATMUL_LIKE for n in fp32.graph.node)
    assert res.float_nodes == {} and res.headroom == quantize.ACTIVATION_HEADROOM
    # the optional float attention output projections: one per Swin block, none in EfficientViT
    assert len(quantize.attention_output_matmuls(fp32)) == {"m0": 0, "swin": 12, "swin_dense": 12}[key]
    if precision == "fp8":
        assert quantize.ai_onnx_opset(model) >= 19
    if key == "swin":  # the window ops and their functions survive, unquantized
        custom = [(n.op_type) for n in model.graph.node if n.domain == "vitdeploy"]
        assert custom.count("WindowGather") >= 4 and custom.count("WindowScatter") >= 4
        assert sorted(f.name for f in model.functions) == ["WindowGather", "WindowScatter"]
        assert [f.SerializeToString() for f in model.functions] == [f.SerializeToString() for f in fp32.functions]


def test_rule_checker_catches_violations(quantized):
    """The checker itself can fail: a DQ feeding LayerNorm, a non-zero zero point, per-tensor weights."""
    model = onnx.load(str(quantized["swin", "int8"][0]))
    g = model.graph
    dq = next(n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] not in _init(model))
    ln = next(n for n in g.node if n.op_type == "LayerNormalization")
    ln.input[0] = dq.output[0]
    errs = check_qdq_rules(model, "int8")
    assert any("LayerNormalization" in e for e in errs)
    zp = next(t for t in g.initializer if t.name == dq.input[2])
    zp.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), zp.name))
    assert any("zero point not 0" in e for e in check_qdq_rules(model, "int8"))
    assert any("not FLOAT8E4M3FN" in e for e in check_qdq_rules(model, "fp8"))


def test_calibrated_ranges_are_recorded(quantized):
    _, res = quantized["swin", "int8"]
    s = res.summary()
    assert s["precision"] == "int8" and s["target"] == "trt" and s["method"] == quantize.DEFAULT_METHOD
    assert s["num_images"] == 8
    assert "images" in s["ranges"]  # the input is quantized for the patch-embedding Conv
    lo, hi = s["ranges"]["images"]
    x = random_images(8, 224, seed=1)
    # symmetric percentile 99.999 of |x| over the calibration images (ORT: 2048-bin histogram),
    # widened by the activation headroom (what the Q/DQ scales use is what is recorded)
    assert lo == -hi and s["headroom"] == quantize.ACTIVATION_HEADROOM == 1.5
    assert max(-lo, hi) == pytest.approx(1.5 * np.percentile(np.abs(x), 99.999), rel=0.02)


# ----------------------------------------------------------------------------- parity on ORT CPU

def _validate(ref, artifact, *, task, img_size, precision, batch=4, backend="ort"):
    """The artifact on `backend` vs the unfolded PyTorch model, on seed-0 random images."""
    from vitdeploy.engines.backends import make_artifact_runner
    from vitdeploy.validation.parity import run_parity

    cand = make_artifact_runner(backend, str(artifact))
    try:
        return run_parity(jobs.torch_runner_for(ref, task, img_size), cand, random_images(batch, img_size, seed=0),
                          precision=precision, task=task, inputs="random images, seed 0")
    finally:
        cand.close()


def _parity(exports, key, path, precision):
    _, ref, task, img = exports[key]
    return _validate(ref, path, task=task, img_size=img, precision=precision)


@pytest.mark.parametrize("key,precision", [c for c in CASES if c[0] != "swin"])
def test_quantized_parity_vs_pytorch_fp32(quantized, exports, key, precision):
    path, _ = quantized[key, precision]
    rep = _parity(exports, key, path, precision)
    assert rep.passed, rep.table()
    th = THRESHOLDS[precision]
    assert th["min_cosine"] >= 0.995  # the thresholds stay meaningful
    for o in rep.outputs:
        assert o.cosine >= th["min_cosine"] and o.cosine < 1.0 - 1e-7  # quantization noise is real


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_pruned_swin_quantized_parity(quantized, exports, precision):
    path, _ = quantized["swin", precision]
    rep = _parity(exports, "swin", path, parity_class({"precision": precision, "sparsity": json.dumps(RATIOS)}))
    assert rep.thresholds == THRESHOLDS[f"{precision}-pruned"]
    assert rep.passed, rep.table()
    for o in rep.outputs:  # stricter than the gate where this small case allows
        assert o.cosine >= PRUNED_MIN_COSINE, rep.table()


def test_parity_class_names_the_pruned_rows():
    assert parity_class({"precision": "int8", "sparsity": "null"}) == "int8"
    assert parity_class({"precision": "fp8", "sparsity": json.dumps(RATIOS)}) == "fp8-pruned"
    assert parity_class({"precision": "fp16", "sparsity": json.dumps(RATIOS)}) == "fp16"


def test_parity_detects_a_broken_quantized_layer(quantized, exports):
    """One negated int8 weight (a MatMul in the middle of the dense Swin) must fail the int8 gate.

    On the dense Swin because its features depend on the input (share of the batch-centred part:
    0.4-0.9); random-weight EfficientViT's logits are input-independent to 5e-5, so a corruption
    there hardly moves its cosine (see README, "Precision")."""
    path, _ = quantized["swin_dense", "int8"]
    model = onnx.load(str(path))
    init = {t.name: t for t in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in init
          and numpy_helper.to_array(init[n.input[0]]).ndim == 2]
    w = init[dq[len(dq) // 2].input[0]]
    w.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(w), w.name))
    bad = path.with_name("swin_dense_int8_broken.onnx")
    onnx.save(model, str(bad))
    assert not _parity(exports, "swin_dense", bad, "int8").passed


def _cos(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# Held-out images (issue 18 point 4): calibrate on 8 smooth random images, compare on 8 others.
# With these images 224 does NOT show the gap under the 0.999 gate (the old settings gave
# 0.99910 on the last map here, 0.99914 at 448; the issue's own images gave 0.99898 at 448), so
# the test asks for the headroom the new default buys: >= 0.99925 per map (measured 0.99931 with
# the 1.5x activation headroom at 224), which the old settings (no headroom: 0.99910) fail.
HELD_OUT_MIN_COSINE = 0.99925


def test_int8_holds_cosine_on_images_it_was_not_calibrated_on(exports, tmp_path):
    from vitdeploy.engines.runners import OrtRunner
    from vitdeploy.models.registry import get_spec

    p, _, _, img = exports["swin_dense"]
    spec = get_spec("swin_t")
    cal, _ = quantize.calibration_inputs(smooth_images(tmp_path / "cal", 8, img, 0), 8, img, spec.mean, spec.std)
    held, _ = quantize.calibration_inputs(smooth_images(tmp_path / "held", 8, img, 100), 8, img, spec.mean,
                                          spec.std)
    proto = onnx.load(str(p))
    ranges = quantize.calibrate(proto, cal, batch=4)  # the export's default method (percentile)
    ref = OrtRunner(str(p), threads=2).infer({"images": held})

    def per_map_cosine(name, **kw):
        res = quantize.quantize_with_images(proto, cal, tensors_range=ranges, **kw)
        q = tmp_path / f"q_{name}.onnx"
        onnx.save(res.model, str(q))
        got = OrtRunner(str(q), threads=2).infer({"images": held})
        return res, [_cos(ref[k], got[k]) for k in sorted(ref)]

    res, cos = per_map_cosine("default")
    assert res.headroom == 1.5 and res.float_nodes == {}
    assert min(cos) >= HELD_OUT_MIN_COSINE, cos
    _, old = per_map_cosine("old", headroom=1.0)  # the settings before issue 18: the test tells them apart
    assert min(old) < HELD_OUT_MIN_COSINE, old
    res, more = per_map_cosine("float_attention_output", float_attention_output=True)  # the accuracy option
    assert res.float_nodes == {"MatMul": 12} and min(more) > min(cos), (more, cos)


def test_fp8_runs_on_ort_cpu_as_reference_ops(quantized, exports):
    """ORT's extended CPU fusions mis-handle float8 Q/DQ; our runner must get the right values."""
    from vitdeploy.engines.runners import OrtRunner

    path, _ = quantized["m0", "fp8"]
    x = random_images(2, 224, seed=3)
    got = OrtRunner(str(path)).infer({"images": x})["logits"]
    plain = OrtRunner(str(path), optimization="none").infer({"images": x})["logits"]
    fp32 = OrtRunner(str(exports["m0"][0])).infer({"images": x})["logits"]
    # not bit-equal: float rounding differences of fused vs unfused ops move values across fp8 steps
    assert _cos(got, plain) > 0.999
    assert _cos(got, fp32) >= THRESHOLDS["fp8"]["min_cosine"]


# ----------------------------------------------------------------------------- CLI

def run(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("VITDEPLOY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "vitdeploy.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def assert_user_error(res, needle):
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert needle.lower() in last.lower(), last


def _write_images(d: Path, n: int):
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (240, 260, 3), dtype=np.uint8)).save(d / f"im{i}.png")
    return d


def test_cli_export_int8_with_calibration_images(tmp_path):
    calib = _write_images(tmp_path / "calib", 5)
    out = tmp_path / "m0_int8.onnx"
    res = run("export", "efficientvit_m0", "--precision", "int8", "--calib-images", calib, "--calib-num", 4,
              "--calib-method", "minmax", "-o", out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "calibrating: 4/4 images" in res.stderr  # progress while calibrating
    assert "random inputs" not in res.stderr
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["vitdeploy.precision"] == "int8"
    cal = json.loads(meta["vitdeploy.calibration"])
    assert cal == {"target": "trt", "method": "minmax", "num_images": 4, "source": f"4 images from {calib}"}
    report = json.loads(out.with_name("m0_int8.report.json").read_text())
    assert report["precision"] == "int8" and report["parity"]["passed"]
    assert report["parity"]["thresholds"] == THRESHOLDS["int8"]
    assert report["calibration"]["ranges"]["images"][0] < 0 < report["calibration"]["ranges"]["images"][1]
    assert check_qdq_rules(onnx.load(str(out)), "int8") == []


def test_random_calibration_warns():
    msgs = []
    x, source = quantize.calibration_inputs(None, 3, 64, (0.5,) * 3, (0.25,) * 3, warn=msgs.append)
    assert x.shape == (3, 3, 64, 64) and source == "3 random inputs (seed 1)"
    assert len(msgs) == 1 and msgs[0].startswith("warning: no --calib-images")


def test_calibration_images_use_the_export_preprocessing(tmp_path):
    from vitdeploy.models.preprocess import preprocess_images

    calib = _write_images(tmp_path / "calib", 3)
    x, source = quantize.calibration_inputs(calib, 2, 64, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    np.testing.assert_array_equal(x, preprocess_images(sorted(calib.iterdir())[:2], 64, (0.5, 0.4, 0.3),
                                                       (0.2, 0.25, 0.3)))
    assert source == f"2 images from {calib}"


@pytest.mark.parametrize("extra,needle", [
    (["--precision", "int8", "--calib-images", "EMPTY"], "no images"),
    (["--precision", "int8", "--calib-images", "MISSING"], "is not a directory"),
    (["--precision", "int8", "--calib-num", "0"], "--calib-num must be >= 1"),
    (["--precision", "fp8", "--opset", "18"], "--opset >= 19"),
    (["--precision", "fp32", "--calib-images", "EMPTY"], "apply to --precision int8|fp8 only"),
    (["--precision", "fp16", "--target", "ort-cpu"], "apply to --precision int8|fp8 only"),
    (["--precision", "fp8", "--target", "ort-cpu"], "fp8 is for TensorRT"),
])
def test_cli_bad_quantization_input_exits_2(tmp_path, capsys, extra, needle):
    """In process (cli.main), so six cases cost one interpreter; the checks run before any model work."""
    from vitdeploy import cli

    (tmp_path / "empty").mkdir()
    extra = [str(tmp_path / "empty") if a == "EMPTY" else str(tmp_path / "missing") if a == "MISSING" else a
             for a in extra]
    out = tmp_path / "x.onnx"
    code = cli.main(["export", "efficientvit_m0", *extra, "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and needle.lower() in err[0].lower(), err
    assert not out.exists()


def test_cli_unreadable_calibration_image_exits_2(tmp_path, capsys):
    from vitdeploy import cli

    calib = _write_images(tmp_path / "calib", 1)
    (calib / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "x.onnx"
    code = cli.main(["export", "efficientvit_m0", "--precision", "int8", "--calib-images", str(calib), "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--calib-images: cannot read" in err[0] and "broken.jpg" in err[0], err
    assert not out.exists()


# ----------------------------------------------------------------------------- tier 3: TensorRT



@pytest.mark.tensorrt
@requires_trt
@pytest.mark.parametrize("key,precision", CASES)
def test_trt_quantized_engine_parity(quantized, exports, tmp_path, key, precision):
    """Strongly typed build of the Q/DQ graph (nothing extra to set); parity vs PyTorch fp32."""
    from vitdeploy.engines.build import build_engine

    path, _ = quantized[key, precision]
    engine = tmp_path / f"{key}_{precision}.engine"
    man = build_engine(path, engine, min_batch=1, opt_batch=4, max_batch=4)
    assert man["precision"] == precision
    _, ref, task, img = exports[key]
    rep = _validate(ref, engine, task=task, img_size=img, precision=precision, backend="trt")
    if key == "swin":  # near-tied window swaps, as on ORT: the pruned row's gate
        assert all(o.cosine >= THRESHOLDS[f"{precision}-pruned"]["min_cosine"] for o in rep.outputs), rep.table()
    else:
        assert rep.passed, rep.table()
