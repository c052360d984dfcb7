/*
 * vitdeploy-run: the C++ counterpart of `vitdeploy bench --backend trt`.
 *
 *   vitdeploy-run --engine E.engine --plugins libvitdeploy_plugins.so [--plugins more.so]
 *                 [--batch N] [--iters N] [--warmup N] [--inputs a.npy [b.npy ...]] [--outputs-dir DIR]
 *                 [--seed N] [--verbose]
 *
 * Loads plugin libraries through IPluginRegistry::loadLibrary (the getCreators entry point, the same path as
 * trtexec --dynamicPlugins), deserializes the engine, sets input shapes (dynamic batch), fills inputs from
 * .npy files (in engine input order) or with seeded uniform noise, runs enqueueV3 on one stream and times
 * every iteration with CUDA events (device time, the default scope of `vitdeploy bench`). Prints exactly one
 * JSON line on stdout with the keys of `vitdeploy bench` JSON; everything else goes to stderr.
 * Exit codes follow the CLI: 0 ok, 1 runtime failure, 2 bad input.
 */
#include "NvInferRuntime.h"
#include "npy.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace
{

constexpr int kEXIT_OK = 0;
constexpr int kEXIT_FAILED = 1;
constexpr int kEXIT_BAD_INPUT = 2;

//! Thrown for problems the user can fix (exit 2); anything else that goes wrong exits 1.
struct BadInput
{
    std::string message;
};
struct Failure
{
    std::string message;
};

class Logger : public nvinfer1::ILogger
{
public:
    explicit Logger(Severity threshold)
        : mThreshold(threshold)
    {
    }
    void log(Severity severity, char const* msg) noexcept override
    {
        if (severity <= mThreshold)
        {
            static char const* const kNAMES[] = {"INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"};
            std::fprintf(stderr, "[TRT] [%s] %s\n", kNAMES[static_cast<int>(severity)], msg);
        }
    }

private:
    Severity mThreshold;
};

void checkCuda(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        throw Failure{std::string(what) + ": " + cudaGetErrorString(status)};
    }
}

struct Options
{
    std::string engine;
    std::vector<std::string> plugins;
    std::vector<std::string> inputs;
    std::string outputsDir;
    int64_t batch{-1}; // -1: the profile's opt batch for dynamic engines, the fixed batch otherwise
    int32_t iters{100};
    int32_t warmup{10};
    uint32_t seed{0};
    bool verbose{false};
};

void usage(std::FILE* to)
{
    std::fprintf(to,
        "usage: vitdeploy-run --engine E.engine [--plugins LIB.so ...] [--batch N] [--iters N] [--warmup N]\n"
        "                     [--inputs in.npy ...] [--outputs-dir DIR] [--seed N] [--verbose]\n"
        "Prints one JSON line: {\"backend\":\"trt-cpp\",\"batch\",\"iters\",\"median_ms\",\"p90_ms\",\"p99_ms\",\n"
        "\"mean_ms\",\"min_ms\",\"throughput_ips\"} (device time per iteration, CUDA events).\n");
}

int64_t parseInt(std::string const& flag, char const* text, int64_t minimum)
{
    char* end = nullptr;
    errno = 0;
    long long const value = std::strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < minimum)
    {
        throw BadInput{flag + ": expected an integer >= " + std::to_string(minimum) + ", got '" + text + "'"};
    }
    return static_cast<int64_t>(value);
}

