// onednn_layers — oneDNN's RNN primitives doing bench_layers' work, a comparison peer for
// benchmarks/compare_layers.sh (Google Benchmark).
//
// One unidirectional layer, input (B, T, I), loss = sum(output), zero initial state:
//   LSTM: dnnl::lstm_forward / lstm_backward (gates i, f, g, o as PyTorch's);
//   GRU:  dnnl::lbr_gru_forward / lbr_gru_backward ("linear before reset": PyTorch's GRU, b_hn
//         inside the reset product; oneDNN's gate order is z, r, n where PyTorch's is r, z, n).
// The input and output are batch-major, oneDNN's `ntc` (the (B, T, I) buffer bench_layers uses;
// oneDNN runs time-major internally). The weights start as recur's (make_layer, the same seed)
// and are kept by the user in a plain layout, the one oneDNN writes the weight gradients in
// (ldigo, the stride of its gate-output dimension maybe rounded up), as an optimizer updating
// them with their gradients needs.
//   BM_Train: one training step = reorder both weight matrices from the plain layout into the
//     layouts the forward and backward primitives prefer (format `any`; every step, since the
//     weights change between steps; skipped where a primitive takes the plain layout itself),
//     forward_training, then backward with diff_dst = ones (the gradient of sum(output)), the
//     weight and bias gradients written in the plain layout into buffers zeroed first
//     (zero_grad). oneDNN cannot skip the input gradient: it is computed. Counter reorders: the
//     weight reorders per step.
//   BM_Infer: forward_inference with the weights reordered ONCE into the layout oneDNN prefers
//     for inference (weights that do not change between calls are what an inference user of
//     oneDNN prepares once; recur's inference reads its plain weights, so this favours oneDNN).
//     The counter reorder_ms is that one-off reorder's time, to add to a call if wanted.
// Sizes: XS (1,1000,16,16), S (16,200,64,64), M (64,100,256,256), L (64,50,512,512), train and
// infer, as the rows of compare_layers.sh. Run single-threaded: OMP_NUM_THREADS=1 (the Debian
// libdnnl uses OpenMP); the counter threads shows what it ran with.
//
//   onednn_layers [--dtype f32|bf16] [Google Benchmark flags]
//
// --dtype bf16 times the same steps with bf16 input, output and weights (f32 bias and
// gradients, as oneDNN's bf16 backward takes them; the f32 input converted each step),
// if the CPU has avx512_bf16; it adds BM_TrainBf16/BM_InferBf16 to the f32 ones.
//
// Before any timing, a check runs at a small size: oneDNN's output (training and inference
// forwards) and weight and bias gradients against recur's for the same weights and input, to
// 1e-4; the program stops if they differ (the peer must do the same work).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>

#include "layer_step.hpp"

