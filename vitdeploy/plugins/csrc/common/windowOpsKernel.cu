/*
 * vitdeploy window gather/scatter kernels. See windowOpsKernel.h for the semantics.
 *
 * These ops only move whole window rows, so the kernels are typeless byte copies: the data type only sets
 * the row size in bytes, which keeps fp32/fp16/bf16 (and NaN payloads) bit-exact with one code path.
 * The copy width is the widest power of two (<= 16 bytes) dividing every base pointer and the row size:
 * rows of one tensor then all start on that boundary, so a row needs no head/tail split. Rows whose
 * size is not a multiple of 16 bytes (odd C in fp16, ...) fall back to 8/4/2/1-byte accesses.
 *
 * Two layouts: rows at least a block wide get a block per row (grid.y splits rows when there are few);
 * shorter rows (token rows) use the flat (row, vector) grid of windowOpsFlat.cuh, in the gather and in
 * both winner-map scatters (the paths the plugins take).
 */
#include "windowOpsFlat.cuh"
#include "windowOpsKernel.h"

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace vitdeploy
{
namespace
{

constexpr int32_t kTHREADS = 256;
constexpr int32_t kUNROLL = 4;        // independent loads in flight per thread
constexpr int32_t kBLOCKS_PER_SM = 8; // 8 x 256 threads = a full SM on sm_75..sm_90
constexpr int64_t kMAX_GRID_Y = 65535;
constexpr int32_t kMAX_DEVICES = 64;

// One lookup per device and process: cudaDeviceGetAttribute is cheap, but enqueue paths should not
// pay for it on every call.
std::atomic<int32_t> gSmCount[kMAX_DEVICES];

int32_t smCount() noexcept
{
    int32_t device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || device < 0)
    {
        return 80;
    }
    if (device < kMAX_DEVICES)
    {
        int32_t cached = gSmCount[device].load(std::memory_order_relaxed);
        if (cached > 0)
        {
            return cached;
        }
    }
    int32_t count = 0;
    if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0)
    {
        return 80;
    }
    if (device < kMAX_DEVICES)
    {
        gSmCount[device].store(count, std::memory_order_relaxed);
    }
    return count;
}

template <typename VecT>
__device__ __forceinline__ void copyRange(
    VecT* __restrict__ dst, VecT const* __restrict__ src, int64_t begin, int64_t end)
{
    int64_t const stride = blockDim.x;
    int64_t i = begin + threadIdx.x;
    for (; i + (kUNROLL - 1) * stride < end; i += kUNROLL * stride)
    {
        VecT v[kUNROLL];
#pragma unroll
        for (int32_t u = 0; u < kUNROLL; ++u)
        {
            v[u] = src[i + u * stride];
        }
#pragma unroll
        for (int32_t u = 0; u < kUNROLL; ++u)
        {
            dst[i + u * stride] = v[u];
        }
    }
    for (; i < end; i += stride)
    {
        dst[i] = src[i];
    }
}

template <typename VecT>
__device__ __forceinline__ void zeroRange(VecT* __restrict__ dst, int64_t begin, int64_t end)
{
    VecT const zero{};
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    {
        dst[i] = zero;
    }
}

// grid.x walks rows (grid-stride), grid.y splits a row into chunks when there are too few rows to fill
// the device. Every branch below depends only on the row, so it is uniform across the block.
template <typename VecT, typename IndexT>
__global__ void __launch_bounds__(kTHREADS) windowGatherKernel(VecT* __restrict__ out, VecT const* __restrict__ x,
    IndexT const* __restrict__ idx, int64_t numRows, int64_t numWindows, int64_t numKept, int64_t rowVecs,
    int64_t chunkVecs)
{
    int64_t const begin = static_cast<int64_t>(blockIdx.y) * chunkVecs;
    int64_t const end = min(begin + chunkVecs, rowVecs);
    for (int64_t row = blockIdx.x; row < numRows; row += gridDim.x)
    {
        int64_t const b = row / numKept;
        int64_t const w = static_cast<int64_t>(idx[row]);
        VecT* dst = out + row * rowVecs;
        if (w >= 0 && w < numWindows)
        {
            copyRange(dst, x + (b * numWindows + w) * rowVecs, begin, end);
        }
        else
        {
            zeroRange(dst, begin, end);
        }
    }
}

