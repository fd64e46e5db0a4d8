// Streaming inference: a model stepped one time step per call over weights laid out once.
// Letters: B batch, I input width, H hidden width, G gate width (4H LSTM, 3H GRU, H RNN),
// O output width.
#include "recur/nn/streaming.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "ops/common.hpp"
#include "ops/recurrent_rows.hpp"

namespace recur::nn {

namespace {

enum class Kind { lstm, gru, rnn_tanh, rnn_relu, linear, relu, tanh, sigmoid };

// out = W^T laid out row-major: W (rows, cols) -> (cols, rows), written at `out` with row
// stride `ld` (so two transposes can stack into one matrix).
template <class T>
void transpose_into(const xt::xarray<T>& w, T* out, std::size_t ld) {
    const std::size_t rows = w.shape()[0], cols = w.shape()[1];
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c) out[c * ld + r] = w.data()[r * cols + c];
}

// bias (G) of an optional parameter (zeros without).
template <class T>
void bias_into(const Parameter<T>* b, T* out, std::size_t g, bool add) {
    for (std::size_t j = 0; j < g; ++j) {
        const T v = b ? b->value().data()[j] : T(0);
        out[j] = add ? out[j] + v : v;
    }
}

// Laid-out weights on SIMD-register boundaries: a row of W (ldw elements apart) starts on a
// cache line, so each vector load of the one-row product reads one line instead of straddling
// two (an LSTM(64) step: 1.25 -> 0.87 us, no other job on the machine).
template <class T>
using aligned_vector = std::vector<T, xsimd::aligned_allocator<T, xsimd::default_arch::alignment()>>;

// Row stride of a laid-out W with n columns: n rounded up to whole SIMD vectors, except below one
// vector (a Linear to one output keeps its column contiguous for the dot product).
template <class T>
std::size_t padded_columns(std::size_t n) {
    constexpr std::size_t lanes = xsimd::batch<T>::size;
    return n < lanes ? n : (n + lanes - 1) / lanes * lanes;
}

// One stage of the stepped model: a recurrent layer (one layer of a stack) or a
// feed-forward layer, with its laid-out weights and its buffers.
template <class T>
struct Stage {
    Kind kind;
    std::size_t in = 0, hidden = 0, out = 0;  // I, H, O (O = H for a recurrent stage)
    std::vector<const Parameter<T>*> params;  // what the layout reads, in a fixed order
    std::vector<std::uint64_t> versions;  // their versions at the last layout
    // LSTM / RNN: w (I + H, G) = [W_ih^T; W_hh^T], bias (G) = b_ih + b_hh; xh (B, I + H) = [x | h].
    // GRU: w (I, 3H) = W_ih^T then w_h (H, 3H) = W_hh^T (in w after the first), bias_i, bias_h.
    // Linear: w (I, O) = W^T, bias (O). Rows of w are ldw apart (padded_columns).
    aligned_vector<T> w;
    std::size_t ldw = 0;
    std::vector<T> bias, bias_h;
    std::vector<T> xh, c, pre, pre_h, act, y;
    const T* output = nullptr;  // B rows of O values, row stride `stride`
    std::size_t stride = 0;

