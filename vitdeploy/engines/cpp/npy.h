/*
 * Minimal .npy (NumPy format 1.0-3.0) reader/writer for the runner: C-order, little-endian,
 * dtypes f4 f2 i4 i8 i1 u1 b1. Enough for image batches in and logits/features out; anything else is
 * rejected with a message rather than misread.
 */
#ifndef VITDEPLOY_NPY_H
#define VITDEPLOY_NPY_H

#include <cstdint>
#include <string>
#include <vector>

namespace vitdeploy
{
namespace npy
{

struct Array
{
    std::string descr; //!< NumPy dtype string, e.g. "<f4", "<f2", "<i8", "|u1"
    std::vector<int64_t> shape;
    std::vector<uint8_t> data; //!< raw little-endian bytes, C order
};

//! Bytes per element for a supported descr, 0 otherwise.
int32_t itemSize(std::string const& descr);

//! Reads path into out; returns false and sets error on any problem.
bool load(std::string const& path, Array& out, std::string& error);

//! Writes atomically (temporary file in the same directory, then rename).
bool save(std::string const& path, Array const& array, std::string& error);

//! Element count of a shape (1 for a scalar).
int64_t volume(std::vector<int64_t> const& shape);

//! IEEE half <-> float, round to nearest even (host side; no CUDA headers needed).
uint16_t floatToHalf(float value);
float halfToFloat(uint16_t bits);

} // namespace npy
} // namespace vitdeploy

#endif // VITDEPLOY_NPY_H