// Fused out-of-place scatter: one block per output row finds which source row (if any) lands there by
// scanning the sample's K indices (a few hundred values, cached), then copies from src or base. Every output
// byte is written exactly once and base rows that get replaced are never read.
template <typename VecT, typename IndexT>
__global__ void __launch_bounds__(kTHREADS) windowScatterKernel(VecT* __restrict__ out,
    VecT const* __restrict__ base, IndexT const* __restrict__ idx, VecT const* __restrict__ src, int64_t numRows,
    int64_t numWindows, int64_t numKept, int64_t rowVecs, int64_t chunkVecs)
{
    __shared__ int32_t sSource;
    int64_t const begin = static_cast<int64_t>(blockIdx.y) * chunkVecs;
    int64_t const end = min(begin + chunkVecs, rowVecs);
    for (int64_t row = blockIdx.x; row < numRows; row += gridDim.x)
    {
        int64_t const b = row / numWindows;
        int64_t const w = row - b * numWindows;
        IndexT const* idxRow = idx + b * numKept;
        if (threadIdx.x == 0)
        {
            sSource = -1;
        }
        __syncthreads();
        int32_t found = -1;
        for (int64_t k = threadIdx.x; k < numKept; k += blockDim.x)
        {
            if (static_cast<int64_t>(idxRow[k]) == w)
            {
                found = static_cast<int32_t>(k); // k grows per thread, so this keeps the thread's largest
            }
        }
        if (found >= 0)
        {
            atomicMax(&sSource, found); // largest k wins, as in NumPy assignment
        }
        __syncthreads();
        int32_t const k = sSource;
        __syncthreads(); // everyone has read sSource before the next row resets it
        VecT const* from = k >= 0 ? src + (b * numKept + k) * rowVecs : base + row * rowVecs;
        copyRange(out + row * rowVecs, from, begin, end);
    }
}

// In-place scatter: one block per source row. A row whose window is named again by a later k is skipped, so
// duplicates resolve like the fused kernel (largest k wins) and no two blocks race on one output row.
template <typename VecT, typename IndexT>
__global__ void __launch_bounds__(kTHREADS) windowScatterInPlaceKernel(VecT* __restrict__ out,
    IndexT const* __restrict__ idx, VecT const* __restrict__ src, int64_t numRows, int64_t numWindows,
    int64_t numKept, int64_t rowVecs, int64_t chunkVecs)
{
    __shared__ int32_t sShadowed;
    int64_t const begin = static_cast<int64_t>(blockIdx.y) * chunkVecs;
    int64_t const end = min(begin + chunkVecs, rowVecs);
    for (int64_t row = blockIdx.x; row < numRows; row += gridDim.x)
    {
        int64_t const b = row / numKept;
        int64_t const k = row - b * numKept;
        IndexT const* idxRow = idx + b * numKept;
        int64_t const w = static_cast<int64_t>(idxRow[k]);
        if (w < 0 || w >= numWindows)
        {
            continue; // bad index: this source row is ignored (uniform across the block)
        }
        if (threadIdx.x == 0)
        {
            sShadowed = 0;
        }
        __syncthreads();
        for (int64_t k2 = k + 1 + threadIdx.x; k2 < numKept; k2 += blockDim.x)
        {
            if (static_cast<int64_t>(idxRow[k2]) == w)
            {
                sShadowed = 1;
            }
        }
        __syncthreads();
        bool const shadowed = sShadowed != 0;
        __syncthreads();
        if (!shadowed)
        {
            copyRange(out + (b * numWindows + w) * rowVecs, src + row * rowVecs, begin, end);
        }
    }
}

