/*
 * WindowScatter (namespace "vitdeploy", version "1"): IPluginV3 plugin writing window rows back.
 *   inputs : base [B, nW, d2, ..., dr]  float32 | float16 | bfloat16
 *            idx  [B, K]                int32 | int64
 *            src  [B, K, d2, ..., dr]   same type as base
 *   output : y    [B, nW, d2, ..., dr]  same type as base; y = base with y[b, idx[b, k]] = src[b, k]
 *            (source rows with idx outside [0, nW) are ignored; for repeated indices the largest k wins)
 * See README.md in this folder.
 */
#ifndef VITDEPLOY_WINDOW_SCATTER_PLUGIN_H
#define VITDEPLOY_WINDOW_SCATTER_PLUGIN_H

#include "pluginCommon.h"

namespace vitdeploy
{
namespace plugin
{

class WindowScatterPlugin : public WindowPluginBase
{
public:
    WindowScatterPlugin() noexcept;
    ~WindowScatterPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneBuild
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

protected:
    int32_t expectedInputs() const noexcept override;

private:
    //! Bytes of winner map enqueue may use for this shape: 0 (workspace-free kernels) without a workspace, or
    //! when the shape needs more than this object's getWorkspaceSize asked for.
    size_t usableWorkspace(void const* workspace, WindowShape const& shape) const noexcept;

    static constexpr size_t kUNKNOWN_WORKSPACE{static_cast<size_t>(-1)};
    //! What getWorkspaceSize last answered on this object (or the one it was cloned from).
    mutable size_t mWorkspaceBytes{kUNKNOWN_WORKSPACE};

    static constexpr int32_t kBASE{kDATA};
    static constexpr int32_t kIDX{kINDEX};
    static constexpr int32_t kSRC{2};
};

class WindowScatterPluginCreator : public WindowPluginCreatorBase
{
public:
    WindowScatterPluginCreator() noexcept;
    ~WindowScatterPluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
};

} // namespace plugin
} // namespace vitdeploy

#endif // VITDEPLOY_WINDOW_SCATTER_PLUGIN_H
