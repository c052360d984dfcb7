#include "windowGatherPlugin.h"

#include <new>
#include <string>

using namespace nvinfer1;

namespace vitdeploy
{
namespace plugin
{

WindowGatherPlugin::WindowGatherPlugin() noexcept
    : WindowPluginBase(kWINDOW_GATHER_NAME)
{
}

IPluginV3* WindowGatherPlugin::clone() noexcept
{
    return new (std::nothrow) WindowGatherPlugin();
}

int32_t WindowGatherPlugin::expectedInputs() const noexcept
{
    return 2;
}

int32_t WindowGatherPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /*exprBuilder*/) noexcept
{
    if (inputs == nullptr || outputs == nullptr || nbInputs != 2 || nbOutputs != 1)
    {
        logError("WindowGather: expects 2 inputs (x, idx) and 1 output");
        return -1;
    }
    DimsExprs const& x = inputs[kX];
    DimsExprs const& idx = inputs[kIDX];
    if (x.nbDims < 2 || idx.nbDims != 2)
    {
        logError("WindowGather: x must be [B, nW, ...] (rank >= 2) and idx [B, K] (rank 2), got ranks "
            + std::to_string(x.nbDims) + " and " + std::to_string(idx.nbDims));
        return -1;
    }
    // [B, K, rest of x]: B stays symbolic (dynamic batch), K comes from idx (a constant after TopK).
    outputs[0] = x;
    outputs[0].d[1] = idx.d[1];
    return 0;
}

int32_t WindowGatherPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != 2 || nbOutputs != 1)
    {
        logError("WindowGather: configurePlugin expects 2 inputs and 1 output");
        return -1;
    }
    Dims const& x = in[kX].desc.dims;
    Dims const& idx = in[kIDX].desc.dims;
    // -1 marks a dimension only known at run time; compare the ones known now.
    if (x.d[0] >= 0 && idx.d[0] >= 0 && x.d[0] != idx.d[0])
    {
        logError("WindowGather: batch of x (" + std::to_string(x.d[0]) + ") and idx (" + std::to_string(idx.d[0])
            + ") differ");
        return -1;
    }
    return 0;
}

int32_t WindowGatherPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != 2 || nbOutputs != 1)
    {
        return -1;
    }
    Dims const& x = in[kX].dims;
    Dims const& idx = in[kIDX].dims;
    if (x.nbDims < 2 || idx.nbDims != 2 || x.d[0] != idx.d[0])
    {
        logError("WindowGather: x must be [B, nW, ...] and idx [B, K] with the same B");
        return -1;
    }
    return 0;
}

int32_t WindowGatherPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    EnqueueArgs a;
    if (!decodeEnqueue(inputDesc, outputDesc, inputs, outputs, a))
    {
        return -1;
    }
    cudaError_t const status
        = windowGather(outputs[0], inputs[kX], inputs[kIDX], a.shape, a.dataType, a.indexType, stream);
    if (status != cudaSuccess)
    {
        logError(std::string("WindowGather: kernel launch failed: ") + cudaGetErrorString(status));
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------------

WindowGatherPluginCreator::WindowGatherPluginCreator() noexcept
    : WindowPluginCreatorBase(kWINDOW_GATHER_NAME)
{
}

IPluginV3* WindowGatherPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    noteIgnoredFields(fc);
    return new (std::nothrow) WindowGatherPlugin();
}

} // namespace plugin
} // namespace vitdeploy
