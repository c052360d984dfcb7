#include "npy.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace vitdeploy
{
namespace npy
{
namespace
{

constexpr char kMAGIC[] = "\x93NUMPY";
constexpr size_t kMAGIC_LEN = 6;

//! Value of 'key' in the header dict, as the raw text up to the next top-level ',' or '}'.
bool findValue(std::string const& header, std::string const& key, std::string& value)
{
    std::string const quoted = "'" + key + "'";
    size_t pos = header.find(quoted);
    if (pos == std::string::npos)
    {
        return false;
    }
    pos = header.find(':', pos + quoted.size());
    if (pos == std::string::npos)
    {
        return false;
    }
    ++pos;
    while (pos < header.size() && header[pos] == ' ')
    {
        ++pos;
    }
    size_t end = pos;
    if (pos < header.size() && header[pos] == '(')
    {
        end = header.find(')', pos);
        if (end == std::string::npos)
        {
            return false;
        }
        ++end;
    }
    else
    {
        while (end < header.size() && header[end] != ',' && header[end] != '}')
        {
            ++end;
        }
    }
    value = header.substr(pos, end - pos);
    return true;
}

std::string strip(std::string s, char const* chars)
{
    size_t const b = s.find_first_not_of(chars);
    if (b == std::string::npos)
    {
        return "";
    }
    size_t const e = s.find_last_not_of(chars);
    return s.substr(b, e - b + 1);
}

} // namespace

int32_t itemSize(std::string const& descr)
{
    if (descr == "<f4" || descr == "<i4")
    {
        return 4;
    }
    if (descr == "<f2")
    {
        return 2;
    }
    if (descr == "<i8")
    {
        return 8;
    }
    if (descr == "|i1" || descr == "|u1" || descr == "|b1")
    {
        return 1;
    }
    return 0;
}

int64_t volume(std::vector<int64_t> const& shape)
{
    int64_t v = 1;
    for (int64_t d : shape)
    {
        v *= d;
    }
    return v;
}

bool load(std::string const& path, Array& out, std::string& error)
{
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        error = path + ": cannot open (" + std::strerror(errno) + ")";
        return false;
    }
    char magic[kMAGIC_LEN + 2] = {};
    file.read(magic, kMAGIC_LEN + 2);
    if (!file || std::memcmp(magic, kMAGIC, kMAGIC_LEN) != 0)
    {
        error = path + ": not a .npy file (bad magic)";
        return false;
    }
    uint8_t const major = static_cast<uint8_t>(magic[kMAGIC_LEN]);
    uint32_t headerLen = 0;
    if (major == 1)
    {
        uint8_t b[2] = {};
        file.read(reinterpret_cast<char*>(b), 2);
        headerLen = static_cast<uint32_t>(b[0]) | (static_cast<uint32_t>(b[1]) << 8);
    }
    else if (major == 2 || major == 3)
    {
        uint8_t b[4] = {};
        file.read(reinterpret_cast<char*>(b), 4);
        headerLen = static_cast<uint32_t>(b[0]) | (static_cast<uint32_t>(b[1]) << 8)
            | (static_cast<uint32_t>(b[2]) << 16) | (static_cast<uint32_t>(b[3]) << 24);
    }
    else
    {
        error = path + ": unsupported .npy format version " + std::to_string(major);
        return false;
    }
    if (!file || headerLen > (1U << 20))
    {
        error = path + ": truncated or corrupt .npy header";
        return false;
    }
    std::string header(headerLen, '\0');
    file.read(&header[0], headerLen);
    if (!file)
    {
        error = path + ": truncated .npy header";
        return false;
    }

    std::string descr;
    std::string fortran;
    std::string shape;
    if (!findValue(header, "descr", descr) || !findValue(header, "fortran_order", fortran)
        || !findValue(header, "shape", shape))
    {
        error = path + ": .npy header lacks descr/fortran_order/shape";
        return false;
    }
    out.descr = strip(descr, " '\"");
    if (out.descr == "=f4" || out.descr == "=f2" || out.descr == "=i4" || out.descr == "=i8")
    {
        out.descr[0] = '<'; // native order on a little-endian host
    }
    if (itemSize(out.descr) == 0)
    {
        error = path + ": unsupported dtype '" + out.descr + "' (use little-endian float32/float16/int32/int64)";
        return false;
    }
    if (strip(fortran, " ") != "False")
    {
        error = path + ": Fortran-ordered arrays are not supported (save with np.ascontiguousarray)";
        return false;
    }
    out.shape.clear();
    std::stringstream dims(strip(shape, " ()"));
    std::string item;
    while (std::getline(dims, item, ','))
    {
        item = strip(item, " ");
        if (item.empty())
        {
            continue;
        }
        char* end = nullptr;
        long long const d = std::strtoll(item.c_str(), &end, 10);
        if (end == item.c_str() || *end != '\0' || d < 0)
        {
            error = path + ": bad shape entry '" + item + "'";
            return false;
        }
        out.shape.push_back(static_cast<int64_t>(d));
    }
    size_t const bytes = static_cast<size_t>(volume(out.shape)) * static_cast<size_t>(itemSize(out.descr));
    out.data.resize(bytes);
    if (bytes > 0)
    {
        file.read(reinterpret_cast<char*>(out.data.data()), static_cast<std::streamsize>(bytes));
    }
    if (!file)
    {
        error = path + ": file shorter than its header says (" + std::to_string(bytes) + " data bytes expected)";
        return false;
    }
    return true;
}

bool save(std::string const& path, Array const& array, std::string& error)
{
    std::string shape = "(";
    for (size_t i = 0; i < array.shape.size(); ++i)
    {
        shape += std::to_string(array.shape[i]);
        if (array.shape.size() == 1 || i + 1 < array.shape.size())
        {
            shape += ",";
        }
        if (i + 1 < array.shape.size())
        {
            shape += " ";
        }
    }
    shape += ")";
    std::string header = "{'descr': '" + array.descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
    // Pad with spaces so the data starts on a 64-byte boundary, newline-terminated (format 1.0).
    size_t const unpadded = kMAGIC_LEN + 2 + 2 + header.size() + 1;
    header.append((64 - unpadded % 64) % 64, ' ');
    header.push_back('\n');
    if (header.size() > 65535)
    {
        error = path + ": shape too long for a .npy 1.0 header";
        return false;
    }

    std::string const tmp = path + ".tmp";
    {
        std::ofstream file(tmp, std::ios::binary | std::ios::trunc);
        if (!file)
        {
            error = tmp + ": cannot write (" + std::strerror(errno) + ")";
            return false;
        }
        file.write(kMAGIC, kMAGIC_LEN);
        char const version[2] = {1, 0};
        file.write(version, 2);
        char const len[2] = {static_cast<char>(header.size() & 0xFF), static_cast<char>((header.size() >> 8) & 0xFF)};
        file.write(len, 2);
        file.write(header.data(), static_cast<std::streamsize>(header.size()));
        file.write(reinterpret_cast<char const*>(array.data.data()), static_cast<std::streamsize>(array.data.size()));
        file.flush();
        if (!file)
        {
            error = tmp + ": write failed";
            std::remove(tmp.c_str());
            return false;
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
    {
        error = path + ": rename failed (" + std::strerror(errno) + ")";
        std::remove(tmp.c_str());
        return false;
    }
    return true;
}

uint16_t floatToHalf(float value)
{
    uint32_t f = 0;
    std::memcpy(&f, &value, sizeof(f));
    uint32_t const sign = (f >> 16) & 0x8000U;
    uint32_t const absBits = f & 0x7FFFFFFFU;
    if (absBits >= 0x7F800000U) // inf or NaN
    {
        return static_cast<uint16_t>(sign | 0x7C00U | (absBits > 0x7F800000U ? 0x200U : 0U));
    }
    if (absBits >= 0x477FF000U) // rounds to >= 65520: overflow to inf
    {
        return static_cast<uint16_t>(sign | 0x7C00U);
    }
    if (absBits < 0x38800000U) // below the smallest normal half: subnormal or zero
    {
        if (absBits < 0x33000000U) // below half the smallest subnormal: rounds to zero
        {
            return static_cast<uint16_t>(sign);
        }
        uint32_t const exponent = absBits >> 23;
        uint32_t const mantissa = (absBits & 0x7FFFFFU) | 0x800000U;
        uint32_t const shift = 126U - exponent; // 14..24 for this range
        uint32_t half = mantissa >> shift;
        uint32_t const rest = mantissa & ((1U << shift) - 1U);
        uint32_t const halfway = 1U << (shift - 1U);
        if (rest > halfway || (rest == halfway && (half & 1U)))
        {
            ++half;
        }
        return static_cast<uint16_t>(sign | half);
    }
    uint32_t half = ((absBits - 0x38000000U) >> 13); // rebias exponent 127 -> 15
    uint32_t const rest = absBits & 0x1FFFU;
    if (rest > 0x1000U || (rest == 0x1000U && (half & 1U)))
    {
        ++half;
    }
    return static_cast<uint16_t>(sign | half);
}

float halfToFloat(uint16_t bits)
{
    uint32_t const sign = (static_cast<uint32_t>(bits) & 0x8000U) << 16;
    uint32_t exponent = (bits >> 10) & 0x1FU;
    uint32_t mantissa = bits & 0x3FFU;
    uint32_t f = 0;
    if (exponent == 0x1FU)
    {
        f = sign | 0x7F800000U | (mantissa << 13);
    }
    else if (exponent != 0)
    {
        f = sign | ((exponent + 112U) << 23) | (mantissa << 13);
    }
    else if (mantissa != 0)
    {
        // Subnormal half: normalise.
        exponent = 113U;
        while ((mantissa & 0x400U) == 0)
        {
            mantissa <<= 1;
            --exponent;
        }
        f = sign | (exponent << 23) | ((mantissa & 0x3FFU) << 13);
    }
    else
    {
        f = sign;
    }
    float value = 0.0F;
    std::memcpy(&value, &f, sizeof(value));
    return value;
}

} // namespace npy
} // namespace vitdeploy
