// BPTT gradient checks in double for every cell and module option: inputs, initial states and
// every parameter against central differences (max relative error <= 1e-6).
#include <boost/test/unit_test.hpp>

#include <random>

#include <recur/recur.hpp>

#include "support.hpp"

using namespace recur;
using namespace recur::nn;

namespace {

using recur::testing::normal_array;

// Runs a module under gradcheck; inputs are x [, h0 [, c0]].
template <class F>
void check(const std::string& what, const std::vector<xt::xarray<double>>& inputs, F f) {
    const GradcheckReport rep = gradcheck(f, inputs);
    BOOST_TEST_INFO(what);
    BOOST_TEST(rep.passed, rep.summary());
    BOOST_TEST(rep.parameters > 0u);
}

struct Case {
    std::size_t layers;
    bool bidirectional, batch_first, bias, with_lengths, with_state;
    std::size_t proj = 0;
};

constexpr std::size_t I = 3, H = 4, T = 5, B = 3;
const std::vector<std::int64_t> kLengths = {3, 5, 1};

Shape input_shape(bool batch_first) { return batch_first ? Shape{B, T, I} : Shape{T, B, I}; }

std::string name(const std::string& kind, const Case& c) {
    return kind + " layers=" + std::to_string(c.layers) + " bidir=" + std::to_string(c.bidirectional) +
           " batch_first=" + std::to_string(c.batch_first) + " bias=" + std::to_string(c.bias) +
           " lengths=" + std::to_string(c.with_lengths) + " state=" + std::to_string(c.with_state) +
           " proj=" + std::to_string(c.proj);
}

const std::vector<Case> kCases = {
    {1, false, false, true, false, false}, {1, false, true, false, false, true}, {2, true, false, true, true, true},
    {2, true, true, true, true, false},    {3, false, false, true, true, true},
};

}  // namespace

BOOST_AUTO_TEST_SUITE(recurrent_gradients)

BOOST_AUTO_TEST_CASE(rnn_tanh_and_relu) {
    for (auto nl : {Nonlinearity::tanh, Nonlinearity::relu})
        for (const Case& c : kCases) {
            manual_seed(11);
            RNN<double> rnn({I, H, c.layers, nl, c.bias, c.batch_first, 0.0, c.bidirectional});
            const std::size_t ld = c.layers * (c.bidirectional ? 2 : 1);
            std::vector<xt::xarray<double>> inputs = {normal_array(input_shape(c.batch_first), 1)};
            if (c.with_state) inputs.push_back(normal_array({ld, B, H}, 2, 0.5));
            const auto lengths = c.with_lengths ? kLengths : std::vector<std::int64_t>{};
            check(name(nl == Nonlinearity::tanh ? "RNN_TANH" : "RNN_RELU", c), inputs,
                  [&](Tape<double>&, const std::vector<Var<double>>& x) {
                      auto r = rnn(x[0], x.size() > 1 ? x[1] : Var<double>{}, lengths);
                      return concat<double>({reshape(r.output, {-1}), reshape(r.h, {-1})});
                  });
        }
}

BOOST_AUTO_TEST_CASE(lstm_with_and_without_projection) {
    std::vector<Case> cases = kCases;
    cases.push_back({1, false, false, true, false, true, 2});
    cases.push_back({2, true, true, true, true, true, 3});
    cases.push_back({2, true, false, false, true, false, 2});
    for (const Case& c : cases) {
        manual_seed(12);
        LSTM<double> lstm({I, H, c.layers, c.bias, c.batch_first, 0.0, c.bidirectional, c.proj});
        const std::size_t ld = c.layers * (c.bidirectional ? 2 : 1);
        std::vector<xt::xarray<double>> inputs = {normal_array(input_shape(c.batch_first), 3)};
        if (c.with_state) {
            inputs.push_back(normal_array({ld, B, c.proj ? c.proj : H}, 4, 0.5));
            inputs.push_back(normal_array({ld, B, H}, 5, 0.5));
        }
        const auto lengths = c.with_lengths ? kLengths : std::vector<std::int64_t>{};
        check(name("LSTM", c), inputs, [&](Tape<double>&, const std::vector<Var<double>>& x) {
            LSTMState<double> s;
            if (x.size() > 1) s = {x[1], x[2]};
            auto r = lstm(x[0], s, lengths);
            return concat<double>({reshape(r.output, {-1}), reshape(r.state.h, {-1}), reshape(r.state.c, {-1})});
        });
    }
}

BOOST_AUTO_TEST_CASE(gru) {
    for (const Case& c : kCases) {
        manual_seed(13);
        GRU<double> layer({I, H, c.layers, c.bias, c.batch_first, 0.0, c.bidirectional});
        const std::size_t ld = c.layers * (c.bidirectional ? 2 : 1);
        std::vector<xt::xarray<double>> inputs = {normal_array(input_shape(c.batch_first), 6)};
        if (c.with_state) inputs.push_back(normal_array({ld, B, H}, 7, 0.5));
        const auto lengths = c.with_lengths ? kLengths : std::vector<std::int64_t>{};
        check(name("GRU", c), inputs, [&](Tape<double>&, const std::vector<Var<double>>& x) {
            auto r = layer(x[0], x.size() > 1 ? x[1] : Var<double>{}, lengths);
            return concat<double>({reshape(r.output, {-1}), reshape(r.h, {-1})});
        });
    }
}

BOOST_AUTO_TEST_CASE(dropout_between_layers_is_checked_with_a_fixed_mask) {
    // gradcheck reseeds the tape before every evaluation, so the dropout masks repeat.
    manual_seed(14);
    LSTM<double> lstm({I, H, 2, true, false, 0.4, false});
    lstm.train();
    check("LSTM dropout 0.4", {normal_array({T, B, I}, 8)},
          [&](Tape<double>&, const std::vector<Var<double>>& x) { return lstm(x[0]).output; });
}

BOOST_AUTO_TEST_CASE(standalone_cells) {
    manual_seed(15);
    LSTMCell<double> lstm({I, H, true, 0, Nonlinearity::tanh, ""});
    GRUCell<double> gru({I, H, true, 0, Nonlinearity::tanh, ""});
    RNNCell<double> rnn({I, H, true, 0, Nonlinearity::tanh, ""});
    const auto x = normal_array({B, I}, 9), h = normal_array({B, H}, 10, 0.5), c = normal_array({B, H}, 11, 0.5);
    check("LSTMCell", {x, h, c}, [&](Tape<double>&, const std::vector<Var<double>>& v) {
        auto s = lstm.step(v[0], {v[1], v[2]});
        return concat<double>({s[0], s[1]}, 1);
    });
    check("GRUCell", {x, h},
          [&](Tape<double>&, const std::vector<Var<double>>& v) { return gru.step(v[0], {v[1]})[0]; });
    check("RNNCell", {x, h},
          [&](Tape<double>&, const std::vector<Var<double>>& v) { return rnn.step(v[0], {v[1]})[0]; });
}

BOOST_AUTO_TEST_SUITE_END()
