// recur/io.hpp — numpy .npy / .npz files and module checkpoints under PyTorch names.
//
// Arrays are stored as numpy writes them: .npy format 1.0 (versions 2.0 and 3.0 are read
// too), little-endian float32 ('<f4') for float and float64 ('<f8') for double, C order.
// Reading accepts float32 and float64 (converted to T), C or Fortran order; any other dtype
// (integers, big-endian, complex, structured) is rejected with an io_error that names the
// file, the array and the dtype. load_npy / load_npz with T = std::int64_t read integer
// arrays instead (e.g. sequence lengths saved next to float data). An .npz file is a zip
// archive of "<name>.npy" members, as written by np.savez (stored) or np.savez_compressed
// (deflated); recur writes them stored.
//
// Checkpoints: save(module, path) writes one array per entry of module.named_parameters()
// under exactly that name (the PyTorch state_dict name, e.g. "weight_ih_l0" or
// "0.weight_hh_l1_reverse"), so
//     np.savez("m.npz", **{k: v.numpy() for k, v in torch_module.state_dict().items()})
// loads into the matching recur module, and np.load opens what recur saves.
//
// Guarantees:
// - Every failure raises recur::io_error naming the file (and the array or parameter).
//   Malformed, truncated or lying files are detected (header lengths, shapes vs. data size,
//   zip CRCs); nothing is read out of bounds and no allocation exceeds the data present.
//   Every extent, the element and byte counts and every stride of a shape (a zero extent
//   does not make the later extents' product small) must fit in std::ptrdiff_t before
//   anything is allocated: larger shapes are refused, as numpy refuses them.
// - load(module, ...) is all-or-nothing: the whole file is read and checked against the
//   module (names, shapes, dtypes) before any parameter changes; on error the module is
//   unchanged.
// - Saving is atomic: the file is written to a temporary file in the same directory, flushed
//   to disk and renamed over the target. A failed save leaves any previous file intact; a
//   process killed mid-save (even by SIGKILL) leaves the previous file or the new one, never
//   a mix, and its temporary file is removed by the next save of the same path.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>

#include "recur/error.hpp"
#include "recur/nn/module.hpp"

namespace recur::io {

/// Writes `contents` to `path` atomically: into a temporary file in the same directory,
/// flushed to disk, then renamed over `path`. On failure the temporary file is removed, any
/// previous file at `path` is unchanged, and io_error "<who> <path>: ..." names the path.
/// Temporary files left by writers that were killed mid-save are removed by the next save
/// of the same path. (Every save in recur writes this way: the functions below,
/// History::write_csv, Vocabulary::save; use it for other outputs too.)
void write_atomically(const std::string& path, std::string_view contents, std::string_view who = "write");

/// A named array, as stored in an .npz file.
template <class T>
using NamedArray = std::pair<std::string, xt::xarray<T>>;

/// Writes `a` to `path` as a numpy .npy file (atomically).
template <class T>
void save_npy(const std::string& path, const xt::xarray<T>& a);

/// Reads a numpy .npy file of float32 or float64, converting to T (float, double). With
/// T = std::int64_t, reads integer arrays instead (int8..int64, uint8..uint64; no floats).
template <class T>
xt::xarray<T> load_npy(const std::string& path);

/// Writes the arrays to `path` as an .npz archive, members in the given order (atomically).
/// Names must be non-empty, unique and free of NUL characters; np.load(path)[name] returns
/// the array.
template <class T>
void save_npz(const std::string& path, const std::vector<NamedArray<T>>& arrays);

/// Reads every array of an .npz archive, in archive order, converting to T. Member names
/// lose their ".npy" suffix, as with np.load. Every member must be an .npy array of a dtype
/// T accepts (see load_npy).
template <class T>
std::vector<NamedArray<T>> load_npz(const std::string& path);

/// Reads only the arrays named in `names`, in that order (e.g. integer "lengths" with
/// T = std::int64_t next to float data); other members are not read. A missing name is an
/// io_error.
template <class T>
std::vector<NamedArray<T>> load_npz(const std::string& path, const std::vector<std::string>& names);

/// Saves every parameter of `m` under its named_parameters() name to an .npz file.
template <class T>
void save(nn::Module<T>& m, const std::string& path);

/// Loads an .npz file into `m`: the file must hold exactly the names of
/// m.named_parameters(), each with the parameter's shape (float32 or float64 data). On any
/// error the module is left unchanged and io_error lists the problems, e.g.
/// "load m.npz: parameter 'weight_hh_l0' has shape (16, 4) in the file, the module expects (16, 8)".
template <class T>
void load(nn::Module<T>& m, const std::string& path);

extern template void save_npy<float>(const std::string&, const xt::xarray<float>&);
extern template void save_npy<double>(const std::string&, const xt::xarray<double>&);
extern template xt::xarray<float> load_npy<float>(const std::string&);
extern template xt::xarray<double> load_npy<double>(const std::string&);
extern template void save_npz<float>(const std::string&, const std::vector<NamedArray<float>>&);
extern template void save_npz<double>(const std::string&, const std::vector<NamedArray<double>>&);
extern template std::vector<NamedArray<float>> load_npz<float>(const std::string&);
extern template std::vector<NamedArray<double>> load_npz<double>(const std::string&);
extern template std::vector<NamedArray<float>> load_npz<float>(const std::string&, const std::vector<std::string>&);
extern template std::vector<NamedArray<double>> load_npz<double>(const std::string&, const std::vector<std::string>&);
extern template xt::xarray<std::int64_t> load_npy<std::int64_t>(const std::string&);
extern template std::vector<NamedArray<std::int64_t>> load_npz<std::int64_t>(const std::string&);
extern template std::vector<NamedArray<std::int64_t>> load_npz<std::int64_t>(const std::string&,
                                                                             const std::vector<std::string>&);
extern template void save<float>(nn::Module<float>&, const std::string&);
extern template void save<double>(nn::Module<double>&, const std::string&);
extern template void load<float>(nn::Module<float>&, const std::string&);
extern template void load<double>(nn::Module<double>&, const std::string&);

}  // namespace recur::io
