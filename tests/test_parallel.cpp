// Data-parallel training: the reduced gradient is the full batch's, runs are bit-identical
// for a thread count, thread counts are set and restored, fit(threads), bad input.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <random>

#include <unistd.h>

#include <recur/recur.hpp>

#include "src/threads.hpp"
#include "support.hpp"

using namespace recur;
namespace fs = std::filesystem;
using recur::testing::throws_with;

namespace {

// LSTM(3 -> 5, last step) -> Linear(5 -> 2), optionally with dropout before the Linear.
std::unique_ptr<nn::Sequential<double>> small_model(double dropout = 0) {
    auto m = std::make_unique<nn::Sequential<double>>();
    m->add(nn::recurrent_layer(
        std::make_unique<nn::LSTM<double>>(nn::LSTMOptions{.input_size = 3, .hidden_size = 5, .batch_first = true}),
        nn::Return::last));
    if (dropout > 0) m->emplace<nn::Dropout<double>>(dropout);
    m->emplace<nn::Linear<double>>(5, 2);
    return m;
}

// x (B, T = 4, 3) ~ N(0, 1); y (B, 2) = (sum of x[:, :, 0], x[:, last, 1] * x[:, 0, 2]).
train::Dataset<double> batch_data(std::size_t batch, std::uint64_t seed, bool with_lengths = false) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    train::Dataset<double> d{xt::xarray<double>::from_shape({batch, std::size_t(4), std::size_t(3)}),
                             xt::zeros<double>({batch, std::size_t(2)}),
                             {}};
    for (auto& v : d.x) v = nd(rng);
    for (std::size_t b = 0; b < batch; ++b) {
        for (std::size_t t = 0; t < 4; ++t) d.y(b, 0) += d.x(b, t, 0);
        d.y(b, 1) = d.x(b, 3, 1) * d.x(b, 0, 2);
        if (with_lengths) d.lengths.push_back(static_cast<std::int64_t>(1 + b % 4));
    }
    return d;
}

const train::LossFn<double> mse = [](const Var<double>& p, const Var<double>& t) { return nn::mse_loss(p, t); };

// The single-tape gradient of the whole batch (with the tape's accumulation into grad).
std::vector<xt::xarray<double>> full_batch_grads(nn::Sequential<double>& model, const train::Dataset<double>& d,
                                                 const train::LossFn<double>& loss, double* loss_value) {
    model.zero_grad();
    Tape<double> tape;
    Var<double> l = loss(model(tape.constant(d.x), d.lengths), tape.constant(d.y));
    tape.backward(l);
    *loss_value = l.item();
    std::vector<xt::xarray<double>> out;
    for (auto* p : model.parameters()) out.push_back(p->grad());
    return out;
}

double max_abs_diff(const xt::xarray<double>& a, const xt::xarray<double>& b) {
    double m = 0;
    for (std::size_t e = 0; e < a.size(); ++e) m = std::max(m, std::abs(a.data()[e] - b.data()[e]));
    return m;
}

double max_abs(const xt::xarray<double>& a) {
    double m = 0;
    for (auto v : a) m = std::max(m, std::abs(v));
    return m;
}

// Restores the process's thread counts after a test that changes them.
struct ThreadCountGuard {
    int omp = num_threads(), blas = detail::blas_threads();
    ~ThreadCountGuard() {
        set_num_threads(omp);
        detail::set_blas_threads(blas);
    }
};

