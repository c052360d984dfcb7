/*
 * Entry points of libvitdeploy_plugins.so.
 *
 * Dynamic registration (default build, VITDEPLOY_STATIC_REGISTRATION undefined):
 *   getCreators / setLoggerFinder are what IPluginRegistry::loadLibrary, trtexec --dynamicPlugins,
 *   trt.get_plugin_registry().load_library(), --setPluginsToSerialize and Triton's plugin loading look up.
 *   Nothing is registered at dlopen time, so loading the library twice through the registry is an error
 *   TensorRT reports instead of a silent double registration.
 *
 * Static registration (target vitdeploy_plugins_static_reg, VITDEPLOY_STATIC_REGISTRATION=1):
 *   creators are registered with the global registry when the library is dlopen'ed, which is what
 *   trtexec --staticPlugins and plain ctypes/LD_PRELOAD loading expect. That library does not export
 *   getCreators, so it cannot be handed to loadLibrary by mistake (which would register twice).
 *
 * Either way, vitdeployInitPlugins(logger) registers the creators explicitly (like initLibNvInferPlugins),
 * for applications that link the library and want to control when registration happens.
 */
#include "pluginCommon.h"
#include "windowGatherPlugin.h"
#include "windowScatterPlugin.h"

#include "NvInferVersion.h"

#include <mutex>

using namespace nvinfer1;

#if defined(VITDEPLOY_STATIC_REGISTRATION)
// Strong here (and linked --no-as-needed): the static initializer below calls it when the library is
// dlopen'ed, and with a weak reference the linker's default --as-needed drops libnvinfer from DT_NEEDED.
// A host that loaded libnvinfer RTLD_LOCAL (Triton's TensorRT backend, Python's tensorrt_libs) would then
// give us no registry at all; with libnvinfer in DT_NEEDED the loader binds to that same copy.
#else
// Weak in the dynamic-registration build: its getCreators path never calls it, so the library works with
// whichever libnvinfer the process loaded; only vitdeployInitPlugins needs it, and reports a null registry.
#pragma weak getPluginRegistry
#endif

namespace
{

#define VITDEPLOY_STR2(x) #x
#define VITDEPLOY_STR(x) VITDEPLOY_STR2(x)
#define VITDEPLOY_TRT_VERSION_STRING                                                                                  \
    VITDEPLOY_STR(NV_TENSORRT_MAJOR) "." VITDEPLOY_STR(NV_TENSORRT_MINOR) "." VITDEPLOY_STR(NV_TENSORRT_PATCH) "."     \
        VITDEPLOY_STR(NV_TENSORRT_BUILD)

#if defined(VITDEPLOY_STATIC_REGISTRATION)
#define VITDEPLOY_REGISTRATION "static"
#else
#define VITDEPLOY_REGISTRATION "dynamic"
#endif

// One JSON line, readable through ctypes without TensorRT (vitdeploy.plugins.info()).
constexpr char const* kLIBRARY_INFO = "{\"namespace\":\"vitdeploy\",\"version\":\"1\","
                                      "\"ops\":[\"WindowGather\",\"WindowScatter\"],"
                                      "\"tensorrt_headers\":\"" VITDEPLOY_TRT_VERSION_STRING "\","
                                      "\"registration\":\"" VITDEPLOY_REGISTRATION "\"}";

IPluginCreatorInterface* const* creatorList(int32_t& count) noexcept
{
    static vitdeploy::plugin::WindowGatherPluginCreator sGather;
    static vitdeploy::plugin::WindowScatterPluginCreator sScatter;
    static IPluginCreatorInterface* const sCreators[] = {&sGather, &sScatter};
    count = static_cast<int32_t>(sizeof(sCreators) / sizeof(sCreators[0]));
    return sCreators;
}

bool registerAll() noexcept
{
    // Registering twice would fail in the registry; remember success per process.
    static std::mutex sMutex;
    static bool sRegistered = false;
    std::lock_guard<std::mutex> lock(sMutex);
    if (sRegistered)
    {
        return true;
    }
#if defined(VITDEPLOY_STATIC_REGISTRATION)
    IPluginRegistry* registry = getPluginRegistry();
#else
    IPluginRegistry* registry = &getPluginRegistry != nullptr ? getPluginRegistry() : nullptr;
#endif
    if (registry == nullptr)
    {
        vitdeploy::plugin::logError("no TensorRT plugin registry: load libnvinfer (TensorRT) before registering "
                                    "the vitdeploy plugins, or use getCreators via IPluginRegistry::loadLibrary");
        return false;
    }
    int32_t count = 0;
    IPluginCreatorInterface* const* creators = creatorList(count);
    bool ok = true;
    for (int32_t i = 0; i < count; ++i)
    {
        if (!registry->registerCreator(*creators[i], vitdeploy::plugin::kPLUGIN_NAMESPACE))
        {
            vitdeploy::plugin::logError("could not register a creator in namespace 'vitdeploy' (already registered "
                                        "by another copy of the library?)");
            ok = false;
        }
    }
    sRegistered = ok;
    return ok;
}

#if defined(VITDEPLOY_STATIC_REGISTRATION)
struct StaticRegistrar
{
    StaticRegistrar()
    {
        registerAll();
    }
};
StaticRegistrar const gStaticRegistrar{};
#endif

} // namespace

#if !defined(VITDEPLOY_STATIC_REGISTRATION)
extern "C" VITDEPLOY_API IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    return creatorList(nbCreators);
}

extern "C" VITDEPLOY_API void setLoggerFinder(ILoggerFinder* finder)
{
    vitdeploy::plugin::setLoggerFinder(finder);
}
#endif

//! Registers both creators with getPluginRegistry() in namespace "vitdeploy"; logger may be null (an
//! nvinfer1::ILogger* otherwise, taken as void* like initLibNvInferPlugins). Returns true on success or
//! when already registered by this call earlier in the process.
extern "C" VITDEPLOY_API bool vitdeployInitPlugins(void* logger)
{
    if (logger != nullptr)
    {
        vitdeploy::plugin::setLogger(static_cast<ILogger*>(logger));
    }
    return registerAll();
}

//! JSON description of the library (namespace, version, ops, TensorRT headers it was built against,
//! registration mode); the returned string is static.
extern "C" VITDEPLOY_API char const* vitdeployPluginLibraryInfo()
{
    return kLIBRARY_INFO;
}