Options parseArgs(int argc, char** argv)
{
    Options o;
    auto value = [&](int& i) -> char const* {
        if (i + 1 >= argc)
        {
            throw BadInput{std::string(argv[i]) + " needs a value"};
        }
        return argv[++i];
    };
    for (int i = 1; i < argc; ++i)
    {
        std::string const a = argv[i];
        if (a == "--help" || a == "-h")
        {
            usage(stdout);
            std::exit(kEXIT_OK);
        }
        else if (a == "--engine")
        {
            o.engine = value(i);
        }
        else if (a == "--plugins")
        {
            // One or more paths up to the next flag.
            o.plugins.emplace_back(value(i));
            while (i + 1 < argc && std::strncmp(argv[i + 1], "--", 2) != 0)
            {
                o.plugins.emplace_back(argv[++i]);
            }
        }
        else if (a == "--inputs")
        {
            o.inputs.emplace_back(value(i));
            while (i + 1 < argc && std::strncmp(argv[i + 1], "--", 2) != 0)
            {
                o.inputs.emplace_back(argv[++i]);
            }
        }
        else if (a == "--outputs-dir")
        {
            o.outputsDir = value(i);
        }
        else if (a == "--batch")
        {
            o.batch = parseInt(a, value(i), 1);
        }
        else if (a == "--iters")
        {
            o.iters = static_cast<int32_t>(parseInt(a, value(i), 1));
        }
        else if (a == "--warmup")
        {
            o.warmup = static_cast<int32_t>(parseInt(a, value(i), 0));
        }
        else if (a == "--seed")
        {
            o.seed = static_cast<uint32_t>(parseInt(a, value(i), 0));
        }
        else if (a == "--verbose")
        {
            o.verbose = true;
        }
        else
        {
            throw BadInput{"unknown argument '" + a + "' (see --help)"};
        }
    }
    if (o.engine.empty())
    {
        throw BadInput{"--engine is required (see --help)"};
    }
    return o;
}

std::vector<char> readFile(std::string const& path)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        throw BadInput{path + ": cannot open the engine file"};
    }
    return std::vector<char>(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

std::string dimsToString(nvinfer1::Dims const& d)
{
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        s += (i ? "," : "") + std::to_string(d.d[i]);
    }
    return s + "]";
}

int64_t volume(nvinfer1::Dims const& d)
{
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        v *= d.d[i];
    }
    return v;
}

//! Bytes per element; 0 for types the runner cannot stage (sub-byte types).
size_t elementSize(nvinfer1::DataType t)
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT:
    case nvinfer1::DataType::kINT32: return 4;
    case nvinfer1::DataType::kHALF:
    case nvinfer1::DataType::kBF16: return 2;
    case nvinfer1::DataType::kINT64: return 8;
    case nvinfer1::DataType::kINT8:
    case nvinfer1::DataType::kUINT8:
    case nvinfer1::DataType::kBOOL:
    case nvinfer1::DataType::kFP8: return 1;
    default: return 0;
    }
}

//! .npy dtype for a TensorRT type when saved as-is; bf16 and fp8 are widened to float32 on output.
std::string npyDescr(nvinfer1::DataType t)
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT: return "<f4";
    case nvinfer1::DataType::kHALF: return "<f2";
    case nvinfer1::DataType::kINT32: return "<i4";
    case nvinfer1::DataType::kINT64: return "<i8";
    case nvinfer1::DataType::kINT8: return "|i1";
    case nvinfer1::DataType::kUINT8: return "|u1";
    case nvinfer1::DataType::kBOOL: return "|b1";
    default: return "";
    }
}

char const* typeName(nvinfer1::DataType t)
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT: return "float32";
    case nvinfer1::DataType::kHALF: return "float16";
    case nvinfer1::DataType::kBF16: return "bfloat16";
    case nvinfer1::DataType::kINT32: return "int32";
    case nvinfer1::DataType::kINT64: return "int64";
    case nvinfer1::DataType::kINT8: return "int8";
    case nvinfer1::DataType::kUINT8: return "uint8";
    case nvinfer1::DataType::kBOOL: return "bool";
    default: return "other";
    }
}

float bf16ToFloat(uint16_t bits)
{
    uint32_t const f = static_cast<uint32_t>(bits) << 16;
    float v = 0.0F;
    std::memcpy(&v, &f, sizeof(v));
    return v;
}

uint16_t floatToBf16(float value)
{
    uint32_t f = 0;
    std::memcpy(&f, &value, sizeof(f));
    if ((f & 0x7FFFFFFFU) > 0x7F800000U)
    {
        return static_cast<uint16_t>((f >> 16) | 0x40U); // keep NaN a NaN
    }
    f += 0x7FFFU + ((f >> 16) & 1U); // round to nearest even
    return static_cast<uint16_t>(f >> 16);
}