struct TempDir {
    fs::path path = fs::temp_directory_path() / ("recur_parallel_" + std::to_string(::getpid()));
    TempDir() { fs::create_directories(path); }
    ~TempDir() { fs::remove_all(path); }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(parallel)

BOOST_AUTO_TEST_CASE(gradient_equals_the_full_batch_gradient) {
    manual_seed(11);
    auto model = small_model();
    for (bool with_lengths : {false, true}) {
        const auto d = batch_data(7, 3, with_lengths);  // 7 samples: unequal shards for 2 and 3 threads
        double reference_loss = 0;
        const auto reference = full_batch_grads(*model, d, mse, &reference_loss);
        for (std::size_t threads : {1, 2, 3, 5}) {  // 5 > the processors here: shards take turns
            BOOST_TEST_CONTEXT("threads " << threads << ", lengths " << with_lengths) {
                train::DataParallel<double> dp(*model, mse, {.threads = threads});
                model->zero_grad();
                const double loss = dp.step(d.x, d.y, d.lengths);
                BOOST_TEST(dp.shards().size() == threads);
                BOOST_TEST(std::abs(loss - reference_loss) <= 1e-12 * std::max(1.0, std::abs(reference_loss)));
                const auto params = model->parameters();
                for (std::size_t p = 0; p < params.size(); ++p) {
                    BOOST_TEST(max_abs(reference[p]) > 0);  // the check below is not vacuous
                    BOOST_TEST(max_abs_diff(params[p]->grad(), reference[p]) <=
                               1e-12 * std::max(1.0, max_abs(reference[p])));
                    if (threads == 1)  // one shard of weight 1: exactly the single tape's gradient
                        BOOST_TEST(max_abs_diff(params[p]->grad(), reference[p]) == 0.0);
                }
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(sum_reduction_weighs_every_shard_one) {
    manual_seed(12);
    auto model = small_model();
    const auto d = batch_data(5, 4);
    const train::LossFn<double> sse = [](const Var<double>& p, const Var<double>& t) {
        Var<double> e = p - t;
        return sum(e * e);
    };
    double reference_loss = 0;
    const auto reference = full_batch_grads(*model, d, sse, &reference_loss);
    train::DataParallel<double> summed(*model, sse, {.threads = 2, .reduction = train::LossReduction::sum});
    model->zero_grad();
    BOOST_TEST(std::abs(summed.step(d.x, d.y) - reference_loss) <= 1e-12 * reference_loss);
    const auto params = model->parameters();
    for (std::size_t p = 0; p < params.size(); ++p)
        BOOST_TEST(max_abs_diff(params[p]->grad(), reference[p]) <= 1e-12 * std::max(1.0, max_abs(reference[p])));
    // The mean rule on a summed loss weighs the shards 2/5 and 3/5: not the full batch's gradient.
    train::DataParallel<double> meaned(*model, sse, {.threads = 2});
    model->zero_grad();
    meaned.step(d.x, d.y);
    BOOST_TEST(max_abs_diff(params[0]->grad(), reference[0]) > 1e-6 * max_abs(reference[0]));
}

BOOST_AUTO_TEST_CASE(gradients_accumulate_like_backward) {
    manual_seed(13);
    auto model = small_model();
    const auto d = batch_data(6, 5);
    train::DataParallel<double> dp(*model, mse, {.threads = 2});
    model->zero_grad();
    dp.step(d.x, d.y);
    const xt::xarray<double> once = model->parameters()[0]->grad();
    dp.step(d.x, d.y);  // no zero_grad: adds the same gradient again
    BOOST_TEST(max_abs_diff(model->parameters()[0]->grad(), 2.0 * once) <= 1e-12 * max_abs(once));
}

BOOST_AUTO_TEST_CASE(two_runs_with_the_same_thread_count_are_bit_identical) {
    for (std::size_t threads : {2, 3}) {
        std::vector<std::vector<xt::xarray<double>>> finals;
        std::vector<xt::xarray<double>> initial;
        for (int run = 0; run < 2; ++run) {
            manual_seed(21);
            auto model = small_model(0.3);  // dropout: the shards' generators must be seeded too
            if (run == 0) initial.push_back(model->parameters()[0]->value());
            optim::Adam<double> adam(model->parameters(), {.lr = 1e-2});
            train::DataParallel<double> dp(*model, mse, {.threads = threads});
            for (std::uint64_t s = 0; s < 6; ++s) {
                const auto d = batch_data(10, 100 + s, true);
                adam.zero_grad();
                dp.step(d.x, d.y, d.lengths, s);
                adam.step();
            }
            std::vector<xt::xarray<double>> w;
            for (auto* p : model->parameters()) w.push_back(p->value());
            finals.push_back(std::move(w));
        }
        BOOST_TEST_CONTEXT("threads " << threads) {
            BOOST_TEST(max_abs_diff(finals[0][0], initial[0]) > 1e-3);  // the steps changed the weights
            for (std::size_t p = 0; p < finals[0].size(); ++p)
                BOOST_TEST(max_abs_diff(finals[0][p], finals[1][p]) == 0.0);
        }
    }
}

BOOST_AUTO_TEST_CASE(shards_are_seeded_from_the_step_seed) {
    manual_seed(22);
    auto model = small_model(0.5);
    const auto d = batch_data(8, 6);
    train::DataParallel<double> dp(*model, mse, {.threads = 2});
    const double a = dp.step(d.x, d.y, {}, 7), b = dp.step(d.x, d.y, {}, 7), c = dp.step(d.x, d.y, {}, 8);
    BOOST_TEST(a == b);  // same seed, same masks
    BOOST_TEST(a != c);  // another seed, other masks
    BOOST_TEST(train::DataParallel<double>::shard_seed(7, 0) != train::DataParallel<double>::shard_seed(7, 1));
}

BOOST_AUTO_TEST_CASE(ops_are_single_threaded_inside_shards_and_counts_are_restored) {
    ThreadCountGuard guard;
    set_num_threads(2);
    BOOST_TEST(num_threads() == 2);
    detail::set_blas_threads(2);  // as if someone else had changed it: shards still use 1
    std::atomic<int> calls{0}, multi_threaded_blas{0}, multi_threaded_omp{0};
    const train::LossFn<double> observing = [&](const Var<double>& p, const Var<double>& t) {
        ++calls;  // the loss runs inside each shard's thread
        if (detail::blas_threads() != 1) ++multi_threaded_blas;
        if (num_threads() != 1) ++multi_threaded_omp;
        return nn::mse_loss(p, t);
    };
    manual_seed(23);
    auto model = small_model();
    const auto d = batch_data(6, 7);
    train::DataParallel<double> dp(*model, observing, {.threads = 2});
    dp.step(d.x, d.y);
    BOOST_TEST(calls.load() == 2);
    BOOST_TEST(multi_threaded_blas.load() == 0);
    BOOST_TEST(multi_threaded_omp.load() == 0);
    BOOST_TEST(detail::blas_threads() == 2);  // restored
    BOOST_TEST(num_threads() == 2);
    BOOST_TEST(num_procs() >= 1);
}

BOOST_AUTO_TEST_CASE(steady_state_steps_reuse_the_tapes) {
    manual_seed(24);
    auto model = small_model();
    const auto d = batch_data(8, 8);
    train::DataParallel<double> dp(*model, mse, {.threads = 2});
    dp.step(d.x, d.y);
    const std::size_t c0 = dp.tape(0).capacity(), c1 = dp.tape(1).capacity();
    BOOST_TEST(c0 > 0u);
    for (int k = 0; k < 3; ++k) dp.step(d.x, d.y);
    BOOST_TEST(dp.tape(0).capacity() == c0);
    BOOST_TEST(dp.tape(1).capacity() == c1);
}

BOOST_AUTO_TEST_CASE(split_cuts_contiguous_near_equal_shards) {
    using DP = train::DataParallel<double>;
    const auto s = DP::split(10, 3);
    BOOST_REQUIRE(s.size() == 3u);
    BOOST_TEST((s[0] == std::pair<std::size_t, std::size_t>{0, 3}));
    BOOST_TEST((s[1] == std::pair<std::size_t, std::size_t>{3, 6}));
    BOOST_TEST((s[2] == std::pair<std::size_t, std::size_t>{6, 10}));
    BOOST_TEST(DP::split(2, 4).size() == 2u);  // never an empty shard
    BOOST_TEST(throws_with<value_error>([] { DP::split(0, 2); }, {"DataParallel::split", "batch 0"}));
    BOOST_TEST(throws_with<value_error>([] { DP::split(4, 0); }, {"DataParallel::split", "threads 0"}));
}

BOOST_AUTO_TEST_CASE(a_batch_smaller_than_the_thread_count_uses_one_shard_per_sample) {
    manual_seed(25);
    auto model = small_model();
    const auto d = batch_data(3, 9);
    double reference_loss = 0;
    const auto reference = full_batch_grads(*model, d, mse, &reference_loss);
    train::DataParallel<double> dp(*model, mse, {.threads = 5});
    model->zero_grad();
    BOOST_TEST(std::abs(dp.step(d.x, d.y) - reference_loss) <= 1e-12 * std::max(1.0, reference_loss));
    BOOST_TEST(dp.shards().size() == 3u);
    BOOST_TEST(dp.prediction(2).shape()[0] == 1u);
    BOOST_TEST(max_abs_diff(model->parameters()[0]->grad(), reference[0]) <= 1e-12 * max_abs(reference[0]));
}

BOOST_AUTO_TEST_CASE(bad_input_raises_clear_errors) {
    manual_seed(26);
    auto model = small_model();
    const auto d = batch_data(5, 10);
    BOOST_TEST(throws_with<value_error>([&] { train::DataParallel<double>(*model, mse, {.threads = 0}); },
                                        {"DataParallel", "threads", "0"}));
    BOOST_TEST(throws_with<value_error>([&] { train::DataParallel<double>(*model, nullptr, {.threads = 2}); },
                                        {"DataParallel", "loss"}));
    nn::Sequential<double> no_params;
    no_params.emplace<nn::ReLU<double>>();
    BOOST_TEST(throws_with<value_error>([&] { train::DataParallel<double>(no_params, mse, {.threads = 2}); },
                                        {"DataParallel", "no parameters"}));
    BOOST_TEST(throws_with<value_error>([] { set_num_threads(0); }, {"set_num_threads", "0"}));

    train::DataParallel<double> dp(*model, mse, {.threads = 2});
    BOOST_TEST(throws_with<value_error>(
        [&] {
            dp.step(xt::zeros<double>({0, 4, 3}), xt::zeros<double>({0, 2}));
        },
        {"DataParallel::step", "empty", "(0, 4, 3)"}));
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            dp.step(d.x, xt::zeros<double>({4, 2}));
        },
        {"DataParallel::step", "(5, 4, 3)", "(4, 2)"}));
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            dp.step(d.x, d.y, {1, 2});
        },
        {"DataParallel::step", "2 lengths for 5 samples"}));
    BOOST_TEST(throws_with<index_error>(
        [&] {
            dp.step(d.x, d.y, {1, 2, 3, 4, 9});
        },
        {"LSTM"}));  // from a shard's model
    BOOST_TEST(throws_with<index_error>([&] { dp.prediction(7); }, {"DataParallel::prediction", "7"}));

    // A model error inside the shards reaches the caller and adds nothing.
    model->zero_grad();
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            dp.step(xt::zeros<double>({5, 4, 2}), d.y);
        },
        {"LSTM", "(2, 4, 2)"}));  // shard 0's
    BOOST_TEST(max_abs(model->parameters()[0]->grad()) == 0.0);
    // A non-finite loss is returned and adds no gradient.
    auto bad = d;
    bad.x(4, 0, 0) = std::nan("");
    BOOST_TEST(std::isnan(dp.step(bad.x, bad.y)));
    BOOST_TEST(max_abs(model->parameters()[0]->grad()) == 0.0);
    // A loss with more than one element.
    const train::LossFn<double> not_scalar = [](const Var<double>& p, const Var<double>& t) { return p - t; };
    train::DataParallel<double> wrong(*model, not_scalar, {.threads = 2});
    BOOST_TEST(throws_with<shape_error>([&] { wrong.step(d.x, d.y); }, {"DataParallel::step", "one element"}));

    optim::SGD<double> sgd(model->parameters(), {.lr = 0.1});
    BOOST_TEST(throws_with<value_error>([&] { train::fit<double>(*model, mse, sgd, d, {.verbose = 0, .threads = 0}); },
                                        {"fit", "threads", "0"}));
}

