// recur/nn/attention.hpp — attention over a padded memory: Luong (dot, general) and Bahdanau.
//
//   nn::DotAttention<float> attend({.query_size = 64, .score = nn::LuongScore::general});
//   auto [context, weights] = attend(decoder_out, encoder_out, source_lengths);
//   // decoder_out (B, Tq, 64) or (B, 64); encoder_out (B, T, 64); lengths (B) in [0, T]
//   // context (B, Tq, 64) or (B, 64); weights (B, Tq, T) or (B, T), 0 past each row's length
//
// Both modules score every query against every memory step, normalise the scores with a
// softmax over the valid steps of each row (masked_softmax with the lengths: padded steps get
// weight 0 and gradient 0; a row of length 0 gets all-zero weights and a zero context), and
// return the weighted sum of the memory steps. The memory serves as keys and values.
//
// Letters: B batch, T memory steps, Tq queries, Hq query width, Hk memory width, A attention width.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "recur/nn/layers.hpp"
#include "recur/nn/module.hpp"
#include "recur/ops.hpp"

namespace recur::nn {

/// What an attention call returns.
template <class T>
struct AttentionOutput {
    Var<T> context;  // (B, Tq, Hk), or (B, Hk) for one query per row
    Var<T> weights;  // (B, Tq, T), or (B, T); each valid row sums to 1
};

/// Luong et al. 2015's multiplicative scores.
enum class LuongScore {
    dot,  // s = q . k (Hq = Hk)
    general,  // s = q W k, parameter "weight" (Hq, Hk)
};

struct DotAttentionOptions {
    std::size_t query_size = 0;  // Hq
    std::size_t key_size = 0;  // Hk, the memory width; 0: equal to query_size
    LuongScore score = LuongScore::dot;
    bool scaled = false;  // divide the scores by sqrt(Hq) (scaled dot-product attention)
};

/// Luong attention. "general" has one parameter, "weight" (Hq, Hk), initialised like a
/// Linear(Hk, Hq) weight: U(-1/sqrt(Hk), 1/sqrt(Hk)). "dot" has none.
template <class T>
class DotAttention : public Module<T> {
public:
    explicit DotAttention(const DotAttentionOptions& options);
    /// query (B, Hq) or (B, Tq, Hq); memory (B, T, Hk); lengths empty (every step valid) or B
    /// values in [0, T]. shape_error / index_error naming DotAttention on a mismatch.
    AttentionOutput<T> forward(const Var<T>& query, const Var<T>& memory,
                               const std::vector<std::int64_t>& lengths = {});
    AttentionOutput<T> operator()(const Var<T>& query, const Var<T>& memory,
                                  const std::vector<std::int64_t>& lengths = {}) {
        return forward(query, memory, lengths);
    }
    const DotAttentionOptions& options() const { return o_; }
    Parameter<T>* weight() { return weight_; }  // null for "dot"

private:
    DotAttentionOptions o_;
    Parameter<T>* weight_ = nullptr;
};

struct AdditiveAttentionOptions {
    std::size_t query_size = 0;  // Hq
    std::size_t key_size = 0;  // Hk; 0: equal to query_size
    std::size_t attention_size = 0;  // A; 0: equal to query_size
};

/// Bahdanau et al. 2015's additive scores: s = Va(tanh(Wa(q) + Ua(k))), with the children of
/// PyTorch's seq2seq tutorial (BahdanauAttention), so a state dict moves between the two:
/// "Wa" Linear(Hq, A), "Ua" Linear(Hk, A), "Va" Linear(A, 1), each with a bias ("Wa.weight",
/// "Wa.bias", ...). Ua's bias only adds to Wa's and Va's shifts every score of a row alike, so
/// softmax cancels it: its gradient is always 0 (as in PyTorch).
/// Memory use: the (B, Tq, T, A) sum inside tanh is materialised.
template <class T>
class AdditiveAttention : public Module<T> {
public:
    explicit AdditiveAttention(const AdditiveAttentionOptions& options);
    /// As DotAttention::forward; shape_error / index_error naming AdditiveAttention.
    AttentionOutput<T> forward(const Var<T>& query, const Var<T>& memory,
                               const std::vector<std::int64_t>& lengths = {});
    AttentionOutput<T> operator()(const Var<T>& query, const Var<T>& memory,
                                  const std::vector<std::int64_t>& lengths = {}) {
        return forward(query, memory, lengths);
    }
    const AdditiveAttentionOptions& options() const { return o_; }

private:
    AdditiveAttentionOptions o_;
    Linear<T> wa_, ua_, va_;
};

extern template class DotAttention<float>;
extern template class DotAttention<double>;
extern template class AdditiveAttention<float>;
extern template class AdditiveAttention<double>;

}  // namespace recur::nn
