"""Window gather/scatter: NumPy reference semantics, torch ops vs the reference, ONNX bodies vs both."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from vitdeploy.export import window_nodes as ex
from vitdeploy.models.window_ops import window_gather, window_scatter
from vitdeploy.plugins.reference import window_gather_ref, window_scatter_ref


def _data(B=2, nW=5, N=3, C=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, nW, N, C)).astype(np.float32)


# ------------------------------------------------------------------------------ reference semantics

def test_reference_gather_picks_windows_per_sample():
    x = _data()
    idx = np.array([[4, 0], [1, 1]])
    y = window_gather_ref(x, idx)
    assert y.shape == (2, 2, 3, 4)
    np.testing.assert_array_equal(y[0, 0], x[0, 4])
    np.testing.assert_array_equal(y[0, 1], x[0, 0])
    np.testing.assert_array_equal(y[1, 0], x[1, 1])
    np.testing.assert_array_equal(y[1, 1], x[1, 1])


def test_reference_scatter_replaces_only_named_windows():
    base = _data()
    src = _data(B=2, nW=2, seed=1)
    idx = np.array([[3, 1], [0, 4]])
    y = window_scatter_ref(base, idx, src)
    np.testing.assert_array_equal(y[0, 3], src[0, 0])
    np.testing.assert_array_equal(y[0, 1], src[0, 1])
    np.testing.assert_array_equal(y[1, 0], src[1, 0])
    np.testing.assert_array_equal(y[1, 4], src[1, 1])
    for b, w in [(0, 0), (0, 2), (0, 4), (1, 1), (1, 2), (1, 3)]:
        np.testing.assert_array_equal(y[b, w], base[b, w])
    assert not np.shares_memory(y, base)


def test_reference_gather_out_of_range_gives_zero_windows_without_wraparound():
    x = _data() + 10.0  # no window is all zeros
    idx = np.array([[-1, 2, 5], [7, -5, 0]])  # -1/-5 would wrap in Python; 5, 7 >= nW
    y = window_gather_ref(x, idx)
    for b, k in [(0, 0), (0, 2), (1, 0), (1, 1)]:
        assert not y[b, k].any()
    np.testing.assert_array_equal(y[0, 1], x[0, 2])
    np.testing.assert_array_equal(y[1, 2], x[1, 0])


def test_reference_scatter_out_of_range_is_ignored():
    base = _data()
    src = _data(B=2, nW=3, seed=3)
    idx = np.array([[-1, 2, 5], [-5, 9, 0]])
    y = window_scatter_ref(base, idx, src)
    expect = base.copy()
    expect[0, 2] = src[0, 1]
    expect[1, 0] = src[1, 2]
    np.testing.assert_array_equal(y, expect)


def test_reference_rejects_malformed_shapes():
    with pytest.raises(ValueError):
        window_gather_ref(np.zeros((2, 3, 4)), np.zeros((2, 1), dtype=np.int64))
    with pytest.raises(ValueError):
        window_gather_ref(_data(), np.zeros((3, 1), dtype=np.int64))
    with pytest.raises(ValueError):
        window_scatter_ref(_data(), np.zeros((2, 2), dtype=np.int64), _data(B=2, nW=3))


# ---------------------------------------------------------------------------- torch ops vs reference

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_torch_ops_match_reference_in_range(dtype):
    torch.manual_seed(0)
    x = torch.randn(3, 9, 49, 8).to(dtype)
    idx = torch.stack([torch.randperm(9)[:5] for _ in range(3)])
    src = torch.randn(3, 5, 49, 8).to(dtype)
    np.testing.assert_array_equal(window_gather(x, idx).numpy(), window_gather_ref(x.numpy(), idx.numpy()))
    np.testing.assert_array_equal(window_scatter(x, idx, src).numpy(),
                                  window_scatter_ref(x.numpy(), idx.numpy(), src.numpy()))


def test_torch_ops_match_reference_out_of_range():
    x = torch.from_numpy(_data(B=2, nW=6) + 1.0)
    idx = torch.tensor([[-1, 3, 6], [100, 0, -6]])
    src = torch.from_numpy(_data(B=2, nW=3, seed=5))
    np.testing.assert_array_equal(window_gather(x, idx).numpy(), window_gather_ref(x.numpy(), idx.numpy()))
    np.testing.assert_array_equal(window_scatter(x, idx, src).numpy(),
                                  window_scatter_ref(x.numpy(), idx.numpy(), src.numpy()))


def test_torch_scatter_does_not_modify_base():
    base = torch.zeros(1, 4, 2, 2)
    window_scatter(base, torch.tensor([[1]]), torch.ones(1, 1, 2, 2))
    assert not base.any()


def test_ops_are_single_nodes_in_torch_export():
    class M(torch.nn.Module):
        def forward(self, x, idx):
            return window_scatter(x, idx, window_gather(x, idx) * 2)

    ep = torch.export.export(M(), (torch.randn(2, 4, 3, 5), torch.tensor([[0, 2], [3, 1]])))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert "vitdeploy.window_gather.default" in targets
    assert "vitdeploy.window_scatter.default" in targets
    assert not any(t.startswith(("aten.gather", "aten.scatter")) for t in targets)


# ------------------------------------------------------------------------------------ ONNX bodies

def _custom_model(opset=20):
    """x[B,nW,N,C], idx[B,K] -> (gather, scatter of gather*2) through the custom nodes."""
    f = helper.make_tensor_value_info
    nodes = [
        helper.make_node(ex.GATHER, ["x", "idx"], ["g"], domain=ex.DOMAIN,
                         plugin_namespace="vitdeploy", plugin_version="1"),
        helper.make_node("Add", ["g", "g"], ["g2"]),
        helper.make_node(ex.SCATTER, ["x", "idx", "g2"], ["s"], domain=ex.DOMAIN,
                         plugin_namespace="vitdeploy", plugin_version="1"),
    ]
    graph = helper.make_graph(
        nodes, "w",
        [f("x", TensorProto.FLOAT, ["B", 6, 4, 3]), f("idx", TensorProto.INT64, ["B", 2])],
        [f("g", TensorProto.FLOAT, ["B", 2, 4, 3]), f("s", TensorProto.FLOAT, ["B", 6, 4, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10  # onnxruntime 1.31 reads at most IR 13; make_model writes 14
    return m


@pytest.mark.parametrize("opset", [18, 20])
def test_onnx_function_bodies_match_reference(opset):
    proto = ex.finalize(_custom_model(opset), portable=False)
    onnx.checker.check_model(proto, full_check=True)
    assert {(f.domain, f.name) for f in proto.functions} == {(ex.DOMAIN, ex.GATHER), (ex.DOMAIN, ex.SCATTER)}
    for fn in proto.functions:
        assert set(fn.attribute) == {"plugin_namespace", "plugin_version"}
        assert [(o.domain, o.version) for o in fn.opset_import] == [("", opset)]
        ops = {n.op_type for n in fn.node}
        assert not ops & {"GatherElements", "ScatterElements", "Expand"}
        assert ("Gather" in ops) if fn.name == ex.GATHER else ("ScatterND" in ops)
        assert all(a.name != "reduction" for n in fn.node for a in n.attribute)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for B in (1, 3):
        x = rng.standard_normal((B, 6, 4, 3)).astype(np.float32)
        idx = np.stack([rng.permutation(6)[:2] for _ in range(B)]).astype(np.int64)
        g, s = sess.run(None, {"x": x, "idx": idx})
        np.testing.assert_array_equal(g, window_gather_ref(x, idx))
        np.testing.assert_array_equal(s, window_scatter_ref(x, idx, 2 * window_gather_ref(x, idx)))


def test_finalize_leaves_models_without_window_ops_alone():
    m = _custom_model()
    del m.graph.node[:]
    m.graph.node.append(helper.make_node("Identity", ["x"], ["g"]))
    out = ex.finalize(m, portable=False)
    assert len(out.functions) == 0 and out == m


def test_finalize_portable_rejects_custom_nodes():
    with pytest.raises(ValueError, match="portable"):
        ex.finalize(_custom_model(), portable=True)
