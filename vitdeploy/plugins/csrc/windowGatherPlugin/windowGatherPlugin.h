/*
 * WindowGather (namespace "vitdeploy", version "1"): IPluginV3 plugin selecting window rows.
 *   inputs : x   [B, nW, d2, ..., dr]  float32 | float16 | bfloat16
 *            idx [B, K]                int32 | int64
 *   output : y   [B, K, d2, ..., dr]   same type as x;  y[b, k] = x[b, idx[b, k]] (zeros if idx out of [0, nW))
 * See README.md in this folder.
 */
#ifndef VITDEPLOY_WINDOW_GATHER_PLUGIN_H
#define VITDEPLOY_WINDOW_GATHER_PLUGIN_H

#include "pluginCommon.h"

namespace vitdeploy
{
namespace plugin
{

class WindowGatherPlugin : public WindowPluginBase
{
public:
    WindowGatherPlugin() noexcept;
    ~WindowGatherPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneBuild
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

protected:
    int32_t expectedInputs() const noexcept override;

private:
    static constexpr int32_t kX{kDATA};
    static constexpr int32_t kIDX{kINDEX};
};

class WindowGatherPluginCreator : public WindowPluginCreatorBase
{
public:
    WindowGatherPluginCreator() noexcept;
    ~WindowGatherPluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
};

} // namespace plugin
} // namespace vitdeploy

#endif // VITDEPLOY_WINDOW_GATHER_PLUGIN_H
