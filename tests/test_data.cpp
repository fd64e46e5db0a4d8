// Data tools: windows, scalers (scikit-learn numbers), splits, batches, padding, vocabulary,
// CSV columns and the noisy sine. Values are small hand-computed cases, compared exactly;
// every bad input raises the documented exception with a message naming the function and
// the sizes.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>
#include <string>

#include <unistd.h>

#include <recur/data.hpp>

using namespace recur;
using namespace recur::data;
namespace fs = std::filesystem;

namespace {

// Runs f, which must throw E whose message contains every one of `parts`.
template <class E, class F>
void check_throws(F&& f, std::initializer_list<std::string> parts) {
    try {
        f();
    } catch (const E& e) {
        const std::string what = e.what();
        for (const std::string& p : parts)
            BOOST_TEST(what.find(p) != std::string::npos, "'" << p << "' not in: " << what);
        return;
    }
    BOOST_FAIL("no exception thrown; expected one mentioning " << *parts.begin());
}

// "(3, 1) [3, 4, 5]": shape and row-major values, for failure messages.
template <class T>
std::string str(const xt::xarray<T>& a) {
    std::ostringstream os;
    os.precision(17);
    os << shape_str(a.shape()) << " [";
    for (std::size_t i = 0; i < a.size(); ++i) os << (i ? ", " : "") << a.data()[i];
    os << "]";
    return os.str();
}

template <class T>
void check_equal(const xt::xarray<T>& got, const xt::xarray<T>& want) {
    BOOST_TEST((got == want), "got " << str(got) << ", want " << str(want));
}

// A file under the temp directory, removed when the object goes.
struct TempFile {
    fs::path path;
    explicit TempFile(const std::string& name, const std::string& contents = "")
        : path(fs::temp_directory_path() / ("recur_test_data_" + std::to_string(::getpid()) + "_" + name)) {
        std::ofstream(path, std::ios::binary) << contents;
    }
    ~TempFile() {
        std::error_code ec;
        fs::remove(path, ec);
    }
    std::string str() const { return path.string(); }
};

// An array of `shape` holding `values` in row-major order (for shapes whose nested braces
// xtensor cannot tell apart, such as (3, 1)).
template <class T>
xt::xarray<T> arr(const Shape& shape, const std::vector<T>& values) {
    xt::xarray<T> a = xt::xarray<T>::from_shape(shape);
    BOOST_REQUIRE(a.size() == values.size());
    std::copy(values.begin(), values.end(), a.begin());
    return a;
}

std::vector<std::size_t> iota_vec(std::size_t n) {
    std::vector<std::size_t> v(n);
    std::iota(v.begin(), v.end(), std::size_t(0));
    return v;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(data)

// ---- make_windows -----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(windows_one_step_ahead) {
    const xt::xarray<double> s = {0, 1, 2, 3, 4, 5};
    auto [X, y] = make_windows(s, 3);
    check_equal(X, arr<double>({3, 3, 1}, {0, 1, 2, 1, 2, 3, 2, 3, 4}));
    check_equal(y, arr<double>({3, 1}, {3, 4, 5}));
}

BOOST_AUTO_TEST_CASE(windows_multi_step_and_stride) {
    const xt::xarray<float> s = {0, 1, 2, 3, 4, 5, 6};
    // M = (7 - 3 - 2) / 2 + 1 = 2: windows start at 0 and 2.
    auto [X, y] = make_windows(s, 3, 2, 2);
    check_equal(X, arr<float>({2, 3, 1}, {0, 1, 2, 2, 3, 4}));
    check_equal(y, xt::xarray<float>{{3, 4}, {5, 6}});
    // An incomplete tail is dropped: with 8 values the third window would need index 8.
    const xt::xarray<float> s8 = {0, 1, 2, 3, 4, 5, 6, 7};
    BOOST_TEST(make_windows(s8, 3, 2, 2).X.shape(0) == 2u);
    // Exactly window + horizon values: one window.
    auto w = make_windows(xt::xarray<float>{1, 2, 3}, 2, 1);
    check_equal(w.X, arr<float>({1, 2, 1}, {1, 2}));
    check_equal(w.y, arr<float>({1, 1}, {3}));
}

BOOST_AUTO_TEST_CASE(windows_multivariate_target_column) {
    const xt::xarray<double> s = {{0, 10}, {1, 11}, {2, 12}, {3, 13}, {4, 14}};
    auto [X, y] = make_windows(s, 2, 1, 1, 1);
    check_equal(X, xt::xarray<double>{{{0, 10}, {1, 11}}, {{1, 11}, {2, 12}}, {{2, 12}, {3, 13}}});
    check_equal(y, arr<double>({3, 1}, {12, 13, 14}));
    auto w0 = make_windows(s, 2, 2);  // target column 0, two steps ahead
    check_equal(w0.y, xt::xarray<double>{{2, 3}, {3, 4}});
    // Token ids (int64) window the same way.
    auto wi = make_windows(xt::xarray<std::int64_t>{5, 6, 7, 8}, 2);
    check_equal(wi.y, arr<std::int64_t>({2, 1}, {7, 8}));
}

BOOST_AUTO_TEST_CASE(windows_errors) {
    const xt::xarray<double> s = {0, 1, 2};
    check_throws<value_error>([&] { make_windows(s, 0); }, {"make_windows", "window", "got 0"});
    check_throws<value_error>([&] { make_windows(s, 1, 0); }, {"make_windows", "horizon"});
    check_throws<value_error>([&] { make_windows(s, 1, 1, 0); }, {"make_windows", "stride"});
    check_throws<value_error>([&] { make_windows(s, 3); },
                              {"make_windows", "length 3", "window 3", "horizon 1", "at least 4"});
    check_throws<value_error>([&] { make_windows(xt::xarray<double>::from_shape({0}), 1); }, {"length 0"});
    check_throws<shape_error>(
        [&] {
            make_windows(xt::xarray<double>::from_shape({4, 2, 1}), 1);
        },
        {"make_windows", "(4, 2, 1)"});
    check_throws<index_error>(
        [&] {
            make_windows(xt::xarray<double>::from_shape({4, 2}), 1, 1, 1, 2);
        },
        {"make_windows", "target_column 2", "2 features"});
}

// ---- noisy_sine -------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(noisy_sine_grid_and_noise) {
    const auto clean = noisy_sine<double>(3, 0.0, 2.0, 0.0, 1);
    check_equal(clean, xt::xarray<double>{0.0, std::sin(1.0), std::sin(2.0)});
    check_equal(noisy_sine<double>(1, 0.5, 9.0, 0.0, 1), xt::xarray<double>{std::sin(0.5)});
    const auto f = noisy_sine(4, 0.0, 3.0, 0.0, 1);  // float by default
    BOOST_TEST(f(3) == static_cast<float>(std::sin(3.0)));