BOOST_AUTO_TEST_CASE(fit_with_threads_learns_and_is_reproducible) {
    const auto data = batch_data(96, 30, true);
    const train::FitOptions<double> o{.epochs = 6,
                                      .batch_size = 16,
                                      .validation_split = 0.25,
                                      .metrics = {train::mae<double>()},
                                      .verbose = 0,
                                      .seed = 3,
                                      .threads = 2};
    std::vector<train::History> histories;
    std::vector<std::vector<xt::xarray<double>>> weights;
    for (std::size_t threads : {2, 2, 1}) {
        manual_seed(31);
        auto model = small_model();
        optim::Adam<double> adam(model->parameters(), {.lr = 2e-2});
        auto opts = o;
        opts.threads = threads;
        histories.push_back(train::fit<double>(*model, mse, adam, data, opts));
        std::vector<xt::xarray<double>> w;
        for (auto* p : model->parameters()) w.push_back(p->value());
        weights.push_back(std::move(w));
    }
    const auto& h = histories[0];
    BOOST_TEST(h["loss"].back() < 0.7 * h["loss"].front());
    BOOST_TEST(h.has("mae"));
    BOOST_TEST(h.has("val_loss"));
    for (std::size_t e = 0; e < h.epochs(); ++e) {
        BOOST_TEST(h["loss"][e] == histories[1]["loss"][e]);  // bit-identical with the same thread count
        BOOST_TEST(h["mae"][e] == histories[1]["mae"][e]);
        // Without dropout, 2 threads follow 1 thread up to rounding.
        BOOST_TEST(std::abs(h["loss"][e] - histories[2]["loss"][e]) <= 1e-9 * histories[2]["loss"][e]);
        BOOST_TEST(std::abs(h["mae"][e] - histories[2]["mae"][e]) <= 1e-9 * histories[2]["mae"][e]);
    }
    for (std::size_t p = 0; p < weights[0].size(); ++p) {
        BOOST_TEST(max_abs_diff(weights[0][p], weights[1][p]) == 0.0);
        BOOST_TEST(max_abs_diff(weights[0][p], weights[2][p]) <= 1e-8);
    }
}

