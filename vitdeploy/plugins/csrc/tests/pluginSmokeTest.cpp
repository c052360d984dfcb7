/*
 * Drives libvitdeploy_plugins.so through the same entry points TensorRT uses (dlopen + getCreators +
 * setLoggerFinder) without needing libnvinfer: creators, capabilities, output shapes/types, format
 * negotiation, shape checks, serialization and clone are all plain C++. With a CUDA device present it also
 * runs enqueue on real buffers and compares with a host computation; without one it checks that enqueue
 * fails cleanly (returns non-zero, logs, does not crash).
 *
 *   pluginSmokeTest /path/to/libvitdeploy_plugins.so      -> prints PASS / FAIL lines, exit 0 / 1
 */
#include "NvInferRuntime.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

int gFailures = 0;

void check(bool ok, std::string const& what)
{
    std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
    if (!ok)
    {
        ++gFailures;
    }
}

class CapturingLogger : public ILogger
{
public:
    void log(Severity severity, char const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            lastError = msg;
            ++count;
        }
    }
    std::string lastError;
    int32_t count{0};
};

class Finder : public ILoggerFinder
{
public:
    explicit Finder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() override
    {
        return mLogger;
    }
    ~Finder() override = default;

private:
    ILogger* mLogger;
};

// getOutputShapes only moves expression pointers around, so distinct dummy addresses stand in for them.
class NullExprBuilder : public IExprBuilder
{
};

IDimensionExpr const* fakeExpr(int32_t i)
{
    static char storage[64];
    return reinterpret_cast<IDimensionExpr const*>(&storage[i]);
}

DimsExprs exprs(std::vector<int32_t> const& ids)
{
    DimsExprs e{};
    e.nbDims = static_cast<int32_t>(ids.size());
    for (size_t i = 0; i < ids.size(); ++i)
    {
        e.d[i] = fakeExpr(ids[i]);
    }
    return e;
}

Dims dims(std::vector<int64_t> const& v)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(v.size());
    for (size_t i = 0; i < v.size(); ++i)
    {
        d.d[i] = v[i];
    }
    return d;
}

DynamicPluginTensorDesc dyn(DataType type, std::vector<int64_t> const& shape, TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = format;
    d.desc.dims = dims(shape);
    d.min = d.desc.dims;
    d.opt = d.desc.dims;
    d.max = d.desc.dims;
    return d;
}

PluginTensorDesc desc(DataType type, std::vector<int64_t> const& shape)
{
    PluginTensorDesc d{};
    d.type = type;
    d.format = TensorFormat::kLINEAR;
    d.dims = dims(shape);
    return d;
}

//! Whether TensorRT would accept this full combination, asking position by position as the builder does.
bool accepts(IPluginV3OneBuild* build, std::vector<DynamicPluginTensorDesc> const& io, int32_t nbInputs)
{
    for (int32_t pos = 0; pos < static_cast<int32_t>(io.size()); ++pos)
    {
        if (!build->supportsFormatCombination(pos, io.data(), nbInputs, static_cast<int32_t>(io.size()) - nbInputs))
        {
            return false;
        }
    }
    return true;
}

