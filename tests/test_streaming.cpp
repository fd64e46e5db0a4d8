// Streaming inference: stepping one time step per call equals the whole-sequence run (LSTM,
// GRU, RNN, stacked, with Linear after), follows weight updates, resets rows, and reports the
// layers it cannot step.
#include <boost/test/unit_test.hpp>

#include <random>

#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include <recur/recur.hpp>

#include "support.hpp"

using namespace recur;
using recur::testing::throws_with;

namespace {

constexpr std::size_t B = 3, T = 25, I = 3, H = 16, O = 2;

xt::xarray<float> inputs(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(-1, 1);
    xt::xarray<float> x = xt::xarray<float>::from_shape({B, T, I});
    for (auto& v : x) v = u(rng);
    return x;
}

// recurrent (2 layers) -> Linear(H, O) -> Tanh -> Linear(O, O).
template <class M, class Options>
std::unique_ptr<nn::Sequential<float>> model(Options o) {
    auto m = std::make_unique<nn::Sequential<float>>();
    o.input_size = I;
    o.hidden_size = H;
    o.num_layers = 2;
    o.batch_first = true;
    m->add(nn::recurrent_layer(std::make_unique<M>(o)));
    m->emplace<nn::Dropout<float>>(0.5);
    m->emplace<nn::Linear<float>>(H, O);
    m->emplace<nn::Tanh<float>>();
    m->emplace<nn::Linear<float>>(O, O);
    m->eval();
    return m;
}

// The largest |difference| between stepping x (B, T, I) through `stream` and the model's whole-sequence run.
float stream_vs_whole(nn::Sequential<float>& m, nn::Streamer<float>& stream, const xt::xarray<float>& x) {
    Tape<float> tape({.record = false});
    const xt::xarray<float> whole = m(tape.constant(x)).value();  // (B, T, O)
    float worst = 0;
    for (std::size_t t = 0; t < T; ++t) {
        const xt::xarray<float> xt_ = xt::view(x, xt::all(), t, xt::all());
        const xt::xarray<float> y = stream.step(xt_);
        const xt::xarray<float> expected = xt::view(whole, xt::all(), t, xt::all());
        worst = std::max(worst, xt::amax(xt::abs(y - expected))());
    }
    return worst;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(streaming)

BOOST_AUTO_TEST_CASE(steps_equal_the_whole_sequence_run) {
    manual_seed(1);
    auto lstm = model<nn::LSTM<float>>(nn::LSTMOptions{});
    auto gru = model<nn::GRU<float>>(nn::GRUOptions{});
    auto rnn = model<nn::RNN<float>>(nn::RNNOptions{});
    auto relu = model<nn::RNN<float>>(nn::RNNOptions{.nonlinearity = nn::Nonlinearity::relu});
    const xt::xarray<float> x = inputs(2);
    for (auto* m : {lstm.get(), gru.get(), rnn.get(), relu.get()}) {
        nn::Streamer<float> stream(*m, B);
        BOOST_TEST(stream.input_size() == I);
        BOOST_TEST(stream.output_size() == O);
        BOOST_TEST(stream_vs_whole(*m, stream, x) < 1e-5f);
        stream.reset();  // from zero states again
        BOOST_TEST(stream_vs_whole(*m, stream, x) < 1e-5f);
    }
    // B = 1, one value per step through the span interface.
    nn::Streamer<float> one(*lstm);
    Tape<float> tape({.record = false});
    const xt::xarray<float> x0 = xt::view(x, xt::range(0, 1), xt::all(), xt::all());
    const xt::xarray<float> whole = (*lstm)(tape.constant(x0)).value();
    for (std::size_t t = 0; t < T; ++t) {
        const float in[I] = {x0(0, t, 0), x0(0, t, 1), x0(0, t, 2)};
        const auto y = one.step(std::span<const float>(in, I));
        BOOST_REQUIRE(y.size() == O);
        for (std::size_t o = 0; o < O; ++o) BOOST_TEST(std::abs(y[o] - whole(0, t, o)) < 1e-5f);
    }
}

// Widths that are not whole SIMD vectors: the laid-out weights' rows are padded (G = 20 and 15,
// a Linear to 17 outputs), at B = 1 (the Streamer's own one-row product) and B = 3 (GEMM).
BOOST_AUTO_TEST_CASE(odd_widths_step_like_the_whole_sequence) {
    manual_seed(7);
    for (const bool gru : {false, true}) {
        nn::Sequential<float> m;
        if (gru)
            m.add(nn::recurrent_layer(std::make_unique<nn::GRU<float>>(
                nn::GRUOptions{.input_size = I, .hidden_size = 5, .batch_first = true})));
        else
            m.add(nn::recurrent_layer(std::make_unique<nn::LSTM<float>>(
                nn::LSTMOptions{.input_size = I, .hidden_size = 5, .batch_first = true})));
        m.emplace<nn::Linear<float>>(5, 17);
        m.emplace<nn::Linear<float>>(17, O);
        m.eval();
        const xt::xarray<float> x = inputs(8);
        nn::Streamer<float> stream(m, B);
        BOOST_TEST(stream_vs_whole(m, stream, x) < 1e-5f);
        nn::Streamer<float> one(m);
        Tape<float> tape({.record = false});
        const xt::xarray<float> x0 = xt::view(x, xt::range(0, 1), xt::all(), xt::all());
        const xt::xarray<float> whole = m(tape.constant(x0)).value();
        float worst = 0;
        for (std::size_t t = 0; t < T; ++t) {
            const float in[I] = {x0(0, t, 0), x0(0, t, 1), x0(0, t, 2)};
            const auto y = one.step(std::span<const float>(in, I));
            for (std::size_t o = 0; o < O; ++o) worst = std::max(worst, std::abs(y[o] - whole(0, t, o)));
        }
        BOOST_TEST(worst < 1e-5f);
    }
}

BOOST_AUTO_TEST_CASE(follows_weight_updates_and_resets_rows) {
    manual_seed(3);
    auto m = model<nn::LSTM<float>>(nn::LSTMOptions{});
    nn::Streamer<float> stream(*m, B);
    const xt::xarray<float> x = inputs(4);
    stream_vs_whole(*m, stream, x);
    for (auto* p : m->parameters()) p->value() *= 0.5f;  // an update: new versions
    stream.reset();
    BOOST_TEST(stream_vs_whole(*m, stream, x) < 1e-5f);

    // Row 1 starts over; rows 0 and 2 go on.
    stream.reset();
    const xt::xarray<float> x_t0 = xt::view(x, xt::all(), 0, xt::all());
    const xt::xarray<float> first = stream.step(x_t0);
    stream.reset(1);
    const xt::xarray<float> second = stream.step(x_t0);
    BOOST_TEST(std::abs(second(1, 0) - first(1, 0)) < 1e-6f);
    BOOST_TEST(std::abs(second(0, 0) - first(0, 0)) > 1e-6f);
    BOOST_TEST(throws_with<index_error>([&] { stream.reset(3); }, {"Streamer::reset", "row 3", "batch of 3"}));
    BOOST_TEST(throws_with<shape_error>(
        [&] {
            stream.step(xt::xarray<float>(xt::zeros<float>({std::size_t(2), I})));
        },
        {"Streamer::step", "3 x 3", "got 6"}));
}

BOOST_AUTO_TEST_CASE(reports_what_it_cannot_step) {
    manual_seed(5);
    nn::Sequential<float> bi;
    bi.add(nn::recurrent_layer(
        std::make_unique<nn::GRU<float>>(nn::GRUOptions{.input_size = 2, .hidden_size = 4, .bidirectional = true})));
    BOOST_TEST(throws_with<value_error>([&] { nn::Streamer<float> s(bi); }, {"Streamer", "layer 0", "bidirectional"}));
    nn::Sequential<float> emb;
    emb.emplace<nn::Linear<float>>(2, 4);
    emb.emplace<nn::Embedding<float>>(4, 4);
    BOOST_TEST(
        throws_with<value_error>([&] { nn::Streamer<float> s(emb); }, {"Streamer", "layer 1", "not a layer it steps"}));
    nn::Sequential<float> mismatch;
    mismatch.add(
        nn::recurrent_layer(std::make_unique<nn::LSTM<float>>(nn::LSTMOptions{.input_size = 2, .hidden_size = 4})));
    mismatch.emplace<nn::Linear<float>>(5, 1);
    BOOST_TEST(
        throws_with<value_error>([&] { nn::Streamer<float> s(mismatch); }, {"Streamer", "layer 1", "5", "gives 4"}));
    BOOST_TEST(throws_with<value_error>([&] { nn::Streamer<float> s(mismatch, 0); }, {"Streamer", "batch"}));
}

BOOST_AUTO_TEST_SUITE_END()
