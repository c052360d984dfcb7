/*
 * Short-row bodies of the window kernels: a flat grid over (row, vector) pairs.
 *
 * SparseViT's all-pruned stages move token rows (Swin-T 672 stage 0: 96 channels, 192 B in fp16 = 12
 * 16-byte vectors): one 256-thread block per row would keep 12 lanes busy and copy rows one after another
 * behind a dependent index load. Here every thread owns kFLAT_UNROLL (row, vector) elements spaced a grid
 * apart, loads all their indices first and then all their data, so the whole grid is busy and several
 * independent loads are in flight per thread, whatever the row length.
 *
 * The bodies are __host__ __device__ and take the thread's position as arguments, so a host test can run
 * the exact code over every (block, thread) of a launch (tests/test_plugins_native.py) without a GPU.
 * Flat indices are 32-bit: launches whose element count exceeds INT32_MAX use the row-per-block kernels.
 */
#ifndef VITDEPLOY_WINDOW_OPS_FLAT_CUH
#define VITDEPLOY_WINDOW_OPS_FLAT_CUH

#include <cstdint>
#include <cuda_runtime_api.h>

// The host compiler (the host test, and nvcc's host pass) does not know the pragma.
#if defined(__CUDA_ARCH__)
#define VITDEPLOY_UNROLL _Pragma("unroll")
#else
#define VITDEPLOY_UNROLL
#endif

namespace vitdeploy
{
namespace flat
{

constexpr uint32_t kFLAT_UNROLL = 4;

//! Where one thread starts and how far it strides, in flat elements.
struct ThreadPos
{
    uint32_t first;  //!< blockIdx.x * blockDim.x + threadIdx.x
    uint32_t stride; //!< gridDim.x * blockDim.x
};

//! out[b, k, :] = x[b, idx[b, k], :], zero row for an index outside [0, nW). total = B*K*rowVecs.
template <typename VecT, typename IndexT>
__host__ __device__ inline void gather(ThreadPos p, VecT* __restrict__ out, VecT const* __restrict__ x,
    IndexT const* __restrict__ idx, uint32_t total, uint32_t rowVecs, int64_t numWindows, uint32_t numKept)
{
    for (uint32_t e = p.first; e < total; e += kFLAT_UNROLL * p.stride)
    {
        int64_t from[kFLAT_UNROLL];
VITDEPLOY_UNROLL
        for (uint32_t u = 0; u < kFLAT_UNROLL; ++u)
        {
            uint32_t const i = e + u * p.stride;
            from[u] = -1;
            if (i < total)
            {
                uint32_t const row = i / rowVecs;
                int64_t const w = static_cast<int64_t>(idx[row]);
                if (w >= 0 && w < numWindows)
                {
                    from[u] = (static_cast<int64_t>(row / numKept) * numWindows + w) * rowVecs + (i - row * rowVecs);
                }
            }
        }
        VecT v[kFLAT_UNROLL];
VITDEPLOY_UNROLL
        for (uint32_t u = 0; u < kFLAT_UNROLL; ++u)
        {
            v[u] = from[u] >= 0 ? x[from[u]] : VecT{};
        }
VITDEPLOY_UNROLL
        for (uint32_t u = 0; u < kFLAT_UNROLL; ++u)
        {
            uint32_t const i = e + u * p.stride;
            if (i < total)
            {
                out[i] = v[u];
            }
        }
    }
}

//! Fused scatter through the winner map: out[b, w, :] = src[b, inv[b, w], :], or base[b, w, :] when
//! inv[b, w] < 0. total = B*nW*rowVecs; every output element is written once.
template <typename VecT>
__host__ __device__ inline void scatterMap(ThreadPos p, VecT* __restrict__ out, VecT const* __restrict__ base,
    int32_t const* __restrict__ inv, VecT const* __restrict__ src, uint32_t total, uint32_t rowVecs,
    uint32_t numWindows, uint32_t numKept)
{
    for (uint32_t e = p.first; e < total; e += kFLAT_UNROLL * p.stride)
    {
        VecT const* from[kFLAT_UNROLL];
VITDEPLOY_UNROLL
        for (uint32_t u = 0; u < kFLAT_UNROLL; ++u)
        {
            uint32_t const i = e + u * p.stride;
            from[u] = nullptr;
            if (i < total)
            {
                uint32_t const row = i / rowVecs;
                int32_t const k = inv[row];
                from[u] = k >= 0
                    ? src + (static_cast<int64_t>(row / numWindows) * numKept + k) * rowVecs + (i - row * rowVecs)
                    : base + i;
            }
        }
        VecT v[kFLAT_UNROLL];
VITDEPLOY_UNROLL
        for (uint32_t u = 0; u < kFLAT_UNROLL; ++u)
        {
            if (from[u] != nullptr)
            {
                v[u] = *from[u];
            }
        }
VITDEPLOY_UNROLL
        for (uint32_t u = 0; u < kFLAT_UNROLL; ++u)
        {
            if (from[u] != nullptr)
            {
                out[e + u * p.stride] = v[u];
            }
        }
    }
}

//! In-place scatter through the winner map: only the winning source row of each window writes.
//! total = B*K*rowVecs (source elements).
template <typename VecT, typename IndexT>
__host__ __device__ inline void scatterInPlaceMap(ThreadPos p, VecT* __restrict__ out,
    IndexT const* __restrict__ idx, int32_t const* __restrict__ inv, VecT const* __restrict__ src, uint32_t total,
    uint32_t rowVecs, int64_t numWindows, uint32_t numKept)
{
    for (uint32_t e = p.first; e < total; e += kFLAT_UNROLL * p.stride)
    {
        int64_t to[kFLAT_UNROLL];
VITDEPLOY_UNROLL
        for (uint32_t u = 0; u < kFLAT_UNROLL; ++u)
        {
            uint32_t const i = e + u * p.stride;
            to[u] = -1;
            if (i < total)
            {
                uint32_t const row = i / rowVecs;
                uint32_t const b = row / numKept;
                int64_t const w = static_cast<int64_t>(idx[row]);
                if (w >= 0 && w < numWindows && inv[b * numWindows + w] == static_cast<int32_t>(row - b * numKept))
                {
                    to[u] = (static_cast<int64_t>(b) * numWindows + w) * rowVecs + (i - row * rowVecs);
                }
            }
        }
VITDEPLOY_UNROLL
        for (uint32_t u = 0; u < kFLAT_UNROLL; ++u)
        {
            if (to[u] >= 0)
            {
                out[to[u]] = src[e + u * p.stride];
            }
        }
    }
}

//! Blocks of `threads` for a flat launch over `total` elements: enough for kFLAT_UNROLL elements per
//! thread, capped at `maxBlocks` (the grid-stride loop covers the rest).
inline uint32_t blocksFor(uint32_t total, uint32_t threads, uint32_t maxBlocks) noexcept
{
    uint64_t const perBlock = static_cast<uint64_t>(threads) * kFLAT_UNROLL;
    uint64_t const want = (static_cast<uint64_t>(total) + perBlock - 1) / perBlock;
    return static_cast<uint32_t>(want < 1 ? 1 : (want > maxBlocks ? maxBlocks : want));
}

} // namespace flat
} // namespace vitdeploy

#endif // VITDEPLOY_WINDOW_OPS_FLAT_CUH
