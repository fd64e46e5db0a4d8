// Helpers shared by the test suites.
#pragma once

#include <boost/test/unit_test.hpp>

#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "recur/error.hpp"

namespace recur::testing {

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

}  // namespace recur::testing
