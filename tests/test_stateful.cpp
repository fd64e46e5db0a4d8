// Stateful recurrent layers: chunked calls equal one whole call, resets, the batch-size error,
// and truncated BPTT through fit.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <random>

#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include <recur/recur.hpp>

#include "support.hpp"

using namespace recur;
using recur::testing::throws_with;

namespace {

// x (B, T, I) batch-first with values in [-1, 1).
xt::xarray<float> sequence(std::size_t b, std::size_t t, std::size_t i, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(-1, 1);
    xt::xarray<float> x = xt::xarray<float>::from_shape({b, t, i});
    for (auto& v : x) v = u(rng);
    return x;
}

// Time steps [begin, end) of (B, T, I).
xt::xarray<float> steps(const xt::xarray<float>& x, std::size_t begin, std::size_t end) {
    return xt::view(x, xt::all(), xt::range(begin, end), xt::all());
}

// Runs `layer` on x in one call, and in chunks of 4 and 6 steps; both from zero states.
template <class L>
void check_chunks_equal_whole(L& layer) {
    const xt::xarray<float> x = sequence(3, 10, 2, 1);
    layer.reset_states();
    Tape<float> tape;
    const xt::xarray<float> whole = layer(tape.constant(x)).value();
    const auto whole_states = layer.states();
    layer.reset_states();
    Tape<float> t1, t2;
    const xt::xarray<float> a = layer(t1.constant(steps(x, 0, 4))).value();
    const xt::xarray<float> b = layer(t2.constant(steps(x, 4, 10))).value();
    const xt::xarray<float> joined = xt::concatenate(xt::xtuple(a, b), 1);
    BOOST_TEST(xt::amax(xt::abs(joined - whole))() < 1e-6);
    BOOST_REQUIRE(layer.states().size() == whole_states.size());
    for (std::size_t k = 0; k < whole_states.size(); ++k)
        BOOST_TEST(xt::amax(xt::abs(layer.states()[k] - whole_states[k]))() < 1e-6);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(stateful)

BOOST_AUTO_TEST_CASE(chunked_calls_equal_one_whole_call) {
    manual_seed(1);
    auto lstm = nn::recurrent_layer(std::make_unique<nn::LSTM<float>>(nn::LSTMOptions{
                                        .input_size = 2, .hidden_size = 5, .num_layers = 2, .batch_first = true}),
                                    nn::Return::sequences, true);
    auto gru = nn::recurrent_layer(std::make_unique<nn::GRU<float>>(nn::GRUOptions{
                                       .input_size = 2, .hidden_size = 5, .num_layers = 2, .batch_first = true}),
                                   nn::Return::sequences, true);
    auto rnn = nn::recurrent_layer(
        std::make_unique<nn::RNN<float>>(nn::RNNOptions{.input_size = 2, .hidden_size = 5, .batch_first = true}),
        nn::Return::sequences, true);
    check_chunks_equal_whole(*lstm);
    BOOST_TEST(lstm->states().size() == 2u);  // h and c
    BOOST_TEST(lstm->states()[1].shape() == (Shape{2, 3, 5}));
    check_chunks_equal_whole(*gru);
    check_chunks_equal_whole(*rnn);

    // Not stateful: every call starts from zeros, and nothing is carried.
    auto plain = nn::recurrent_layer(
        std::make_unique<nn::GRU<float>>(nn::GRUOptions{.input_size = 2, .hidden_size = 5, .batch_first = true}));
    Tape<float> tape;
    const xt::xarray<float> x = steps(sequence(3, 10, 2, 2), 0, 4);
    const xt::xarray<float> first = (*plain)(tape.constant(x)).value();
    BOOST_TEST((*plain)(tape.constant(x)).value() == first);
    BOOST_TEST(plain->states().empty());
    BOOST_TEST(!plain->stateful());
}

BOOST_AUTO_TEST_CASE(reset_all_or_some_rows) {
    manual_seed(2);
    nn::Sequential<float> model;
    auto& rec = static_cast<nn::RecurrentLayer<nn::LSTM<float>>&>(model.add(nn::recurrent_layer(
        std::make_unique<nn::LSTM<float>>(nn::LSTMOptions{.input_size = 2, .hidden_size = 4, .batch_first = true}),
        nn::Return::last, true)));
    model.emplace<nn::Linear<float>>(4, 1);
    BOOST_TEST(model.stateful());
    const xt::xarray<float> x = sequence(3, 8, 2, 3);
    const xt::xarray<float> c1 = steps(x, 0, 4), c2 = steps(x, 4, 8);
    Tape<float> tape;
    const xt::xarray<float> fresh = model(tape.constant(c1)).value();
    const xt::xarray<float> continued = model(tape.constant(c2)).value();
    BOOST_TEST(xt::amax(xt::abs(continued - model(tape.constant(c2)).value()))() > 1e-4);  // the state moved on

    model.reset_states();  // Sequential reaches the layer
    BOOST_TEST(rec.states().empty());
    BOOST_TEST(model(tape.constant(c1)).value() == fresh);

    // Row 1 forgets; rows 0 and 2 continue.
    model.reset_states();
    const xt::xarray<float> from_zero = model(tape.constant(c2)).value();
    model.reset_states();
    model(tape.constant(c1));
    model.reset_states({1});
    const xt::xarray<float> mixed = model(tape.constant(c2)).value();
    BOOST_TEST(mixed(0, 0) == continued(0, 0), boost::test_tools::tolerance(1e-6f));
    BOOST_TEST(mixed(1, 0) == from_zero(1, 0), boost::test_tools::tolerance(1e-6f));
    BOOST_TEST(mixed(2, 0) == continued(2, 0), boost::test_tools::tolerance(1e-6f));
    BOOST_TEST(throws_with<index_error>([&] { model.reset_states({3}); },
                                        {"RecurrentLayer(LSTM, stateful)", "row 3", "3 rows"}));
}

BOOST_AUTO_TEST_CASE(a_batch_of_another_size_is_an_error) {
    manual_seed(3);
    auto gru = nn::recurrent_layer(std::make_unique<nn::GRU<float>>(nn::GRUOptions{.input_size = 2, .hidden_size = 3}),
                                   nn::Return::sequences, true);  // time-major: (T, B, I)
    Tape<float> tape;
    (*gru)(tape.constant(xt::xarray<float>(xt::zeros<float>({5, 4, 2}))));
    BOOST_TEST(throws_with<value_error>(
        [&] {
            (*gru)(tape.constant(xt::xarray<float>(xt::zeros<float>({5, 3, 2}))));
        },
        {"RecurrentLayer(GRU, stateful)", "batch of 4", "(5, 3, 2)", "has 3", "reset_states"}));
    gru->reset_states();
    BOOST_CHECK_NO_THROW((*gru)(tape.constant(xt::xarray<float>(xt::zeros<float>({5, 3, 2})))));
}

// fit with shuffle = false trains consecutive chunks with carried states (TBPTT), reset at
// every epoch start: it equals a hand-written loop, and it learns a series.
BOOST_AUTO_TEST_CASE(fit_trains_consecutive_chunks) {
    // B = 4 streams of a sine, each cut into K = 12 chunks of 6 steps; sample k * B + b is
    // chunk k of stream b; the target is the next value at every step.
    const std::size_t B = 4, K = 12, Tc = 6;
    xt::xarray<double> x = xt::zeros<double>({K * B, Tc, std::size_t(1)}),
                       y = xt::zeros<double>({K * B, Tc, std::size_t(1)});
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t k = 0; k < K; ++k)
            for (std::size_t t = 0; t < Tc; ++t) {
                const double s = static_cast<double>(k * Tc + t) * 0.3 + static_cast<double>(b);
                x(k * B + b, t, 0) = std::sin(s);
                y(k * B + b, t, 0) = std::sin(s + 0.3);
            }
    auto make = [] {
        auto m = std::make_unique<nn::Sequential<double>>();
        m->add(nn::recurrent_layer(
            std::make_unique<nn::LSTM<double>>(nn::LSTMOptions{.input_size = 1, .hidden_size = 8, .batch_first = true}),
            nn::Return::sequences, true));
        m->emplace<nn::Linear<double>>(8, 1);
        return m;
    };
    const train::LossFn<double> mse = [](const Var<double>& p, const Var<double>& t) { return nn::mse_loss(p, t); };

    manual_seed(4);
    auto fitted = make();
    optim::Adam<double> adam(fitted->parameters(), {.lr = 1e-2});
    const auto h =
        train::fit<double>(*fitted, mse, adam, {x, y}, {.epochs = 40, .batch_size = B, .verbose = 0, .shuffle = false});
    BOOST_TEST(h["loss"].back() < 0.05 * h["loss"].front());

    manual_seed(4);
    auto by_hand = make();
    optim::Adam<double> adam2(by_hand->parameters(), {.lr = 1e-2});
    for (std::size_t e = 0; e < 40; ++e) {
        by_hand->reset_states();
        for (std::size_t k = 0; k < K; ++k) {
            std::vector<std::size_t> idx;
            for (std::size_t b = 0; b < B; ++b) idx.push_back(k * B + b);
            Tape<double> tape;
            Var<double> l =
                mse((*by_hand)(tape.constant(data::take_rows(x, idx))), tape.constant(data::take_rows(y, idx)));
            adam2.zero_grad();
            tape.backward(l);
            adam2.step();
        }
    }
    const auto a = fitted->parameters(), b = by_hand->parameters();
    for (std::size_t k = 0; k < a.size(); ++k) BOOST_TEST(a[k]->value() == b[k]->value());

    // A validation batch of another size is the layer's error; threads > 1 is refused.
    BOOST_TEST(throws_with<value_error>(
        [&] {
            train::fit<double>(*fitted, mse, adam, {x, y},
                               {.batch_size = B, .validation_split = 0.15, .verbose = 0, .shuffle = false});
        },
        {"RecurrentLayer(LSTM, stateful)", "batch of 4"}));
    BOOST_TEST(throws_with<value_error>(
        [&] {
            train::fit<double>(*fitted, mse, adam, {x, y}, {.batch_size = B, .verbose = 0, .threads = 2});
        },
        {"fit", "stateful"}));
}

BOOST_AUTO_TEST_SUITE_END()