    std::size_t gates() const { return kind == Kind::lstm ? 4 * hidden : kind == Kind::gru ? 3 * hidden : hidden; }
};

template <class T>
void lay_out(Stage<T>& s) {
    const auto& p = s.params;
    if (s.kind == Kind::linear) {
        transpose_into(p[0]->value(), s.w.data(), s.ldw);
        bias_into(p[1], s.bias.data(), s.out, false);
    } else {  // recurrent: W_ih^T rows, then W_hh^T rows
        const std::size_t g = s.gates();
        transpose_into(p[0]->value(), s.w.data(), s.ldw);
        transpose_into(p[1]->value(), s.w.data() + s.in * s.ldw, s.ldw);
        bias_into(p[2], s.bias.data(), g, false);
        if (s.kind == Kind::gru)
            bias_into(p[3], s.bias_h.data(), g, false);  // b_hn stays inside the reset product
        else
            bias_into(p[3], s.bias.data(), g, true);  // LSTM, RNN: one product over [x | h], one bias
    }
    for (std::size_t k = 0; k < p.size(); ++k) s.versions[k] = p[k] ? p[k]->version() : 0;
}

// y (n) += x (k) W (k, n), W row-major with rows ldw apart: the one-row product of a step at
// B = 1. Blocks of 16 SIMD vectors of y stay in registers (all 4H = 256 gate columns of an
// LSTM(64) in AVX-512), so each step of l feeds 16 independent FMA chains and W streams through
// once, row by row (recur::detail::gemm's one-row tile has 4 and is latency-bound at this
// shape; 8 vectors are slower too). W's 64 KiB do not fit L1, so each step reads them from L2.
// n = 1 (a Linear to one output) is a dot product.
// The row product at B > 1 stays with recur::detail::gemm.
template <class T>
void row_times_matrix(const T* x, std::size_t k, const T* w, std::size_t ldw, std::size_t n, T* y) {
    using batch = xsimd::batch<T>;
    constexpr std::size_t W = batch::size, V = 16;
    std::size_t j = 0;
    for (; j + V * W <= n; j += V * W) {
        batch acc[V];
        for (std::size_t v = 0; v < V; ++v) acc[v] = batch::load_unaligned(y + j + v * W);
        for (std::size_t l = 0; l < k; ++l) {
            const batch xl(x[l]);
            const T* row = w + l * ldw + j;
            for (std::size_t v = 0; v < V; ++v) acc[v] = xsimd::fma(xl, batch::load_unaligned(row + v * W), acc[v]);
        }
        for (std::size_t v = 0; v < V; ++v) acc[v].store_unaligned(y + j + v * W);
    }
    for (; j + W <= n; j += W) {
        batch acc = batch::load_unaligned(y + j);
        for (std::size_t l = 0; l < k; ++l) acc = xsimd::fma(batch(x[l]), batch::load_unaligned(w + l * ldw + j), acc);
        acc.store_unaligned(y + j);
    }
    if (n == 1) {  // y += x . w (w is one contiguous column: ldw = 1)
        batch acc(T(0));
        std::size_t l = 0;
        for (; l + W <= k; l += W) acc = xsimd::fma(batch::load_unaligned(x + l), batch::load_unaligned(w + l), acc);
        T sum = xsimd::hadd(acc);
        for (; l < k; ++l) sum = std::fma(x[l], w[l], sum);
        y[0] += sum;
        return;
    }
    for (; j < n; ++j) {
        T acc = y[j];
        for (std::size_t l = 0; l < k; ++l) acc = std::fma(x[l], w[l * ldw + j], acc);
        y[j] = acc;
    }
}

// out (B, n) += x (B, k) W (k, n) for rows of x `ld` apart and of W `ldw` apart.
template <class T>
void product(std::size_t batch, std::size_t n, std::size_t k, const T* x, std::size_t ld, const T* w, std::size_t ldw,
             T* out) {
    if (batch == 1) return row_times_matrix(x, k, w, ldw, n, out);
    recur::detail::gemm<T>(false, false, batch, n, k, T(1), x, ld, w, ldw, T(1), out, n);
}

// rows (B, n) of `bias` into out (B, n).
template <class T>
void fill_rows(T* out, const T* bias, std::size_t batch, std::size_t n) {
    for (std::size_t b = 0; b < batch; ++b) std::copy(bias, bias + n, out + b * n);
}

template <class T, class F>
void map_rows(T* y, const T* x, std::size_t batch, std::size_t n, std::size_t stride, F f) {
    for (std::size_t b = 0; b < batch; ++b) activate(y + b * n, x + b * stride, static_cast<const T*>(nullptr), n, f);
}

inline constexpr auto relu_fn = [](auto x) { return xsimd::max(x, decltype(x)(0)); };

// One step of stage s on input rows x (row stride ld).
template <class T>
void run(Stage<T>& s, const T* x, std::size_t ld, std::size_t batch) {
    const std::size_t g = s.gates();
    switch (s.kind) {
        case Kind::lstm:
        case Kind::rnn_tanh:
        case Kind::rnn_relu: {
            const std::size_t width = s.in + s.hidden;
            for (std::size_t b = 0; b < batch; ++b) std::copy(x + b * ld, x + b * ld + s.in, s.xh.data() + b * width);
            fill_rows(s.pre.data(), s.bias.data(), batch, g);
            // pre (B, G) += [x | h] (B, I + H) [W_ih^T; W_hh^T] (I + H, G)
            product(batch, g, width, s.xh.data(), width, s.w.data(), s.ldw, s.pre.data());
            for (std::size_t b = 0; b < batch; ++b) {
                T* h = s.xh.data() + b * width + s.in;  // h' is written over h: the product has read it
                T* pre = s.pre.data() + b * g;
                if (s.kind == Kind::lstm)
                    lstm_forward_row(pre, s.c.data() + b * s.hidden, s.c.data() + b * s.hidden, h, s.hidden);
                else if (s.kind == Kind::rnn_tanh)
                    activate(h, static_cast<const T*>(pre), static_cast<const T*>(nullptr), s.hidden, tanh_fn);
                else
                    activate(h, static_cast<const T*>(pre), static_cast<const T*>(nullptr), s.hidden, relu_fn);
            }
            s.output = s.xh.data() + s.in;
            s.stride = width;
            return;
        }
        case Kind::gru: {
            // xg (B, 3H) = x W_ih^T + b_ih;  hg (B, 3H) = h W_hh^T + b_hh;  then the gate rows.
            fill_rows(s.pre.data(), s.bias.data(), batch, g);
            product(batch, g, s.in, x, ld, s.w.data(), s.ldw, s.pre.data());
            fill_rows(s.pre_h.data(), s.bias_h.data(), batch, g);
            product(batch, g, s.hidden, s.y.data(), s.hidden, s.w.data() + s.in * s.ldw, s.ldw, s.pre_h.data());
            for (std::size_t b = 0; b < batch; ++b) {
                T* h = s.y.data() + b * s.hidden;
                gru_forward_row(s.pre.data() + b * g, s.pre_h.data() + b * g, h, s.act.data() + b * g, h, s.hidden);
            }
            s.output = s.y.data();
            s.stride = s.hidden;
            return;
        }
        case Kind::linear:
            fill_rows(s.y.data(), s.bias.data(), batch, s.out);
            product(batch, s.out, s.in, x, ld, s.w.data(), s.ldw, s.y.data());
            break;
        case Kind::relu:
            map_rows(s.y.data(), x, batch, s.out, ld, relu_fn);
            break;
        case Kind::tanh:
            map_rows(s.y.data(), x, batch, s.out, ld, tanh_fn);
            break;
        case Kind::sigmoid:
            map_rows(s.y.data(), x, batch, s.out, ld, sigmoid_fn);
            break;
    }
    s.output = s.y.data();
    s.stride = s.out;
}

}  // namespace

