// Helpers shared by the test suites.
#pragma once

#include <boost/test/unit_test.hpp>

#include <functional>
#include <string>
#include <vector>

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

}  // namespace recur::testing