//! Host bytes for an input tensor of type t from a .npy array (float32 <-> float16/bfloat16 converted,
//! other types must match exactly).
std::vector<uint8_t> stageInput(vitdeploy::npy::Array const& a, nvinfer1::DataType t, std::string const& where)
{
    int64_t const n = vitdeploy::npy::volume(a.shape);
    std::vector<uint8_t> out(static_cast<size_t>(n) * elementSize(t));
    std::string const want = npyDescr(t);
    if (!want.empty() && a.descr == want)
    {
        std::memcpy(out.data(), a.data.data(), out.size());
        return out;
    }
    bool const srcF32 = a.descr == "<f4";
    bool const srcF16 = a.descr == "<f2";
    if (!(srcF32 || srcF16)
        || !(t == nvinfer1::DataType::kFLOAT || t == nvinfer1::DataType::kHALF || t == nvinfer1::DataType::kBF16))
    {
        throw BadInput{where + ": dtype " + a.descr + " does not fit the engine's " + typeName(t) + " input"};
    }
    for (int64_t i = 0; i < n; ++i)
    {
        float v = 0.0F;
        if (srcF32)
        {
            std::memcpy(&v, a.data.data() + 4 * i, 4);
        }
        else
        {
            uint16_t h = 0;
            std::memcpy(&h, a.data.data() + 2 * i, 2);
            v = vitdeploy::npy::halfToFloat(h);
        }
        if (t == nvinfer1::DataType::kFLOAT)
        {
            std::memcpy(out.data() + 4 * i, &v, 4);
        }
        else
        {
            uint16_t const h = t == nvinfer1::DataType::kHALF ? vitdeploy::npy::floatToHalf(v) : floatToBf16(v);
            std::memcpy(out.data() + 2 * i, &h, 2);
        }
    }
    return out;
}

std::vector<uint8_t> randomInput(int64_t n, nvinfer1::DataType t, std::mt19937& rng)
{
    std::vector<uint8_t> out(static_cast<size_t>(n) * elementSize(t), 0);
    std::uniform_real_distribution<float> dist(-1.0F, 1.0F);
    for (int64_t i = 0; i < n; ++i)
    {
        float const v = dist(rng);
        switch (t)
        {
        case nvinfer1::DataType::kFLOAT: std::memcpy(out.data() + 4 * i, &v, 4); break;
        case nvinfer1::DataType::kHALF:
        {
            uint16_t const h = vitdeploy::npy::floatToHalf(v);
            std::memcpy(out.data() + 2 * i, &h, 2);
            break;
        }
        case nvinfer1::DataType::kBF16:
        {
            uint16_t const h = floatToBf16(v);
            std::memcpy(out.data() + 2 * i, &h, 2);
            break;
        }
        default: break; // integer/bool inputs stay zero: a valid index/mask for any model
        }
    }
    return out;
}

