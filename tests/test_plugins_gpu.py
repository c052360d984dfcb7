"""Tier 2/3: the CUDA kernels (and, with TensorRT, the plugins) against the NumPy oracle.

The kernels are built into a PyTorch extension from the same sources the plugin library uses
(csrc/common/windowOpsKernel.cu + csrc/tests/torchWindowOps.cpp) and compared bit for bit with
``vitdeploy.plugins.reference``: pure copies must be exact for every dtype, including the
out-of-range index rule. The TensorRT test builds a one-plugin network per op with the built
``libvitdeploy_plugins.so``.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from vitdeploy import plugins
from vitdeploy.plugins.reference import window_gather_ref, window_scatter_ref

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
IDX_DTYPES = {"i32": torch.int32, "i64": torch.int64}
# (B, nW, N, C, K): odd row sizes, Swin-T 672 stage 0 / stage 2 with cfg2 keep counts, K = 0, K = nW,
# K > nW (forces repeats), and enough rows (16 x 576) for the grid-stride loop to wrap; then token rows
# (N = 1: rows shorter than a block take the flat (row, vector) kernels): Swin-T 224 stage 0, a 48-byte
# row, repeats, and Swin-T 672 stage 0 / stage 2 as all-pruned stages export them.
SHAPES = [(2, 9, 7, 5, 4), (1, 576, 49, 96, 230), (4, 36, 49, 384, 28), (3, 5, 2, 3, 0), (2, 6, 4, 8, 6),
          (2, 3, 1, 1, 5), (2, 3136, 1, 96, 1568), (3, 500, 1, 24, 700), (2, 1764, 1, 384, 1372)]
LARGE = [(16, 576, 49, 96, 230), (4, 28224, 1, 96, 11270)]  # once each (fp16, int64): the scan kernels are slow
SHAPES += LARGE


@pytest.fixture(scope="module")
def ext():
    from vitdeploy.plugins.torch_ext import load_extension

    return load_extension()


def _stream():
    return torch.cuda.current_stream().cuda_stream


def _np(t):
    """Exact host copy; bfloat16 widens to float32 exactly (NumPy has no bfloat16)."""
    return (t.float() if t.dtype == torch.bfloat16 else t).cpu().numpy()


def _indices(B, nW, K, gen, bad: bool, int32: bool):
    rows = []
    for _ in range(B):
        if K <= nW:
            rows.append(torch.randperm(nW, generator=gen)[:K])
        else:  # more slots than windows: repeats are unavoidable (largest k must win)
            rows.append(torch.randint(0, nW, (K,), generator=gen))
    idx = torch.stack(rows) if K else torch.zeros((B, 0), dtype=torch.int64)
    if bad and K:
        big = 2 ** 31 - 1 if int32 else 2 ** 40
        bads = torch.tensor([-1, nW, nW + 7, -nW, big, -big], dtype=torch.int64)
        pos = torch.randint(0, K, (B, min(K, 3)), generator=gen)
        idx.scatter_(1, pos, bads[torch.randint(0, len(bads), pos.shape, generator=gen)])
    return idx


def _data(shape, dtype, gen):
    return torch.randn(shape, generator=gen).to(dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("it", list(IDX_DTYPES))
@pytest.mark.parametrize("bad", [False, True], ids=["in_range", "bad_idx"])
def test_kernels_match_reference(ext, shape, dt, it, bad):
    B, nW, N, C, K = shape
    if shape in LARGE and (dt != "fp16" or it != "i64"):
        pytest.skip("the large cases run once (fp16, int64)")
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, dt, it, bad)).encode()))  # stable across runs
    dtype = DTYPES[dt]
    x = _data((B, nW, N, C), dtype, gen)
    src = _data((B, K, N, C), dtype, gen)
    idx = _indices(B, nW, K, gen, bad, it == "i32").to(IDX_DTYPES[it])
    xd, srcd, idxd = x.cuda(), src.cuda(), idx.cuda()

    y = ext.gather(xd, idxd, _stream())
    assert y.shape == (B, K, N, C) and y.dtype == dtype
    np.testing.assert_array_equal(_np(y), window_gather_ref(_np(x), idx.numpy()))

    want = window_scatter_ref(_np(x), idx.numpy(), _np(src))
    out = ext.scatter(xd, idxd, srcd, _stream())
    assert out.shape == x.shape and out.dtype == dtype
    np.testing.assert_array_equal(_np(out), want)
    assert torch.equal(xd.cpu(), x), "out-of-place scatter leaves base untouched"

    inplace = xd.clone()
    ret = ext.scatter_(inplace, idxd, srcd, _stream())
    assert ret.data_ptr() == inplace.data_ptr()
    np.testing.assert_array_equal(_np(inplace), want)

    # the workspace (winner-map) path the TensorRT plugin takes: identical results, duplicates included
    np.testing.assert_array_equal(_np(ext.scatter_map(xd, idxd, srcd, _stream())), want)
    inplace = xd.clone()
    ext.scatter_map_(inplace, idxd, srcd, _stream())
    np.testing.assert_array_equal(_np(inplace), want)
    torch.cuda.synchronize()


@pytest.mark.parametrize("dt", ["fp32", "fp16"])
def test_token_row_scatter_through_winner_map(ext, dt):
    """SparseViT's all-pruned stages scatter token rows: nW = 28224 rows of C = 96 (Swin-T 672, stage 0)
    with K = 19747 kept (cfg1). The winner-map path must match the reference at that size."""
    gen = torch.Generator().manual_seed(7)
    B, nW, C, K = 2, 28224, 96, 19747
    dtype = DTYPES[dt]
    x = _data((B, nW, 1, C), dtype, gen)
    src = _data((B, K, 1, C), dtype, gen)
    idx = torch.stack([torch.randperm(nW, generator=gen)[:K] for _ in range(B)])
    want = window_scatter_ref(_np(x), idx.numpy(), _np(src))
    out = ext.scatter_map(x.cuda(), idx.cuda(), src.cuda(), _stream())
    np.testing.assert_array_equal(_np(out), want)


@pytest.mark.parametrize("offset", [1, 2, 4])
def test_misaligned_tensors_fall_back_to_narrower_vectors(ext, offset):
    """Views that start off a 16-byte boundary must still be exact (and must not use 16-byte accesses)."""
    gen = torch.Generator().manual_seed(offset)
    B, nW, N, C, K = 2, 12, 49, 96, 5
    n = B * nW * N * C
    storage = torch.randn(n + offset, generator=gen).half().cuda()
    x = storage[offset:].view(B, nW, N, C)
    src_storage = torch.randn(B * K * N * C + offset, generator=gen).half().cuda()
    src = src_storage[offset:].view(B, K, N, C)
    idx = _indices(B, nW, K, gen, True, False).cuda()
    assert ext.vector_bytes(x, x, src) < 16
    np.testing.assert_array_equal(_np(ext.gather(x, idx, _stream())), window_gather_ref(_np(x), idx.cpu().numpy()))
    np.testing.assert_array_equal(_np(ext.scatter(x, idx, src, _stream())),
                                  window_scatter_ref(_np(x), idx.cpu().numpy(), _np(src)))


def test_aligned_rows_use_16_byte_vectors(ext):
    x = torch.zeros(1, 576, 49, 96, dtype=torch.float16, device="cuda")
    src = torch.zeros(1, 230, 49, 96, dtype=torch.float16, device="cuda")
    assert ext.vector_bytes(x, x, src) == 16


def test_kernels_never_write_outside_the_output(ext):
    """Guard bands around the outputs stay intact whatever the indices are."""
    gen = torch.Generator().manual_seed(3)
    B, nW, N, C, K = 3, 10, 7, 3, 6
    guard = 1024
    x = torch.randn(B, nW, N, C, generator=gen).cuda()
    src = torch.randn(B, K, N, C, generator=gen).cuda()
    idx = torch.tensor([[-5, 10, 11, 2 ** 40, -(2 ** 40), 9]] * B).cuda()
    buf = torch.full((guard + B * nW * N * C + guard,), 7.0, device="cuda")
    out = buf[guard:guard + B * nW * N * C].view(B, nW, N, C)
    out.copy_(x)
    ext.scatter_(out, idx, src, _stream())
    out2 = buf[guard:guard + B * nW * N * C].view(B, nW, N, C).clone()
    out.copy_(x)
    ext.scatter_map_(out, idx, src, _stream())
    torch.cuda.synchronize()
    assert torch.equal(out, out2), "winner-map in-place scatter == scan-kernel in-place scatter"
    assert torch.all(buf[:guard] == 7.0) and torch.all(buf[-guard:] == 7.0)
    np.testing.assert_array_equal(out.cpu().numpy(), window_scatter_ref(x.cpu().numpy(), idx.cpu().numpy(),
                                                                         src.cpu().numpy()))


# ---------------------------------------------------------------------------------------------- TensorRT

def _tensorrt():
    """The process's TensorRT through vitdeploy's seam (conftest's probe first: it needs a GPU to run)."""
    from vitdeploy import optional

    from conftest import TRT_ERR

    if TRT_ERR:
        return None
    try:
        return optional.tensorrt()
    except Exception:  # noqa: BLE001
        return None


@pytest.mark.tensorrt
@pytest.mark.parametrize("op", plugins.PLUGIN_OPS)
@pytest.mark.parametrize("dt", ["fp32", "fp16"])
def test_tensorrt_plugin_matches_reference(op, dt):
    trt = _tensorrt()
    if trt is None:
        pytest.skip("TensorRT is not importable or cannot run engines here (conftest.TRT_ERR)")
    lib = plugins.library_path()
    if lib is None:
        pytest.skip("libvitdeploy_plugins.so is not built (vitdeploy plugins build)")
    plugins.load(lib)
    B, nW, N, C, K = 3, 36, 49, 64, 28
    tdt = {"fp32": trt.float32, "fp16": trt.float16}[dt]
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    x = network.add_input("x", tdt, (-1, nW, N, C))
    idx = network.add_input("idx", trt.int64, (-1, K))
    inputs = [x, idx]
    if op == "WindowScatter":
        inputs.append(network.add_input("src", tdt, (-1, K, N, C)))
    creator = trt.get_plugin_registry().get_creator(op, plugins.PLUGIN_VERSION, plugins.PLUGIN_NAMESPACE)
    assert creator is not None, "creator registered by plugins.load()"
    plugin = creator.create_plugin(op, trt.PluginFieldCollection([]), trt.TensorRTPhase.BUILD)
    layer = network.add_plugin_v3(inputs, [], plugin)
    layer.get_output(0).name = "y"
    network.mark_output(layer.get_output(0))
    profile = builder.create_optimization_profile()
    for t in inputs:
        shape = tuple(t.shape)[1:]
        profile.set_shape(t.name, (1, *shape), (B, *shape), (8, *shape))
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "engine build with the plugin failed"
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    ctx = engine.create_execution_context()

    gen = torch.Generator().manual_seed(1)
    tdtype = DTYPES[dt]
    xt = _data((B, nW, N, C), tdtype, gen).cuda()
    it = _indices(B, nW, K, gen, True, False).cuda()
    feeds = {"x": xt, "idx": it}
    if op == "WindowScatter":
        feeds["src"] = _data((B, K, N, C), tdtype, gen).cuda()
    for name, t in feeds.items():
        ctx.set_input_shape(name, tuple(t.shape))
        ctx.set_tensor_address(name, t.data_ptr())
    y = torch.empty(tuple(ctx.get_tensor_shape("y")), dtype=tdtype, device="cuda")
    ctx.set_tensor_address("y", y.data_ptr())
    assert ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    if op == "WindowGather":
        want = window_gather_ref(_np(xt), it.cpu().numpy())
    else:
        want = window_scatter_ref(_np(xt), it.cpu().numpy(), _np(feeds["src"]))
    np.testing.assert_array_equal(_np(y), want)