    // On [0, 0] the series is pure noise: mean ~ 0, population std ~ noise_std.
    const std::size_t n = 20000;
    const auto z = noisy_sine<double>(n, 0.0, 0.0, 0.5, 42);
    double mean = 0, sq = 0;
    for (double v : z) mean += v;
    mean /= n;
    for (double v : z) sq += (v - mean) * (v - mean);
    const double sd = std::sqrt(sq / n);
    BOOST_TEST(std::abs(mean) < 0.02);
    BOOST_TEST(std::abs(sd - 0.5) < 0.02);
    // Reproducible by seed.
    check_equal(noisy_sine<double>(50, 0, 10, 0.1, 7), noisy_sine<double>(50, 0, 10, 0.1, 7));
    BOOST_TEST(!(noisy_sine<double>(50, 0, 10, 0.1, 7) == noisy_sine<double>(50, 0, 10, 0.1, 8)));
}

BOOST_AUTO_TEST_CASE(noisy_sine_errors) {
    check_throws<value_error>([] { noisy_sine(0, 0, 1, 0.1, 1); }, {"noisy_sine", "n_samples"});
    check_throws<value_error>([] { noisy_sine(5, 0, 1, -0.1, 1); }, {"noisy_sine", "noise_std", "-0.1"});
    check_throws<value_error>([] { noisy_sine(5, 0, NAN, 0.1, 1); }, {"noisy_sine", "finite"});
}

// ---- MinMaxScaler -----------------------------------------------------------------------------

// Column 0: 2, 4, 6 -> min 2, max 6, scale 1/4, min_ -1/2. Column 1 is constant (7).
BOOST_AUTO_TEST_CASE(minmax_matches_sklearn) {
    const xt::xarray<double> a = {{2, 7}, {4, 7}, {6, 7}};
    MinMaxScaler<double> sc;
    BOOST_TEST(!sc.fitted());
    const auto t = sc.fit_transform(a);
    check_equal(t, xt::xarray<double>{{0, 0}, {0.5, 0}, {1, 0}});
    check_equal(sc.data_min(), xt::xarray<double>{2, 7});
    check_equal(sc.data_max(), xt::xarray<double>{6, 7});
    check_equal(sc.data_range(), xt::xarray<double>{4, 0});
    check_equal(sc.scale(), xt::xarray<double>{0.25, 1});
    check_equal(sc.min(), xt::xarray<double>{-0.5, -7});
    BOOST_TEST(sc.n_features() == 2u);
    BOOST_TEST(sc.n_samples_seen() == 3u);
    // No clipping outside the fitted range; exact inverse.
    check_equal(sc.transform(xt::xarray<double>{{8, 7}, {0, 9}}), xt::xarray<double>{{1.5, 0}, {-0.5, 2}});
    check_equal(sc.inverse_transform(t), a);

    // feature_range (-1, 1): scale 2/4, min_ -1 - 2 * 0.5 = -2; the constant column maps to -1.
    MinMaxScaler<double> sym(-1, 1);
    check_equal(sym.fit_transform(a), xt::xarray<double>{{-1, -1}, {0, -1}, {1, -1}});
    check_equal(sym.scale(), xt::xarray<double>{0.5, 2});
    check_equal(sym.min(), xt::xarray<double>{-2, -15});
}

BOOST_AUTO_TEST_CASE(minmax_shapes_and_float) {
    // 1-D: one feature.
    MinMaxScaler<float> sc;
    check_equal(sc.fit_transform(xt::xarray<float>{2, 4, 6}), xt::xarray<float>{0, 0.5f, 1});
    BOOST_TEST(sc.n_features() == 1u);
    check_equal(sc.transform(arr<float>({2, 1}, {3, 5})), arr<float>({2, 1}, {0.25f, 0.75f}));  // (N, 1)
    // (B, T, F): statistics over B and T for each of the F features.
    const xt::xarray<float> b = {{{0, 10}, {2, 30}}, {{4, 20}, {1, 50}}};
    MinMaxScaler<float> sb;
    check_equal(sb.fit_transform(b), xt::xarray<float>{{{0, 0}, {0.5f, 0.5f}}, {{1, 0.25f}, {0.25f, 1}}});
    // One feature of a multi-feature scaler (e.g. predictions of the target column).
    MinMaxScaler<double> two;
    two.fit(xt::xarray<double>{{2, 10}, {6, 30}});
    check_equal(two.transform_feature(arr<double>({2, 1}, {20, 30}), 1), arr<double>({2, 1}, {0.5, 1}));
    check_equal(two.inverse_transform_feature(xt::xarray<double>{0.5, 1}, 0), xt::xarray<double>{4, 6});
}

