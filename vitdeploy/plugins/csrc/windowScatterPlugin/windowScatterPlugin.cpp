#include "windowScatterPlugin.h"

#include <new>
#include <string>

using namespace nvinfer1;

namespace vitdeploy
{
namespace plugin
{
namespace
{

//! base [B, nW, rest...], idx [B, K], src [B, K, rest...]: the checks shared by build and run time.
//! Dimensions < 0 (unknown while building) are not compared.
bool shapesAgree(Dims const& base, Dims const& idx, Dims const& src, std::string& why)
{
    if (base.nbDims < 2 || idx.nbDims != 2 || src.nbDims != base.nbDims)
    {
        why = "base must be [B, nW, ...] (rank >= 2), idx [B, K] and src [B, K, ...] with base's rank; got ranks "
            + std::to_string(base.nbDims) + ", " + std::to_string(idx.nbDims) + ", " + std::to_string(src.nbDims);
        return false;
    }
    auto differ = [](int64_t a, int64_t b) { return a >= 0 && b >= 0 && a != b; };
    if (differ(base.d[0], idx.d[0]) || differ(base.d[0], src.d[0]))
    {
        why = "batch of base, idx and src differ";
        return false;
    }
    if (differ(idx.d[1], src.d[1]))
    {
        why = "idx has K=" + std::to_string(idx.d[1]) + " but src has " + std::to_string(src.d[1]) + " rows";
        return false;
    }
    for (int32_t i = 2; i < base.nbDims; ++i)
    {
        if (differ(base.d[i], src.d[i]))
        {
            why = "dimension " + std::to_string(i) + " of base and src differ";
            return false;
        }
    }
    return true;
}

} // namespace

WindowScatterPlugin::WindowScatterPlugin() noexcept
    : WindowPluginBase(kWINDOW_SCATTER_NAME)
{
}

IPluginV3* WindowScatterPlugin::clone() noexcept
{
    auto* copy = new (std::nothrow) WindowScatterPlugin();
    if (copy != nullptr)
    {
        copy->mWorkspaceBytes = mWorkspaceBytes;
    }
    return copy;
}

int32_t WindowScatterPlugin::expectedInputs() const noexcept
{
    return 3;
}

int32_t WindowScatterPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /*exprBuilder*/) noexcept
{
    if (inputs == nullptr || outputs == nullptr || nbInputs != 3 || nbOutputs != 1)
    {
        logError("WindowScatter: expects 3 inputs (base, idx, src) and 1 output");
        return -1;
    }
    if (inputs[kBASE].nbDims < 2 || inputs[kIDX].nbDims != 2 || inputs[kSRC].nbDims != inputs[kBASE].nbDims)
    {
        logError("WindowScatter: base must be [B, nW, ...], idx [B, K] and src [B, K, ...] with base's rank");
        return -1;
    }
    outputs[0] = inputs[kBASE]; // same shape as base, batch symbolic
    return 0;
}

int32_t WindowScatterPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != 3 || nbOutputs != 1)
    {
        logError("WindowScatter: configurePlugin expects 3 inputs and 1 output");
        return -1;
    }
    std::string why;
    if (!shapesAgree(in[kBASE].desc.dims, in[kIDX].desc.dims, in[kSRC].desc.dims, why))
    {
        logError("WindowScatter: " + why);
        return -1;
    }
    return 0;
}

int32_t WindowScatterPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != 3 || nbOutputs != 1)
    {
        return -1;
    }
    std::string why;
    if (!shapesAgree(in[kBASE].dims, in[kIDX].dims, in[kSRC].dims, why))
    {
        logError("WindowScatter: " + why);
        return -1;
    }
    return 0;
}

size_t WindowScatterPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    // The winner map (one int32 per base row at the profile's largest shape): keeps the scatter O(nW + K)
    // when SparseViT's all-pruned stages scatter token rows (nW and K in the tens of thousands).
    if (inputs == nullptr || nbInputs != 3 || inputs[kBASE].max.nbDims < 2)
    {
        mWorkspaceBytes = 0;
        return 0;
    }
    mWorkspaceBytes = windowScatterWorkspaceSize(inputs[kBASE].max.d[0], inputs[kBASE].max.d[1]);
    return mWorkspaceBytes;
}

size_t WindowScatterPlugin::usableWorkspace(void const* workspace, WindowShape const& shape) const noexcept
{
    // TensorRT hands enqueue what getWorkspaceSize asked for at the profile's largest shapes ("sufficient for
    // inputs and outputs of the given size or any smaller problem", NvInferRuntime.h), and the map's size only
    // grows with B and nW, so the current shape's need fits. When this object answered getWorkspaceSize itself
    // (build-time timing), the shape is also checked against that answer; a runtime copy made from the creator
    // never saw it. Without a workspace the scatter takes the workspace-free kernels.
    size_t const need = windowScatterWorkspaceSize(shape.batch, shape.numWindows);
    if (workspace == nullptr || need == 0 || (mWorkspaceBytes != kUNKNOWN_WORKSPACE && need > mWorkspaceBytes))
    {
        return 0;
    }
    return need;
}

int32_t WindowScatterPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    EnqueueArgs a;
    if (!decodeEnqueue(inputDesc, outputDesc, inputs, outputs, a))
    {
        return -1;
    }
    // TensorRT gives the output its own buffer (no aliasing is requested), so this is the fused one-pass
    // scatter through the winner map in the workspace; windowScatter falls back to the workspace-free kernels
    // when usableWorkspace says 0, and to the in-place variant if the pointers ever coincide.
    cudaError_t const status = windowScatter(outputs[0], inputs[kBASE], inputs[kIDX], inputs[kSRC], a.shape,
        a.dataType, a.indexType, workspace, usableWorkspace(workspace, a.shape), stream);
    if (status != cudaSuccess)
    {
        logError(std::string("WindowScatter: kernel launch failed: ") + cudaGetErrorString(status));
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------------

WindowScatterPluginCreator::WindowScatterPluginCreator() noexcept
    : WindowPluginCreatorBase(kWINDOW_SCATTER_NAME)
{
}

IPluginV3* WindowScatterPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    noteIgnoredFields(fc);
    return new (std::nothrow) WindowScatterPlugin();
}

} // namespace plugin
} // namespace vitdeploy
