/*
 * PyTorch binding of the window kernels, built on the fly by tests/test_plugins_gpu.py and
 * benchmarks/window_ops_gpu.py with torch.utils.cpp_extension.load, so they exercise the very launchers
 * the TensorRT plugins call. The CUDA stream comes from Python (torch.cuda.current_stream().cuda_stream)
 * so the binding needs no CUDA-specific PyTorch headers.
 */
#include "windowOpsKernel.h"

#include <torch/extension.h>

namespace
{

vitdeploy::WindowDataType dataType(at::Tensor const& t)
{
    switch (t.scalar_type())
    {
    case at::kFloat: return vitdeploy::WindowDataType::kFLOAT32;
    case at::kHalf: return vitdeploy::WindowDataType::kFLOAT16;
    case at::kBFloat16: return vitdeploy::WindowDataType::kBFLOAT16;
    default: TORCH_CHECK(false, "window ops: data must be float32, float16 or bfloat16, got ", t.scalar_type());
    }
}

vitdeploy::WindowIndexType indexType(at::Tensor const& t)
{
    TORCH_CHECK(t.scalar_type() == at::kInt || t.scalar_type() == at::kLong, "window ops: idx must be int32 or int64");
    return t.scalar_type() == at::kInt ? vitdeploy::WindowIndexType::kINT32 : vitdeploy::WindowIndexType::kINT64;
}

void checkCommon(at::Tensor const& data, at::Tensor const& idx)
{
    TORCH_CHECK(data.is_cuda() && idx.is_cuda(), "window ops: tensors must be on the GPU");
    TORCH_CHECK(data.dim() >= 2 && idx.dim() == 2 && idx.size(0) == data.size(0), "window ops: data [B, nW, ...], idx [B, K]");
    TORCH_CHECK(data.is_contiguous() && idx.is_contiguous(), "window ops: tensors must be contiguous");
}

int64_t rowElems(at::Tensor const& t)
{
    int64_t n = 1;
    for (int64_t d = 2; d < t.dim(); ++d)
    {
        n *= t.size(d);
    }
    return n;
}

//! The scatters' src: [B, K, ...] with base's type and row size.
void checkSrc(at::Tensor const& base, at::Tensor const& idx, at::Tensor const& src)
{
    TORCH_CHECK(src.is_contiguous() && src.scalar_type() == base.scalar_type() && src.size(1) == idx.size(1)
            && rowElems(src) == rowElems(base),
        "window ops: src must be [B, K, ...] like base");
}

cudaStream_t toStream(int64_t stream)
{
    return reinterpret_cast<cudaStream_t>(static_cast<intptr_t>(stream));
}

void checkCuda(cudaError_t status)
{
    TORCH_CHECK(status == cudaSuccess, "window kernel failed: ", cudaGetErrorString(status));
}

} // namespace

at::Tensor gather(at::Tensor const& x, at::Tensor const& idx, int64_t stream)
{
    checkCommon(x, idx);
    std::vector<int64_t> shape = x.sizes().vec();
    shape[1] = idx.size(1);
    at::Tensor out = at::empty(shape, x.options());
    vitdeploy::WindowShape const s{x.size(0), x.size(1), idx.size(1), rowElems(x)};
    checkCuda(vitdeploy::windowGather(out.data_ptr(), x.data_ptr(), idx.data_ptr(), s, dataType(x), indexType(idx),
        toStream(stream)));
    return out;
}

at::Tensor scatter(at::Tensor const& base, at::Tensor const& idx, at::Tensor const& src, int64_t stream)
{
    checkCommon(base, idx);
    checkSrc(base, idx, src);
    at::Tensor out = at::empty_like(base);
    vitdeploy::WindowShape const s{base.size(0), base.size(1), idx.size(1), rowElems(base)};
    checkCuda(vitdeploy::windowScatter(out.data_ptr(), base.data_ptr(), idx.data_ptr(), src.data_ptr(), s,
        dataType(base), indexType(idx), toStream(stream)));
    return out;
}

at::Tensor scatter_(at::Tensor base, at::Tensor const& idx, at::Tensor const& src, int64_t stream)
{
    checkCommon(base, idx);
    checkSrc(base, idx, src);
    vitdeploy::WindowShape const s{base.size(0), base.size(1), idx.size(1), rowElems(base)};
    checkCuda(vitdeploy::windowScatterInPlace(base.data_ptr(), idx.data_ptr(), src.data_ptr(), s, dataType(base),
        indexType(idx), toStream(stream)));
    return base;
}

// The workspace (winner-map) path the TensorRT plugin uses: same results, O(nW + K) work.
at::Tensor scatter_map(at::Tensor const& base, at::Tensor const& idx, at::Tensor const& src, int64_t stream)
{
    checkCommon(base, idx);
    checkSrc(base, idx, src);
    at::Tensor out = at::empty_like(base);
    vitdeploy::WindowShape const s{base.size(0), base.size(1), idx.size(1), rowElems(base)};
    size_t const wsBytes = vitdeploy::windowScatterWorkspaceSize(s.batch, s.numWindows);
    at::Tensor ws = at::empty({static_cast<int64_t>(wsBytes)}, base.options().dtype(at::kByte));
    checkCuda(vitdeploy::windowScatter(out.data_ptr(), base.data_ptr(), idx.data_ptr(), src.data_ptr(), s,
        dataType(base), indexType(idx), wsBytes ? ws.data_ptr() : nullptr, wsBytes, toStream(stream)));
    return out;
}

at::Tensor scatter_map_(at::Tensor base, at::Tensor const& idx, at::Tensor const& src, int64_t stream)
{
    checkCommon(base, idx);
    checkSrc(base, idx, src);
    vitdeploy::WindowShape const s{base.size(0), base.size(1), idx.size(1), rowElems(base)};
    size_t const wsBytes = vitdeploy::windowScatterWorkspaceSize(s.batch, s.numWindows);
    at::Tensor ws = at::empty({static_cast<int64_t>(wsBytes)}, base.options().dtype(at::kByte));
    checkCuda(vitdeploy::windowScatter(base.data_ptr(), base.data_ptr(), idx.data_ptr(), src.data_ptr(), s,
        dataType(base), indexType(idx), wsBytes ? ws.data_ptr() : nullptr, wsBytes, toStream(stream)));
    return base;
}

int64_t vector_bytes(at::Tensor const& a, at::Tensor const& b, at::Tensor const& c)
{
    int64_t const rowBytes = rowElems(a) * a.element_size();
    return vitdeploy::windowVectorBytes(a.data_ptr(), b.data_ptr(), c.data_ptr(), rowBytes);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("gather", &gather, "y[b,k] = x[b, idx[b,k]] (zeros for out-of-range idx)");
    m.def("scatter", &scatter, "copy of base with rows idx[b,k] replaced by src[b,k] (fused, one pass)");
    m.def("scatter_", &scatter_, "in-place scatter into base");
    m.def("scatter_map", &scatter_map, "scatter through the workspace winner map (the plugin's path)");
    m.def("scatter_map_", &scatter_map_, "in-place scatter through the workspace winner map");
    m.def("vector_bytes", &vector_bytes, "vector width the kernels use for these tensors");
}