template <class T>
struct Streamer<T>::Impl {
    std::size_t batch = 1, input = 0;
    std::vector<Stage<T>> stages;
    std::vector<T> output_rows;  // contiguous copy of the last stage's rows when B > 1 and they are strided

    // Appends the stages of `layer` (at `where` in messages); `width` is the running feature count (0: unknown yet).
    void add(Layer<T>& layer, const std::string& where, std::size_t& width);
    template <class M>
    bool add_recurrent(Layer<T>& layer, Kind kind, const std::string& where, std::size_t& width);
    Stage<T>& push(Kind kind, std::size_t in, std::size_t hidden, std::size_t out,
                   std::vector<const Parameter<T>*> params);
};

template <class T>
Stage<T>& Streamer<T>::Impl::push(Kind kind, std::size_t in, std::size_t hidden, std::size_t out,
                                  std::vector<const Parameter<T>*> params) {
    Stage<T> s;
    s.kind = kind;
    s.in = in;
    s.hidden = hidden;
    s.out = out;
    s.params = std::move(params);
    s.versions.assign(s.params.size(), 0);
    const std::size_t g = s.gates();
    switch (kind) {
        case Kind::lstm:
        case Kind::rnn_tanh:
        case Kind::rnn_relu:
            s.ldw = padded_columns<T>(g);
            s.w.assign((in + hidden) * s.ldw, T(0));
            s.bias.resize(g);
            s.xh.assign(batch * (in + hidden), T(0));
            s.c.assign(kind == Kind::lstm ? batch * hidden : 0, T(0));
            s.pre.resize(batch * g);
            break;
        case Kind::gru:
            s.ldw = padded_columns<T>(g);
            s.w.assign((in + hidden) * s.ldw, T(0));
            s.bias.resize(g);
            s.bias_h.resize(g);
            s.pre.resize(batch * g);
            s.pre_h.resize(batch * g);
            s.act.resize(batch * g);
            s.y.assign(batch * hidden, T(0));
            break;
        case Kind::linear:
            s.ldw = padded_columns<T>(out);
            s.w.assign(in * s.ldw, T(0));
            s.bias.resize(out);
            s.y.resize(batch * out);
            break;
        default:
            s.y.resize(batch * out);
            break;
    }
    if (!s.params.empty()) lay_out(s);
    stages.push_back(std::move(s));
    return stages.back();
}

