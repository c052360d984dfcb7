/*
 * Runs the flat (short-row) kernel bodies of windowOpsFlat.cuh on the host, over every thread of the grid
 * the launcher would use, so their indexing is checked against vitdeploy/plugins/reference.py without a GPU
 * (tests/test_plugins_native.py drives it). The winner map is built here with the rule markWinners
 * implements on the device (largest valid k per window).
 *
 *   flatKernelsHostTest OP VEC_BYTES INDEX_BYTES B NW K ROW_BYTES MAX_BLOCKS X IDX SRC OUT
 *   OP: gather | scatter | scatter_inplace; X/SRC/OUT raw bytes, IDX raw int32/int64.
 */
#include "windowOpsFlat.cuh"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace
{

std::vector<char> readFile(char const* path)
{
    std::ifstream f(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

struct Problem
{
    std::string op;
    int64_t batch, numWindows, numKept, rowBytes;
    uint32_t maxBlocks;
    std::vector<char> x, idx, src;
};

template <typename IndexT>
std::vector<int32_t> winners(Problem const& p)
{
    std::vector<int32_t> inv(static_cast<size_t>(p.batch * p.numWindows), -1);
    auto const* idx = reinterpret_cast<IndexT const*>(p.idx.data());
    for (int64_t b = 0; b < p.batch; ++b)
    {
        for (int64_t k = 0; k < p.numKept; ++k)
        {
            int64_t const w = static_cast<int64_t>(idx[b * p.numKept + k]);
            if (w >= 0 && w < p.numWindows)
            {
                inv[b * p.numWindows + w] = static_cast<int32_t>(k);
            }
        }
    }
    return inv;
}

template <typename VecT, typename IndexT>
std::vector<char> run(Problem const& p)
{
    constexpr uint32_t kTHREADS = 256;
    auto const rowVecs = static_cast<uint32_t>(p.rowBytes / static_cast<int64_t>(sizeof(VecT)));
    auto const* x = reinterpret_cast<VecT const*>(p.x.data());
    auto const* src = reinterpret_cast<VecT const*>(p.src.data());
    auto const* idx = reinterpret_cast<IndexT const*>(p.idx.data());
    auto const nK = static_cast<uint32_t>(p.numKept);
    std::vector<char> out;
    uint32_t total = 0;
    if (p.op == "gather")
    {
        total = static_cast<uint32_t>(p.batch * p.numKept * rowVecs);
        out.assign(static_cast<size_t>(total) * sizeof(VecT), 0x5A); // poison: every byte must be written
    }
    else
    {
        out = p.x; // scatter output starts as base (in place) or is fully overwritten (fused)
        total = static_cast<uint32_t>((p.op == "scatter" ? p.batch * p.numWindows : p.batch * p.numKept) * rowVecs);
        if (p.op == "scatter")
        {
            std::memset(out.data(), 0x5A, out.size());
        }
    }
    std::vector<int32_t> const inv = p.op == "gather" ? std::vector<int32_t>{} : winners<IndexT>(p);
    auto* o = reinterpret_cast<VecT*>(out.data());
    uint32_t const blocks = vitdeploy::flat::blocksFor(total, kTHREADS, p.maxBlocks);
    uint32_t const stride = blocks * kTHREADS;
    for (uint32_t first = 0; first < stride; ++first)
    {
        vitdeploy::flat::ThreadPos const pos{first, stride};
        if (p.op == "gather")
        {
            vitdeploy::flat::gather(pos, o, x, idx, total, rowVecs, p.numWindows, nK);
        }
        else if (p.op == "scatter")
        {
            vitdeploy::flat::scatterMap(
                pos, o, x, inv.data(), src, total, rowVecs, static_cast<uint32_t>(p.numWindows), nK);
        }
        else
        {
            vitdeploy::flat::scatterInPlaceMap(pos, o, idx, inv.data(), src, total, rowVecs, p.numWindows, nK);
        }
    }
    std::printf("blocks=%u total=%u rowVecs=%u\n", blocks, total, rowVecs);
    return out;
}

template <typename IndexT>
std::vector<char> runWidth(Problem const& p, int vecBytes)
{
    switch (vecBytes)
    {
    case 16: return run<uint4, IndexT>(p);
    case 8: return run<uint2, IndexT>(p);
    case 4: return run<uint32_t, IndexT>(p);
    case 2: return run<uint16_t, IndexT>(p);
    default: return run<uint8_t, IndexT>(p);
    }
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 13)
    {
        std::fprintf(stderr, "usage: see the header of flatKernelsHostTest.cpp\n");
        return 2;
    }
    Problem p;
    p.op = argv[1];
    int const vecBytes = std::atoi(argv[2]);
    int const indexBytes = std::atoi(argv[3]);
    p.batch = std::atoll(argv[4]);
    p.numWindows = std::atoll(argv[5]);
    p.numKept = std::atoll(argv[6]);
    p.rowBytes = std::atoll(argv[7]);
    p.maxBlocks = static_cast<uint32_t>(std::atoi(argv[8]));
    p.x = readFile(argv[9]);
    p.idx = readFile(argv[10]);
    p.src = readFile(argv[11]);
    std::vector<char> const out = indexBytes == 4 ? runWidth<int32_t>(p, vecBytes) : runWidth<int64_t>(p, vecBytes);
    std::ofstream(argv[12], std::ios::binary).write(out.data(), static_cast<std::streamsize>(out.size()));
    return 0;
}