//! Linear-interpolated percentile, as numpy.percentile's default, of sorted values.
double percentile(std::vector<double> const& sorted, double q)
{
    if (sorted.empty())
    {
        return 0.0;
    }
    double const pos = q / 100.0 * static_cast<double>(sorted.size() - 1);
    size_t const lo = static_cast<size_t>(std::floor(pos));
    size_t const hi = std::min(lo + 1, sorted.size() - 1);
    double const frac = pos - static_cast<double>(lo);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

std::string safeFileName(std::string name)
{
    for (char& c : name)
    {
        bool const ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.'
            || c == '_' || c == '-';
        if (!ok)
        {
            c = '_';
        }
    }
    return name;
}

struct Tensor
{
    std::string name;
    bool isInput{false};
    nvinfer1::DataType type{};
    nvinfer1::Dims shape{};
    void* device{nullptr};
    size_t bytes{0};
};

struct DeviceBuffers
{
    std::vector<Tensor> tensors;
    ~DeviceBuffers()
    {
        for (Tensor& t : tensors)
        {
            if (t.device != nullptr)
            {
                cudaFree(t.device);
            }
        }
    }
};

struct TrtDeleter
{
    template <typename T>
    void operator()(T* p) const noexcept
    {
        delete p;
    }
};

//! Absolute, symlink-free paths of the --plugins libraries. dlopen does not search the current directory
//! for a bare "lib.so", and TensorRT would then blame the missing getCreators entry point instead.
std::vector<std::string> resolvePluginPaths(std::vector<std::string> const& plugins)
{
    std::vector<std::string> resolved;
    for (std::string const& lib : plugins)
    {
        std::unique_ptr<char, void (*)(void*)> real{::realpath(lib.c_str(), nullptr), std::free};
        if (!real)
        {
            throw BadInput{lib + ": plugin library not found (" + std::strerror(errno)
                + "); build it with `vitdeploy plugins build`"};
        }
        resolved.emplace_back(real.get());
    }
    return resolved;
}

//! Runtime, engine and execution context, created in the order TensorRT needs: the runtime first (it
//! initialises the library whose registry loadLibrary fills), then the plugins, then deserialization.
struct Session
{
    std::unique_ptr<nvinfer1::IRuntime, TrtDeleter> runtime;
    std::unique_ptr<nvinfer1::ICudaEngine, TrtDeleter> engine;
    std::unique_ptr<nvinfer1::IExecutionContext, TrtDeleter> context;
};

Session openEngine(std::string const& enginePath, std::vector<char> const& blob,
    std::vector<std::string> const& plugins, nvinfer1::ILogger& logger)
{
    Session s;
    s.runtime.reset(nvinfer1::createInferRuntime(logger));
    if (!s.runtime)
    {
        throw Failure{"could not create the TensorRT runtime (no usable CUDA device or driver?)"};
    }
    nvinfer1::IPluginRegistry& registry = s.runtime->getPluginRegistry();
    for (std::string const& lib : plugins)
    {
        if (registry.loadLibrary(lib.c_str()) == nullptr)
        {
            throw BadInput{lib + ": TensorRT could not load this plugin library (needs the getCreators entry point; "
                                 "built for another TensorRT major, or already registered?)"};
        }
    }
    s.engine.reset(s.runtime->deserializeCudaEngine(blob.data(), blob.size()));
    if (!s.engine)
    {
        throw BadInput{enginePath + ": TensorRT could not deserialize this engine (other TensorRT version or GPU, "
                                    "or a plugin library missing: pass --plugins)"};
    }
    s.context.reset(s.engine->createExecutionContext());
    if (!s.context)
    {
        throw Failure{"could not create an execution context (out of device memory?)"};
    }
    return s;
}

//! The engine's I/O tensors (names, types, engine shapes); no memory yet.
void describeTensors(nvinfer1::ICudaEngine const& engine, DeviceBuffers& buffers)
{
    int32_t const nbIO = engine.getNbIOTensors();
    for (int32_t i = 0; i < nbIO; ++i)
    {
        Tensor t;
        t.name = engine.getIOTensorName(i);
        t.isInput = engine.getTensorIOMode(t.name.c_str()) == nvinfer1::TensorIOMode::kINPUT;
        t.type = engine.getTensorDataType(t.name.c_str());
        t.shape = engine.getTensorShape(t.name.c_str());
        if (elementSize(t.type) == 0)
        {
            throw BadInput{"tensor '" + t.name + "' has a type the runner cannot stage"};
        }
        if (t.isInput && engine.getTensorLocation(t.name.c_str()) != nvinfer1::TensorLocation::kDEVICE)
        {
            throw BadInput{"input '" + t.name + "' is a host (shape) tensor; the runner only feeds device tensors"};
        }
        buffers.tensors.push_back(t);
    }
}

//! The shape one input runs with: from its .npy file when given, else the engine's shape with dynamic
//! dimensions from --batch / the profile's opt shape. Checked against the profile.
nvinfer1::Dims inputShape(Tensor const& t, nvinfer1::ICudaEngine const& engine, vitdeploy::npy::Array const* file,
    std::string const& fileName, int64_t batch)
{
    char const* name = t.name.c_str();
    nvinfer1::Dims const minShape = engine.getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMIN);
    nvinfer1::Dims const optShape = engine.getProfileShape(name, 0, nvinfer1::OptProfileSelector::kOPT);
    nvinfer1::Dims const maxShape = engine.getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMAX);
    nvinfer1::Dims want = t.shape;
    if (file != nullptr)
    {
        if (static_cast<int32_t>(file->shape.size()) != t.shape.nbDims)
        {
            throw BadInput{fileName + ": rank " + std::to_string(file->shape.size()) + " but input '" + t.name
                + "' has shape " + dimsToString(t.shape)};
        }
        for (int32_t d = 0; d < want.nbDims; ++d)
        {
            want.d[d] = file->shape[static_cast<size_t>(d)];
        }
        if (batch > 0 && want.nbDims > 0 && want.d[0] != batch)
        {
            throw BadInput{fileName + ": batch " + std::to_string(want.d[0]) + " but --batch " + std::to_string(batch)};
        }
    }
    else
    {
        for (int32_t d = 0; d < want.nbDims; ++d)
        {
            if (want.d[d] < 0)
            {
                want.d[d] = (d == 0 && batch > 0) ? batch : optShape.d[d];
            }
        }
    }
    // Engines with a fixed batch accept --batch only if it agrees.
    if (t.shape.nbDims > 0 && t.shape.d[0] >= 0 && batch > 0 && t.shape.d[0] != batch)
    {
        throw BadInput{"input '" + t.name + "' has a fixed batch of " + std::to_string(t.shape.d[0]) + "; --batch "
            + std::to_string(batch) + " needs an engine built with a dynamic batch"};
    }
    if (minShape.nbDims == want.nbDims)
    {
        for (int32_t d = 0; d < want.nbDims; ++d)
        {
            if (want.d[d] < minShape.d[d] || want.d[d] > maxShape.d[d])
            {
                throw BadInput{"input '" + t.name + "' shape " + dimsToString(want) + " is outside the engine's "
                    + "profile " + dimsToString(minShape) + ".." + dimsToString(maxShape)
                    + "; rebuild with a wider --min-batch/--max-batch"};
            }
        }
    }
    return want;
}

