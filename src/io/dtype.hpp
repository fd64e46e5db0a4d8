// The element types of .npy files (private to src/io/).
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace recur::io::detail {

// A plain little-endian number type of a .npy file: float32/64 or (u)int8..64.
struct Dtype {
    char kind = 'f';  // 'f', 'i' or 'u'
    std::size_t size = 8;
};

// "<f8", "=f4", "<i8", "|u1", ...; nullopt for anything else (big-endian, complex, ...).
std::optional<Dtype> plain_dtype(const std::string& d);

// "float32", "int64", "uint8", ...
std::string dtype_name(const Dtype& d);

// A readable name for a numpy type string ("<i8" -> "int64", ">f8" -> "big-endian float64").
std::string describe_descr(const std::string& descr);

}  // namespace recur::io::detail
