// Private helpers of src/data/: the portable random draws and message formatting.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>

#include "recur/error.hpp"

namespace recur::data::detail {

// ---- Random draws ---------------------------------------------------------------------------
// std::mt19937_64 is fully specified by the standard; the distributions are not, so the
// draws below are written out to give the same numbers with every standard library.

/// SplitMix64 finaliser: a well-mixed 64-bit function of x (for deriving seeds).
inline std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/// Uniform integer in [0, bound), bound > 0, without modulo bias (rejection sampling).
inline std::uint64_t uniform_below(std::mt19937_64& rng, std::uint64_t bound) {
    const std::uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
    for (;;) {
        const std::uint64_t r = rng();
        if (r >= threshold) return r % bound;
    }
}

/// Uniform double in (0, 1): 53 random bits, offset by half a step so 0 never appears.
inline double uniform_open01(std::mt19937_64& rng) {
    return (static_cast<double>(rng() >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/// Standard normal draws by the Box-Muller transform (two per pair of uniforms).
class Normal {
public:
    double operator()(std::mt19937_64& rng) {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        const double r = std::sqrt(-2.0 * std::log(uniform_open01(rng)));
        const double phi = 2.0 * std::numbers::pi * uniform_open01(rng);
        spare_ = r * std::sin(phi);
        has_spare_ = true;
        return r * std::cos(phi);
    }

private:
    double spare_ = 0;
    bool has_spare_ = false;
};

/// A uniformly random permutation of 0..n-1 (Fisher-Yates).
inline std::vector<std::size_t> permutation(std::size_t n, std::mt19937_64& rng) {
    std::vector<std::size_t> p(n);
    for (std::size_t i = 0; i < n; ++i) p[i] = i;
    for (std::size_t i = n; i > 1; --i) {
        const auto j = static_cast<std::size_t>(uniform_below(rng, i));
        std::swap(p[i - 1], p[j]);
    }
    return p;
}

// ---- Messages ---------------------------------------------------------------------------------

/// "(0.8, 0.2)"
inline std::string list_str(const std::vector<double>& v) {
    std::string s = "(";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + number_str(v[i]);
    return s + ")";
}

/// The multi-index of flat (row-major) position `flat` in `shape`, as "(3, 1)".
template <class S>
std::string index_str(const S& shape, std::size_t flat) {
    std::vector<std::size_t> idx(shape.size());
    for (std::size_t d = shape.size(); d-- > 0;) {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
    return shape_str(idx);
}

}  // namespace recur::data::detail
