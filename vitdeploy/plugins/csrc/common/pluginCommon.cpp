#include "pluginCommon.h"

#include <cstdio>
#include <mutex>

namespace vitdeploy
{
namespace plugin
{
namespace
{

struct LoggerState
{
    std::mutex mutex;
    nvinfer1::ILoggerFinder* finder{nullptr};
    nvinfer1::ILogger* logger{nullptr};
};

LoggerState& loggerState() noexcept
{
    static LoggerState state;
    return state;
}

nvinfer1::ILogger* currentLogger() noexcept
{
    LoggerState& s = loggerState();
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.logger != nullptr)
    {
        return s.logger;
    }
    return s.finder != nullptr ? s.finder->findLogger() : nullptr;
}

} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    LoggerState& s = loggerState();
    std::lock_guard<std::mutex> lock(s.mutex);
    // Keep the first finder: TensorRT may call this once per registry that loads the library.
    if (s.finder == nullptr && finder != nullptr)
    {
        s.finder = finder;
    }
}

void setLogger(nvinfer1::ILogger* logger) noexcept
{
    LoggerState& s = loggerState();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.logger = logger;
}

void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    std::string const text = std::string("[vitdeploy plugin] ") + message;
    if (nvinfer1::ILogger* logger = currentLogger())
    {
        logger->log(severity, text.c_str());
        return;
    }
    if (severity <= nvinfer1::ILogger::Severity::kWARNING)
    {
        std::fprintf(stderr, "%s\n", text.c_str());
    }
}

void logError(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, message);
}

bool toWindowDataType(nvinfer1::DataType type, WindowDataType& out) noexcept
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: out = WindowDataType::kFLOAT32; return true;
    case nvinfer1::DataType::kHALF: out = WindowDataType::kFLOAT16; return true;
    case nvinfer1::DataType::kBF16: out = WindowDataType::kBFLOAT16; return true;
    default: return false;
    }
}

bool toWindowIndexType(nvinfer1::DataType type, WindowIndexType& out) noexcept
{
    switch (type)
    {
    case nvinfer1::DataType::kINT32: out = WindowIndexType::kINT32; return true;
    case nvinfer1::DataType::kINT64: out = WindowIndexType::kINT64; return true;
    default: return false;
    }
}

bool isSupportedDataType(nvinfer1::DataType type) noexcept
{
    WindowDataType unused{};
    return toWindowDataType(type, unused);
}

bool isSupportedIndexType(nvinfer1::DataType type) noexcept
{
    WindowIndexType unused{};
    return toWindowIndexType(type, unused);
}

int64_t volumeFrom(nvinfer1::Dims const& dims, int32_t first) noexcept
{
    int64_t volume = 1;
    for (int32_t i = first; i < dims.nbDims; ++i)
    {
        if (dims.d[i] < 0)
        {
            return -1;
        }
        volume *= dims.d[i];
    }
    return volume;
}

// ---------------------------------------------------------------------------------------------------------
// WindowPluginBase

WindowPluginBase::WindowPluginBase(char const* name) noexcept
    : mName(name)
{
}

nvinfer1::IPluginCapability* WindowPluginBase::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

char const* WindowPluginBase::getPluginName() const noexcept
{
    return mName;
}

char const* WindowPluginBase::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* WindowPluginBase::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

bool WindowPluginBase::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != expectedInputs() || nbOutputs != 1 || pos < 0 || pos > nbInputs)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case kDATA: return isSupportedDataType(desc.type);
    case kINDEX: return isSupportedIndexType(desc.type);
    default: return desc.type == inOut[kDATA].desc.type; // src (scatter) and the output
    }
}

bool WindowPluginBase::decodeEnqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs,
    EnqueueArgs& args) const noexcept
{
    if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
    {
        return false;
    }
    nvinfer1::Dims const& data = inputDesc[kDATA].dims;
    nvinfer1::Dims const& idx = inputDesc[kINDEX].dims;
    if (!toWindowDataType(inputDesc[kDATA].type, args.dataType)
        || !toWindowIndexType(inputDesc[kINDEX].type, args.indexType) || data.nbDims < 2 || idx.nbDims != 2)
    {
        logError(std::string(mName) + ": unsupported tensor types or ranks at enqueue");
        return false;
    }
    args.shape = WindowShape{data.d[0], data.d[1], idx.d[1], volumeFrom(data, 2)};
    return true;
}

int32_t WindowPluginBase::getNbOutputs() const noexcept
{
    return 1;
}

int32_t WindowPluginBase::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
    nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != 1 || nbInputs != expectedInputs())
    {
        logError(std::string(mName) + ": getOutputDataTypes called with unexpected tensor counts");
        return -1;
    }
    if (!isSupportedDataType(inputTypes[0]))
    {
        logError(std::string(mName) + ": input 0 must be float32, float16 or bfloat16");
        return -1;
    }
    // Pure data movement: the output has the data input's type (strongly typed networks rely on this).
    outputTypes[0] = inputTypes[0];
    return 0;
}

size_t WindowPluginBase::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* /*inputs*/,
    int32_t /*nbInputs*/, nvinfer1::DynamicPluginTensorDesc const* /*outputs*/,
    int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

nvinfer1::IPluginV3* WindowPluginBase::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    // Stateless: nothing to take from the context; each execution context gets its own copy.
    return clone();
}

nvinfer1::PluginFieldCollection const* WindowPluginBase::getFieldsToSerialize() noexcept
{
    // The ops have no attributes: shapes and types come from the tensors at enqueue time.
    return &mFieldsToSerialize;
}

// ---------------------------------------------------------------------------------------------------------
// WindowPluginCreatorBase

WindowPluginCreatorBase::WindowPluginCreatorBase(char const* name) noexcept
    : mName(name)
{
}

char const* WindowPluginCreatorBase::getPluginName() const noexcept
{
    return mName;
}

char const* WindowPluginCreatorBase::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* WindowPluginCreatorBase::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

nvinfer1::PluginFieldCollection const* WindowPluginCreatorBase::getFieldNames() noexcept
{
    // Declaring no fields keeps the ONNX parser from warning about attributes the node does not carry.
    return &mFieldNames;
}

void WindowPluginCreatorBase::noteIgnoredFields(nvinfer1::PluginFieldCollection const* fc) const noexcept
{
    if (fc == nullptr || fc->fields == nullptr)
    {
        return;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        char const* field = fc->fields[i].name;
        log(nvinfer1::ILogger::Severity::kVERBOSE,
            std::string(mName) + ": ignoring field '" + (field != nullptr ? field : "<null>") + "'");
    }
}

} // namespace plugin
} // namespace vitdeploy
