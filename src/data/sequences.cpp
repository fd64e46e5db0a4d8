// Padding variable-length sequences into one batch (see recur/data.hpp).
#include <algorithm>

#include "recur/data.hpp"

namespace recur::data {

// seqs[b] (T_b, F) or (T_b,) -> data (B, T_max, F) (or (T_max, B, F)), lengths[b] = T_b.
template <class T>
PaddedBatch<T> pad_sequences(const std::vector<xt::xarray<T>>& seqs, std::type_identity_t<T> pad_value,
                             bool batch_first) {
    if (seqs.empty()) throw value_error("pad_sequences: no sequences to pad");
    const std::size_t B = seqs.size();
    std::size_t F = 0, T_max = 0;
    for (std::size_t b = 0; b < B; ++b) {
        const auto& s = seqs[b];
        if (s.dimension() != 1 && s.dimension() != 2)
            throw shape_error("pad_sequences: sequence " + std::to_string(b) + " must be (T,) or (T, F), got shape " +
                              shape_str(s.shape()));
        const std::size_t f = s.dimension() == 2 ? s.shape(1) : 1;
        if (s.shape(0) == 0)
            throw value_error("pad_sequences: sequence " + std::to_string(b) + " has length 0 (shape " +
                              shape_str(s.shape()) + "); recurrent layers need at least one step");
        if (b == 0) {
            F = f;
        } else if (f != F) {
            throw shape_error("pad_sequences: sequence " + std::to_string(b) + " of shape " + shape_str(s.shape()) +
                              " has " + std::to_string(f) + " features, sequence 0 of shape " +
                              shape_str(seqs[0].shape()) + " has " + std::to_string(F));
        }
        T_max = std::max(T_max, s.shape(0));
    }
    if (F == 0)
        throw shape_error("pad_sequences: sequences of shape " + shape_str(seqs[0].shape()) + " have no features");

    PaddedBatch<T> out;
    out.lengths.resize(B);
    out.data = batch_first ? xt::xarray<T>::from_shape({B, T_max, F}) : xt::xarray<T>::from_shape({T_max, B, F});
    std::fill(out.data.begin(), out.data.end(), pad_value);
    T* d = out.data.data();
    for (std::size_t b = 0; b < B; ++b) {
        const std::size_t len = seqs[b].shape(0);
        out.lengths[b] = static_cast<std::int64_t>(len);
        const T* s = seqs[b].data();
        if (batch_first) {
            std::copy_n(s, len * F, d + b * T_max * F);
        } else {
            for (std::size_t t = 0; t < len; ++t) std::copy_n(s + t * F, F, d + (t * B + b) * F);
        }
    }
    return out;
}

template PaddedBatch<float> pad_sequences<float>(const std::vector<xt::xarray<float>>&, float, bool);
template PaddedBatch<double> pad_sequences<double>(const std::vector<xt::xarray<double>>&, double, bool);
template PaddedBatch<std::int64_t> pad_sequences<std::int64_t>(const std::vector<xt::xarray<std::int64_t>>&,
                                                               std::int64_t, bool);

}  // namespace recur::data