// Winner map for the workspace path: inv[b, w] = the largest k with idx[b, k] == w, or -1. Built in
// O(B*K) with one atomicMax per valid index, so scattering costs O(B*(nW + K)) instead of the scan
// kernels' O(B*nW*K) — which matters once "windows" are token rows (tens of thousands per sample).
template <typename IndexT>
__global__ void __launch_bounds__(kTHREADS) windowScatterMarkKernel(int32_t* __restrict__ inv,
    IndexT const* __restrict__ idx, int64_t numIdx, int64_t numWindows, int64_t numKept)
{
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numIdx;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        int64_t const b = i / numKept;
        int64_t const w = static_cast<int64_t>(idx[i]);
        if (w >= 0 && w < numWindows)
        {
            atomicMax(inv + b * numWindows + w, static_cast<int32_t>(i - b * numKept));
        }
    }
}

// Fused scatter from the winner map: every output row is written once, from src or from base.
template <typename VecT>
__global__ void __launch_bounds__(kTHREADS) windowScatterMapKernel(VecT* __restrict__ out,
    VecT const* __restrict__ base, int32_t const* __restrict__ inv, VecT const* __restrict__ src, int64_t numRows,
    int64_t numWindows, int64_t numKept, int64_t rowVecs, int64_t chunkVecs)
{
    int64_t const begin = static_cast<int64_t>(blockIdx.y) * chunkVecs;
    int64_t const end = min(begin + chunkVecs, rowVecs);
    for (int64_t row = blockIdx.x; row < numRows; row += gridDim.x)
    {
        int64_t const b = row / numWindows;
        int32_t const k = inv[row];
        VecT const* from = k >= 0 ? src + (b * numKept + k) * rowVecs : base + row * rowVecs;
        copyRange(out + row * rowVecs, from, begin, end);
    }
}

// In-place scatter from the winner map: only the winning source row of each window writes.
template <typename VecT, typename IndexT>
__global__ void __launch_bounds__(kTHREADS) windowScatterInPlaceMapKernel(VecT* __restrict__ out,
    IndexT const* __restrict__ idx, int32_t const* __restrict__ inv, VecT const* __restrict__ src, int64_t numRows,
    int64_t numWindows, int64_t numKept, int64_t rowVecs, int64_t chunkVecs)
{
    int64_t const begin = static_cast<int64_t>(blockIdx.y) * chunkVecs;
    int64_t const end = min(begin + chunkVecs, rowVecs);
    for (int64_t row = blockIdx.x; row < numRows; row += gridDim.x)
    {
        int64_t const b = row / numKept;
        int64_t const w = static_cast<int64_t>(idx[row]);
        if (w < 0 || w >= numWindows || inv[b * numWindows + w] != static_cast<int32_t>(row - b * numKept))
        {
            continue; // bad index, or a later k names the same window
        }
        copyRange(out + (b * numWindows + w) * rowVecs, src + row * rowVecs, begin, end);
    }
}

template <typename VecT, typename IndexT>
__global__ void __launch_bounds__(kTHREADS) windowGatherFlatKernel(VecT* __restrict__ out,
    VecT const* __restrict__ x, IndexT const* __restrict__ idx, uint32_t total, uint32_t rowVecs, int64_t numWindows,
    uint32_t numKept)
{
    flat::gather(flat::ThreadPos{blockIdx.x * blockDim.x + threadIdx.x, gridDim.x * blockDim.x}, out, x, idx, total,
        rowVecs, numWindows, numKept);
}

template <typename VecT>
__global__ void __launch_bounds__(kTHREADS) windowScatterMapFlatKernel(VecT* __restrict__ out,
    VecT const* __restrict__ base, int32_t const* __restrict__ inv, VecT const* __restrict__ src, uint32_t total,
    uint32_t rowVecs, uint32_t numWindows, uint32_t numKept)
{
    flat::scatterMap(flat::ThreadPos{blockIdx.x * blockDim.x + threadIdx.x, gridDim.x * blockDim.x}, out, base, inv,
        src, total, rowVecs, numWindows, numKept);
}

template <typename VecT, typename IndexT>
__global__ void __launch_bounds__(kTHREADS) windowScatterInPlaceMapFlatKernel(VecT* __restrict__ out,
    IndexT const* __restrict__ idx, int32_t const* __restrict__ inv, VecT const* __restrict__ src, uint32_t total,
    uint32_t rowVecs, int64_t numWindows, uint32_t numKept)
{
    flat::scatterInPlaceMap(flat::ThreadPos{blockIdx.x * blockDim.x + threadIdx.x, gridDim.x * blockDim.x}, out, idx,
        inv, src, total, rowVecs, numWindows, numKept);
}

