/*
 * vitdeploy window gather/scatter CUDA kernels.
 *
 * Shared by the TensorRT plugins (windowGatherPlugin/, windowScatterPlugin/), the PyTorch extension
 * used by the GPU tests, and the bandwidth benchmark, so that every consumer runs the exact same code.
 * Plain C++ interface (void pointers + enums): no TensorRT or PyTorch types leak into it.
 *
 * Layout: x is [B, nW, rowElems...] with every window row contiguous (rowElems = N * C elements);
 * idx is [B, K], int32 or int64, values meant to be in [0, nW).
 *
 * Semantics (kept identical to vitdeploy/plugins/reference.py):
 *   gather : out[b, k] = x[b, idx[b, k]]; an index outside [0, nW) (negative included) gives a zero row.
 *   scatter: out = copy of base; out[b, idx[b, k]] = src[b, k] for every k with a valid index;
 *            source rows whose index is outside [0, nW) are ignored. If several k name the same window,
 *            the largest k wins (what NumPy fancy assignment does in practice), in both scatter variants.
 * No kernel ever reads or writes outside the tensors, whatever the index values are.
 */
#ifndef VITDEPLOY_WINDOW_OPS_KERNEL_H
#define VITDEPLOY_WINDOW_OPS_KERNEL_H

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

namespace vitdeploy
{

//! Element types of the data tensors. Values are ABI: the extern "C" launchers take them as int32_t.
enum class WindowDataType : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
    kBFLOAT16 = 2,
};

//! Element types of the index tensor. Values are ABI, as above.
enum class WindowIndexType : int32_t
{
    kINT32 = 0,
    kINT64 = 1,
};

//! Problem size; every count is in elements or rows, never bytes.
struct WindowShape
{
    int64_t batch;      //!< B
    int64_t numWindows; //!< nW: rows per sample in x / base / the scatter output
    int64_t numKept;    //!< K: rows per sample in idx, src and the gather output
    int64_t rowElems;   //!< elements in one window row (N * C)
};

//! Bytes per element of a data type, 0 for an unknown value.
int32_t windowDataTypeSize(WindowDataType type) noexcept;

//! out[B,K,row] = x[B,nW,row] rows selected by idx[B,K]. out must not overlap x.
cudaError_t windowGather(void* out, void const* x, void const* idx, WindowShape const& shape, WindowDataType dataType,
    WindowIndexType indexType, cudaStream_t stream) noexcept;

//! out[B,nW,row] = base with rows idx[b,k] replaced by src[b,k]. One pass: each output row is written once,
//! from src when it is selected and from base otherwise. out must not overlap src; out == base is allowed
//! and then dispatches to windowScatterInPlace.
cudaError_t windowScatter(void* out, void const* base, void const* idx, void const* src, WindowShape const& shape,
    WindowDataType dataType, WindowIndexType indexType, cudaStream_t stream) noexcept;

//! In-place variant: baseOut already holds base; only the selected rows are written.
cudaError_t windowScatterInPlace(void* baseOut, void const* idx, void const* src, WindowShape const& shape,
    WindowDataType dataType, WindowIndexType indexType, cudaStream_t stream) noexcept;

//! Bytes of device workspace the scatter's winner map needs for this problem (0 when empty).
size_t windowScatterWorkspaceSize(int64_t batch, int64_t numWindows) noexcept;

//! windowScatter (or, when out == base, windowScatterInPlace) through a winner map kept in `workspace`:
//! O(B*(nW + K)) work instead of the workspace-free kernels' O(B*nW*K) index scans, which matters when
//! the rows are token rows (nW, K in the tens of thousands). Same result, duplicates included. Falls
//! back to the workspace-free kernels when workspace is null or smaller than windowScatterWorkspaceSize.
cudaError_t windowScatter(void* out, void const* base, void const* idx, void const* src, WindowShape const& shape,
    WindowDataType dataType, WindowIndexType indexType, void* workspace, size_t workspaceBytes,
    cudaStream_t stream) noexcept;

//! Width in bytes (16, 8, 4, 2 or 1) of the vector loads/stores a launch would use for these pointers and
//! row size; exposed so tests and benchmarks can report which path ran.
int32_t windowVectorBytes(void const* a, void const* b, void const* c, int64_t rowBytes) noexcept;

} // namespace vitdeploy

extern "C"
{
    //! C ABI for ctypes / other languages. dataType / indexType take the enum values above.
    //! Return a cudaError_t value (0 = success).
    int32_t vitdeployWindowGather(void* out, void const* x, void const* idx, int64_t batch, int64_t numWindows,
        int64_t numKept, int64_t rowElems, int32_t dataType, int32_t indexType, cudaStream_t stream);
    int32_t vitdeployWindowScatter(void* out, void const* base, void const* idx, void const* src, int64_t batch,
        int64_t numWindows, int64_t numKept, int64_t rowElems, int32_t dataType, int32_t indexType,
        cudaStream_t stream);
    int32_t vitdeployWindowScatterInPlace(void* baseOut, void const* idx, void const* src, int64_t batch,
        int64_t numWindows, int64_t numKept, int64_t rowElems, int32_t dataType, int32_t indexType,
        cudaStream_t stream);
}

#endif // VITDEPLOY_WINDOW_OPS_KERNEL_H
