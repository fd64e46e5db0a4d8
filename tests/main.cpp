// The test runner's entry point; suites live in tests/test_*.cpp.
#define BOOST_TEST_MODULE recur
#include <boost/test/unit_test.hpp>