struct LaunchConfig
{
    dim3 grid;
    int64_t chunkVecs;
};

LaunchConfig launchConfig(int64_t numRows, int64_t rowVecs) noexcept
{
    int64_t const target = static_cast<int64_t>(smCount()) * kBLOCKS_PER_SM;
    int64_t chunks = 1;
    if (numRows < target)
    {
        // Split rows only down to one vector per thread: smaller chunks would just add index lookups.
        int64_t const maxChunks = std::max<int64_t>(1, (rowVecs + kTHREADS - 1) / kTHREADS);
        chunks = std::min<int64_t>({(target + numRows - 1) / numRows, maxChunks, kMAX_GRID_Y});
    }
    int64_t const chunkVecs = (rowVecs + chunks - 1) / chunks;
    chunks = (rowVecs + chunkVecs - 1) / chunkVecs;
    // Cap grid.x at twice what fits at once; the grid-stride loop covers the rest.
    int64_t const gridX = std::min<int64_t>(numRows, 2 * target);
    LaunchConfig cfg;
    cfg.grid = dim3(static_cast<uint32_t>(gridX), static_cast<uint32_t>(chunks), 1);
    cfg.chunkVecs = chunkVecs;
    return cfg;
}

enum class Op
{
    kGATHER,
    kSCATTER,
    kSCATTER_IN_PLACE,
    kSCATTER_MAP,          // kSCATTER through the winner map in the workspace
    kSCATTER_IN_PLACE_MAP, // kSCATTER_IN_PLACE through the winner map in the workspace
};

// The flat layout, when rows are shorter than a block and the element count fits its 32-bit indices.
template <typename VecT, typename IndexT>
bool launchFlat(Op op, VecT* o, VecT const* d, IndexT const* ix, VecT const* sr, int32_t const* inv,
    WindowShape const& s, int64_t rowVecs, cudaStream_t stream) noexcept
{
    bool const fused = op == Op::kSCATTER_MAP;
    if (rowVecs >= kTHREADS || !(op == Op::kGATHER || fused || op == Op::kSCATTER_IN_PLACE_MAP))
    {
        return false;
    }
    int64_t const total64 = (fused ? s.batch * s.numWindows : s.batch * s.numKept) * rowVecs;
    if (total64 > INT32_MAX)
    {
        return false;
    }
    auto const total = static_cast<uint32_t>(total64);
    auto const rv = static_cast<uint32_t>(rowVecs);
    auto const maxBlocks = static_cast<uint32_t>(2 * kBLOCKS_PER_SM * smCount());
    uint32_t const blocks = flat::blocksFor(total, kTHREADS, maxBlocks);
    auto const nK = static_cast<uint32_t>(s.numKept);
    switch (op)
    {
    case Op::kGATHER:
        windowGatherFlatKernel<VecT, IndexT><<<blocks, kTHREADS, 0, stream>>>(o, d, ix, total, rv, s.numWindows, nK);
        break;
    case Op::kSCATTER_MAP:
        windowScatterMapFlatKernel<VecT><<<blocks, kTHREADS, 0, stream>>>(
            o, d, inv, sr, total, rv, static_cast<uint32_t>(s.numWindows), nK);
        break;
    default:
        windowScatterInPlaceMapFlatKernel<VecT, IndexT><<<blocks, kTHREADS, 0, stream>>>(
            o, ix, inv, sr, total, rv, s.numWindows, nK);
        break;
    }
    return true;
}

