"""fp16 ONNX conversion (vitdeploy.export.precision): graph structure, typing, ORT parity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from vitdeploy.export.precision import to_fp16
from vitdeploy.validation.parity import THRESHOLDS

from conftest import cosine, rel_err

ort = pytest.importorskip("onnxruntime")


def _run(model: onnx.ModelProto, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def _elem_types(model):
    """name -> elem_type for every typed value (after strict shape/type inference)."""
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for t in inferred.graph.initializer:
        types[t.name] = t.data_type
    return types


def _check_fragile_inputs_fp32(model):
    types = _elem_types(model)
    seen = set()
    for n in model.graph.node:
        if n.op_type in ("Softmax", "LayerNormalization", "TopK"):
            assert types[n.input[0]] == TensorProto.FLOAT, f"{n.op_type} {n.name} input is not fp32"
            seen.add(n.op_type)
    return types, seen


def _window_model(nw=16, n=16, c=32, k=8, hidden=64):
    """A SparseViT-shaped graph built by hand: importance score -> TopK -> vitdeploy::WindowGather
    -> LN/attention -> vitdeploy::WindowScatter, plus a decomposed LayerNorm and float index math
    ending in a Cast to int64. The custom nodes carry model-local functions like the exporter's."""
    rng = np.random.default_rng(0)

    def init(name, arr):
        arr = np.asarray(arr)
        return helper.make_tensor(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape, arr.ravel().tolist())

    inits = [
        init("ln_w", (1 + 0.1 * rng.standard_normal(c)).astype(np.float32)),
        init("ln_b", (0.1 * rng.standard_normal(c)).astype(np.float32)),
        init("wq", (rng.standard_normal((c, c)) / np.sqrt(c)).astype(np.float32)),
        init("wk", (rng.standard_normal((c, c)) / np.sqrt(c)).astype(np.float32)),
        init("wv", (rng.standard_normal((c, c)) / np.sqrt(c)).astype(np.float32)),
        init("w1", (rng.standard_normal((c, hidden)) / np.sqrt(c)).astype(np.float32)),
        init("w2", (rng.standard_normal((hidden, c)) / np.sqrt(hidden)).astype(np.float32)),
        init("scale", np.array(c ** -0.5, np.float32)),
        init("ax_c", np.array([-1], np.int64)),
        init("ax_n", np.array([-1], np.int64)),
        init("ax_mean", np.array([1, 2], np.int64)),
        init("k", np.array([k], np.int64)),
        init("eps", np.array(1e-5, np.float32)),
        init("two", np.array(2.0, np.float32)),
        init("half", np.array(0.5, np.float32)),
        init("mask", np.where(rng.random((n, n)) < 0.1, -1e9, 0.0).astype(np.float32)),
        init("c0", np.array([0], np.int64)),
        init("flat", np.array([0, -1], np.int64)),
    ]
    attrs = dict(plugin_namespace="vitdeploy", plugin_version="1")
    nodes = [
        # importance: mean |x| over channels, L2 over the window's tokens
        helper.make_node("Abs", ["x"], ["ax"]),
        helper.make_node("ReduceMean", ["ax", "ax_c"], ["am"], keepdims=0),
        helper.make_node("ReduceL2", ["am", "ax_n"], ["score"], keepdims=0),
        helper.make_node("TopK", ["score", "k"], ["topv", "idx"], axis=1),
        helper.make_node("WindowGather", ["x", "idx"], ["sel"], domain="vitdeploy", name="gather0", **attrs),
        helper.make_node("LayerNormalization", ["sel", "ln_w", "ln_b"], ["h"], axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["h", "wq"], ["q"]),
        helper.make_node("MatMul", ["h", "wk"], ["kk"]),
        helper.make_node("MatMul", ["h", "wv"], ["v"]),
        helper.make_node("Transpose", ["kk"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Mul", ["qk", "scale"], ["qks"]),
        helper.make_node("Add", ["qks", "mask"], ["qkm"]),
        helper.make_node("Softmax", ["qkm"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "v"], ["av"]),
        helper.make_node("Add", ["sel", "av"], ["y1"]),
        # decomposed LayerNorm (no affine), then an MLP
        helper.make_node("ReduceMean", ["y1", "ax_c"], ["mu"], keepdims=1),
        helper.make_node("Sub", ["y1", "mu"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]),
        helper.make_node("ReduceMean", ["d2", "ax_c"], ["var"], keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["vare"]),
        helper.make_node("Sqrt", ["vare"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["yn"]),
        helper.make_node("MatMul", ["yn", "w1"], ["m1"]),
        helper.make_node("Relu", ["m1"], ["m1r"]),
        helper.make_node("MatMul", ["m1r", "w2"], ["m2"]),
        helper.make_node("Add", ["y1", "m2"], ["y2"]),
        helper.make_node("WindowScatter", ["x", "idx", "y2"], ["xs"], domain="vitdeploy", name="scatter0", **attrs),
        helper.make_node("ReduceMean", ["xs", "ax_mean"], ["pooled"], keepdims=0),
        # float index math: count = floor(topv[:,0] * 0.5) -> int64 -> used as a Reshape shape
        helper.make_node("Mul", ["topv", "half"], ["tv2"]),
        helper.make_node("Floor", ["tv2"], ["tvf"]),
        helper.make_node("Cast", ["tvf"], ["tvi"], to=TensorProto.INT64),
        helper.make_node("Shape", ["tvi"], ["tvi_shape"]),
        helper.make_node("Reshape", ["tvi", "flat"], ["count"]),
    ]
    gather_fn = helper.make_function(
        "vitdeploy", "WindowGather", ["x", "idx"], ["y"],
        [helper.make_node("Unsqueeze", ["idx", "m1c"], ["idx3"]),
         helper.make_node("Constant", [], ["m1c"], value=helper.make_tensor("m1c", TensorProto.INT64, [1], [-1])),
         helper.make_node("GatherND", ["x", "idx3"], ["y"], batch_dims=1)],
        [helper.make_opsetid("", 20)], attributes=["plugin_namespace", "plugin_version"])
    # Constant must precede its use inside a function body.
    gather_fn.node.insert(0, gather_fn.node.pop(1))
    scatter_fn = helper.make_function(
        "vitdeploy", "WindowScatter", ["base", "idx", "src"], ["y"],
        [helper.make_node("Constant", [], ["ax23"], value=helper.make_tensor("ax23", TensorProto.INT64, [2], [2, 3])),
         helper.make_node("Unsqueeze", ["idx", "ax23"], ["idx4"]),
         helper.make_node("Shape", ["src"], ["ssh"]),
         helper.make_node("Expand", ["idx4", "ssh"], ["idxe"]),
         helper.make_node("ScatterElements", ["base", "idxe", "src"], ["y"], axis=1)],
        [helper.make_opsetid("", 20)], attributes=["plugin_namespace", "plugin_version"])
    graph = helper.make_graph(
        nodes, "window_toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", nw, n, c])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", c]),
         helper.make_tensor_value_info("count", TensorProto.INT64, ["batch", k])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("vitdeploy", 1)],
                              functions=[gather_fn, scatter_fn])
    model.ir_version = 10
    helper.set_model_props(model, {"vitdeploy.precision": "fp32", "vitdeploy.model": "toy"})
    onnx.checker.check_model(model, full_check=True)
    return model