BOOST_AUTO_TEST_CASE(fit_with_threads_and_dropout_resumes_bit_identically) {
    TempDir dir;
    const std::string ckpt = (dir.path / "ckpt.npz").string();
    const auto data = batch_data(60, 32, true);
    const train::FitOptions<double> base{.epochs = 4, .batch_size = 12, .verbose = 0, .seed = 9, .threads = 3};

    manual_seed(33);
    auto straight = small_model(0.3);
    optim::Adam<double> adam1(straight->parameters(), {.lr = 1e-2});
    train::fit<double>(*straight, mse, adam1, data, base);

    manual_seed(33);
    auto first = small_model(0.3);
    optim::Adam<double> adam2(first->parameters(), {.lr = 1e-2});
    train::ModelCheckpoint<double> checkpoint({.path = ckpt});
    auto half = base;
    half.epochs = 2;
    half.callbacks = {&checkpoint};
    train::fit<double>(*first, mse, adam2, data, half);

    manual_seed(77);
    auto resumed = small_model(0.3);
    optim::Adam<double> adam3(resumed->parameters(), {.lr = 1e-2});
    auto rest = base;
    rest.initial_epoch = train::resume(ckpt, *resumed, adam3);
    train::fit<double>(*resumed, mse, adam3, data, rest);
    const auto a = straight->parameters(), b = resumed->parameters();
    BOOST_REQUIRE(a.size() == b.size());
    for (std::size_t k = 0; k < a.size(); ++k) BOOST_TEST(max_abs_diff(a[k]->value(), b[k]->value()) == 0.0);
}

