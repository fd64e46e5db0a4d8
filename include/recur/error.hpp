// recur/error.hpp — the exception hierarchy, and the shape and number formatting every message uses.
#pragma once

#include <charconv>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

#include <xtensor/xstorage.hpp>

namespace recur {

/// Shape of an array: extents, outermost first (row-major).
using Shape = xt::svector<std::size_t, 4>;

/// Every error recur raises derives from this.
struct error : std::runtime_error {
    using std::runtime_error::runtime_error;
};
/// Shapes or ranks that do not fit an op ("matmul: inner dimensions differ: (2, 3) x (4, 5)").
struct shape_error : error {
    using error::error;
};
/// An index, id, axis or length out of its range.
struct index_error : error {
    using error::error;
};
/// Misuse of the tape: mixing tapes, a cleared or destroyed tape, backward without a seed.
struct tape_error : error {
    using error::error;
};
/// A value that is not allowed (probability outside [0, 1), non-finite loss, bad option).
struct value_error : error {
    using error::error;
};
/// Reading or writing a file failed or the file is malformed.
struct io_error : error {
    using error::error;
};

/// "(2, 3)" — the form every message uses for a shape.
template <class S>
std::string shape_str(const S& shape) {
    std::string s = "(";
    bool first = true;
    for (auto d : shape) {
        if (!first) s += ", ";
        s += std::to_string(d);
        first = false;
    }
    if (shape.size() == 1) s += ",";
    return s + ")";
}

/// "0.9", "3.5", "7", "inf" — the form every message uses for a number: the shortest text
/// that reads back to the same value.
template <class V>
std::string number_str(V v) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
}

}  // namespace recur