def test_thresholds_one_place():
    assert set(THRESHOLDS) == {"fp32", "fp16", "int8", "fp8", "int8-pruned", "fp8-pruned"}
    for th in THRESHOLDS.values():
        assert set(th) == {"max_rel_err", "min_cosine", "min_top1", "min_top5"}
    assert THRESHOLDS["fp32"]["max_rel_err"] == 1e-4 and THRESHOLDS["fp16"]["min_cosine"] == 0.999
    assert THRESHOLDS["fp16"]["max_rel_err"] > THRESHOLDS["fp32"]["max_rel_err"]


def test_window_graph_structure_and_parity():
    model = _window_model()
    half = to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    types, seen = _check_fragile_inputs_fp32(half)
    assert seen == {"Softmax", "LayerNormalization", "TopK"}
    # fp32 I/O
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    # weights stored as float16; LayerNorm's scale/bias (fp32 op) stay float32
    inits = {t.name: t.data_type for t in half.graph.initializer}
    for w in ("wq", "wk", "wv", "w1", "w2"):
        assert inits[w] == TensorProto.FLOAT16, w
    assert inits["ln_w"] == TensorProto.FLOAT and inits["ln_b"] == TensorProto.FLOAT
    # the -1e9 mask was clipped to the finite fp16 range
    mask = onnx.numpy_helper.to_array(next(t for t in half.graph.initializer if t.name == "mask"))
    assert mask.dtype == np.float16 and np.isfinite(mask).all() and mask.min() < -6e4
    # custom nodes: data fp16, index int64, functions kept (not inlined)
    for n in half.graph.node:
        if n.domain == "vitdeploy":
            assert types[n.input[0]] == TensorProto.FLOAT16, n.name
            assert types[n.input[1]] == TensorProto.INT64, n.name
            assert types[n.output[0]] == TensorProto.FLOAT16, n.name
    assert {f.name for f in half.functions} == {"WindowGather", "WindowScatter"}
    # importance score chain runs in fp32 (Abs, both reductions), TopK ranks fp32 scores
    prod = _producers(half)
    topk = next(n for n in half.graph.node if n.op_type == "TopK")
    l2 = prod[topk.input[0]]
    assert l2.op_type == "ReduceL2"
    mean = prod[l2.input[0]]
    assert mean.op_type == "ReduceMean" and types[mean.input[0]] == TensorProto.FLOAT
    assert prod[mean.input[0]].op_type == "Abs"
    # decomposed LayerNorm in fp32: Sub / Pow / Sqrt / Div
    for n in half.graph.node:
        if n.op_type in ("Sub", "Pow", "Sqrt", "Div"):
            assert types[n.output[0]] == TensorProto.FLOAT, n.op_type
    # float index math before the int Cast stays fp32 (Floor and the Mul feeding it)
    cast_int = next(n for n in half.graph.node if n.op_type == "Cast" and
                    helper.get_attribute_value(n.attribute[0]) == TensorProto.INT64)
    assert types[cast_int.input[0]] == TensorProto.FLOAT
    assert types[prod[cast_int.input[0]].input[0]] == TensorProto.FLOAT
    # the bulk really is fp16: MatMul outputs
    assert all(types[n.output[0]] == TensorProto.FLOAT16 for n in half.graph.node if n.op_type == "MatMul")
    assert {p.key: p.value for p in half.metadata_props}["vitdeploy.precision"] == "fp16"

    x = np.random.default_rng(1).standard_normal((3, 16, 16, 32)).astype(np.float32)
    ref = _run(model, {"x": x})
    got = _run(half, {"x": x})
    assert got[0].dtype == np.float32
    assert rel_err(ref[0], got[0]) < THRESHOLDS["fp16"]["max_rel_err"]
    assert cosine(ref[0], got[0]) > THRESHOLDS["fp16"]["min_cosine"]
    assert np.array_equal(ref[1], got[1])  # integer index math unchanged


