// The packed-weight GEMM (ops/packed_gemm.cpp) and the bf16 precision policy: the packed f32
// product equals the plain one; a weight is packed once per version (not per time step) and
// again after an optimizer step; a bf16 step equals an f32 step run on bf16-rounded operands;
// fit and predict run under the policy; a double tape refuses it; on a CPU without AVX512_BF16
// (forced through oneDNN's DNNL_MAX_CPU_ISA in a child process) bf16 runs oneDNN's emulation;
// recur's own small-product kernels (AMX, and vdpbf16ps in a child process) equal a double
// product of the rounded operands at awkward sizes.
#include <boost/test/unit_test.hpp>

#include <cfenv>
#include <cmath>
#include <array>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <recur/recur.hpp>

#include "ops/bf16_kernel.hpp"
#include "ops/common.hpp"
#include "ops/packed_gemm.hpp"
#include "support.hpp"

using namespace recur;
using recur::testing::throws_with;

namespace {

xt::xarray<float> uniform(const Shape& shape, std::uint64_t seed, float scale = 1.0f) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(-scale, scale);
    xt::xarray<float> a = xt::xarray<float>::from_shape(shape);
    for (auto& v : a) v = u(rng);
    return a;
}

// x rounded to bf16 (8 significant bits), ties to even, computed independently of the library's
// bit trick: scale to an integer significand, nearbyint (the default mode rounds ties to even).
float round_bf16(float x) {
    if (x == 0.0f || !std::isfinite(x)) return x;
    const int e = std::ilogb(x);  // x = m 2^e, 1 <= |m| < 2
    const double q = std::ldexp(1.0, e - 7);
    return static_cast<float>(std::nearbyint(static_cast<double>(x) / q) * q);
}
xt::xarray<float> round_bf16(const xt::xarray<float>& a) {
    xt::xarray<float> r = a;
    for (auto& v : r) v = round_bf16(v);
    return r;
}

// max |a - b| <= tol * max(1, max |b|)
bool close(const xt::xarray<float>& a, const xt::xarray<float>& b, double tol) {
    if (a.shape() != b.shape()) return false;
    double scale = 1, diff = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        scale = std::max(scale, std::abs(double(b.data()[i])));
        diff = std::max(diff, std::abs(double(a.data()[i]) - double(b.data()[i])));
    }
    if (diff > tol * scale) BOOST_TEST_MESSAGE("max difference " << diff << " > " << tol * scale);
    return diff <= tol * scale;
}