BOOST_AUTO_TEST_CASE(minmax_errors) {
    MinMaxScaler<double> sc;
    const xt::xarray<double> a = {{1, 2}, {3, 4}};
    check_throws<value_error>([&] { sc.transform(a); }, {"MinMaxScaler::transform", "not fitted"});
    check_throws<value_error>([&] { sc.inverse_transform(a); }, {"MinMaxScaler::inverse_transform", "not fitted"});
    check_throws<value_error>([&] { sc.scale(); }, {"MinMaxScaler::scale", "not fitted"});
    check_throws<value_error>([&] { sc.transform_feature(a, 0); }, {"MinMaxScaler::transform_feature"});
    check_throws<value_error>([] { MinMaxScaler<double>(1, 0); }, {"MinMaxScaler", "(1, 0)"});
    check_throws<value_error>(
        [&] {
            sc.fit(xt::xarray<double>::from_shape({0, 2}));
        },
        {"MinMaxScaler::fit", "no samples", "(0, 2)"});
    check_throws<shape_error>([&] { sc.fit(xt::xarray<double>(1.0)); }, {"MinMaxScaler::fit", "scalar"});
    xt::xarray<double> bad = a;
    bad(1, 0) = NAN;
    check_throws<value_error>([&] { sc.fit(bad); }, {"MinMaxScaler::fit", "NaN at index (1, 0)", "shape (2, 2)"});
    BOOST_TEST(!sc.fitted());  // a failed fit leaves the scaler unfitted
    bad(1, 0) = -INFINITY;
    check_throws<value_error>([&] { sc.fit(bad); }, {"-inf at index (1, 0)"});
    sc.fit(a);
    check_throws<shape_error>(
        [&] {
            sc.transform(xt::xarray<double>{{1, 2, 3}});
        },
        {"MinMaxScaler::transform", "(1, 3)", "3 features", "fitted on 2"});
    check_throws<shape_error>(
        [&] {
            sc.inverse_transform(xt::xarray<double>{1, 2});
        },
        {"MinMaxScaler::inverse_transform", "1 feature,", "fitted on 2"});
    check_throws<value_error>(
        [&] {
            sc.transform(xt::xarray<double>{{1, NAN}});
        },
        {"MinMaxScaler::transform", "NaN at index (0, 1)"});
    check_throws<index_error>([&] { sc.transform_feature(a, 2); },
                              {"MinMaxScaler::transform_feature", "feature 2", "2 features"});
}

// ---- StandardScaler ---------------------------------------------------------------------------

// Column 0: 2, 4, 4, 4, 5, 5, 7, 9 -> mean 5, population variance 4 (sample variance would
// be 32/7), std 2. Column 1: constant 0.1 -> mean 0.1 exactly, var 0, scale 1, all zeros.
BOOST_AUTO_TEST_CASE(standard_matches_sklearn) {
    const xt::xarray<double> a = {{2, 0.1}, {4, 0.1}, {4, 0.1}, {4, 0.1}, {5, 0.1}, {5, 0.1}, {7, 0.1}, {9, 0.1}};
    StandardScaler<double> sc;
    const auto t = sc.fit_transform(a);
    check_equal(sc.mean(), xt::xarray<double>{5, 0.1});
    check_equal(sc.var(), xt::xarray<double>{4, 0});
    check_equal(sc.scale(), xt::xarray<double>{2, 1});
    check_equal(t, xt::xarray<double>{{-1.5, 0}, {-0.5, 0}, {-0.5, 0}, {-0.5, 0}, {0, 0}, {0, 0}, {1, 0}, {2, 0}});
    check_equal(sc.inverse_transform(t), a);
    BOOST_TEST(sc.n_samples_seen() == 8u);

    StandardScaler<double> no_mean(false, true), no_std(true, false);
    const xt::xarray<double> c = {2, 4, 4, 4, 5, 5, 7, 9};
    check_equal(no_mean.fit_transform(c), xt::xarray<double>{1, 2, 2, 2, 2.5, 2.5, 3.5, 4.5});
    check_equal(no_mean.mean(), xt::xarray<double>{5});
    check_equal(no_std.fit_transform(c), xt::xarray<double>{-3, -1, -1, -1, 0, 0, 2, 4});
    check_equal(no_std.inverse_transform(xt::xarray<double>{0}), xt::xarray<double>{5});
}

BOOST_AUTO_TEST_CASE(standard_float_and_features) {
    StandardScaler<float> sc;
    const xt::xarray<float> c = {1, 3};  // mean 2, std 1
    check_equal(sc.fit_transform(c), xt::xarray<float>{-1, 1});
    // (B, T, F) with two features: feature 0 values 0, 2, 4, 6 (mean 3, var 5);
    // feature 1 values 1, 1, 3, 3 (mean 2, var 1).
    StandardScaler<double> s3;
    s3.fit(xt::xarray<double>{{{0, 1}, {2, 1}}, {{4, 3}, {6, 3}}});
    check_equal(s3.mean(), xt::xarray<double>{3, 2});
    check_equal(s3.var(), xt::xarray<double>{5, 1});
    check_equal(s3.transform_feature(xt::xarray<double>{3, 4}, 1), xt::xarray<double>{1, 2});
    check_equal(s3.inverse_transform_feature(arr<double>({2, 1}, {1, 2}), 1), arr<double>({2, 1}, {3, 4}));
}