def test_fp16_io_types():
    model = _window_model()
    half = to_fp16(model, keep_io_types=False)
    onnx.checker.check_model(half, full_check=True)
    _check_fragile_inputs_fp32(half)
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    x = np.random.default_rng(2).standard_normal((2, 16, 16, 32)).astype(np.float32)
    ref = _run(model, {"x": x})[0]
    got = _run(half, {"x": x.astype(np.float16)})[0]
    assert got.dtype == np.float16
    assert rel_err(ref, got.astype(np.float32)) < THRESHOLDS["fp16"]["max_rel_err"]


def test_rejects_non_model():
    from vitdeploy.errors import UserError

    with pytest.raises(UserError):
        to_fp16(b"not a model")


torch = pytest.importorskip("torch")


class _Toy(torch.nn.Module):
    """Conv + LayerNorm + attention (Softmax) + Linear head, as a ViT block would export."""

    def __init__(self, c=48, classes=10):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, c, 4, 4)
        self.ln = torch.nn.LayerNorm(c)
        self.qkv = torch.nn.Linear(c, 3 * c)
        self.proj = torch.nn.Linear(c, c)
        self.ln2 = torch.nn.LayerNorm(c)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(c, 2 * c), torch.nn.GELU(), torch.nn.Linear(2 * c, c))
        self.head = torch.nn.Linear(c, classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(self.ln(t)).chunk(3, -1)
        a = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)
        t = t + self.proj(a @ v)
        t = t + self.mlp(self.ln2(t))
        return self.head(t.mean(1))