IPluginV3OneCore* core(IPluginV3* p)
{
    return static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
}
IPluginV3OneBuild* build(IPluginV3* p)
{
    return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
}
IPluginV3OneRuntime* runtime(IPluginV3* p)
{
    return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

void testGpuGather(IPluginV3* plugin)
{
    int64_t const B = 2, nW = 7, N = 3, C = 5, K = 4;
    std::vector<float> x(static_cast<size_t>(B * nW * N * C));
    std::mt19937 rng(0);
    for (float& v : x)
    {
        v = static_cast<float>(rng() % 1000) / 10.0F;
    }
    std::vector<int64_t> idx = {6, 0, -1, 3, 7, 2, 2, 5}; // bad indices -1 and 7 -> zero rows
    std::vector<float> expect(static_cast<size_t>(B * K * N * C), 0.0F);
    for (int64_t b = 0; b < B; ++b)
    {
        for (int64_t k = 0; k < K; ++k)
        {
            int64_t const w = idx[static_cast<size_t>(b * K + k)];
            if (w >= 0 && w < nW)
            {
                std::memcpy(&expect[static_cast<size_t>((b * K + k) * N * C)], &x[static_cast<size_t>((b * nW + w) * N * C)],
                    sizeof(float) * static_cast<size_t>(N * C));
            }
        }
    }
    void *dx = nullptr, *di = nullptr, *dy = nullptr;
    cudaMalloc(&dx, x.size() * sizeof(float));
    cudaMalloc(&di, idx.size() * sizeof(int64_t));
    cudaMalloc(&dy, expect.size() * sizeof(float));
    cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(di, idx.data(), idx.size() * sizeof(int64_t), cudaMemcpyHostToDevice);
    cudaMemset(dy, 0xFF, expect.size() * sizeof(float));
    PluginTensorDesc in[2] = {desc(DataType::kFLOAT, {B, nW, N, C}), desc(DataType::kINT64, {B, K})};
    PluginTensorDesc out[1] = {desc(DataType::kFLOAT, {B, K, N, C})};
    void const* inputs[2] = {dx, di};
    void* outputs[1] = {dy};
    int32_t const rc = runtime(plugin)->enqueue(in, out, inputs, outputs, nullptr, nullptr);
    std::vector<float> got(expect.size());
    cudaMemcpy(got.data(), dy, got.size() * sizeof(float), cudaMemcpyDeviceToHost);
    check(rc == 0 && got == expect, "gather enqueue on the GPU matches the host result (bad indices -> zeros)");
    cudaFree(dx);
    cudaFree(di);
    cudaFree(dy);
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::fprintf(stderr, "usage: %s libvitdeploy_plugins.so\n", argv[0]);
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr)
    {
        std::printf("FAIL dlopen: %s\n", dlerror());
        return 1;
    }
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    using LibraryInfo = char const* (*) ();
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
    auto libraryInfo = reinterpret_cast<LibraryInfo>(dlsym(lib, "vitdeployPluginLibraryInfo"));
    check(getCreators != nullptr, "exports getCreators");
    check(setLoggerFinder != nullptr, "exports setLoggerFinder");
    check(libraryInfo != nullptr, "exports vitdeployPluginLibraryInfo");
    check(dlsym(lib, "vitdeployInitPlugins") != nullptr, "exports vitdeployInitPlugins");
    if (getCreators == nullptr || setLoggerFinder == nullptr || libraryInfo == nullptr)
    {
        return 1;
    }
    std::string const info = libraryInfo();
    check(info.find("\"namespace\":\"vitdeploy\"") != std::string::npos
            && info.find("\"tensorrt_headers\":\"" + std::to_string(NV_TENSORRT_MAJOR) + ".") != std::string::npos,
        "library info names the namespace and the TensorRT headers: " + info);

    CapturingLogger logger;
    Finder finder(&logger);
    setLoggerFinder(&finder);

    int32_t count = -1;
    IPluginCreatorInterface* const* creators = getCreators(count);
    check(count == 2 && creators != nullptr, "getCreators returns 2 creators");
    if (count != 2 || creators == nullptr)
    {
        return 1;
    }

    int cudaDevices = 0;
    bool const haveGpu = cudaGetDeviceCount(&cudaDevices) == cudaSuccess && cudaDevices > 0;

    char const* const names[2] = {"WindowGather", "WindowScatter"};
    for (int32_t c = 0; c < 2; ++c)
    {
        std::string const kind = creators[c]->getInterfaceInfo().kind;
        check(kind == "PLUGIN CREATOR_V3ONE", std::string(names[c]) + ": creator interface kind is " + kind);
        auto* creator = static_cast<IPluginCreatorV3One*>(creators[c]);
        std::string const name = creator->getPluginName();
        check(name == names[c], "creator " + std::to_string(c) + " is " + name);
        check(std::string(creator->getPluginVersion()) == "1" && std::string(creator->getPluginNamespace()) == "vitdeploy",
            name + ": version 1, namespace vitdeploy");
        check(creator->getFieldNames() != nullptr && creator->getFieldNames()->nbFields == 0, name + ": no attributes");

        // What the ONNX parser (or add_plugin_v3) may hand over: the node's own attributes, plus junk.
        char const ns[] = "vitdeploy";
        char const ver[] = "1";
        int32_t const junk = 7;
        PluginField fields[3] = {PluginField("plugin_namespace", ns, PluginFieldType::kCHAR, sizeof(ns) - 1),
            PluginField("plugin_version", ver, PluginFieldType::kCHAR, 1),
            PluginField("something_newer", &junk, PluginFieldType::kINT32, 1)};
        PluginFieldCollection fc{3, fields};
        IPluginV3* plugin = creator->createPlugin(name.c_str(), &fc, TensorRTPhase::kBUILD);
        check(plugin != nullptr, name + ": createPlugin accepts and ignores unknown fields");
        IPluginV3* runtimePlugin = creator->createPlugin(name.c_str(), nullptr, TensorRTPhase::kRUNTIME);
        check(runtimePlugin != nullptr, name + ": createPlugin at runtime with no fields");
        delete runtimePlugin;
        if (plugin == nullptr)
        {
            continue;
        }
        check(core(plugin) && build(plugin) && runtime(plugin), name + ": core/build/runtime capabilities");
        check(std::string(core(plugin)->getPluginName()) == name
                && std::string(core(plugin)->getPluginNamespace()) == "vitdeploy"
                && std::string(core(plugin)->getPluginVersion()) == "1",
            name + ": plugin reports name/namespace/version");
        check(std::string(plugin->getInterfaceInfo().kind) == "PLUGIN", name + ": IPluginV3 interface kind");
        check(std::string(core(plugin)->getInterfaceInfo().kind) == "PLUGIN_V3ONE_CORE"
                && std::string(build(plugin)->getInterfaceInfo().kind) == "PLUGIN_V3ONE_BUILD"
                && std::string(runtime(plugin)->getInterfaceInfo().kind) == "PLUGIN_V3ONE_RUNTIME",
            name + ": capability interface kinds");
        IPluginV3OneBuild* b = build(plugin);
        IPluginV3OneRuntime* r = runtime(plugin);
        bool const isGather = c == 0;
        int32_t const nbIn = isGather ? 2 : 3;
        check(b->getNbOutputs() == 1, name + ": one output");

        // Types
        DataType outType = DataType::kINT8;
        std::vector<DataType> inTypes = isGather ? std::vector<DataType>{DataType::kHALF, DataType::kINT64}
                                                 : std::vector<DataType>{DataType::kBF16, DataType::kINT32, DataType::kBF16};
        check(b->getOutputDataTypes(&outType, 1, inTypes.data(), nbIn) == 0
                && outType == (isGather ? DataType::kHALF : DataType::kBF16),
            name + ": output type follows the data input");
        inTypes[0] = DataType::kINT32;
        check(b->getOutputDataTypes(&outType, 1, inTypes.data(), nbIn) != 0, name + ": int32 data rejected");

        // Format negotiation
        auto io = [&](DataType data, DataType index, DataType other, DataType output,
                      TensorFormat format = TensorFormat::kLINEAR) {
            std::vector<DynamicPluginTensorDesc> v;
            v.push_back(dyn(data, {-1, 36, 49, 384}, format));
            v.push_back(dyn(index, {-1, 28}));
            if (!isGather)
            {
                v.push_back(dyn(other, {-1, 28, 49, 384}));
            }
            v.push_back(dyn(output, isGather ? std::vector<int64_t>{-1, 28, 49, 384} : std::vector<int64_t>{-1, 36, 49, 384}));
            return v;
        };
        for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
        {
            for (DataType i : {DataType::kINT32, DataType::kINT64})
            {
                check(accepts(b, io(t, i, t, t), nbIn), name + ": accepts data type " + std::to_string(static_cast<int>(t))
                        + " with index type " + std::to_string(static_cast<int>(i)));
            }
        }
        check(!accepts(b, io(DataType::kFLOAT, DataType::kINT64, DataType::kFLOAT, DataType::kHALF), nbIn),
            name + ": rejects an output type different from the data");
        check(!accepts(b, io(DataType::kINT32, DataType::kINT64, DataType::kINT32, DataType::kINT32), nbIn),
            name + ": rejects int32 data");
        check(!accepts(b, io(DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT), nbIn),
            name + ": rejects float indices");
        check(!accepts(b, io(DataType::kHALF, DataType::kINT64, DataType::kHALF, DataType::kHALF, TensorFormat::kHWC8), nbIn),
            name + ": rejects non-linear formats");
        if (!isGather)
        {
            check(!accepts(b, io(DataType::kFLOAT, DataType::kINT64, DataType::kHALF, DataType::kFLOAT), nbIn),
                name + ": rejects src of another type than base");
        }

        // Shapes
        NullExprBuilder exprBuilder;
        std::vector<DimsExprs> inShapes;
        inShapes.push_back(exprs({0, 1, 2, 3}));
        inShapes.push_back(exprs({0, 4}));
        if (!isGather)
        {
            inShapes.push_back(exprs({0, 4, 2, 3}));
        }
        DimsExprs outShape{};
        check(b->getOutputShapes(inShapes.data(), nbIn, nullptr, 0, &outShape, 1, exprBuilder) == 0, name + ": getOutputShapes");
        if (isGather)
        {
            check(outShape.nbDims == 4 && outShape.d[0] == fakeExpr(0) && outShape.d[1] == fakeExpr(4)
                    && outShape.d[2] == fakeExpr(2) && outShape.d[3] == fakeExpr(3),
                name + ": output is [B, K, N, C] with B from x and K from idx");
        }
        else
        {
            check(outShape.nbDims == 4 && outShape.d[0] == fakeExpr(0) && outShape.d[1] == fakeExpr(1)
                    && outShape.d[2] == fakeExpr(2) && outShape.d[3] == fakeExpr(3),
                name + ": output has base's shape");
        }
        inShapes[1] = exprs({0, 4, 5});
        logger.count = 0;
        check(b->getOutputShapes(inShapes.data(), nbIn, nullptr, 0, &outShape, 1, exprBuilder) != 0 && logger.count > 0,
            name + ": rank-3 idx rejected with a logged error");

        // configure / onShapeChange
        std::vector<DynamicPluginTensorDesc> good = io(DataType::kHALF, DataType::kINT64, DataType::kHALF, DataType::kHALF);
        check(b->configurePlugin(good.data(), nbIn, good.data() + nbIn, 1) == 0, name + ": configurePlugin with dynamic batch");
        std::vector<DynamicPluginTensorDesc> bad = good;
        bad[0].desc.dims.d[0] = 2;
        bad[1].desc.dims.d[0] = 3;
        check(b->configurePlugin(bad.data(), nbIn, bad.data() + nbIn, 1) != 0, name + ": configurePlugin rejects batch mismatch");
        std::vector<PluginTensorDesc> run;
        run.push_back(desc(DataType::kHALF, {4, 36, 49, 384}));
        run.push_back(desc(DataType::kINT64, {4, 28}));
        if (!isGather)
        {
            run.push_back(desc(DataType::kHALF, {4, 28, 49, 384}));
        }
        PluginTensorDesc outDesc = desc(DataType::kHALF, isGather ? std::vector<int64_t>{4, 28, 49, 384} : std::vector<int64_t>{4, 36, 49, 384});
        check(r->onShapeChange(run.data(), nbIn, &outDesc, 1) == 0, name + ": onShapeChange accepts consistent shapes");
        if (!isGather)
        {
            run[2].dims.d[3] = 383;
            check(r->onShapeChange(run.data(), nbIn, &outDesc, 1) != 0, name + ": onShapeChange rejects src/base mismatch");
            run[2].dims.d[3] = 384;
        }

        // Serialization and copies
        PluginFieldCollection const* ser = r->getFieldsToSerialize();
        check(ser != nullptr && ser->nbFields == 0, name + ": serializes no fields");
        IPluginV3* copy = plugin->clone();
        IPluginV3* attached = r->attachToContext(nullptr);
        check(copy != nullptr && attached != nullptr && copy != plugin && attached != plugin,
            name + ": clone and attachToContext return new objects");
        delete copy;
        delete attached;

        if (!haveGpu)
        {
            // No device: the launch must fail cleanly, not crash, and say so through TensorRT's logger.
            std::vector<uint8_t> host(64);
            void const* inputs[3] = {host.data(), host.data(), host.data()};
            void* outputs[1] = {host.data()};
            logger.count = 0;
            int32_t const rc = r->enqueue(run.data(), &outDesc, inputs, outputs, nullptr, nullptr);
            check(rc != 0 && logger.count > 0, name + ": enqueue without a CUDA device fails cleanly: " + logger.lastError);
        }
        else if (isGather)
        {
            testGpuGather(plugin);
        }
        delete plugin;
    }
    std::printf("%s (%d failure(s)%s)\n", gFailures == 0 ? "ALL PASSED" : "FAILED", gFailures,
        haveGpu ? "" : ", no CUDA device: enqueue only checked for clean failure");
    return gFailures == 0 ? 0 : 1;
}