BOOST_AUTO_TEST_CASE(standard_errors) {
    StandardScaler<float> sc;
    check_throws<value_error>(
        [&] {
            sc.transform(xt::xarray<float>{1, 2});
        },
        {"StandardScaler::transform", "not fitted"});
    check_throws<value_error>([&] { sc.mean(); }, {"StandardScaler::mean", "not fitted"});
    check_throws<value_error>(
        [&] {
            sc.fit(xt::xarray<float>{1, NAN, 3});
        },
        {"StandardScaler::fit", "NaN at index (1,)", "shape (3,)"});
    check_throws<value_error>([&] { sc.fit(xt::xarray<float>::from_shape({0})); },
                              {"StandardScaler::fit", "no samples"});
    sc.fit(xt::xarray<float>{{1, 2, 3}, {4, 5, 6}});
    check_throws<shape_error>(
        [&] {
            sc.transform(xt::xarray<float>{{1, 2}});
        },
        {"StandardScaler::transform", "(1, 2)", "2 features", "fitted on 3"});
    check_throws<value_error>(
        [&] {
            sc.inverse_transform(xt::xarray<float>{{1, INFINITY, 0}});
        },
        {"StandardScaler::inverse_transform", "inf at index (0, 1)"});
    check_throws<index_error>([&] { sc.inverse_transform_feature(xt::xarray<float>{1}, 3); },
                              {"StandardScaler::inverse_transform_feature", "feature 3", "3 features"});
}

// ---- Splits and rows ----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(split_sequential_ranges) {
    using R = IndexRange;
    BOOST_TEST((split_sequential(10, {0.8, 0.2}) == std::vector<R>{{0, 8}, {8, 10}}));
    BOOST_TEST((split_sequential(11, {0.8, 0.2}) == std::vector<R>{{0, 8}, {8, 11}}));
    BOOST_TEST((split_sequential(100, {0.7, 0.15, 0.15}) == std::vector<R>{{0, 70}, {70, 85}, {85, 100}}));
    // 0.29 * 100 is 28.999999999999996 in floating point; the split is still at 29.
    BOOST_TEST((split_sequential(100, {0.29, 0.71}) == std::vector<R>{{0, 29}, {29, 100}}));

    const xt::xarray<double> a = {{0, 0}, {1, 10}, {2, 20}, {3, 30}, {4, 40}};
    const auto parts = split_sequential(a, {0.6, 0.4});
    BOOST_TEST(parts.size() == 2u);
    check_equal(parts[0], xt::xarray<double>{{0, 0}, {1, 10}, {2, 20}});
    check_equal(parts[1], xt::xarray<double>{{3, 30}, {4, 40}});
    const auto s = split_sequential(xt::xarray<float>{1, 2, 3, 4}, {0.5, 0.25, 0.25});
    check_equal(s[2], xt::xarray<float>{4});
}

BOOST_AUTO_TEST_CASE(split_sequential_errors) {
    check_throws<value_error>([] { split_sequential(10, {1.0}); }, {"split_sequential", "at least two"});
    check_throws<value_error>(
        [] {
            split_sequential(10, {0.8, 0.1});
        },
        {"split_sequential", "(0.8, 0.1)", "sum to 0.9"});
    check_throws<value_error>([] { split_sequential(10, {1.2, -0.2}); }, {"split_sequential", "fraction 1", "-0.2"});
    check_throws<value_error>(
        [] {
            split_sequential(3, {0.1, 0.9});
        },
        {"split_sequential", "part 0", "3 rows", "empty"});
    check_throws<shape_error>(
        [] {
            split_sequential(xt::xarray<double>(2.0), {0.5, 0.5});
        },
        {"split_sequential", "scalar"});
}

BOOST_AUTO_TEST_CASE(take_rows_any_rank) {
    const xt::xarray<double> a = {{0, 1}, {2, 3}, {4, 5}, {6, 7}};
    check_equal(take_rows(a, {3, 0, 3}), xt::xarray<double>{{6, 7}, {0, 1}, {6, 7}});
    check_equal(take_rows(xt::xarray<std::int64_t>{5, 6, 7}, {2}), xt::xarray<std::int64_t>{7});
    BOOST_TEST(take_rows(a, {}).shape(0) == 0u);
    const std::vector<std::int64_t> lengths = {4, 2, 9};
    BOOST_TEST((take_rows(lengths, {2, 1}) == std::vector<std::int64_t>{9, 2}));
    check_throws<index_error>(
        [&] {
            take_rows(a, {1, 4});
        },
        {"take_rows", "index 4", "position 1", "(4, 2)", "4 rows"});
    check_throws<index_error>([&] { take_rows(lengths, {3}); }, {"take_rows", "index 3", "3 items"});
    check_throws<shape_error>([&] { take_rows(xt::xarray<double>(1.0), {0}); }, {"take_rows", "scalar"});
}

BOOST_AUTO_TEST_CASE(train_test_split_paired_and_seeded) {
    // Row i of X is (i, 10 + i); y_i = 100 i, so pairing is checkable after the shuffle.
    xt::xarray<double> X = xt::xarray<double>::from_shape({10, 2}), y = xt::xarray<double>::from_shape({10});
    for (std::size_t i = 0; i < 10; ++i) {
        X(i, 0) = double(i);
        X(i, 1) = 10.0 + double(i);
        y(i) = 100.0 * double(i);
    }
    auto [X_train, X_test, y_train, y_test] = train_test_split(X, y, 0.2, 42);
    BOOST_TEST(X_train.shape(0) == 8u);
    BOOST_TEST(X_test.shape(0) == 2u);  // ceil(0.2 * 10)
    std::set<double> seen;
    for (std::size_t k = 0; k < 8; ++k) {
        BOOST_TEST(y_train(k) == 100.0 * X_train(k, 0));
        BOOST_TEST(X_train(k, 1) == 10.0 + X_train(k, 0));
        seen.insert(X_train(k, 0));
    }
    for (std::size_t k = 0; k < 2; ++k) {
        BOOST_TEST(y_test(k) == 100.0 * X_test(k, 0));
        seen.insert(X_test(k, 0));
    }
    BOOST_TEST(seen.size() == 10u);  // every row exactly once

    // The same seed gives the same split; the permutation is recur's own, so it is fixed.
    const SplitIndices s = train_test_indices(10, 0.3, 42);
    const SplitIndices s2 = train_test_indices(10, 0.3, 42);
    BOOST_TEST(s.train == s2.train);
    BOOST_TEST(s.test == s2.test);
    BOOST_TEST((s.test == std::vector<std::size_t>{1, 7, 9}));
    BOOST_TEST((s.train == std::vector<std::size_t>{0, 3, 8, 4, 2, 5, 6}));
    BOOST_TEST(train_test_indices(10, 0.3, 43).test != s.test);
    BOOST_TEST(train_test_indices(10, 0.25, 1).test.size() == 3u);  // ceil(2.5)
    BOOST_TEST(train_test_indices(30, 0.1, 1).test.size() == 3u);  // 0.1 * 30 is 3.0000000000000004
}

