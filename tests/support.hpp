// Helpers shared by the test suites.
#pragma once

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <xtensor/xarray.hpp>

#include "recur/error.hpp"
#include "recur/parallel.hpp"

namespace recur::testing {

/// Seeded test data: every element uniform in [lo, hi), drawn in storage order (so the same
/// seed and shape give the same array in every suite). S is any shape container.
template <class T = double, class S>
xt::xarray<T> uniform_array(const S& shape, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(lo, hi);
    xt::xarray<T> a = xt::xarray<T>::from_shape(shape);
    for (auto& v : a) v = static_cast<T>(u(rng));
    return a;
}

/// Seeded test data: every element from N(0, scale^2), drawn in storage order.
template <class T = double, class S>
xt::xarray<T> normal_array(const S& shape, std::uint64_t seed, double scale = 1.0) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> n(0.0, scale);
    xt::xarray<T> a = xt::xarray<T>::from_shape(shape);
    for (auto& v : a) v = static_cast<T>(n(rng));
    return a;
}

/// The same for a braced shape: uniform_array({2, 3}, seed).
template <class T = double>
xt::xarray<T> uniform_array(const Shape& shape, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
    return uniform_array<T, Shape>(shape, seed, lo, hi);
}
template <class T = double>
xt::xarray<T> normal_array(const Shape& shape, std::uint64_t seed, double scale = 1.0) {
    return normal_array<T, Shape>(shape, seed, scale);
}

/// True when f throws E and the message contains every one of `parts` (the op or module
/// name, the shapes, ...); a missing part is logged.
template <class E>
bool throws_with(const std::function<void()>& f, const std::vector<std::string>& parts) {
    try {
        f();
    } catch (const E& e) {
        const std::string msg = e.what();
        for (const auto& p : parts)
            if (msg.find(p) == std::string::npos) {
                BOOST_TEST_MESSAGE("message lacks '" << p << "': " << msg);
                return false;
            }
        return true;
    }
    return false;
}

/// Predicate for BOOST_CHECK_EXCEPTION: an E (any recur::error when E is error) whose message
/// holds every part; a mismatch is logged.
template <class E>
struct Raises {
    std::vector<std::string> parts;
    bool operator()(const error& e) const {
        const std::string message = e.what();
        if constexpr (!std::is_same_v<E, error>) {
            if (dynamic_cast<const E*>(&e) == nullptr) {
                BOOST_TEST_MESSAGE("wrong exception type for: " << message);
                return false;
            }
        }
        for (const auto& p : parts)
            if (message.find(p) == std::string::npos) {
                BOOST_TEST_MESSAGE("message \"" << message << "\" does not contain \"" << p << "\"");
                return false;
            }
        return true;
    }
};

/// raises<shape_error>({"mse_loss", "(2, 3)"}) or raises<shape_error>("mse_loss", "(2, 3)")
/// (parentheses, so the commas survive the macro).
template <class E>
Raises<E> raises(std::vector<std::string> parts) {
    return Raises<E>{std::move(parts)};
}
template <class E, class... Parts>
Raises<E> raises(const Parts&... parts) {
    return Raises<E>{{std::string(parts)...}};
}

/// A Communicator of one rank for tests without MPI: allreduce_sum multiplies by `factor` (the
/// sum over `factor` ranks holding the same values) and counts its calls; abort throws.
class OneRank : public distributed::Communicator {
public:
    std::atomic<int> allreduces{0};
    double factor = 1;
    int rank() const override { return 0; }
    int size() const override { return 1; }
    void allreduce_sum(std::span<float> d) override { scale(d); }
    void allreduce_sum(std::span<double> d) override { scale(d); }
    void broadcast(std::span<float>, int) override {}
    void broadcast(std::span<double>, int) override {}
    void broadcast(std::span<std::byte>, int) override {}
    void barrier() override {}
    [[noreturn]] void abort(const std::string& message, int) override { throw value_error(message); }

private:
    template <class T>
    void scale(std::span<T> d) {
        for (auto& v : d) v = static_cast<T>(static_cast<double>(v) * factor);
        ++allreduces;
    }
};

}  // namespace recur::testing