//! Sets every input's shape on the context and returns the host bytes to upload (in input order) and the
//! batch that ran.
int64_t prepareInputs(Options const& opt, nvinfer1::ICudaEngine const& engine, nvinfer1::IExecutionContext& context,
    DeviceBuffers& buffers, std::vector<std::vector<uint8_t>>& hostInputs)
{
    size_t nbInputs = 0;
    for (Tensor const& t : buffers.tensors)
    {
        nbInputs += t.isInput ? 1 : 0;
    }
    if (!opt.inputs.empty() && opt.inputs.size() != nbInputs)
    {
        throw BadInput{"--inputs: the engine has " + std::to_string(nbInputs) + " input(s), got "
            + std::to_string(opt.inputs.size()) + " file(s)"};
    }
    int64_t batch = opt.batch;
    std::mt19937 rng(opt.seed);
    size_t inputIndex = 0;
    for (Tensor& t : buffers.tensors)
    {
        if (!t.isInput)
        {
            continue;
        }
        vitdeploy::npy::Array file;
        std::string const fileName = opt.inputs.empty() ? std::string{} : opt.inputs[inputIndex];
        if (!opt.inputs.empty())
        {
            std::string error;
            if (!vitdeploy::npy::load(fileName, file, error))
            {
                throw BadInput{error};
            }
        }
        nvinfer1::Dims const want = inputShape(t, engine, opt.inputs.empty() ? nullptr : &file, fileName, batch);
        if (batch < 0 && want.nbDims > 0)
        {
            batch = want.d[0];
        }
        if (!context.setInputShape(t.name.c_str(), want))
        {
            throw BadInput{"TensorRT rejected shape " + dimsToString(want) + " for input '" + t.name + "'"};
        }
        t.shape = want;
        int64_t const n = volume(want);
        t.bytes = static_cast<size_t>(n) * elementSize(t.type);
        hostInputs.push_back(opt.inputs.empty() ? randomInput(n, t.type, rng) : stageInput(file, t.type, fileName));
        ++inputIndex;
    }
    return batch < 1 ? 1 : batch;
}