BOOST_AUTO_TEST_CASE(train_test_split_errors) {
    const xt::xarray<double> X = xt::xarray<double>::from_shape({10, 3}), y = xt::xarray<double>::from_shape({9});
    check_throws<shape_error>([&] { train_test_split(X, y, 0.2, 1); },
                              {"train_test_split", "X has 10 rows", "(10, 3)", "y has 9", "(9,)"});
    check_throws<shape_error>([&] { train_test_split(X, xt::xarray<double>(1.0), 0.2, 1); },
                              {"train_test_split", "()"});
    for (double f : {0.0, 1.0, -0.5, double(NAN)})
        check_throws<value_error>([&] { train_test_indices(10, f, 1); }, {"train_test_split", "test_fraction"});
    check_throws<value_error>([] { train_test_indices(1, 0.5, 1); }, {"train_test_split", "1 row", "no training rows"});
    check_throws<value_error>([] { train_test_indices(0, 0.5, 1); }, {"train_test_split", "no samples"});
}

// ---- Batches ------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(batches_in_order_and_drop_last) {
    using B = std::vector<std::vector<std::size_t>>;
    BatchIterator it(10, 4, false);
    BOOST_TEST(it.num_batches() == 3u);
    BOOST_TEST((it.epoch(0) == B{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}));
    BOOST_TEST((it.epoch(5) == it.epoch(0)));
    BatchIterator dl(10, 4, false, 0, true);
    BOOST_TEST(dl.num_batches() == 2u);
    BOOST_TEST((dl.epoch(0) == B{{0, 1, 2, 3}, {4, 5, 6, 7}}));
    BOOST_TEST((BatchIterator(8, 4, false, 0, true).epoch(0) == B{{0, 1, 2, 3}, {4, 5, 6, 7}}));
    BOOST_TEST((BatchIterator(3, 5, false).epoch(0) == B{{0, 1, 2}}));
}

BOOST_AUTO_TEST_CASE(batches_shuffled_reproducibly) {
    BatchIterator it(10, 4, true, 7);
    const auto e0 = it.epoch(0), e1 = it.epoch(1);
    std::vector<std::size_t> all;
    for (const auto& b : e0) all.insert(all.end(), b.begin(), b.end());
    BOOST_TEST(e0.size() == 3u);
    BOOST_TEST(e0[2].size() == 2u);
    BOOST_TEST((all == it.order(0)));
    std::sort(all.begin(), all.end());
    BOOST_TEST((all == iota_vec(10)));  // a permutation
    BOOST_TEST((it.order(0) != iota_vec(10)));
    BOOST_TEST((e0 != e1));  // reshuffled each epoch
    // Epoch e depends only on (seed, e): another iterator, or a later call, gives the same.
    BatchIterator again(10, 4, true, 7);
    BOOST_TEST((again.epoch(1) == e1));
    BOOST_TEST((again.next_epoch() == e0));
    BOOST_TEST((again.next_epoch() == e1));
    BOOST_TEST(again.current_epoch() == 2u);
    again.set_epoch(0);
    BOOST_TEST((again.next_epoch() == e0));
    BOOST_TEST((BatchIterator(10, 4, true, 8).order(0) != it.order(0)));
    BOOST_TEST((it.order(0) == std::vector<std::size_t>{5, 6, 2, 8, 4, 9, 7, 3, 1, 0}));  // fixed on every platform
    // drop_last: full batches of distinct samples only.
    BatchIterator dl(10, 4, true, 7, true);
    const auto d0 = dl.epoch(0);
    BOOST_TEST(d0.size() == 2u);
    std::set<std::size_t> distinct;
    for (const auto& b : d0) {
        BOOST_TEST(b.size() == 4u);
        distinct.insert(b.begin(), b.end());
    }
    BOOST_TEST(distinct.size() == 8u);
}

BOOST_AUTO_TEST_CASE(gather_batch_and_errors) {
    const xt::xarray<float> X = arr<float>({3, 2, 1}, {0, 1, 2, 3, 4, 5});
    check_equal(gather_batch(X, {2, 0}), arr<float>({2, 2, 1}, {4, 5, 0, 1}));
    check_throws<value_error>([] { BatchIterator(10, 0); }, {"BatchIterator", "batch_size", "got 0"});
    check_throws<value_error>([] { BatchIterator(0, 4); }, {"BatchIterator", "empty", "n_samples 0"});
    check_throws<value_error>([] { BatchIterator(3, 4, true, 0, true); },
                              {"BatchIterator", "drop_last", "3 samples", "batch_size 4"});
    check_throws<value_error>([&] { gather_batch(X, {}); }, {"gather_batch", "empty"});
    check_throws<index_error>([&] { gather_batch(X, {0, 3}); }, {"gather_batch", "index 3", "(3, 2, 1)"});
}

