// Reading and writing one .npy stream (private to src/io/).
//
// Layout: "\x93NUMPY", major and minor version bytes, the header length (uint16 LE for
// version 1, uint32 LE for versions 2 and 3), then the header: a Python dict literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with spaces and a final
// '\n' so that the data starts at a multiple of 64 bytes, then the data, little-endian.
#pragma once

#include <string>
#include <vector>

#include <xtensor/xarray.hpp>

#include "src/io/source.hpp"

namespace recur::io::detail {

// Reads one .npy stream and converts it to T (float, double: float32/64 data; std::int64_t:
// integer data). `ctx` prefixes every message.
template <class T>
xt::xarray<T> read_npy(Source& src, const std::string& ctx);

// The bytes of `a` as numpy 1.24's np.save writes them (T = float, double).
template <class T>
std::vector<unsigned char> npy_bytes(const xt::xarray<T>& a);

}  // namespace recur::io::detail
