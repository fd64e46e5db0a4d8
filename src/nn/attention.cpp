// Attention modules, composed from primitives: bmm for the scores and the context,
// masked_softmax for the weights over each row's valid memory steps.
#include "recur/nn/attention.hpp"

#include <cmath>
#include <string>

#include "recur/nn/init.hpp"

namespace recur::nn {

namespace {

/// A query as (B, Tq, Hq), checked against the memory (B, T, Hk) and the lengths.
template <class T>
struct Queries {
    Var<T> q;  // (B, Tq, Hq)
    bool single = false;  // the query was (B, Hq)
    std::size_t batch = 0, steps = 0, queries = 0;
};
template <class T>
Queries<T> queries_of(const char* module, const Var<T>& query, const Var<T>& memory, std::size_t query_size,
                      std::size_t key_size, const std::vector<std::int64_t>& lengths) {
    query.check(module);
    memory.check(module);
    const Shape qs = query.shape(), ms = memory.shape();
    if (ms.size() != 3 || ms[2] != key_size)
        throw shape_error(std::string(module) + ": memory must be (B, T, " + std::to_string(key_size) + "), got " +
                          shape_str(ms));
    if ((qs.size() != 2 && qs.size() != 3) || qs.back() != query_size || qs[0] != ms[0])
        throw shape_error(std::string(module) + ": query must be (B, " + std::to_string(query_size) + ") or (B, Tq, " +
                          std::to_string(query_size) + ") with the memory's B, got query " + shape_str(qs) +
                          " and memory " + shape_str(ms));
    if (!lengths.empty()) {
        if (lengths.size() != ms[0])
            throw shape_error(std::string(module) + ": " + std::to_string(lengths.size()) +
                              " lengths for a memory of batch " + std::to_string(ms[0]) + " " + shape_str(ms));
        for (std::size_t b = 0; b < lengths.size(); ++b)
            if (lengths[b] < 0 || static_cast<std::size_t>(lengths[b]) > ms[1])
                throw index_error(std::string(module) + ": length " + std::to_string(lengths[b]) + " of row " +
                                  std::to_string(b) + " is outside [0, " + std::to_string(ms[1]) + "] for memory " +
                                  shape_str(ms));
    }
    Queries<T> r;
    r.single = qs.size() == 2;
    r.batch = ms[0];
    r.steps = ms[1];
    r.queries = r.single ? 1 : qs[1];
    r.q =
        r.single ? reshape(query, {static_cast<std::ptrdiff_t>(qs[0]), 1, static_cast<std::ptrdiff_t>(qs[1])}) : query;
    return r;
}

/// Weights from scores (B, Tq, T) and the context they give, in the query's layout.
template <class T>
AttentionOutput<T> attend(const Queries<T>& q, const Var<T>& scores, const Var<T>& memory,
                          const std::vector<std::int64_t>& lengths) {
    Var<T> weights = lengths.empty() ? softmax(scores, -1) : masked_softmax(scores, lengths);
    Var<T> context = bmm(weights, memory);  // (B, Tq, Hk)
    if (!q.single) return {std::move(context), std::move(weights)};
    const auto b = static_cast<std::ptrdiff_t>(q.batch);
    return {reshape(context, {b, -1}), reshape(weights, {b, static_cast<std::ptrdiff_t>(q.steps)})};
}

std::size_t or_default(std::size_t v, std::size_t fallback) { return v == 0 ? fallback : v; }

}  // namespace

// ---- DotAttention: s = q . k or q W k -----------------------------------------------------------

template <class T>
DotAttention<T>::DotAttention(const DotAttentionOptions& options) : o_(options) {
    o_.key_size = or_default(o_.key_size, o_.query_size);
    if (o_.query_size == 0) throw value_error("DotAttention: query_size must be positive");
    if (o_.score == LuongScore::dot && o_.key_size != o_.query_size)
        throw value_error("DotAttention: the dot score needs key_size == query_size, got " +
                          std::to_string(o_.key_size) + " and " + std::to_string(o_.query_size) +
                          " (use LuongScore::general)");
    if (o_.score == LuongScore::general) {
        const double k = 1.0 / std::sqrt(static_cast<double>(o_.key_size));
        weight_ = &this->register_parameter("weight", xt::xarray<T>::from_shape({o_.query_size, o_.key_size}));
        init::uniform(*weight_, -k, k);
    }
}

// keys = memory (dot) or memory W^T (general), (B, T, Hq);  scores = q keys^T (B, Tq, T)
template <class T>
AttentionOutput<T> DotAttention<T>::forward(const Var<T>& query, const Var<T>& memory,
                                            const std::vector<std::int64_t>& lengths) {
    const Queries<T> q = queries_of("DotAttention", query, memory, o_.query_size, o_.key_size, lengths);
    Var<T> keys = weight_ ? linear(memory, memory.tape().bind(*weight_)) : memory;
    Var<T> scores = bmm(q.q, transpose(keys, 1, 2));
    if (o_.scaled) scores = scores * static_cast<T>(1.0 / std::sqrt(static_cast<double>(o_.query_size)));
    return attend(q, scores, memory, lengths);
}

// ---- AdditiveAttention: s = Va(tanh(Wa(q) + Ua(k))) ---------------------------------------------

template <class T>
AdditiveAttention<T>::AdditiveAttention(const AdditiveAttentionOptions& options)
    : o_{options.query_size, or_default(options.key_size, options.query_size),
         or_default(options.attention_size, options.query_size)},
      wa_(o_.query_size == 0 ? 1 : o_.query_size, o_.attention_size == 0 ? 1 : o_.attention_size),
      ua_(o_.key_size == 0 ? 1 : o_.key_size, o_.attention_size == 0 ? 1 : o_.attention_size),
      va_(o_.attention_size == 0 ? 1 : o_.attention_size, 1) {
    if (o_.query_size == 0) throw value_error("AdditiveAttention: query_size must be positive");
    this->register_module("Wa", wa_);
    this->register_module("Ua", ua_);
    this->register_module("Va", va_);
}

// Wa(q) (B, Tq, 1, A) + Ua(k) (B, 1, T, A) -> tanh -> Va -> scores (B, Tq, T)
template <class T>
AttentionOutput<T> AdditiveAttention<T>::forward(const Var<T>& query, const Var<T>& memory,
                                                 const std::vector<std::int64_t>& lengths) {
    const Queries<T> q = queries_of("AdditiveAttention", query, memory, o_.query_size, o_.key_size, lengths);
    const auto b = static_cast<std::ptrdiff_t>(q.batch), tq = static_cast<std::ptrdiff_t>(q.queries),
               t = static_cast<std::ptrdiff_t>(q.steps), a = static_cast<std::ptrdiff_t>(o_.attention_size);
    Var<T> projected_queries = reshape(wa_(q.q), {b, tq, 1, a});
    Var<T> projected_keys = reshape(ua_(memory), {b, 1, t, a});
    Var<T> scores = reshape(va_(tanh(projected_queries + projected_keys)), {b, tq, t});
    return attend(q, scores, memory, lengths);
}

template class DotAttention<float>;
template class DotAttention<double>;
template class AdditiveAttention<float>;
template class AdditiveAttention<double>;

}  // namespace recur::nn