// ---- pad_sequences ------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(pad_sequences_batch_and_time_major) {
    const std::vector<xt::xarray<double>> seqs = {{1, 2}, {3, 4, 5}, {6}};
    auto [x, lengths] = pad_sequences(seqs);
    check_equal(x, arr<double>({3, 3, 1}, {1, 2, 0, 3, 4, 5, 6, 0, 0}));
    BOOST_TEST((lengths == std::vector<std::int64_t>{2, 3, 1}));
    auto tm = pad_sequences(seqs, -1, false);  // (T_max, B, F)
    check_equal(tm.data, arr<double>({3, 3, 1}, {1, 3, 6, 2, 4, -1, -1, 5, -1}));
    BOOST_TEST((tm.lengths == lengths));

    const std::vector<xt::xarray<float>> two = {{{1, 2}}, {{3, 4}, {5, 6}}};  // (1, 2) and (2, 2)
    auto p = pad_sequences(two, 9);
    check_equal(p.data, xt::xarray<float>{{{1, 2}, {9, 9}}, {{3, 4}, {5, 6}}});
    BOOST_TEST((p.lengths == std::vector<std::int64_t>{1, 2}));

    // Token ids for an embedding: (B, T_max, 1) int64.
    auto ids = pad_sequences(std::vector<xt::xarray<std::int64_t>>{{4, 5, 6}, {7}});
    check_equal(ids.data, arr<std::int64_t>({2, 3, 1}, {4, 5, 6, 7, 0, 0}));
}

BOOST_AUTO_TEST_CASE(pad_sequences_errors) {
    check_throws<value_error>([] { pad_sequences(std::vector<xt::xarray<double>>{}); },
                              {"pad_sequences", "no sequences"});
    check_throws<value_error>(
        [] {
            pad_sequences(std::vector<xt::xarray<double>>{{1.0}, xt::xarray<double>::from_shape({0, 1})});
        },
        {"pad_sequences", "sequence 1", "length 0", "(0, 1)"});
    check_throws<shape_error>(
        [] {
            pad_sequences(std::vector<xt::xarray<double>>{xt::xarray<double>::from_shape({2, 2}),
                                                          xt::xarray<double>::from_shape({2, 3})});
        },
        {"pad_sequences", "sequence 1 of shape (2, 3) has 3 features", "sequence 0 of shape (2, 2) has 2"});
    check_throws<shape_error>(
        [] {
            pad_sequences(std::vector<xt::xarray<double>>{xt::xarray<double>::from_shape({1, 1, 1})});
        },
        {"pad_sequences", "sequence 0", "(1, 1, 1)"});
}

// ---- Vocabulary ---------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(vocabulary_characters) {
    const Vocabulary v = Vocabulary::from_text("hello");
    BOOST_TEST(v.size() == 4u);
    BOOST_TEST((v.tokens() == std::vector<std::string>{"e", "h", "l", "o"}));  // sorted unique
    BOOST_TEST((v.encode("hello") == std::vector<std::int64_t>{1, 0, 2, 2, 3}));
    BOOST_TEST(v.decode({1, 0, 2, 2, 3}) == "hello");
    BOOST_TEST(v.id("l") == 2);
    BOOST_TEST(v.token(3) == "o");
    BOOST_TEST(v.contains("h"));
    BOOST_TEST(!v.contains("x"));
    BOOST_TEST(!v.unk_id().has_value());

    const Vocabulary f = Vocabulary::from_text("hello", {.order = TokenOrder::first_appearance});
    BOOST_TEST((f.tokens() == std::vector<std::string>{"h", "e", "l", "o"}));

    // UTF-8 characters are single tokens; invalid bytes are one-byte tokens; all round-trip.
    const std::string text = "h\xC3\xA9llo w\xC3\xB6rld \xE2\x82\xAC \xFF!";
    const Vocabulary u = Vocabulary::from_text(text);
    BOOST_TEST(u.contains("\xC3\xA9"));
    BOOST_TEST(u.contains("\xE2\x82\xAC"));
    BOOST_TEST(u.contains("\xFF"));
    BOOST_TEST(u.encode(text).size() == 16u);
    BOOST_TEST(u.decode(u.encode(text)) == text);
    BOOST_TEST(u.size() == 12u);  // h é l o ' ' w ö r d € \xFF !
}

BOOST_AUTO_TEST_CASE(vocabulary_specials_and_unknown) {
    const Vocabulary v = Vocabulary::from_text("abca", {.specials = {"<pad>", "<unk>"}, .unk = "<unk>"});
    BOOST_TEST((v.tokens() == std::vector<std::string>{"<pad>", "<unk>", "a", "b", "c"}));
    BOOST_TEST(v.num_specials() == 2u);
    BOOST_TEST(*v.unk_id() == 1);
    BOOST_TEST((v.encode("abx") == std::vector<std::int64_t>{2, 3, 1}));
    BOOST_TEST(v.id("zz") == 1);
    // unk not among the specials is added after them.
    const Vocabulary w = Vocabulary::from_text("ba", {.specials = {"<pad>"}, .unk = "?"});
    BOOST_TEST((w.tokens() == std::vector<std::string>{"<pad>", "?", "a", "b"}));
    BOOST_TEST(w.encode("?") == std::vector<std::int64_t>{1});

    const Vocabulary n = Vocabulary::from_text("abc");
    check_throws<index_error>([&] { n.encode("abxc"); }, {"Vocabulary::encode", "unknown token 'x'", "position 2"});
    check_throws<index_error>([&] { n.encode("a\n"); }, {"unknown token '\\n'", "position 1"});
    check_throws<index_error>([&] { n.id("q"); }, {"Vocabulary::id", "'q'", "3 tokens"});
    check_throws<index_error>([&] { n.token(3); }, {"Vocabulary::token", "id 3", "[0, 3)"});
    check_throws<index_error>([&] { n.token(-1); }, {"id -1"});
    check_throws<index_error>([&] { n.decode({0, 7}); }, {"Vocabulary::decode", "id 7", "position 1", "[0, 3)"});
    check_throws<index_error>([&] { n.decode({-2}); }, {"id -2", "position 0"});
}

