// Bidirectional merge modes (Keras's Bidirectional merge_mode): concat, sum, mul, ave.
#include <boost/test/unit_test.hpp>

#include <xtensor/xview.hpp>

#include <recur/recur.hpp>

#include "support.hpp"

using namespace recur;
using namespace recur::nn;

namespace {

using recur::testing::normal_array;

LSTMOptions options(MergeMode mode, std::size_t layers = 1) {
    return {.input_size = 3,
            .hidden_size = 4,
            .num_layers = layers,
            .batch_first = true,
            .bidirectional = true,
            .merge_mode = mode};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(merge_modes)

// Each mode combines the two directions' outputs of the same weights as concat joins them.
BOOST_AUTO_TEST_CASE(each_mode_combines_the_directions) {
    const xt::xarray<double> x = normal_array({2, 5, 3}, 1);
    const std::vector<std::int64_t> lengths{5, 3};
    manual_seed(3);
    LSTM<double> joined(options(MergeMode::concat));
    Tape<double> t;
    auto ref = joined(t.constant(x), {}, lengths);
    const xt::xarray<double> fwd = xt::view(ref.output.value(), xt::all(), xt::all(), xt::range(0, 4));
    const xt::xarray<double> rev = xt::view(ref.output.value(), xt::all(), xt::all(), xt::range(4, 8));
    const std::vector<std::pair<MergeMode, xt::xarray<double>>> cases{
        {MergeMode::sum, fwd + rev}, {MergeMode::mul, fwd * rev}, {MergeMode::ave, (fwd + rev) * 0.5}};
    for (const auto& c : cases) {
        const MergeMode mode = c.first;
        const xt::xarray<double>& expected = c.second;
        manual_seed(3);
        LSTM<double> merged(options(mode));
        BOOST_TEST(merged.output_size() == 4u);
        BOOST_TEST((merged.merge_mode() == mode));
        auto r = merged(t.constant(x), {}, lengths);
        BOOST_TEST_REQUIRE((r.output.shape() == Shape{2, 5, 4}));
        BOOST_TEST(xt::allclose(r.output.value(), expected, 1e-14, 1e-14));
        BOOST_TEST(xt::allclose(r.state.h.value(), ref.state.h.value(), 0.0, 0.0));  // states are not merged
    }
    BOOST_TEST(joined.output_size() == 8u);
}

// RecurrentLayer's Return::last merges the final hidden states like the outputs (Keras):
// [forward h at the last step, reverse h at the first] summed, multiplied or averaged.
BOOST_AUTO_TEST_CASE(return_last_merges_the_final_states) {
    const xt::xarray<double> x = normal_array({2, 5, 3}, 7);
    Tape<double> t;
    for (MergeMode mode : {MergeMode::concat, MergeMode::sum, MergeMode::mul, MergeMode::ave}) {
        manual_seed(9);
        RecurrentLayer<LSTM<double>> layer(std::make_unique<LSTM<double>>(options(mode)), Return::last);
        const Var<double> last = layer(t.constant(x));
        const auto run = layer.module()(t.constant(x));
        const xt::xarray<double> f = xt::view(run.state.h.value(), 0), r = xt::view(run.state.h.value(), 1);
        const xt::xarray<double> expected = mode == MergeMode::concat
                                                ? xt::xarray<double>(xt::concatenate(xt::xtuple(f, r), 1))
                                            : mode == MergeMode::sum ? xt::xarray<double>(f + r)
                                            : mode == MergeMode::mul ? xt::xarray<double>(f * r)
                                                                     : xt::xarray<double>((f + r) * 0.5);
        BOOST_TEST_REQUIRE((last.shape() == expected.shape()));
        BOOST_TEST(xt::allclose(last.value(), expected, 1e-15, 1e-15));
    }
}

// A stacked layer reads the merged width H; unidirectional layers ignore the mode.
BOOST_AUTO_TEST_CASE(stacked_layers_read_the_merged_width) {
    GRU<double> gru(
        {.input_size = 3, .hidden_size = 4, .num_layers = 2, .bidirectional = true, .merge_mode = MergeMode::sum});
    BOOST_TEST(gru.named_parameters()[8].first == "weight_ih_l1");
    BOOST_TEST((gru.named_parameters()[8].second->shape() == Shape{12, 4}));
    RNN<double> uni({.input_size = 3, .hidden_size = 4, .merge_mode = MergeMode::mul});
    Tape<double> t;
    BOOST_TEST((uni(t.constant(normal_array({5, 2, 3}, 2))).output.shape() == Shape{5, 2, 4}));
}

BOOST_AUTO_TEST_CASE(gradcheck_ave_and_mul_two_layers_with_lengths) {
    for (MergeMode mode : {MergeMode::ave, MergeMode::mul}) {
        manual_seed(5);
        LSTM<double> lstm(options(mode, 2));
        const std::vector<std::int64_t> lengths{2, 5};
        auto f = [&](Tape<double>&, const std::vector<Var<double>>& x) {
            auto r = lstm(x[0], {}, lengths);
            return concat<double>({reshape(r.output, {-1}), reshape(r.state.c, {-1})});
        };
        const auto rep = gradcheck(f, {normal_array({2, 5, 3}, 6)});
        BOOST_TEST(rep.passed, rep.summary());
        BOOST_TEST(rep.parameters == 16u);
    }
}

BOOST_AUTO_TEST_SUITE_END()