namespace {

using dnnl::memory;
using recur::bench::Kind;
using recur::bench::LayerSizes;
using dims = memory::dims;
using tag = memory::format_tag;
using dt = memory::data_type;

// ---- The cell kinds and their parameters in oneDNN's terms ---------------------------------

/// Gate blocks in oneDNN's weights (G of ldigo) and in its bias (lbr_gru has a 4th: b_hn).
int weight_gates(Kind k) { return k == Kind::lstm ? 4 : 3; }
int bias_gates(Kind) { return 4; }

/// oneDNN's gate g holds PyTorch's gate pytorch_gate(g): GRU z, r, n against PyTorch's r, z, n.
int pytorch_gate(Kind k, int g) { return k == Kind::gru && g < 2 ? 1 - g : g; }

/// recur's (PyTorch's) parameters of one layer: weight_ih (G H, I), weight_hh (G H, H), biases (G H).
struct PlainParams {
    std::vector<float> w_ih, w_hh, b_ih, b_hh;
};

/// The layer's parameter values, or their gradients.
template <Kind K>
PlainParams params_of(recur::bench::Layer<K>& layer, bool gradients = false) {
    PlainParams p;
    for (auto& [name, param] : layer.m.named_parameters()) {
        const xt::xarray<float>& v = gradients ? param->grad() : param->value();
        std::vector<float> flat(v.begin(), v.end());
        if (name == "weight_ih_l0")
            p.w_ih = flat;
        else if (name == "weight_hh_l0")
            p.w_hh = flat;
        else if (name == "bias_ih_l0")
            p.b_ih = flat;
        else if (name == "bias_hh_l0")
            p.b_hh = flat;
        else
            throw std::runtime_error("onednn_layers: unexpected parameter " + name);
    }
    return p;
}

/// PyTorch's (G H, In) weight as oneDNN's ldgoi (gates in oneDNN's order): [g][o][i].
std::vector<float> to_ldgoi(Kind k, const std::vector<float>& w, std::size_t h, std::size_t in) {
    std::vector<float> out(w.size());
    const std::size_t block = h * in;
    for (int g = 0; g < weight_gates(k); ++g)
        std::copy_n(w.begin() + static_cast<std::ptrdiff_t>(pytorch_gate(k, g) * block), block,
                    out.begin() + static_cast<std::ptrdiff_t>(g * block));
    return out;
}

/// oneDNN's bias (ldgo) from PyTorch's two: oneDNN's gate g < G has one bias where PyTorch has
/// b_ih + b_hh (LSTM's four, GRU's z and r), b_in alone for GRU's n, and lbr_gru's 4th is b_hn.
/// gradient: the bias gradients instead (a sum's gradient is either addend's: b_ih's).
std::vector<float> to_bias(Kind k, const PlainParams& p, std::size_t h, bool gradient = false) {
    std::vector<float> out(static_cast<std::size_t>(bias_gates(k)) * h);
    for (int g = 0; g < bias_gates(k); ++g) {
        const std::size_t from = static_cast<std::size_t>(pytorch_gate(k, g)) * h;
        const bool paired = k == Kind::lstm || g < 2;
        for (std::size_t o = 0; o < h; ++o)
            out[static_cast<std::size_t>(g) * h + o] =
                g == weight_gates(k) ? p.b_hh[2 * h + o]  // lbr_gru's b_hn
                                     : p.b_ih[from + o] + (paired && !gradient ? p.b_hh[from + o] : 0.0f);
    }
    return out;
}

// ---- The primitives of one layer ------------------------------------------------------------

dnnl::engine& cpu_engine() {
    static dnnl::engine e(dnnl::engine::kind::cpu, 0);
    return e;
}

bool has_bf16() { return dnnl::get_effective_cpu_isa() >= dnnl::cpu_isa::avx512_core_bf16; }

/// One layer's oneDNN memories and primitives: training (forward_training + backward) or
/// inference (forward_inference), in f32 or bf16.
class Peer {
public:
    Peer(Kind kind, const LayerSizes& z, bool training, dt data_type, const PlainParams& p, const xt::xarray<float>& x)
        : kind_(kind), z_(z), dt_(data_type), strm_(cpu_engine()) {
        const auto b = static_cast<memory::dim>(z.b), t = static_cast<memory::dim>(z.t),
                   i = static_cast<memory::dim>(z.i), h = static_cast<memory::dim>(z.h);
        const memory::dim g = weight_gates(kind), gb = bias_gates(kind);
        auto& eng = cpu_engine();
        src_md_ = memory::desc({t, b, i}, dt_, tag::ntc);
        dst_md_ = memory::desc({t, b, h}, dt_, tag::ntc);
        const memory::desc wl_any({1, 1, i, g, h}, dt_, tag::any), wi_any({1, 1, h, g, h}, dt_, tag::any);
        const memory::desc bias_md({1, 1, gb, h}, dt::f32, tag::ldgo);
        // Gradients are f32 in bf16 too (oneDNN's bf16 backward takes f32 diff data and weights).
        const memory::desc diff_src_md({t, b, i}, dt::f32, tag::ntc), diff_dst_md({t, b, h}, dt::f32, tag::ntc);
        const memory::desc none;  // zero initial state; the final state is not asked for
        const auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
        const auto dir = dnnl::rnn_direction::unidirectional_left2right;
        if (kind == Kind::lstm) {
            auto fpd = dnnl::lstm_forward::primitive_desc(
                dnnl::lstm_forward::desc(prop, dir, src_md_, none, none, wl_any, wi_any, bias_md, dst_md_, none, none),
                eng);
            fwd_ = dnnl::lstm_forward(fpd);
            fwd_pd_ = fpd;
            if (training) {
                const memory::desc dwl_any({1, 1, i, g, h}, dt::f32, tag::any),
                    dwi_any({1, 1, h, g, h}, dt::f32, tag::any);
                auto bpd = dnnl::lstm_backward::primitive_desc(
                    dnnl::lstm_backward::desc(dnnl::prop_kind::backward, dir, src_md_, none, none, wl_any, wi_any,
                                              bias_md, dst_md_, none, none, diff_src_md, none, none, dwl_any, dwi_any,
                                              bias_md, diff_dst_md, none, none),
                    eng, fpd);
                bwd_ = dnnl::lstm_backward(bpd);
                bwd_pd_ = bpd;
            }
        } else {
            auto fpd = dnnl::lbr_gru_forward::primitive_desc(
                dnnl::lbr_gru_forward::desc(prop, dir, src_md_, none, wl_any, wi_any, bias_md, dst_md_, none), eng);
            fwd_ = dnnl::lbr_gru_forward(fpd);
            fwd_pd_ = fpd;
            if (training) {
                const memory::desc dwl_any({1, 1, i, g, h}, dt::f32, tag::any),
                    dwi_any({1, 1, h, g, h}, dt::f32, tag::any);
                auto bpd = dnnl::lbr_gru_backward::primitive_desc(
                    dnnl::lbr_gru_backward::desc(dnnl::prop_kind::backward, dir, src_md_, none, wl_any, wi_any, bias_md,
                                                 dst_md_, none, diff_src_md, none, dwl_any, dwi_any, bias_md,
                                                 diff_dst_md, none),
                    eng, fpd);
                bwd_ = dnnl::lbr_gru_backward(bpd);
                bwd_pd_ = bpd;
            }
        }
        // The user's plain layout: the one oneDNN writes the weight gradients in (training; plain
        // ldigo, its gate-output dimension's stride maybe rounded up), else ldigo.
        const int diff_args[2] = {DNNL_ARG_DIFF_WEIGHTS_LAYER, DNNL_ARG_DIFF_WEIGHTS_ITER};
        for (int which = 0; which < 2; ++which) {
            const memory::dim in = which == 0 ? i : h;
            memory::desc plain({1, 1, in, g, h}, dt::f32, tag::ldigo);
            if (training) {
                plain = bwd_pd_.query_md(dnnl::query::exec_arg_md, diff_args[which]);
                if (plain.data.format_kind != dnnl_blocked || plain.data.format_desc.blocking.inner_nblks != 0)
                    throw std::runtime_error("onednn_layers: the weight gradient's layout is not plain");
            }
            // The user's weights in it, from recur's.
            const std::vector<float> ldgoi = to_ldgoi(kind, which == 0 ? p.w_ih : p.w_hh, z.h, which == 0 ? z.i : z.h);
            memory from({{1, 1, in, g, h}, dt::f32, tag::ldgoi}, eng, const_cast<float*>(ldgoi.data()));
            plain_w_[which] = memory(plain, eng);
            dnnl::reorder(from, plain_w_[which]).execute(strm_, from, plain_w_[which]);
        }
        bias_values_ = to_bias(kind, p, z.h);
        bias_ = memory(bias_md, eng, bias_values_.data());
        // The input: the (B, T, I) f32 buffer read in place, or its bf16 copy made each step.
        x_user_ = memory({{t, b, i}, dt::f32, tag::ntc}, eng, const_cast<float*>(x.data()));
        x_ = dt_ == dt::f32 ? x_user_ : memory(src_md_, eng);
        if (dt_ != dt::f32) x_reorder_ = dnnl::reorder(x_user_, x_);
        dst_ = memory(fwd_pd_.query_md(dnnl::query::exec_arg_md, DNNL_ARG_DST_LAYER), eng);
        if (training) workspace_ = memory(fwd_pd_.query_md(dnnl::query::workspace_md, 0), eng);
        // The weights in the layouts the primitives prefer, and the reorders into them (none
        // when a primitive takes the plain layout itself; one when both take the same layout).
        const int args[2] = {DNNL_ARG_WEIGHTS_LAYER, DNNL_ARG_WEIGHTS_ITER};
        for (int which = 0; which < 2; ++which) {
            const memory::desc fwd_md = fwd_pd_.query_md(dnnl::query::exec_arg_md, args[which]);
            fwd_reorders_[which] = fwd_md != plain_w_[which].get_desc();
            fwd_w_[which] = fwd_reorders_[which] ? memory(fwd_md, eng) : plain_w_[which];
            if (fwd_reorders_[which]) to_fwd_[which] = dnnl::reorder(plain_w_[which], fwd_w_[which]);
            if (!training) continue;
            const memory::desc bwd_md = bwd_pd_.query_md(dnnl::query::exec_arg_md, args[which]);
            bwd_reorders_[which] = bwd_md != fwd_md && bwd_md != plain_w_[which].get_desc();
            bwd_w_[which] = bwd_md == fwd_md       ? fwd_w_[which]
                            : bwd_reorders_[which] ? memory(bwd_md, eng)
                                                   : plain_w_[which];
            if (bwd_reorders_[which]) to_bwd_[which] = dnnl::reorder(plain_w_[which], bwd_w_[which]);
        }
        if (!training) {  // inference: the weights reordered once
            const auto t0 = std::chrono::steady_clock::now();
            reorder_weights_forward();
            strm_.wait();
            reorder_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            return;
        }
        // Training: the gradients, diff_dst = ones (d sum(output) / d output), the input gradient.
        for (int which = 0; which < 2; ++which) grad_w_[which] = memory(plain_w_[which].get_desc(), eng);
        grad_bias_ = memory(bias_md, eng);
        diff_dst_ = memory(bwd_pd_.query_md(dnnl::query::exec_arg_md, DNNL_ARG_DIFF_DST_LAYER), eng);
        memory ones_f32({{t, b, h}, dt::f32, tag::ntc}, eng);
        std::fill_n(static_cast<float*>(ones_f32.get_data_handle()), z.b * z.t * z.h, 1.0f);
        dnnl::reorder(ones_f32, diff_dst_).execute(strm_, ones_f32, diff_dst_);
        diff_src_ = memory(bwd_pd_.query_md(dnnl::query::exec_arg_md, DNNL_ARG_DIFF_SRC_LAYER), eng);
        strm_.wait();
    }