BOOST_AUTO_TEST_CASE(vocabulary_tokens) {
    const Vocabulary v = Vocabulary::from_tokens({"the", "cat", "the", "sat", "<pad>"}, {.specials = {"<pad>"}});
    BOOST_TEST((v.tokens() == std::vector<std::string>{"<pad>", "cat", "sat", "the"}));
    const std::vector<std::int64_t> ids = v.encode({"the", "cat", "sat"});
    BOOST_TEST((ids == std::vector<std::int64_t>{3, 1, 2}));
    BOOST_TEST(v.encode(std::vector<std::string>{"<pad>"}) == std::vector<std::int64_t>{0});
    BOOST_TEST(v.decode(ids, " ") == "the cat sat");
    BOOST_TEST((v.decode_tokens({3, 0}) == std::vector<std::string>{"the", "<pad>"}));
    check_throws<index_error>([&] { v.encode({"the", "dog"}); }, {"unknown token 'dog'", "position 1"});

    check_throws<value_error>(
        [] {
            Vocabulary::from_tokens({"a", ""});
        },
        {"Vocabulary::from_tokens", "position 1", "empty"});
    check_throws<value_error>(
        [] {
            Vocabulary::from_tokens({"a"}, {.specials = {"<s>", "<s>"}});
        },
        {"Vocabulary::from_tokens", "'<s>'", "twice"});
    check_throws<value_error>([] { Vocabulary::from_tokens({}); }, {"Vocabulary::from_tokens", "empty"});
    check_throws<value_error>([] { Vocabulary::from_text(""); }, {"Vocabulary::from_text", "empty"});
    BOOST_TEST(Vocabulary::from_text("", {.specials = {"<pad>"}}).size() == 1u);
}

BOOST_AUTO_TEST_CASE(vocabulary_save_load) {
    const std::string text = "a\\b\nc\td\r\x01 \xC3\xA9";
    const Vocabulary v = Vocabulary::from_text(text, {.specials = {"<pad>"}, .unk = "<unk>"});
    TempFile file("vocab.txt");
    v.save(file.str());
    const Vocabulary w = Vocabulary::load(file.str());
    BOOST_TEST((w == v));
    BOOST_TEST(w.decode(w.encode(text)) == text);
    BOOST_TEST(*w.unk_id() == 1);
    std::ifstream in(file.path);
    std::string first;
    std::getline(in, first);
    BOOST_TEST(first == "recur-vocabulary 1");

    check_throws<io_error>([] { Vocabulary::load("/nonexistent/vocab.txt"); },
                           {"Vocabulary::load", "/nonexistent/vocab.txt"});
    TempFile bad_magic("bad_magic.txt", "hello\n");
    check_throws<io_error>([&] { Vocabulary::load(bad_magic.str()); },
                           {bad_magic.str(), "line 1", "not a recur vocabulary"});
    TempFile truncated("truncated.txt", "recur-vocabulary 1\nspecials 0\nunk none\nsize 3\na\nb\n");
    check_throws<io_error>([&] { Vocabulary::load(truncated.str()); }, {truncated.str(), "expected 3 tokens", "2"});
    TempFile bad_escape("bad_escape.txt", "recur-vocabulary 1\nspecials 0\nunk none\nsize 2\na\n\\q\n");
    check_throws<io_error>([&] { Vocabulary::load(bad_escape.str()); }, {"line 6", "malformed escape"});
    TempFile dup("dup.txt", "recur-vocabulary 1\nspecials 0\nunk none\nsize 2\na\na\n");
    check_throws<io_error>([&] { Vocabulary::load(dup.str()); }, {"line 6", "'a' appears twice"});
    TempFile bad_unk("bad_unk.txt", "recur-vocabulary 1\nspecials 1\nunk 1\nsize 2\na\nb\n");
    check_throws<io_error>([&] { Vocabulary::load(bad_unk.str()); }, {"line 3", "unk id 1"});
    TempFile bad_count("bad_count.txt", "recur-vocabulary 1\nspecials x\n");
    check_throws<io_error>([&] { Vocabulary::load(bad_count.str()); }, {"line 2", "'x' is not a count"});
    check_throws<io_error>([&] { v.save("/nonexistent/dir/vocab.txt"); },
                           {"Vocabulary::save", "/nonexistent/dir/vocab.txt"});
}

// ---- CSV ----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(csv_quoted_crlf_by_name_and_index) {
    TempFile f("prices.csv",
               "date,\"price, usd\",volume,note\r\n"
               "2020-01-01,\"1.5\",10,plain\r\n"
               "2020-01-02,  2.25 ,20,\"two\r\nlines, \"\"quoted\"\"\"\r\n"
               "\"2020-01-03\",\"-3e1\",+30,x\r\n"
               "\r\n");
    check_equal(read_csv_column<double>(f.str(), "price, usd"), xt::xarray<double>{1.5, 2.25, -30});
    check_equal(read_csv_column<double>(f.str(), 2), xt::xarray<double>{10, 20, 30});
    check_equal(read_csv_column(f.str(), "volume"), xt::xarray<float>{10, 20, 30});  // float by default
    check_equal(read_csv_columns<double>(f.str(), {"volume", "price, usd"}),
                xt::xarray<double>{{10, 1.5}, {20, 2.25}, {30, -30}});
    check_equal(read_csv_columns<double>(f.str(), {1, 2}), xt::xarray<double>{{1.5, 10}, {2.25, 20}, {-30, 30}});
    // The quoted line break in row 2 counts: row 3 starts on line 5.
    check_throws<io_error>(
        [&] { read_csv_column<double>(f.str(), "date"); },
        {"read_csv_column", f.str(), "line 2", "column 'date' (index 0)", "cannot parse '2020-01-01'"});
    check_throws<io_error>([&] { read_csv_column<double>(f.str(), "note"); }, {"line 2", "'plain'"});
}