template <typename VecT, typename IndexT>
cudaError_t launchTyped(Op op, void* out, void const* data, void const* idx, void const* src,
    int32_t const* inv, WindowShape const& s, int64_t rowBytes, cudaStream_t stream) noexcept
{
    int64_t const rowVecs = rowBytes / static_cast<int64_t>(sizeof(VecT));
    auto* o = static_cast<VecT*>(out);
    auto const* d = static_cast<VecT const*>(data);
    auto const* sr = static_cast<VecT const*>(src);
    auto const* ix = static_cast<IndexT const*>(idx);
    if (launchFlat<VecT, IndexT>(op, o, d, ix, sr, inv, s, rowVecs, stream))
    {
        return cudaGetLastError();
    }
    switch (op)
    {
    case Op::kGATHER:
    {
        int64_t const rows = s.batch * s.numKept;
        LaunchConfig const c = launchConfig(rows, rowVecs);
        windowGatherKernel<VecT, IndexT>
            <<<c.grid, kTHREADS, 0, stream>>>(o, d, ix, rows, s.numWindows, s.numKept, rowVecs, c.chunkVecs);
        break;
    }
    case Op::kSCATTER:
    {
        int64_t const rows = s.batch * s.numWindows;
        LaunchConfig const c = launchConfig(rows, rowVecs);
        windowScatterKernel<VecT, IndexT><<<c.grid, kTHREADS, 0, stream>>>(
            o, d, ix, sr, rows, s.numWindows, s.numKept, rowVecs, c.chunkVecs);
        break;
    }
    case Op::kSCATTER_IN_PLACE:
    {
        int64_t const rows = s.batch * s.numKept;
        LaunchConfig const c = launchConfig(rows, rowVecs);
        windowScatterInPlaceKernel<VecT, IndexT>
            <<<c.grid, kTHREADS, 0, stream>>>(o, ix, sr, rows, s.numWindows, s.numKept, rowVecs, c.chunkVecs);
        break;
    }
    case Op::kSCATTER_MAP:
    {
        int64_t const rows = s.batch * s.numWindows;
        LaunchConfig const c = launchConfig(rows, rowVecs);
        windowScatterMapKernel<VecT>
            <<<c.grid, kTHREADS, 0, stream>>>(o, d, inv, sr, rows, s.numWindows, s.numKept, rowVecs, c.chunkVecs);
        break;
    }
    case Op::kSCATTER_IN_PLACE_MAP:
    {
        int64_t const rows = s.batch * s.numKept;
        LaunchConfig const c = launchConfig(rows, rowVecs);
        windowScatterInPlaceMapKernel<VecT, IndexT><<<c.grid, kTHREADS, 0, stream>>>(
            o, ix, inv, sr, rows, s.numWindows, s.numKept, rowVecs, c.chunkVecs);
        break;
    }
    }
    return cudaGetLastError();
}

template <typename IndexT>
cudaError_t launchWidth(Op op, int32_t vecBytes, void* out, void const* data, void const* idx, void const* src,
    int32_t const* inv, WindowShape const& s, int64_t rowBytes, cudaStream_t stream) noexcept
{
    switch (vecBytes)
    {
    case 16: return launchTyped<uint4, IndexT>(op, out, data, idx, src, inv, s, rowBytes, stream);
    case 8: return launchTyped<uint2, IndexT>(op, out, data, idx, src, inv, s, rowBytes, stream);
    case 4: return launchTyped<uint32_t, IndexT>(op, out, data, idx, src, inv, s, rowBytes, stream);
    case 2: return launchTyped<uint16_t, IndexT>(op, out, data, idx, src, inv, s, rowBytes, stream);
    default: return launchTyped<uint8_t, IndexT>(op, out, data, idx, src, inv, s, rowBytes, stream);
    }
}

// Fill the winner map (workspace) for idx: all -1, then the largest valid k per window.
template <typename IndexT>
cudaError_t markWinners(int32_t* inv, void const* idx, WindowShape const& s, cudaStream_t stream) noexcept
{
    size_t const bytes = static_cast<size_t>(s.batch * s.numWindows) * sizeof(int32_t);
    cudaError_t status = cudaMemsetAsync(inv, 0xFF, bytes, stream); // 0xFFFFFFFF == -1
    if (status != cudaSuccess)
    {
        return status;
    }
    int64_t const numIdx = s.batch * s.numKept;
    int64_t const blocks = std::min<int64_t>((numIdx + kTHREADS - 1) / kTHREADS, 4 * static_cast<int64_t>(smCount()));
    windowScatterMarkKernel<IndexT><<<static_cast<uint32_t>(std::max<int64_t>(blocks, 1)), kTHREADS, 0, stream>>>(
        inv, static_cast<IndexT const*>(idx), numIdx, s.numWindows, s.numKept);
    return cudaGetLastError();
}