// One training step (forward, loss = sum(output), backward) of `model` on x (B, T, I); returns
// the output.
template <class M>
xt::xarray<float> train_step(M& model, const xt::xarray<float>& x, TapeOptions options = {}) {
    Tape<float> tape(options);
    auto out = model(tape.constant(x)).output;
    tape.backward(sum(out));
    return out.value();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(bf16)

BOOST_AUTO_TEST_CASE(bf16_rounding_is_to_nearest_even) {
    BOOST_TEST(round_bf16(1.0f + 1.0f / 256) == 1.0f);  // a tie: stays even
    BOOST_TEST(round_bf16(1.0f + 3.0f / 256) == 1.0f + 4.0f / 256);  // a tie: up to even
    for (float x : {0.1f, -3.7f, 1e-20f, 65504.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256}) {
        std::uint32_t bits = std::uint32_t(detail::to_bf16(x)) << 16;
        float back;
        std::memcpy(&back, &bits, sizeof back);
        BOOST_TEST(back == round_bf16(x));
    }
    BOOST_TEST(std::isnan([] {
        std::uint32_t bits = std::uint32_t(detail::to_bf16(std::nanf(""))) << 16;
        float back;
        std::memcpy(&back, &bits, sizeof back);
        return back;
    }()));
}

// The vector rounding packed_gemm uses where the CPU has AVX512_BF16 (vcvtneps2bf16) gives
// to_bf16's bits for every normal float (ties to even included) and NaN a NaN, over a length
// with a partial tail; below 2^-126 in magnitude it gives zero, as the bf16 products read such
// operands anyway.
BOOST_AUTO_TEST_CASE(vector_rounding_equals_to_bf16) {
    if (!detail::bf16_kernel_available()) {
        BOOST_TEST_MESSAGE("no AVX512_BF16 here: the vector rounding is not used");
        return;
    }
    std::vector<float> a;
    std::mt19937 gen(7);
    std::uniform_int_distribution<std::uint32_t> bits(0, 0xffffffffu);
    for (int i = 0; i < 100000; ++i) {
        const std::uint32_t u = bits(gen);
        float x;
        std::memcpy(&x, &u, sizeof x);
        if (std::isfinite(x) && std::fpclassify(x) != FP_SUBNORMAL) a.push_back(x);
    }
    for (float x : {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -0.0f, 0.0f, 3.4028235e38f, -1.1754944e-38f}) a.push_back(x);
    a.push_back(std::nanf(""));
    a.push_back(1e-40f);  // subnormal
    a.push_back(-1e-45f);
    BOOST_TEST_REQUIRE(a.size() % 32 != 0);  // a partial tail
    std::vector<std::uint16_t> out(a.size());
    detail::round_to_bf16(a.data(), a.size(), out.data());
    std::size_t differ = 0;
    for (std::size_t j = 0; j + 3 < a.size(); ++j) differ += out[j] != detail::to_bf16(a[j]);
    BOOST_TEST(differ == 0u);
    const std::size_t n = a.size();
    BOOST_TEST((out[n - 3] & 0x7f80u) == 0x7f80u);  // NaN: exponent all ones
    BOOST_TEST((out[n - 3] & 0x7fu) != 0u);  // and a mantissa
    BOOST_TEST((out[n - 2] & 0x7fffu) == 0u);  // subnormals: zero
    BOOST_TEST((out[n - 1] & 0x7fffu) == 0u);
}

BOOST_AUTO_TEST_CASE(packed_f32_product_equals_the_plain_one) {
    // (M, N, K): an XS step, S's step, M's step, odd sizes
    for (auto [m, n, k] : {std::array<std::size_t, 3>{1, 64, 16}, {16, 256, 64}, {64, 1024, 256}, {5, 13, 7}}) {
        for (bool transpose_w : {true, false}) {
            const auto a = uniform({m, k}, 1), c0 = uniform({m, n}, 2);
            const auto w = transpose_w ? uniform({n, k}, 3) : uniform({k, n}, 3);
            xt::xarray<float> packed = c0, plain = c0;
            detail::packed_gemm(Precision::f32, m, n, k, a.data(), k,
                                {nullptr, 0, w.data(), w.shape()[0], w.shape()[1]}, transpose_w, true, packed.data(),
                                n);
            detail::gemm<float>(false, transpose_w, m, n, k, 1.0f, a.data(), k, w.data(), transpose_w ? k : n, 1.0f,
                                plain.data(), n);
            BOOST_TEST(close(packed, plain, 1e-5 * double(k)),
                       m << "x" << n << "x" << k << " transposed " << transpose_w);
            detail::packed_gemm(Precision::f32, m, n, k, a.data(), k,
                                {nullptr, 0, w.data(), w.shape()[0], w.shape()[1]}, transpose_w, false, packed.data(),
                                n);
            plain = c0;
            detail::gemm<float>(false, transpose_w, m, n, k, 1.0f, a.data(), k, w.data(), transpose_w ? k : n, 0.0f,
                                plain.data(), n);
            BOOST_TEST(close(packed, plain, 1e-5 * double(k)));
        }
    }
}

// C = A op(W) + bias (linear's forward): equal to the product without bias plus the bias rows,
// to f32 rounding (the bias is added once, to the f32 sum), in f32 and bf16, on oneDNN's matmul
// (its bias argument; 6400 x 96 x 32 as a hoisted projection) and on recur's small bf16 kernel
// (4 x 48 x 16: the bias rows first, the product accumulated onto them); a bias with accumulate
// is refused.
BOOST_AUTO_TEST_CASE(a_product_with_a_bias_adds_it_to_every_row) {
    for (auto [m, n, k] : {std::array<std::size_t, 3>{6400, 96, 32}, {4, 48, 16}, {3, 5, 0}}) {
        for (Precision precision : {Precision::f32, Precision::bf16}) {
            const auto a = uniform({m, k}, 11), w = uniform({n, k}, 12), bias = uniform({n}, 13);
            const detail::WeightRef ref{nullptr, 0, w.data(), n, k};
            xt::xarray<float> with_bias = xt::zeros<float>({m, n}), without = xt::zeros<float>({m, n});
            detail::packed_gemm(precision, m, n, k, a.data(), k, ref, true, false, with_bias.data(), n, bias.data());
            detail::packed_gemm(precision, m, n, k, a.data(), k, ref, true, false, without.data(), n);
            const xt::xarray<float> expected = without + xt::view(bias, xt::newaxis(), xt::all());
            BOOST_TEST(close(with_bias, expected, 1e-6), m << "x" << n << "x" << k << " " << precision_name(precision));
            BOOST_CHECK_THROW(
                detail::packed_gemm(precision, m, n, k, a.data(), k, ref, true, true, with_bias.data(), n, bias.data()),
                value_error);
        }
    }
}

// f32 and bf16 (S's recurrent product: in bf16 recur's own kernel where available, else oneDNN;
// the reference on rounded operands).
BOOST_AUTO_TEST_CASE(a_weight_is_packed_once_per_version) {
    const std::size_t m = 16, n = 256, k = 64;
    for (Precision precision : {Precision::f32, Precision::bf16}) {
        const bool bf16 = precision == Precision::bf16;
        Parameter<float> p(uniform({n, k}, 4));
        const auto a = uniform({m, k}, 5);
        auto product = [&] {
            xt::xarray<float> c = xt::zeros<float>({m, n});
            const auto& w = std::as_const(p).value();
            detail::packed_gemm(precision, m, n, k, a.data(), k, {&p, p.version(), w.data(), n, k}, true, false,
                                c.data(), n);
            return c;
        };
        auto reference = [&] {
            xt::xarray<float> c = xt::zeros<float>({m, n});
            const xt::xarray<float> ar = bf16 ? round_bf16(a) : a,
                                    wr = bf16 ? round_bf16(std::as_const(p).value()) : std::as_const(p).value();
            detail::gemm<float>(false, true, m, n, k, 1.0f, ar.data(), k, wr.data(), k, 0.0f, c.data(), n);
            return c;
        };
        const double tol = bf16 ? 1e-6 : 1e-4;
        const auto before = detail::weight_packs();
        product();
        BOOST_TEST(detail::weight_packs() == before + 1);
        for (int s = 0; s < 5; ++s) BOOST_TEST(close(product(), reference(), tol));
        BOOST_TEST(detail::weight_packs() == before + 1);  // the same version: no new packing
        p.value() *= 2.0f;  // an optimizer's update: a new version
        BOOST_TEST(close(product(), reference(), tol));  // the new values, not the cached ones
        BOOST_TEST(detail::weight_packs() == before + 2);
    }
}

BOOST_AUTO_TEST_CASE(recurrent_layers_pack_once_per_update_not_per_step) {
    // Forward products of 64 x 160 x 640 (LSTM) and 64 x 160 x 480 (GRU), above 2^22
    // multiply-adds: the f32 packed path, over 10 steps; so is the hoisted projection
    // (640 x 32 x 640, with its bias as the matmul's bias argument).
    const std::size_t B = 64, T = 10, I = 32, H = 160;
    const auto x = uniform({B, T, I}, 6);
    manual_seed(1);
    nn::LSTM<float> lstm({.input_size = I, .hidden_size = H, .batch_first = true});
    nn::LSTM<double> lstm_d({.input_size = I, .hidden_size = H, .batch_first = true});
    for (auto& [name, p] : lstm.named_parameters())
        for (auto& [name_d, pd] : lstm_d.named_parameters())
            if (name == name_d) pd->assign(xt::cast<double>(std::as_const(*p).value()));
    auto before = detail::weight_packs();
    const auto y = train_step(lstm, x);
    BOOST_TEST(detail::weight_packs() == before + 2);  // f32: w_hh^T once for the 10 steps, and w_ih^T
    // equal to the double layer to float rounding (values and gradients)
    Tape<double> td;
    auto yd = lstm_d(td.constant(xt::cast<double>(x))).output;
    td.backward(sum(yd));
    BOOST_TEST(close(y, xt::cast<float>(yd.value()), 1e-5));
    const auto ps = lstm.parameters();
    const auto pds = lstm_d.parameters();
    for (std::size_t k = 0; k < ps.size(); ++k) BOOST_TEST(close(ps[k]->grad(), xt::cast<float>(pds[k]->grad()), 1e-4));

    before = detail::weight_packs();
    train_step(lstm, x);
    BOOST_TEST(detail::weight_packs() == before);  // same weights (backward leaves versions alone): no packing
    // bf16: w_hh^T (forward), w_hh (backward's dh), w_ih^T (the hoisted projection), once each
    train_step(lstm, x, {.precision = Precision::bf16});
    BOOST_TEST(detail::weight_packs() == before + 3);
    train_step(lstm, x, {.precision = Precision::bf16});
    BOOST_TEST(detail::weight_packs() == before + 3);
    optim::SGD<float> sgd(lstm.parameters(), {.lr = 0.1});
    sgd.step();  // new versions: packed again, once each
    train_step(lstm, x);
    BOOST_TEST(detail::weight_packs() == before + 5);
    train_step(lstm, x, {.precision = Precision::bf16});
    BOOST_TEST(detail::weight_packs() == before + 8);

    // f32 inference (one node per layer) packs w_ih and w_hh into its own panels (ops/
    // gate_product.hpp), cached the same way: once per layer by the first run, none by the second,
    // once more after an update.
    nn::GRU<float> gru({.input_size = I, .hidden_size = H, .batch_first = true});
    before = detail::weight_packs();
    std::uint64_t after_first = 0;
    for (int k = 0; k < 2; ++k) {
        Tape<float> tape({.record = false});
        gru(tape.constant(x));
        lstm(tape.constant(x));
        if (k == 0) after_first = detail::weight_packs();
    }
    BOOST_TEST(after_first == before + 2);
    BOOST_TEST(detail::weight_packs() == after_first);
    sgd.step();
    {
        Tape<float> tape({.record = false});
        lstm(tape.constant(x));
    }
    BOOST_TEST(detail::weight_packs() == after_first + 1);
}

// The fused bf16 step equals the f32 step run on bf16-rounded operands of its product (h and
// w_hh; the input part xs, the bias and the cell state stay f32) to f32 rounding: products of
// bf16 numbers are exact in f32, only the order of the sums differs. Both cells.
BOOST_AUTO_TEST_CASE(bf16_step_equals_f32_step_on_rounded_operands) {
    const std::size_t B = 8, T = 3, H = 48;
    for (std::size_t gates : {4, 3}) {
        // The GRU's h is also its state (y = n + z (h - n), in f32): there h is exactly a bf16
        // number, so that only the product sees the rounding in both runs.
        const auto xs = uniform({T, B, gates * H}, 7), c = uniform({B, H}, 9);
        const auto h = gates == 4 ? uniform({B, H}, 8) : round_bf16(uniform({B, H}, 8));
        const auto w = uniform({gates * H, H}, 10, 0.3f), b = uniform({gates * H}, 11);
        auto run = [&](Precision precision, bool rounded) {
            Tape<float> tape({.record = false, .precision = precision});
            Parameter<float> wp(rounded ? round_bf16(w) : w), bp(b);
            auto hv = tape.constant(rounded ? round_bf16(h) : h);
            if (gates == 4)
                return xt::xarray<float>(
                    lstm_step(tape.constant(xs), 0, 1, hv, tape.constant(c), tape.bind(wp), tape.bind(bp)).h.value());
            return xt::xarray<float>(gru_step(tape.constant(xs), 0, 1, hv, tape.bind(wp), tape.bind(bp)).value());
        };
        const auto bf16 = run(Precision::bf16, false), reference = run(Precision::f32, true),
                   plain = run(Precision::f32, false);
        BOOST_TEST(close(bf16, reference, 1e-6), "gates " << gates);
        BOOST_TEST(!close(bf16, plain, 1e-6));  // the rounding did happen
        BOOST_TEST(close(bf16, plain, 3e-2));  // and is only bf16's
    }
}

BOOST_AUTO_TEST_CASE(bf16_sequence_kernels_equal_bf16_steps) {
    const std::size_t B = 4, T = 6, I = 10, H = 32;
    const auto x = uniform({B, T, I}, 12);
    nn::LSTM<float> lstm({.input_size = I, .hidden_size = H, .batch_first = true});
    nn::GRU<float> gru({.input_size = I, .hidden_size = H, .batch_first = true});
    Tape<float> infer({.record = false, .precision = Precision::bf16});  // lstm_sequence / gru_sequence
    Tape<float> steps({.precision = Precision::bf16});  // a step node per time step
    BOOST_TEST(close(lstm(infer.constant(x)).output.value(), lstm(steps.constant(x)).output.value(), 1e-6));
    BOOST_TEST(close(gru(infer.constant(x)).output.value(), gru(steps.constant(x)).output.value(), 1e-6));
}

BOOST_AUTO_TEST_CASE(bf16_linear_equals_f32_linear_on_rounded_operands) {
    const auto x = uniform({6, 5, 40}, 13), w = uniform({24, 40}, 14), b = uniform({24}, 15);
    auto run = [&](Precision precision, bool rounded) {
        Tape<float> tape({.precision = precision});
        Parameter<float> wp(rounded ? round_bf16(w) : w), bp(b);
        auto y = linear(tape.constant(rounded ? round_bf16(x) : x), tape.bind(wp), tape.bind(bp));
        return xt::xarray<float>(y.value());
    };
    BOOST_TEST(close(run(Precision::bf16, false), run(Precision::f32, true), 1e-6));
}

// The weight gradient's product dW (+)= A^T B (dpre^T h, g^T x) in bf16: the f32 product of the
// rounded operands.
BOOST_AUTO_TEST_CASE(bf16_weight_gradient_product_equals_f32_on_rounded_operands) {
    const std::size_t m = 96, n = 40, k = 24;  // A (k x m), B (k x n)
    const auto a = uniform({k, m}, 20), b = uniform({k, n}, 21), c0 = uniform({m, n}, 22);
    const auto ar = round_bf16(a), br = round_bf16(b);
    for (bool accumulate : {false, true}) {
        xt::xarray<float> got = c0, want = c0;
        detail::bf16_gemm_tn(m, n, k, a.data(), m, b.data(), n, accumulate, got.data(), n);
        detail::gemm<float>(true, false, m, n, k, 1.0f, ar.data(), m, br.data(), n, accumulate ? 1.0f : 0.0f,
                            want.data(), n);
        BOOST_TEST(close(got, want, 1e-6), "accumulate " << accumulate);
    }
}

// Under bf16 the recurrent weight's gradient is summed over the steps' rows as one deferred
// product (Tape::add_product_grad): it and every other gradient stay within bf16 of f32's.
template <class Layer>
void check_bf16_gradients_close_to_f32(Layer& layer, const xt::xarray<float>& x) {
    train_step(layer, x);
    std::vector<xt::xarray<float>> f32_grads;
    for (auto* p : layer.parameters()) {
        f32_grads.push_back(p->grad());
        p->zero_grad();
    }
    train_step(layer, x, {.precision = Precision::bf16});
    const auto ps = layer.parameters();
    for (std::size_t k = 0; k < ps.size(); ++k) {
        BOOST_TEST(close(ps[k]->grad(), f32_grads[k], 3e-2), "parameter " << k);
        BOOST_TEST(!close(ps[k]->grad(), f32_grads[k], 1e-7), "parameter " << k);  // bf16 did run
    }
}

BOOST_AUTO_TEST_CASE(bf16_training_gradients_are_close_to_f32) {
    const std::size_t B = 16, T = 10, I = 16, H = 64;
    const auto x = uniform({B, T, I}, 16);
    nn::GRU<float> gru({.input_size = I, .hidden_size = H, .batch_first = true});
    check_bf16_gradients_close_to_f32(gru, x);
    nn::LSTM<float> lstm({.input_size = I, .hidden_size = H, .batch_first = true});
    check_bf16_gradients_close_to_f32(lstm, x);
}

BOOST_AUTO_TEST_CASE(fit_and_predict_run_under_the_policy) {
    // sequences (N, 8, 1) whose label is their mean
    const std::size_t N = 64, T = 8;
    const auto x = uniform({N, T, 1}, 17);
    train::Dataset<float> data{x, xt::xarray<float>::from_shape({N, 1}), {}};
    for (std::size_t i = 0; i < N; ++i) {
        float mean = 0;
        for (std::size_t t = 0; t < T; ++t) mean += x(i, t, 0) / float(T);
        data.y(i, 0) = mean;
    }
    const train::LossFn<float> mse = [](const Var<float>& p, const Var<float>& t) { return nn::mse_loss(p, t); };
    auto trained = [&](Precision precision) {
        manual_seed(3);
        auto model = std::make_unique<nn::Sequential<float>>();
        model->add(nn::recurrent_layer(
            std::make_unique<nn::GRU<float>>(nn::GRUOptions{.input_size = 1, .hidden_size = 32, .batch_first = true}),
            nn::Return::last));
        model->emplace<nn::Linear<float>>(32, 1);
        optim::Adam<float> adam(model->parameters(), {.lr = 1e-2});
        const auto h = train::fit<float>(*model, mse, adam, data,
                                         {.epochs = 15, .batch_size = 16, .verbose = 0, .precision = precision});
        return std::make_pair(std::move(model), h["loss"]);
    };
    auto [f32_model, f32_loss] = trained(Precision::f32);
    auto [bf16_model, bf16_loss] = trained(Precision::bf16);
    BOOST_TEST(bf16_loss.back() < 0.5 * bf16_loss.front());  // it learns
    BOOST_TEST(std::abs(bf16_loss.back() - f32_loss.back()) < 0.25 * f32_loss.back() + 1e-4);
    const auto p32 = train::predict(*bf16_model, x, 16);
    const auto p16 = train::predict(*bf16_model, x, 16, {}, Precision::bf16);
    BOOST_TEST(close(p16, p32, 2e-2));
    BOOST_TEST(!close(p16, p32, 1e-7));  // predict did run in bf16
}

BOOST_AUTO_TEST_CASE(double_and_parallel_runs_refuse_bf16) {
    BOOST_TEST(
        throws_with<value_error>([] { Tape<double> t({.precision = Precision::bf16}); }, {"Tape<double>", "bf16"}));
    Tape<double> fine;  // f32 (the default) is a double tape's own precision
    BOOST_TEST((fine.precision() == Precision::f32));
    nn::Sequential<double> model;
    model.emplace<nn::Linear<double>>(2, 1);
    optim::SGD<double> sgd(model.parameters(), {.lr = 0.1});
    train::Dataset<double> data{xt::zeros<double>({4, 2}), xt::zeros<double>({4, 1}), {}};
    const train::LossFn<double> mse = [](const Var<double>& p, const Var<double>& t) { return nn::mse_loss(p, t); };
    BOOST_TEST(throws_with<value_error>(
        [&] { train::fit<double>(model, mse, sgd, data, {.verbose = 0, .precision = Precision::bf16}); }, {"bf16"}));
    BOOST_TEST(
        throws_with<value_error>([&] { train::predict<double>(model, data.x, 2, {}, Precision::bf16); }, {"bf16"}));
    BOOST_TEST(throws_with<value_error>([] { parse_precision("fp8", "--precision"); }, {"--precision", "fp8"}));
    BOOST_TEST((parse_precision("bf16") == Precision::bf16));
}

// recur's bf16 kernel (ops/bf16_kernel.hpp) at awkward sizes (m 1, 3, 17; n not a multiple of
// 16; odd k; lda > k; ldc > n; both orientations; accumulate on and off): within f32 rounding
// of a double product of the rounded operands, and columns past n untouched. Run here (AMX
// where usable) and, on such a CPU, again in a child with RECUR_BF16_KERNEL=dot (vdpbf16ps).
BOOST_AUTO_TEST_CASE(own_bf16_kernel_equals_double_product_of_rounded_operands) {
    const char* role = std::getenv("RECUR_BF16_KERNEL");
    if (!detail::bf16_kernel_available()) {  // bf16 products all stay on oneDNN
        BOOST_TEST((role != nullptr || !bf16_native() || !__builtin_cpu_supports("avx512bf16")));
        return;
    }
    if (role != nullptr) BOOST_TEST(!detail::bf16_tiles_available());  // "dot": the vdpbf16ps kernel
    std::uint64_t seed = 30;
    bool rounding_seen = false;
    auto matches = [&](std::size_t m, std::size_t n, std::size_t k, bool transposed, bool accumulate) {
        const std::size_t lda = k + 2, ldc = n + 3;
        const auto a = uniform({m, lda}, ++seed), c0 = uniform({m, ldc}, ++seed);
        const auto w = transposed ? uniform({n, k}, ++seed) : uniform({k, n}, ++seed);
        const auto ar = round_bf16(a), wr = round_bf16(w);
        std::vector<std::uint32_t> packed(detail::bf16_pair_rows(k) * detail::bf16_pair_stride(n));
        detail::pack_bf16_pairs(w.data(), transposed, k, n, packed.data());
        xt::xarray<float> c = c0;
        detail::bf16_pair_gemm(m, n, k, a.data(), lda, packed.data(), accumulate, c.data(), ldc);
        bool ok = true;
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < ldc; ++j) {
                if (j >= n) {
                    ok = ok && c(i, j) == c0(i, j);
                    continue;
                }
                double want = accumulate ? c0(i, j) : 0.0, unrounded = want, magnitude = std::abs(want);
                for (std::size_t l = 0; l < k; ++l) {
                    const float wl = transposed ? wr(j, l) : wr(l, j);
                    want += double(ar(i, l)) * wl;
                    unrounded += double(a(i, l)) * (transposed ? w(j, l) : w(l, j));
                    magnitude += std::abs(double(ar(i, l)) * wl);
                }
                // k + 1 f32 additions: each off by at most 2^-24 of the running sum
                const double bound = double(k + 1) * std::ldexp(magnitude, -24);
                ok = ok && std::abs(c(i, j) - want) <= bound;
                rounding_seen = rounding_seen || std::abs(c(i, j) - unrounded) > bound;
            }
        return ok;
    };
    for (std::size_t m : {1, 3, 17})
        for (std::size_t n : {5, 40, 100})
            for (std::size_t k : {1, 7, 64, 65})
                for (bool transposed : {true, false})
                    for (bool accumulate : {false, true})
                        BOOST_TEST(matches(m, n, k, transposed, accumulate), m << " x " << n << " x " << k
                                                                               << " transposed " << transposed
                                                                               << " accumulate " << accumulate);
    // oneDNN's AMX kernels load their own tile configuration: after one of its bf16 products
    // (64 x 1024 x 256, above the kernel's sizes) recur's kernel is still right.
    const auto big_a = uniform({64, 256}, ++seed), big_w = uniform({1024, 256}, ++seed);
    xt::xarray<float> big_c = xt::zeros<float>({64, 1024});
    detail::packed_gemm(Precision::bf16, 64, 1024, 256, big_a.data(), 256, {nullptr, 0, big_w.data(), 1024, 256}, true,
                        false, big_c.data(), 1024);
    BOOST_TEST(matches(17, 100, 65, true, true));
    BOOST_TEST(rounding_seen);  // the operands were rounded
    if (role == nullptr && detail::bf16_tiles_available()) {  // the vdpbf16ps kernel, in a child
        const auto& suite = boost::unit_test::framework::master_test_suite();
        const std::string self = suite.argc > 0 ? suite.argv[0] : "";
        BOOST_TEST(std::system(("RECUR_BF16_KERNEL=dot " + self +
                                " --run_test=bf16/own_bf16_kernel_equals_double_product_of_rounded_operands"
                                " > /dev/null 2>&1")
                                   .c_str()) == 0);
    }
}