BOOST_AUTO_TEST_CASE(intra_op_elementwise_results_do_not_depend_on_the_thread_count) {
    // Above the grain size the elementwise forwards split into chunks on OpenMP threads; a
    // length that is not a multiple of the SIMD width exercises the scalar tail.
    const std::size_t n = (std::size_t(1) << 17) + 13;
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<float> u(-3.0f, 3.0f);
    xt::xarray<float> a = xt::xarray<float>::from_shape({n}), b = xt::xarray<float>::from_shape({n});
    for (std::size_t k = 0; k < n; ++k) {
        a(k) = u(rng);
        b(k) = u(rng);
    }
    auto run = [&](int threads) {
        recur::set_num_threads(threads);
        Tape<float> t({.record = false});
        auto x = t.constant(a), y = t.constant(b);
        std::vector<xt::xarray<float>> out{tanh(x).value(),     sigmoid(x).value(), exp(x).value(),
                                           (x * y + x).value(), (x * 2.0f).value(), relu(x - y).value()};
        return out;
    };
    const auto one = run(1), two = run(2);
    recur::set_num_threads(1);
    for (std::size_t k = 0; k < one.size(); ++k) BOOST_TEST((one[k] == two[k]), "result " << k << " differs");
    // And they are the right values (spot checks against the scalar formulas).
    for (std::size_t k : {std::size_t(0), n / 2, n - 1}) {
        BOOST_TEST(std::abs(one[0](k) - std::tanh(a(k))) <= 1e-6f);
        BOOST_TEST(std::abs(one[3](k) - (a(k) * b(k) + a(k))) <= 1e-5f);
    }
}

BOOST_AUTO_TEST_SUITE_END()