//! Output shapes from the context, device memory for every tensor, inputs uploaded.
void allocateAndUpload(nvinfer1::IExecutionContext& context, DeviceBuffers& buffers,
    std::vector<std::vector<uint8_t>> const& hostInputs)
{
    for (Tensor& t : buffers.tensors)
    {
        if (!t.isInput)
        {
            t.shape = context.getTensorShape(t.name.c_str());
            if (t.shape.nbDims < 0 || volume(t.shape) < 0)
            {
                throw Failure{"could not infer the shape of output '" + t.name
                    + "' (data-dependent shapes are not supported by the runner)"};
            }
            t.bytes = static_cast<size_t>(volume(t.shape)) * elementSize(t.type);
        }
        // cudaMalloc(0) is legal but may return null; TensorRT wants a non-null address, so allocate >= 1 byte.
        checkCuda(cudaMalloc(&t.device, std::max<size_t>(t.bytes, 1)), ("cudaMalloc for " + t.name).c_str());
        if (!context.setTensorAddress(t.name.c_str(), t.device))
        {
            throw Failure{"setTensorAddress failed for '" + t.name + "'"};
        }
    }
    size_t h = 0;
    for (Tensor const& t : buffers.tensors)
    {
        if (t.isInput)
        {
            checkCuda(cudaMemcpy(t.device, hostInputs[h].data(), t.bytes, cudaMemcpyHostToDevice), "copy input");
            ++h;
        }
    }
}

//! Device time of each of `iters` enqueueV3 calls after `warmup` untimed ones, on one stream. One event
//! pair per iteration, all recorded back to back: no host synchronisation between iterations.
std::vector<double> timeIterations(nvinfer1::IExecutionContext& context, int32_t warmup, int32_t iters)
{
    cudaStream_t stream = nullptr;
    checkCuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    std::unique_ptr<CUstream_st, void (*)(cudaStream_t)> streamGuard(stream, [](cudaStream_t s) { cudaStreamDestroy(s); });
    for (int32_t i = 0; i < warmup; ++i)
    {
        if (!context.enqueueV3(stream))
        {
            throw Failure{"enqueueV3 failed during warm-up (see the TensorRT messages above)"};
        }
    }
    checkCuda(cudaStreamSynchronize(stream), "warm-up");

    std::vector<cudaEvent_t> events(2 * static_cast<size_t>(iters), nullptr);
    struct EventGuard
    {
        std::vector<cudaEvent_t>& ev;
        ~EventGuard()
        {
            for (cudaEvent_t e : ev)
            {
                if (e != nullptr)
                {
                    cudaEventDestroy(e);
                }
            }
        }
    } eventGuard{events};
    for (cudaEvent_t& e : events)
    {
        checkCuda(cudaEventCreate(&e), "cudaEventCreate");
    }
    for (int32_t i = 0; i < iters; ++i)
    {
        checkCuda(cudaEventRecord(events[2 * i], stream), "cudaEventRecord");
        if (!context.enqueueV3(stream))
        {
            throw Failure{"enqueueV3 failed (see the TensorRT messages above)"};
        }
        checkCuda(cudaEventRecord(events[2 * i + 1], stream), "cudaEventRecord");
    }
    checkCuda(cudaStreamSynchronize(stream), "timed iterations");
    std::vector<double> times;
    times.reserve(static_cast<size_t>(iters));
    for (int32_t i = 0; i < iters; ++i)
    {
        float ms = 0.0F;
        checkCuda(cudaEventElapsedTime(&ms, events[2 * i], events[2 * i + 1]), "cudaEventElapsedTime");
        times.push_back(static_cast<double>(ms));
    }
    return times;
}

//! One output as a .npy array; bfloat16 widens exactly to float32 (.npy has no bfloat16). False when the
//! type has no .npy dtype.
bool toNpy(Tensor const& t, std::vector<uint8_t> host, vitdeploy::npy::Array& a)
{
    for (int32_t d = 0; d < t.shape.nbDims; ++d)
    {
        a.shape.push_back(t.shape.d[d]);
    }
    a.descr = npyDescr(t.type);
    if (!a.descr.empty())
    {
        a.data = std::move(host);
        return true;
    }
    if (t.type != nvinfer1::DataType::kBF16)
    {
        return false;
    }
    a.descr = "<f4";
    size_t const n = t.bytes / 2;
    a.data.resize(n * 4);
    for (size_t k = 0; k < n; ++k)
    {
        uint16_t b = 0;
        std::memcpy(&b, host.data() + 2 * k, 2);
        float const v = bf16ToFloat(b);
        std::memcpy(a.data.data() + 4 * k, &v, 4);
    }
    return true;
}