bool validShape(WindowShape const& s) noexcept
{
    // K is kept in a 32-bit shared variable by the scatter kernel; windows per image are far below that.
    return s.batch >= 0 && s.numWindows >= 0 && s.numKept >= 0 && s.rowElems >= 0 && s.numKept <= INT32_MAX
        && s.numWindows <= INT32_MAX;
}

cudaError_t launch(Op op, void* out, void const* data, void const* idx, void const* src, WindowShape const& s,
    WindowDataType dataType, WindowIndexType indexType, cudaStream_t stream, int32_t* inv = nullptr) noexcept
{
    int32_t const elemSize = windowDataTypeSize(dataType);
    if (elemSize == 0 || !validShape(s)
        || (indexType != WindowIndexType::kINT32 && indexType != WindowIndexType::kINT64))
    {
        return cudaErrorInvalidValue;
    }
    int64_t const rowBytes = s.rowElems * elemSize;
    bool const fused = op == Op::kSCATTER || op == Op::kSCATTER_MAP;
    int64_t const rows = fused ? s.batch * s.numWindows : s.batch * s.numKept;
    if (rows == 0 || rowBytes == 0)
    {
        return cudaSuccess; // empty output (or, in place, nothing to write)
    }
    if (fused && s.numKept == 0)
    {
        if (out == data)
        {
            return cudaSuccess;
        }
        if (out == nullptr || data == nullptr)
        {
            return cudaErrorInvalidValue;
        }
        return cudaMemcpyAsync(out, data, static_cast<size_t>(rows * rowBytes), cudaMemcpyDeviceToDevice, stream);
    }
    bool const inPlace = op == Op::kSCATTER_IN_PLACE || op == Op::kSCATTER_IN_PLACE_MAP;
    bool const needsData = !inPlace && !(op == Op::kGATHER && s.numWindows == 0);
    bool const needsSrc = op != Op::kGATHER;
    bool const needsMap = op == Op::kSCATTER_MAP || op == Op::kSCATTER_IN_PLACE_MAP;
    if (out == nullptr || idx == nullptr || (needsData && data == nullptr) || (needsSrc && src == nullptr)
        || (needsMap && inv == nullptr))
    {
        return cudaErrorInvalidValue;
    }
    if (needsMap)
    {
        cudaError_t const status = indexType == WindowIndexType::kINT32 ? markWinners<int32_t>(inv, idx, s, stream)
                                                                        : markWinners<int64_t>(inv, idx, s, stream);
        if (status != cudaSuccess)
        {
            return status;
        }
    }
    int32_t const vecBytes = windowVectorBytes(out, data, src, rowBytes);
    return indexType == WindowIndexType::kINT32
        ? launchWidth<int32_t>(op, vecBytes, out, data, idx, src, inv, s, rowBytes, stream)
        : launchWidth<int64_t>(op, vecBytes, out, data, idx, src, inv, s, rowBytes, stream);
}

} // namespace

int32_t windowDataTypeSize(WindowDataType type) noexcept
{
    switch (type)
    {
    case WindowDataType::kFLOAT32: return 4;
    case WindowDataType::kFLOAT16:
    case WindowDataType::kBFLOAT16: return 2;
    }
    return 0;
}

int32_t windowVectorBytes(void const* a, void const* b, void const* c, int64_t rowBytes) noexcept
{
    uint64_t const bits = reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b)
        | reinterpret_cast<uintptr_t>(c) | static_cast<uint64_t>(rowBytes);
    int32_t width = 16;
    while (width > 1 && (bits % static_cast<uint64_t>(width)) != 0)
    {
        width /= 2;
    }
    return width;
}