// On a CPU without AVX512_BF16, bf16 runs oneDNN's emulation on AVX-512: the same results as
// the f32 product of rounded operands. Forced in a child process of this binary (oneDNN reads
// DNNL_MAX_CPU_ISA once, at its first use). Without AVX-512 at all, a bf16 product is a
// value_error that says so.
BOOST_AUTO_TEST_CASE(bf16_without_avx512_bf16_is_emulated) {
    const char* role = std::getenv("RECUR_BF16_FALLBACK");
    const auto& suite = boost::unit_test::framework::master_test_suite();
    const std::size_t m = 8, n = 64, k = 48;
    const auto a = uniform({m, k}, 18), w = uniform({n, k}, 19);
    auto bf16_product = [&] {
        xt::xarray<float> c = xt::zeros<float>({m, n});
        detail::packed_gemm(Precision::bf16, m, n, k, a.data(), k, {nullptr, 0, w.data(), n, k}, true, false, c.data(),
                            n);
        return c;
    };
    if (role == nullptr) {  // the parent: run this case in children with the ISA capped
        const std::string self = suite.argc > 0 ? suite.argv[0] : "";
        const std::string run = " " + self + " --run_test=bf16/bf16_without_avx512_bf16_is_emulated > /dev/null 2>&1";
        // (a CPU without AVX-512 at all cannot emulate: there the capped child is refused too)
        const std::string capped = __builtin_cpu_supports("avx512f") ? "emulated" : "refused";
        BOOST_TEST(std::system(("RECUR_BF16_FALLBACK=" + capped + " DNNL_MAX_CPU_ISA=AVX512_CORE" + run).c_str()) == 0);
        BOOST_TEST(std::system(("RECUR_BF16_FALLBACK=refused DNNL_MAX_CPU_ISA=AVX2" + run).c_str()) == 0);
        return;
    }
    BOOST_TEST(!bf16_native());
    BOOST_TEST(!detail::bf16_kernel_available());  // recur's kernel only where oneDNN runs bf16 natively
    if (std::string(role) == "emulated") {
        xt::xarray<float> reference = xt::zeros<float>({m, n});
        const auto ar = round_bf16(a), wr = round_bf16(w);
        detail::gemm<float>(false, true, m, n, k, 1.0f, ar.data(), k, wr.data(), k, 0.0f, reference.data(), n);
        BOOST_TEST(close(bf16_product(), reference, 1e-6));
    } else {
        BOOST_TEST(throws_with<value_error>([&] { bf16_product(); }, {"packed_gemm", "bf16", "AVX-512"}));
    }
}

BOOST_AUTO_TEST_SUITE_END()
