/*
 * Pieces shared by the vitdeploy TensorRT plugins: names, logging through the logger TensorRT hands us,
 * type mapping to the kernel enums, and a base class holding the IPluginV3 boilerplate that does not
 * depend on the op (capabilities, name/namespace/version, empty field serialization, context attach) and
 * the tensor types both ops accept (supportsFormatCombination and the enqueue preamble that decodes them).
 */
#ifndef VITDEPLOY_PLUGIN_COMMON_H
#define VITDEPLOY_PLUGIN_COMMON_H

#include "NvInferRuntime.h"
#include "windowOpsKernel.h"

#include <cstdint>
#include <string>

#if defined(_WIN32)
#define VITDEPLOY_API __declspec(dllexport)
#else
#define VITDEPLOY_API __attribute__((visibility("default")))
#endif

namespace vitdeploy
{
namespace plugin
{

//! The ONNX nodes carry plugin_namespace="vitdeploy" and plugin_version="1"; TensorRT's parser matches
//! creators on exactly (op_type, plugin_version, plugin_namespace), so these strings are the contract.
constexpr char const* kPLUGIN_NAMESPACE{"vitdeploy"};
constexpr char const* kPLUGIN_VERSION{"1"};
constexpr char const* kWINDOW_GATHER_NAME{"WindowGather"};
constexpr char const* kWINDOW_SCATTER_NAME{"WindowScatter"};

//! Remembers the ILoggerFinder TensorRT passes to setLoggerFinder (loadLibrary / --dynamicPlugins), or the
//! logger given to vitdeployInitPlugins (static registration). Thread-safe.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
void setLogger(nvinfer1::ILogger* logger) noexcept;

//! Logs through TensorRT's logger when one is known; errors go to stderr otherwise, so a failing plugin is
//! never silent.
void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;
void logError(std::string const& message) noexcept;

bool toWindowDataType(nvinfer1::DataType type, WindowDataType& out) noexcept;
bool toWindowIndexType(nvinfer1::DataType type, WindowIndexType& out) noexcept;
bool isSupportedDataType(nvinfer1::DataType type) noexcept;
bool isSupportedIndexType(nvinfer1::DataType type) noexcept;

//! Product of dims[first..nbDims); -1 when a dimension is unknown or negative.
int64_t volumeFrom(nvinfer1::Dims const& dims, int32_t first) noexcept;

//! What enqueue hands the kernel launchers, decoded from the tensor descriptors (WindowPluginBase::decodeEnqueue).
struct EnqueueArgs
{
    WindowShape shape{};
    WindowDataType dataType{};
    WindowIndexType indexType{};
};

//! Op-independent half of an IPluginV3One plugin, the accepted tensor types included. The derived class
//! supplies the shape logic, enqueue (decodeEnqueue, then its kernel) and clone.
class WindowPluginBase : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit WindowPluginBase(char const* name) noexcept;
    ~WindowPluginBase() override = default;
    WindowPluginBase(WindowPluginBase const&) = delete;
    WindowPluginBase& operator=(WindowPluginBase const&) = delete;
    WindowPluginBase(WindowPluginBase&&) = delete;
    WindowPluginBase& operator=(WindowPluginBase&&) = delete;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild (the parts that do not depend on the op)
    //! The types both ops accept, in one place: input 0 (x / base) float32, float16 or bfloat16; input 1 (idx)
    //! int32 or int64; every other input and the output the type of input 0; all linear.
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime (the parts that do not depend on the op)
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

protected:
    //! Input positions both ops share: the data [B, nW, ...] (x or base) and the window indices [B, K].
    static constexpr int32_t kDATA{0};
    static constexpr int32_t kINDEX{1};

    //! Number of inputs the op takes; every entry point checks it before indexing.
    virtual int32_t expectedInputs() const noexcept = 0;

    //! The enqueue preamble both ops share: null checks, the data and index types decoded (the ones
    //! supportsFormatCombination accepts), the ranks checked and the window shape {B, nW, K, row elements}
    //! read from input 0 and idx. false (logged, except for null arguments) when enqueue must fail.
    bool decodeEnqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, EnqueueArgs& args) const noexcept;

private:
    char const* mName;
    nvinfer1::PluginFieldCollection mFieldsToSerialize{0, nullptr};
};

//! Creator shared by both ops: no attributes. createPlugin accepts and ignores any field it is given
//! (plugin_namespace / plugin_version from the ONNX node, or anything a newer exporter adds), so an
//! engine or ONNX written by a newer vitdeploy still loads.
class WindowPluginCreatorBase : public nvinfer1::IPluginCreatorV3One
{
public:
    explicit WindowPluginCreatorBase(char const* name) noexcept;
    ~WindowPluginCreatorBase() override = default;
    WindowPluginCreatorBase(WindowPluginCreatorBase const&) = delete;
    WindowPluginCreatorBase& operator=(WindowPluginCreatorBase const&) = delete;
    WindowPluginCreatorBase(WindowPluginCreatorBase&&) = delete;
    WindowPluginCreatorBase& operator=(WindowPluginCreatorBase&&) = delete;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;

protected:
    //! Logs fields the plugin does not use, at verbose level (they are expected: the ONNX node's own
    //! plugin_namespace/plugin_version attributes).
    void noteIgnoredFields(nvinfer1::PluginFieldCollection const* fc) const noexcept;

private:
    char const* mName;
    nvinfer1::PluginFieldCollection mFieldNames{0, nullptr};
};

} // namespace plugin
} // namespace vitdeploy

#endif // VITDEPLOY_PLUGIN_COMMON_H