    /// One training step (see the file comment).
    void train_step() {
        if (dt_ != dt::f32) x_reorder_.execute(strm_, x_user_, x_);
        reorder_weights_forward();
        for (int which = 0; which < 2; ++which)
            if (bwd_reorders_[which]) to_bwd_[which].execute(strm_, plain_w_[which], bwd_w_[which]);
        fwd_.execute(strm_, {{DNNL_ARG_SRC_LAYER, x_},
                             {DNNL_ARG_WEIGHTS_LAYER, fwd_w_[0]},
                             {DNNL_ARG_WEIGHTS_ITER, fwd_w_[1]},
                             {DNNL_ARG_BIAS, bias_},
                             {DNNL_ARG_DST_LAYER, dst_},
                             {DNNL_ARG_WORKSPACE, workspace_}});
        for (memory* m : {&grad_w_[0], &grad_w_[1], &grad_bias_}) zero(*m);
        bwd_.execute(strm_, {{DNNL_ARG_SRC_LAYER, x_},
                             {DNNL_ARG_WEIGHTS_LAYER, bwd_w_[0]},
                             {DNNL_ARG_WEIGHTS_ITER, bwd_w_[1]},
                             {DNNL_ARG_BIAS, bias_},
                             {DNNL_ARG_DST_LAYER, dst_},
                             {DNNL_ARG_DIFF_DST_LAYER, diff_dst_},
                             {DNNL_ARG_WORKSPACE, workspace_},
                             {DNNL_ARG_DIFF_SRC_LAYER, diff_src_},
                             {DNNL_ARG_DIFF_WEIGHTS_LAYER, grad_w_[0]},
                             {DNNL_ARG_DIFF_WEIGHTS_ITER, grad_w_[1]},
                             {DNNL_ARG_DIFF_BIAS, grad_bias_}});
        strm_.wait();
    }