//! Every output as DIR/<name>.npy.
void writeOutputs(DeviceBuffers const& buffers, std::string const& dir)
{
    for (Tensor const& t : buffers.tensors)
    {
        if (t.isInput)
        {
            continue;
        }
        std::vector<uint8_t> host(t.bytes);
        checkCuda(cudaMemcpy(host.data(), t.device, t.bytes, cudaMemcpyDeviceToHost), "copy output");
        vitdeploy::npy::Array a;
        if (!toNpy(t, std::move(host), a))
        {
            std::fprintf(stderr, "vitdeploy-run: skipping output '%s' (type %s has no .npy dtype)\n", t.name.c_str(),
                typeName(t.type));
            continue;
        }
        std::string error;
        std::string const path = dir + "/" + safeFileName(t.name) + ".npy";
        if (!vitdeploy::npy::save(path, a, error))
        {
            throw BadInput{error};
        }
        std::fprintf(stderr, "vitdeploy-run: wrote %s %s %s\n", path.c_str(), dimsToString(t.shape).c_str(),
            typeName(t.type));
    }
}

//! The one JSON line on stdout, with the keys of `vitdeploy bench` JSON.
void printStats(std::vector<double> const& times, int64_t batch, int32_t iters)
{
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    double mean = 0.0;
    for (double v : times)
    {
        mean += v;
    }
    mean /= static_cast<double>(times.size());
    double const median = percentile(sorted, 50.0);
    // Same definition as vitdeploy.validation.latency.summarize: images per second at the median latency.
    double const throughput = median > 0.0 ? static_cast<double>(batch) * 1e3 / median : 0.0;
    std::printf("{\"backend\":\"trt-cpp\",\"batch\":%lld,\"iters\":%d,\"median_ms\":%.6f,\"p90_ms\":%.6f,"
                "\"p99_ms\":%.6f,\"mean_ms\":%.6f,\"min_ms\":%.6f,\"throughput_ips\":%.3f}\n",
        static_cast<long long>(batch), iters, median, percentile(sorted, 90.0), percentile(sorted, 99.0), mean,
        sorted.front(), throughput);
    std::fflush(stdout);
}

int run(Options const& opt)
{
    Logger logger(opt.verbose ? nvinfer1::ILogger::Severity::kVERBOSE : nvinfer1::ILogger::Severity::kWARNING);
    // The user's files first, before touching the GPU, so bad paths are reported as such (exit 2).
    std::vector<char> const blob = readFile(opt.engine);
    std::vector<std::string> const plugins = resolvePluginPaths(opt.plugins);
    Session session = openEngine(opt.engine, blob, plugins, logger);
    DeviceBuffers buffers;
    describeTensors(*session.engine, buffers);
    std::vector<std::vector<uint8_t>> hostInputs;
    int64_t const batch = prepareInputs(opt, *session.engine, *session.context, buffers, hostInputs);
    allocateAndUpload(*session.context, buffers, hostInputs);
    std::vector<double> const times = timeIterations(*session.context, opt.warmup, opt.iters);
    if (!opt.outputsDir.empty())
    {
        writeOutputs(buffers, opt.outputsDir);
    }
    printStats(times, batch, opt.iters);
    return kEXIT_OK;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        return run(parseArgs(argc, argv));
    }
    catch (BadInput const& e)
    {
        std::fprintf(stderr, "vitdeploy-run: error: %s\n", e.message.c_str());
        return kEXIT_BAD_INPUT;
    }
    catch (Failure const& e)
    {
        std::fprintf(stderr, "vitdeploy-run: failed: %s\n", e.message.c_str());
        return kEXIT_FAILED;
    }
    catch (std::exception const& e)
    {
        std::fprintf(stderr, "vitdeploy-run: failed: %s\n", e.what());
        return kEXIT_FAILED;
    }
}