template <class T>
template <class M>
bool Streamer<T>::Impl::add_recurrent(Layer<T>& layer, Kind kind, const std::string& where, std::size_t& width) {
    auto* r = dynamic_cast<RecurrentLayer<M>*>(&layer);
    if (!r) return false;
    M& m = r->module();
    if (m.directions() != 1)
        throw value_error("Streamer: " + where + " is bidirectional; a stream runs forward in time only");
    for (std::size_t l = 0; l < m.num_layers(); ++l) {
        auto& cell = m.cell(l);
        const std::size_t in = cell.input_size(), hidden = cell.hidden_size();
        if (cell.state_sizes()[0] != hidden)
            throw value_error("Streamer: " + where + " has proj_size, which it does not step");
        if (width != 0 && width != in)
            throw value_error("Streamer: " + where + " takes " + std::to_string(in) +
                              " features, the layer before gives " + std::to_string(width));
        Kind k = kind;
        if constexpr (std::is_same_v<M, RNN<T>>)
            k = cell.nonlinearity() == Nonlinearity::relu ? Kind::rnn_relu : Kind::rnn_tanh;
        push(k, in, hidden, hidden, {&cell.weight_ih(), &cell.weight_hh(), cell.bias_ih(), cell.bias_hh()});
        if (input == 0 && stages.size() == 1) input = in;
        width = hidden;
    }
    return true;
}

template <class T>
void Streamer<T>::Impl::add(Layer<T>& layer, const std::string& where, std::size_t& width) {
    if (auto* seq = dynamic_cast<Sequential<T>*>(&layer)) {
        for (std::size_t k = 0; k < seq->size(); ++k)
            add((*seq)[k], where.empty() ? "layer " + std::to_string(k) : where + "." + std::to_string(k), width);
        return;
    }
    const std::string name = where.empty() ? "the model" : where;
    if (add_recurrent<LSTM<T>>(layer, Kind::lstm, name, width) ||
        add_recurrent<GRU<T>>(layer, Kind::gru, name, width) ||
        add_recurrent<RNN<T>>(layer, Kind::rnn_tanh, name, width))
        return;
    if (auto* lin = dynamic_cast<Linear<T>*>(&layer)) {
        if (width != 0 && width != lin->in_features())
            throw value_error("Streamer: " + name + " (Linear) takes " + std::to_string(lin->in_features()) +
                              " features, the layer before gives " + std::to_string(width));
        if (stages.empty()) input = lin->in_features();
        push(Kind::linear, lin->in_features(), 0, lin->out_features(), {&lin->weight(), lin->bias()});
        width = lin->out_features();
        return;
    }
    if (dynamic_cast<Dropout<T>*>(&layer)) return;  // the identity in inference
    Kind k;
    if (dynamic_cast<ReLU<T>*>(&layer))
        k = Kind::relu;
    else if (dynamic_cast<Tanh<T>*>(&layer))
        k = Kind::tanh;
    else if (dynamic_cast<Sigmoid<T>*>(&layer))
        k = Kind::sigmoid;
    else
        throw value_error("Streamer: " + name +
                          " is not a layer it steps (RecurrentLayer of LSTM, GRU or RNN, Linear, "
                          "ReLU, Tanh, Sigmoid, Dropout)");
    if (width == 0)
        throw value_error("Streamer: " + name + " is an activation before any layer that fixes the input width");
    push(k, width, 0, width, {});
}