    /// One inference forward on the once-reordered weights.
    void infer_step() {
        if (dt_ != dt::f32) x_reorder_.execute(strm_, x_user_, x_);
        fwd_.execute(strm_, {{DNNL_ARG_SRC_LAYER, x_},
                             {DNNL_ARG_WEIGHTS_LAYER, fwd_w_[0]},
                             {DNNL_ARG_WEIGHTS_ITER, fwd_w_[1]},
                             {DNNL_ARG_BIAS, bias_},
                             {DNNL_ARG_DST_LAYER, dst_}});
        strm_.wait();
    }

    /// The output (B, T, H) as f32.
    std::vector<float> output() {
        return to_f32(dst_,
                      {static_cast<memory::dim>(z_.t), static_cast<memory::dim>(z_.b), static_cast<memory::dim>(z_.h)},
                      tag::ntc);
    }
    /// A weight gradient (0: input weights, 1: recurrent) in PyTorch's layout and gate order.
    std::vector<float> weight_grad(int which) {
        const memory::dim in = static_cast<memory::dim>(which == 0 ? z_.i : z_.h), h = static_cast<memory::dim>(z_.h);
        const std::vector<float> ldgoi = to_f32(grad_w_[which], {1, 1, in, weight_gates(kind_), h}, tag::ldgoi);
        std::vector<float> out(ldgoi.size());
        const std::size_t block = z_.h * static_cast<std::size_t>(in);
        for (int g = 0; g < weight_gates(kind_); ++g)
            std::copy_n(ldgoi.begin() + static_cast<std::ptrdiff_t>(g * block), block,
                        out.begin() + static_cast<std::ptrdiff_t>(pytorch_gate(kind_, g) * block));
        return out;
    }
    /// The bias gradient in oneDNN's ldgo.
    std::vector<float> bias_grad() {
        return to_f32(grad_bias_, {1, 1, bias_gates(kind_), static_cast<memory::dim>(z_.h)}, tag::ldgo);
    }