cudaError_t windowGather(void* out, void const* x, void const* idx, WindowShape const& shape, WindowDataType dataType,
    WindowIndexType indexType, cudaStream_t stream) noexcept
{
    return launch(Op::kGATHER, out, x, idx, nullptr, shape, dataType, indexType, stream);
}

cudaError_t windowScatter(void* out, void const* base, void const* idx, void const* src, WindowShape const& shape,
    WindowDataType dataType, WindowIndexType indexType, cudaStream_t stream) noexcept
{
    if (out != nullptr && out == base)
    {
        return windowScatterInPlace(out, idx, src, shape, dataType, indexType, stream);
    }
    return launch(Op::kSCATTER, out, base, idx, src, shape, dataType, indexType, stream);
}

cudaError_t windowScatterInPlace(void* baseOut, void const* idx, void const* src, WindowShape const& shape,
    WindowDataType dataType, WindowIndexType indexType, cudaStream_t stream) noexcept
{
    return launch(Op::kSCATTER_IN_PLACE, baseOut, nullptr, idx, src, shape, dataType, indexType, stream);
}

size_t windowScatterWorkspaceSize(int64_t batch, int64_t numWindows) noexcept
{
    if (batch <= 0 || numWindows <= 0)
    {
        return 0;
    }
    size_t const bytes = static_cast<size_t>(batch) * static_cast<size_t>(numWindows) * sizeof(int32_t);
    return (bytes + 255) / 256 * 256;
}

cudaError_t windowScatter(void* out, void const* base, void const* idx, void const* src, WindowShape const& shape,
    WindowDataType dataType, WindowIndexType indexType, void* workspace, size_t workspaceBytes,
    cudaStream_t stream) noexcept
{
    bool const useMap = workspace != nullptr && shape.numKept > 0
        && workspaceBytes >= windowScatterWorkspaceSize(shape.batch, shape.numWindows);
    if (!useMap)
    {
        return windowScatter(out, base, idx, src, shape, dataType, indexType, stream);
    }
    auto* inv = static_cast<int32_t*>(workspace);
    if (out != nullptr && out == base)
    {
        return launch(Op::kSCATTER_IN_PLACE_MAP, out, nullptr, idx, src, shape, dataType, indexType, stream, inv);
    }
    return launch(Op::kSCATTER_MAP, out, base, idx, src, shape, dataType, indexType, stream, inv);
}

} // namespace vitdeploy

extern "C"
{
    int32_t vitdeployWindowGather(void* out, void const* x, void const* idx, int64_t batch, int64_t numWindows,
        int64_t numKept, int64_t rowElems, int32_t dataType, int32_t indexType, cudaStream_t stream)
    {
        vitdeploy::WindowShape const s{batch, numWindows, numKept, rowElems};
        return static_cast<int32_t>(vitdeploy::windowGather(out, x, idx, s,
            static_cast<vitdeploy::WindowDataType>(dataType), static_cast<vitdeploy::WindowIndexType>(indexType),
            stream));
    }

    int32_t vitdeployWindowScatter(void* out, void const* base, void const* idx, void const* src, int64_t batch,
        int64_t numWindows, int64_t numKept, int64_t rowElems, int32_t dataType, int32_t indexType,
        cudaStream_t stream)
    {
        vitdeploy::WindowShape const s{batch, numWindows, numKept, rowElems};
        return static_cast<int32_t>(vitdeploy::windowScatter(out, base, idx, src, s,
            static_cast<vitdeploy::WindowDataType>(dataType), static_cast<vitdeploy::WindowIndexType>(indexType),
            stream));
    }

    int32_t vitdeployWindowScatterInPlace(void* baseOut, void const* idx, void const* src, int64_t batch,
        int64_t numWindows, int64_t numKept, int64_t rowElems, int32_t dataType, int32_t indexType,
        cudaStream_t stream)
    {
        vitdeploy::WindowShape const s{batch, numWindows, numKept, rowElems};
        return static_cast<int32_t>(vitdeploy::windowScatterInPlace(baseOut, idx, src, s,
            static_cast<vitdeploy::WindowDataType>(dataType), static_cast<vitdeploy::WindowIndexType>(indexType),
            stream));
    }
}