template <class T>
Streamer<T>::Streamer(Layer<T>& model, std::size_t batch) : impl_(std::make_unique<Impl>()) {
    if (batch == 0) throw value_error("Streamer: batch must be >= 1, got 0");
    impl_->batch = batch;
    std::size_t width = 0;
    impl_->add(model, "", width);
    if (impl_->stages.empty()) throw value_error("Streamer: the model has no layers to step");
    impl_->output_rows.resize(batch * impl_->stages.back().out);
}

template <class T>
Streamer<T>::~Streamer() = default;

template <class T>
std::span<const T> Streamer<T>::step(std::span<const T> x) {
    Impl& m = *impl_;
    if (x.size() != m.batch * m.input)
        throw shape_error("Streamer::step: expected " + std::to_string(m.batch) + " x " + std::to_string(m.input) +
                          " values, got " + std::to_string(x.size()));
    const T* in = x.data();
    std::size_t ld = m.input;
    for (auto& s : m.stages) {
        for (std::size_t k = 0; k < s.params.size(); ++k)
            if (s.params[k] && s.params[k]->version() != s.versions[k]) {
                lay_out(s);  // the weights changed since the last layout
                break;
            }
        run(s, in, ld, m.batch);
        in = s.output;
        ld = s.stride;
    }
    const std::size_t o = m.stages.back().out;
    if (ld == o || m.batch == 1) return {in, m.batch * o};
    for (std::size_t b = 0; b < m.batch; ++b) std::copy(in + b * ld, in + b * ld + o, m.output_rows.data() + b * o);
    return {m.output_rows.data(), m.batch * o};
}

template <class T>
xt::xarray<T> Streamer<T>::step(const xt::xarray<T>& x) {
    const auto y = step(std::span<const T>(x.data(), x.size()));
    xt::xarray<T> out = xt::xarray<T>::from_shape({impl_->batch, output_size()});
    std::copy(y.begin(), y.end(), out.data());
    return out;
}

template <class T>
void Streamer<T>::reset() {
    for (auto& s : impl_->stages) {
        if (s.kind == Kind::gru) std::fill(s.y.begin(), s.y.end(), T(0));
        std::fill(s.xh.begin(), s.xh.end(), T(0));
        std::fill(s.c.begin(), s.c.end(), T(0));
    }
}

template <class T>
void Streamer<T>::reset(std::size_t row) {
    if (row >= impl_->batch)
        throw index_error("Streamer::reset: row " + std::to_string(row) + " is out of range for a batch of " +
                          std::to_string(impl_->batch));
    for (auto& s : impl_->stages) {
        const std::size_t h = s.hidden;
        if (s.kind == Kind::gru) std::fill_n(s.y.data() + row * h, h, T(0));
        if (!s.xh.empty()) std::fill_n(s.xh.data() + row * (s.in + h) + s.in, h, T(0));
        if (!s.c.empty()) std::fill_n(s.c.data() + row * h, h, T(0));
    }
}

template <class T>
std::size_t Streamer<T>::batch() const {
    return impl_->batch;
}
template <class T>
std::size_t Streamer<T>::input_size() const {
    return impl_->input;
}
template <class T>
std::size_t Streamer<T>::output_size() const {
    return impl_->stages.back().out;
}

template class Streamer<float>;
template class Streamer<double>;

}  // namespace recur::nn