    const char* impl() const { return fwd_pd_.impl_info_str(); }
    double reorder_ms() const { return reorder_ms_; }
    /// Weight reorders per step (training) or made once (inference): forward and backward.
    int forward_reorders() const { return fwd_reorders_[0] + fwd_reorders_[1]; }
    int backward_reorders() const { return bwd_reorders_[0] + bwd_reorders_[1]; }

private:
    void reorder_weights_forward() {
        for (int which = 0; which < 2; ++which)
            if (fwd_reorders_[which]) to_fwd_[which].execute(strm_, plain_w_[which], fwd_w_[which]);
    }
    static void zero(memory& m) { std::memset(m.get_data_handle(), 0, m.get_desc().get_size()); }
    std::vector<float> to_f32(memory& m, const dims& d, tag t) {
        memory out({d, dt::f32, t}, cpu_engine());
        dnnl::reorder(m, out).execute(strm_, m, out);
        strm_.wait();
        const auto* f = static_cast<const float*>(out.get_data_handle());
        return std::vector<float>(f, f + out.get_desc().get_size() / sizeof(float));
    }

    Kind kind_;
    LayerSizes z_;
    dt dt_;
    dnnl::stream strm_;
    memory::desc src_md_, dst_md_;
    dnnl::primitive fwd_, bwd_;
    dnnl::primitive_desc fwd_pd_, bwd_pd_;
    memory plain_w_[2], fwd_w_[2], bwd_w_[2], grad_w_[2];
    dnnl::reorder to_fwd_[2], to_bwd_[2], x_reorder_;
    std::vector<float> bias_values_;
    memory bias_, grad_bias_, x_user_, x_, dst_, workspace_, diff_dst_, diff_src_;
    bool fwd_reorders_[2] = {false, false}, bwd_reorders_[2] = {false, false};
    double reorder_ms_ = 0;
};

// ---- The check against recur ------------------------------------------------------------------

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) throw std::runtime_error("onednn_layers check: sizes differ");
    double m = 0;
    for (std::size_t k = 0; k < a.size(); ++k) m = std::max(m, static_cast<double>(std::fabs(a[k] - b[k])));
    return m;
}

/// oneDNN's output and gradients against recur's at a small size; throws if they differ by > 1e-4.
template <Kind K>
void check_against_recur(const char* name) {
    const LayerSizes z{3, 7, 5, 6};
    auto layer = recur::bench::make_layer<K>(z);
    const xt::xarray<float> x = recur::bench::layer_input(z);
    recur::Tape<float> tape;
    layer.m.zero_grad();
    recur::Var<float> y = layer(tape.constant(x));
    const std::vector<float> want_y(y.value().begin(), y.value().end());
    tape.backward(recur::sum(y));
    const PlainParams p = params_of(layer), grads = params_of(layer, true);
    Peer train(K, z, true, dt::f32, p, x), infer(K, z, false, dt::f32, p, x);
    train.train_step();
    train.train_step();  // twice: the gradients must not accumulate across steps
    infer.infer_step();
    const std::vector<float> want_bias = to_bias(K, grads, z.h, true);
    const double errors[] = {max_abs_diff(train.output(), want_y), max_abs_diff(infer.output(), want_y),
                             max_abs_diff(train.weight_grad(0), grads.w_ih),
                             max_abs_diff(train.weight_grad(1), grads.w_hh),
                             max_abs_diff(train.bias_grad(), want_bias)};
    const double worst = *std::max_element(std::begin(errors), std::end(errors));
    std::fprintf(stderr,
                 "onednn_layers check %s (B,T,I,H) = (3,7,5,6) against recur: max |diff| output %.1e (train) %.1e "
                 "(infer), dW_ih %.1e, dW_hh %.1e, db %.1e; %s\n",
                 name, errors[0], errors[1], errors[2], errors[3], errors[4], worst <= 1e-4 ? "ok" : "FAILED");
    if (!(worst <= 1e-4))
        throw std::runtime_error(std::string("onednn_layers: oneDNN's ") + name + " differs from recur's");
}