def _export(module, x, path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, (x,), input_names=["images"], output_names=["logits"],
                                 dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True, verbose=False)
    prog.save(str(path))
    return onnx.load(str(path))


def test_torch_export_fp16_parity_vs_pytorch(tmp_path):
    torch.manual_seed(0)
    m = _Toy().eval()
    x = torch.randn(4, 3, 32, 32)
    model = _export(m, x[:1], tmp_path / "toy.onnx")
    half = to_fp16(model)
    onnx.checker.check_model(half)
    _, seen = _check_fragile_inputs_fp32(half)
    assert {"Softmax", "LayerNormalization"} <= seen
    n16 = sum(t.data_type == TensorProto.FLOAT16 for t in half.graph.initializer)
    assert n16 >= 6
    with torch.inference_mode():
        ref = m(x).numpy()
    got = _run(half, {"images": x.numpy()})[0]
    assert rel_err(ref, got) < THRESHOLDS["fp16"]["max_rel_err"]
    assert cosine(ref, got) > THRESHOLDS["fp16"]["min_cosine"]
    assert (ref.argmax(1) == got.argmax(1)).mean() >= THRESHOLDS["fp16"]["min_top1"]


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs", [
    ("efficientvit_m0", {}),
    ("swin_t", {"sparsity": "PAIRS"}),
])
def test_real_models_fp16(tmp_path, name, kwargs):
    """`export --precision fp16` end to end: fp32 I/O, fp16 weights, fragile ops fp32, and the
    built-in ORT validation against the fp32 PyTorch model passes the fp16 thresholds."""
    from vitdeploy import jobs
    from vitdeploy.models.sparsity import SparsityConfig

    if kwargs.get("sparsity") == "PAIRS":  # 224px: stage 3 is one window, so it stays dense
        kwargs = {"sparsity": SparsityConfig(ratios=[[0.5, 0.5], [0.3, 0.3], [0.2, 0.2, 0.4, 0.4, 0.5, 0.5], [0, 0]])}
    path = tmp_path / f"{name}.onnx"
    report = jobs.export(name, path, img_size=224, precision="fp16", **kwargs)
    assert report["parity"]["passed"], report["parity"]
    half = onnx.load(str(path))
    onnx.checker.check_model(half)
    meta = {p.key: p.value for p in half.metadata_props}
    assert meta["vitdeploy.precision"] == "fp16"
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in half.graph.output)
    assert sum(t.data_type == TensorProto.FLOAT16 for t in half.graph.initializer) > 10
    _check_fragile_inputs_fp32(half)
    if kwargs.get("sparsity"):
        assert {n.op_type for n in half.graph.node if n.domain == "vitdeploy"} == {"WindowGather", "WindowScatter"}
    ref = jobs.build_reference(name, img_size=224, **kwargs)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.inference_mode():
        out = ref(torch.from_numpy(x))
    out = (out if isinstance(out, torch.Tensor) else out[0]).numpy()
    got = _run(half, {half.graph.input[0].name: x})[0]
    assert rel_err(out, got) < THRESHOLDS["fp16"]["max_rel_err"], rel_err(out, got)
    assert cosine(out, got) > THRESHOLDS["fp16"]["min_cosine"]


def test_window_graph_after_the_exporter_registered_its_schemas():
    """The exporter registers schemas for the vitdeploy ops (without type inference) in this
    process; shape inference then leaves their outputs untyped and the pass must still type them
    (a SparseViT exported with --precision fp16 in one process takes this path)."""
    from vitdeploy.export.window_nodes import export_hooks

    export_hooks(portable=False)  # registers the schemas, as an export does
    half = to_fp16(_window_model())
    onnx.checker.check_model(half, full_check=True)
    types, seen = _check_fragile_inputs_fp32(half)
    assert seen == {"Softmax", "LayerNormalization", "TopK"}
    assert all(types[n.output[0]] == TensorProto.FLOAT16 for n in half.graph.node if n.domain == "vitdeploy")
