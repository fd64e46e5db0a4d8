// .npz archives: zip archives of "<name>.npy" members (private to src/io/). libzip reads
// them (stored and deflated members, CRC checked) and builds them in memory.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>

#include "recur/io.hpp"

namespace recur::io::detail {

// An array to write, by name, without a copy.
template <class T>
using ArrayRef = std::pair<std::string, const xt::xarray<T>*>;

// Reads the members of an .npz archive: all of them in archive order, or only those named
// in `select` (in that order; members not selected are not read). `ctx` is e.g. "load m.npz".
template <class T>
std::vector<NamedArray<T>> read_npz(const std::string& path, const std::string& ctx,
                                    const std::vector<std::string>* select = nullptr);

// The .npz archive of `arrays` built in memory with libzip (members stored, like np.savez).
template <class T>
std::vector<unsigned char> npz_bytes(const std::vector<ArrayRef<T>>& arrays, const std::string& ctx);

}  // namespace recur::io::detail
