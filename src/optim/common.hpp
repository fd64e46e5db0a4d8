// Helpers shared by src/optim/*.cpp: number formatting and the name checks of load_state.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "recur/optim.hpp"

namespace recur::optim::detail {

/// value_error "<who>: invalid <what> value: <v> (<rule>)" unless ok.
inline void require(bool ok, const std::string& who, const std::string& what, double v, const char* rule) {
    if (!ok) throw value_error(who + ": invalid " + what + " value: " + number_str(v) + " (" + rule + ")");
}

/// Maps the names of `state` to their arrays after checking that they are exactly `expected`
/// (value_error listing every repeated, unknown and missing name, prefixed by `who`).
template <class T>
std::unordered_map<std::string, const xt::xarray<T>*> index_state(const State<T>& state,
                                                                  const std::vector<std::string>& expected,
                                                                  const std::string& who) {
    std::unordered_map<std::string, bool> wanted;
    for (const auto& n : expected) wanted.emplace(n, false);
    std::unordered_map<std::string, const xt::xarray<T>*> out;
    std::string repeated, unknown, missing;
    for (const auto& [name, a] : state) {
        auto it = wanted.find(name);
        if (it == wanted.end()) {
            unknown += (unknown.empty() ? "'" : ", '") + name + "'";
        } else if (it->second) {
            repeated += (repeated.empty() ? "'" : ", '") + name + "'";
        } else {
            it->second = true;
            out.emplace(name, &a);
        }
    }
    for (const auto& n : expected)
        if (!wanted[n]) missing += (missing.empty() ? "'" : ", '") + n + "'";
    std::string msg;
    if (!unknown.empty()) msg += "unknown entries " + unknown;
    if (!missing.empty()) msg += (msg.empty() ? "" : "; ") + std::string("missing entries ") + missing;
    if (!repeated.empty()) msg += (msg.empty() ? "" : "; ") + std::string("repeated entries ") + repeated;
    if (!msg.empty()) throw value_error(who + ": load_state: " + msg);
    return out;
}

/// A non-negative integer count stored with encode_scalar (value_error otherwise).
template <class T>
std::int64_t decode_count(const xt::xarray<T>& a, const std::string& who, const std::string& name) {
    const double v = decode_scalar(a, who + ": load_state: '" + name + "'");
    if (!(v >= 0 && v <= 9007199254740992.0 && std::floor(v) == v))
        throw value_error(who + ": load_state: '" + name + "' must be a non-negative integer, got " + number_str(v));
    return static_cast<std::int64_t>(v);
}

}  // namespace recur::optim::detail
