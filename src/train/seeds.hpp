// Seeds derived from a run's seed (fit's batches, data-parallel shards). Internal.
#pragma once

#include <cstdint>

namespace recur::train::detail {

/// splitmix64's finaliser: spreads a sum of seed and counters over all 64 bits.
inline std::uint64_t splitmix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/// Odd constants that weigh the counters (the golden ratio and splitmix64's first multiplier).
constexpr std::uint64_t seed_weight_1 = 0x9e3779b97f4a7c15ULL, seed_weight_2 = 0xbf58476d1ce4e5b9ULL;

}  // namespace recur::train::detail