BOOST_AUTO_TEST_CASE(csv_options_and_line_endings) {
    TempFile semi("semi.csv", "1;2\n3;4\n\n");  // no header, ';', trailing blank line
    check_equal(read_csv_column<double>(semi.str(), 1, {.delimiter = ';', .header = false}), xt::xarray<double>{2, 4});
    TempFile cr("cr.csv", "\xEF\xBB\xBFx,y\r1,2\r3,4");  // BOM, old Mac CR line ends, no final newline
    check_equal(read_csv_column<double>(cr.str(), "x"), xt::xarray<double>{1, 3});
    TempFile blank("blank.csv", "v\n1\n\n2\n   \n3\n");  // blank lines skipped
    check_equal(read_csv_column<double>(blank.str(), "v"), xt::xarray<double>{1, 2, 3});
    TempFile q("q.csv", " \"a \"\"q\"\"\" ,b\n5,6\n");  // quoted header with doubled quotes
    check_equal(read_csv_column<double>(q.str(), "a \"q\""), xt::xarray<double>{5});
    TempFile tab("tab.csv", "a\tb\n1\t-2.5e-1\n");
    check_equal(read_csv_column<double>(tab.str(), "b", {.delimiter = '\t'}), xt::xarray<double>{-0.25});
}

BOOST_AUTO_TEST_CASE(csv_nan_inf_and_range) {
    TempFile f("nan.csv", "v\n1\nnan\nNaN\ninf\n-inf\n1e-400\n");
    const auto v = read_csv_column<double>(f.str(), 0);
    BOOST_TEST(v.size() == 6u);
    BOOST_TEST(v(0) == 1.0);
    BOOST_TEST(std::isnan(v(1)));
    BOOST_TEST(std::isnan(v(2)));
    BOOST_TEST(v(3) == INFINITY);
    BOOST_TEST(v(4) == -INFINITY);
    BOOST_TEST(v(5) == 0.0);  // underflow rounds to zero
    // NaN parses, but the scalers refuse it and say where it is.
    check_throws<value_error>([&] { StandardScaler<double>().fit(v); }, {"StandardScaler::fit", "NaN at index (1,)"});
    TempFile big("big.csv", "v\n1e39\n");
    check_equal(read_csv_column<double>(big.str(), "v"), xt::xarray<double>{1e39});
    check_throws<io_error>([&] { read_csv_column<float>(big.str(), "v"); }, {"line 2", "cannot parse '1e39'", "float"});
    TempFile tiny("tiny.csv", "v\n1e-42\n");
    BOOST_TEST(read_csv_column<float>(tiny.str(), "v")(0) == static_cast<float>(1e-42));  // subnormal float
}

BOOST_AUTO_TEST_CASE(csv_errors) {
    check_throws<io_error>([] { read_csv_column("/nonexistent/x.csv", 0); },
                           {"read_csv_column", "/nonexistent/x.csv", "cannot open"});
    TempFile f("bad.csv", "a,b\n1,2\n3,abc\n4\n5,\n");
    check_throws<io_error>([&] { read_csv_column<double>(f.str(), "b"); },
                           {f.str(), "line 3", "column 'b' (index 1)", "cannot parse 'abc'"});
    TempFile short_row("short.csv", "a,b\n1,2\n4\n");
    check_throws<io_error>([&] { read_csv_column<double>(short_row.str(), 1); },
                           {short_row.str(), "line 3", "column 'b' (index 1)", "missing cell", "1 field)"});
    TempFile empty_cell("empty_cell.csv", "a,b\n1,\n");
    check_throws<io_error>([&] { read_csv_column<double>(empty_cell.str(), "b"); }, {"line 2", "empty cell"});
    check_throws<io_error>([&] { read_csv_column<double>(f.str(), "c"); }, {f.str(), "no column 'c'", "'a', 'b'"});
    check_throws<io_error>([&] { read_csv_column<double>(f.str(), 2); }, {f.str(), "column index 2", "2 columns"});
    TempFile header_only("header_only.csv", "a,b\r\n\r\n");
    check_throws<io_error>([&] { read_csv_column<double>(header_only.str(), "a"); },
                           {header_only.str(), "no data rows", "'a' (index 0)", "empty"});
    TempFile empty("empty.csv", "");
    check_throws<io_error>([&] { read_csv_column<double>(empty.str(), 0); }, {empty.str(), "empty"});
    check_throws<io_error>([&] { read_csv_column<double>(empty.str(), 0, {.header = false}); }, {"no data rows"});
    TempFile unterminated("unterminated.csv", "a\n1\n\"2\n3\n");
    check_throws<io_error>([&] { read_csv_column<double>(unterminated.str(), 0); }, {"line 3", "unterminated"});
    TempFile after_quote("after_quote.csv", "a\n\"1\"x\n");
    check_throws<io_error>([&] { read_csv_column<double>(after_quote.str(), 0); }, {"line 2", "after a closing quote"});
    TempFile dup("dup.csv", "a,a\n1,2\n");
    check_throws<io_error>([&] { read_csv_column<double>(dup.str(), "a"); }, {"'a' is ambiguous"});
    check_throws<value_error>([&] { read_csv_column<double>(f.str(), "a", {.header = false}); },
                              {"read_csv_column", "header"});
    check_throws<value_error>([&] { read_csv_columns<double>(f.str(), std::vector<std::size_t>{}); },
                              {"read_csv_columns", "no columns"});
}

BOOST_AUTO_TEST_SUITE_END()