// ---- The benchmarks ---------------------------------------------------------------------------

LayerSizes sizes_of(const benchmark::State& s) {
    return {static_cast<std::size_t>(s.range(0)), static_cast<std::size_t>(s.range(1)),
            static_cast<std::size_t>(s.range(2)), static_cast<std::size_t>(s.range(3))};
}

template <Kind K>
void run(benchmark::State& state, bool training, dt data_type) {
    const LayerSizes z = sizes_of(state);
    auto layer = recur::bench::make_layer<K>(z);
    const xt::xarray<float> x = recur::bench::layer_input(z);
    Peer peer(K, z, training, data_type, params_of(layer), x);
    if (training)
        peer.train_step();
    else
        peer.infer_step();  // warm-up
    for (auto _ : state) {
        if (training)
            peer.train_step();
        else
            peer.infer_step();
        benchmark::ClobberMemory();
    }
    state.counters["FLOPS"] =
        benchmark::Counter((training ? 3.0 : 1.0) * z.forward_flops(K), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["threads"] = omp_get_max_threads();
    if (!training) state.counters["reorder_ms"] = peer.reorder_ms();
    state.counters["reorders"] = peer.forward_reorders() + peer.backward_reorders();  // per step (train) or once
    state.SetLabel(peer.impl());
}

template <Kind K>
void BM_Train(benchmark::State& s) {
    run<K>(s, true, dt::f32);
}
template <Kind K>
void BM_Infer(benchmark::State& s) {
    run<K>(s, false, dt::f32);
}
template <Kind K>
void BM_TrainBf16(benchmark::State& s) {
    run<K>(s, true, dt::bf16);
}
template <Kind K>
void BM_InferBf16(benchmark::State& s) {
    run<K>(s, false, dt::bf16);
}

void all_sizes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"B", "T", "I", "H"})->Unit(benchmark::kMillisecond);
    b->Args({1, 1000, 16, 16})->Args({16, 200, 64, 64})->Args({64, 100, 256, 256})->Args({64, 50, 512, 512});
}

}  // namespace

int main(int argc, char** argv) {
    std::string dtype = "f32";
    std::vector<char*> rest;
    for (int k = 0; k < argc; ++k) {
        if (std::strcmp(argv[k], "--dtype") == 0 && k + 1 < argc)
            dtype = argv[++k];
        else if (std::strncmp(argv[k], "--dtype=", 8) == 0)
            dtype = argv[k] + 8;
        else
            rest.push_back(argv[k]);
    }
    if (dtype != "f32" && dtype != "bf16") {
        std::fprintf(stderr, "onednn_layers: --dtype must be f32 or bf16, got %s\n", dtype.c_str());
        return 2;
    }
    try {
        check_against_recur<Kind::lstm>("LSTM");
        check_against_recur<Kind::gru>("GRU (lbr_gru)");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    benchmark::RegisterBenchmark("BM_Train/lstm", BM_Train<Kind::lstm>)->Apply(all_sizes);
    benchmark::RegisterBenchmark("BM_Train/gru", BM_Train<Kind::gru>)->Apply(all_sizes);
    benchmark::RegisterBenchmark("BM_Infer/lstm", BM_Infer<Kind::lstm>)->Apply(all_sizes);
    benchmark::RegisterBenchmark("BM_Infer/gru", BM_Infer<Kind::gru>)->Apply(all_sizes);
    if (dtype == "bf16") {
        if (!has_bf16()) {
            std::fprintf(stderr, "onednn_layers: this CPU has no avx512_bf16; --dtype bf16 skipped\n");
        } else {
            benchmark::RegisterBenchmark("BM_TrainBf16/lstm", BM_TrainBf16<Kind::lstm>)->Apply(all_sizes);
            benchmark::RegisterBenchmark("BM_TrainBf16/gru", BM_TrainBf16<Kind::gru>)->Apply(all_sizes);
            benchmark::RegisterBenchmark("BM_InferBf16/lstm", BM_InferBf16<Kind::lstm>)->Apply(all_sizes);
            benchmark::RegisterBenchmark("BM_InferBf16/gru", BM_InferBf16<Kind::gru>)->Apply(all_sizes);
        }
    }
    int n = static_cast<int>(rest.size());
    benchmark::Initialize(&n, rest.data());
    if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
