// recur/data.hpp — preparing data for training: windows over a series, scalers, splits,
// mini-batches, padding, vocabularies, CSV columns and a synthetic series.
//
// Everything here works on plain xt::xarray values (no tape). Arrays are row-major; "rows"
// or "samples" are the first axis, "features" the last axis. Letters used below:
// N series length or sample count, F features, M windows, B batch, T time.
//
// Reproducibility: every random choice (shuffles, splits, noise) comes from a
// std::mt19937_64 seeded by the caller, and the draws from it are recur's own code (not
// std::shuffle or std::*_distribution, whose algorithms differ between standard
// libraries), so a seed gives the same result on every platform.
//
// Errors: bad sizes or options raise value_error, incompatible shapes shape_error,
// out-of-range indices or unknown tokens index_error, unreadable or malformed files
// io_error; every message names the function and the sizes or positions involved.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <xtensor/xarray.hpp>

#include "recur/error.hpp"

namespace recur::data {

// ---- Windows over a series ----------------------------------------------------------------

/// Inputs and targets cut from a series: X (M, window, F), y (M, horizon).
template <class T>
struct Windows {
    xt::xarray<T> X;
    xt::xarray<T> y;
};

/// Cuts a series into overlapping windows for sequence-to-one forecasting.
///
/// `series` is (N,) (one feature, F = 1) or (N, F). Window m starts at s = m * stride:
///   X[m, t, f] = series[s + t, f]                       t < window
///   y[m, h]    = series[s + window + h, target_column]   h < horizon
/// so horizon = 1 is one-step-ahead prediction and horizon = k the next k values of the
/// target feature. M = (N - window - horizon) / stride + 1 full windows (a tail too short
/// for a full window and its targets is dropped). auto [X, y] = make_windows(s, 24);
///
/// window, horizon or stride 0, or N < window + horizon: value_error. Rank other than 1
/// or 2: shape_error. target_column >= F: index_error.
template <class T>
Windows<T> make_windows(const xt::xarray<T>& series, std::size_t window, std::size_t horizon = 1,
                        std::size_t stride = 1, std::size_t target_column = 0);

/// sin(x) + N(0, noise_std^2) on n_samples points evenly spaced over [x_begin, x_end]
/// (both ends included, like numpy.linspace; one sample is at x_begin). Shape (n_samples,).
/// noise_std = 0 gives the clean curve. n_samples 0, a negative or non-finite noise_std, or
/// non-finite ends: value_error.
template <class T = float>
xt::xarray<T> noisy_sine(std::size_t n_samples, double x_begin, double x_end, double noise_std, std::uint64_t seed);

// ---- Scalers ------------------------------------------------------------------------------
//
// Both scalers work per feature, like scikit-learn's: the feature axis is the last one and
// every other axis indexes samples, so (N, F), (B, T, F) and (N,) (one feature) all work.
// fit rejects empty data and any NaN or infinity (value_error naming the scaler and the
// element's index); transform and inverse_transform do the same, require a fitted scaler
// (value_error otherwise) and the fitted number of features (shape_error otherwise), and
// return an array of the input's shape. Statistics are accumulated in double.

/// Scales each feature linearly onto [range_min, range_max] (default [0, 1]), like
/// sklearn.preprocessing.MinMaxScaler, and reports its attributes:
///   data_range_f = data_max_f - data_min_f
///   scale_f = (range_max - range_min) / data_range_f,  min_f = range_min - data_min_f * scale_f
///   transform:         (x - data_min_f) / data_range_f * (range_max - range_min) + range_min
///   inverse_transform: (x - range_min) / (range_max - range_min) * data_range_f + data_min_f
/// transform equals scikit-learn's x * scale_f + min_f up to rounding, and is computed in
/// double in this form so that data_min and data_max land exactly on 0 and 1 (default range).
/// A constant feature (data_max == data_min) is divided by 1 instead of 0, so it maps to
/// range_min. Values outside the fitted range map outside [range_min, range_max] (no
/// clipping).
template <class T>
class MinMaxScaler {
public:
    /// range_min >= range_max or non-finite: value_error.
    explicit MinMaxScaler(T range_min = T(0), T range_max = T(1));

    MinMaxScaler& fit(const xt::xarray<T>& a);
    xt::xarray<T> transform(const xt::xarray<T>& a) const;
    xt::xarray<T> fit_transform(const xt::xarray<T>& a);
    xt::xarray<T> inverse_transform(const xt::xarray<T>& a) const;
    /// Every element of `a` (any shape) taken as a value of feature `feature` — e.g. a
    /// prediction (M, 1) of the target column of a scaler fitted on (N, F).
    /// feature >= n_features(): index_error.
    xt::xarray<T> transform_feature(const xt::xarray<T>& a, std::size_t feature) const;
    xt::xarray<T> inverse_transform_feature(const xt::xarray<T>& a, std::size_t feature) const;

    bool fitted() const { return n_features_ > 0; }
    std::size_t n_features() const { return n_features_; }
    std::size_t n_samples_seen() const { return n_samples_; }
    T range_min() const { return range_min_; }
    T range_max() const { return range_max_; }
    /// Per-feature statistics, shape (F,); before fit: value_error.
    const xt::xarray<T>& data_min() const;
    const xt::xarray<T>& data_max() const;
    const xt::xarray<T>& data_range() const;  // data_max - data_min (as computed, 0 if constant)
    const xt::xarray<T>& scale() const;
    const xt::xarray<T>& min() const;

private:
    void check(const xt::xarray<T>& a, const char* fn) const;
    T range_min_, range_max_;
    std::size_t n_features_ = 0, n_samples_ = 0;
    xt::xarray<T> data_min_, data_max_, data_range_, scale_, min_;
};

/// Standardises each feature to zero mean and unit variance, like
/// sklearn.preprocessing.StandardScaler: (x - mean_f) / scale_f with the population
/// standard deviation (divisor N, numpy's default ddof = 0). A constant feature
/// (max == min) gets mean = that value exactly, var 0 and scale 1, so it maps to 0.
/// with_mean = false skips centering (mean still reported); with_std = false uses scale 1.
template <class T>
class StandardScaler {
public:
    explicit StandardScaler(bool with_mean = true, bool with_std = true);

    StandardScaler& fit(const xt::xarray<T>& a);
    xt::xarray<T> transform(const xt::xarray<T>& a) const;
    xt::xarray<T> fit_transform(const xt::xarray<T>& a);
    xt::xarray<T> inverse_transform(const xt::xarray<T>& a) const;
    /// As MinMaxScaler::transform_feature.
    xt::xarray<T> transform_feature(const xt::xarray<T>& a, std::size_t feature) const;
    xt::xarray<T> inverse_transform_feature(const xt::xarray<T>& a, std::size_t feature) const;

    bool fitted() const { return n_features_ > 0; }
    std::size_t n_features() const { return n_features_; }
    std::size_t n_samples_seen() const { return n_samples_; }
    /// Per-feature statistics, shape (F,); before fit: value_error.
    const xt::xarray<T>& mean() const;
    const xt::xarray<T>& var() const;
    const xt::xarray<T>& scale() const;

private:
    void check(const xt::xarray<T>& a, const char* fn) const;
    bool with_mean_, with_std_;
    std::size_t n_features_ = 0, n_samples_ = 0;
    xt::xarray<T> mean_, var_, scale_;
};

// ---- Splits and row selection ---------------------------------------------------------------

/// A half-open range [begin, end) of row indices.
struct IndexRange {
    std::size_t begin = 0, end = 0;
    std::size_t size() const { return end - begin; }
    bool operator==(const IndexRange&) const = default;
};

/// Chronological split of n rows into consecutive parts (no shuffling), e.g. {0.8, 0.2} for
/// train/test or {0.7, 0.15, 0.15} for train/validation/test. Fractions must be > 0 and sum
/// to 1 (within 1e-6). Part k ends at floor(n * (f_0 + ... + f_k)) (the last part at n),
/// so split_sequential(10, {0.8, 0.2}) is {[0, 8), [8, 10)} and with 11 rows the remainder
/// goes to the later parts ({[0, 8), [8, 11)}). Fewer than two fractions, a bad fraction or
/// a part left empty: value_error.
std::vector<IndexRange> split_sequential(std::size_t n, const std::vector<double>& fractions);

/// The same split applied to the first axis of `a`: auto parts = split_sequential(s, {0.8, 0.2}).
/// Rank 0: shape_error.
template <class T>
std::vector<xt::xarray<T>> split_sequential(const xt::xarray<T>& a, const std::vector<double>& fractions);

/// Rows of `a` (along the first axis) at `indices`, in that order (repeats allowed): shape
/// (indices.size(), ...). Rank 0: shape_error; an index >= a.shape(0): index_error.
template <class T>
xt::xarray<T> take_rows(const xt::xarray<T>& a, const std::vector<std::size_t>& indices);

/// The same for a list (e.g. per-sequence lengths or variable-length sequences).
template <class V>
std::vector<V> take_rows(const std::vector<V>& v, const std::vector<std::size_t>& indices) {
    std::vector<V> out;
    out.reserve(indices.size());
    for (std::size_t k = 0; k < indices.size(); ++k) {
        if (indices[k] >= v.size())
            throw index_error("take_rows: index " + std::to_string(indices[k]) + " at position " + std::to_string(k) +
                              " is out of range for a list of " + std::to_string(v.size()) + " items");
        out.push_back(v[indices[k]]);
    }
    return out;
}

/// Shuffled train/test row indices, as scikit-learn's ShuffleSplit: a seeded permutation of
/// 0..n-1; its first n_test = ceil(test_fraction * n) entries are the test rows, the rest
/// the training rows (both in permutation order).
struct SplitIndices {
    std::vector<std::size_t> train, test;
};
/// test_fraction outside (0, 1) or a part left empty: value_error.
SplitIndices train_test_indices(std::size_t n, double test_fraction, std::uint64_t seed);

template <class T>
struct TrainTestSplit {
    xt::xarray<T> X_train, X_test, y_train, y_test;
};

/// Seeded shuffled split of paired X and y (rows along the first axis), like
/// sklearn.model_selection.train_test_split(X, y, test_size=test_fraction, random_state=seed):
///   auto [X_train, X_test, y_train, y_test] = train_test_split(X, y, 0.2, 42);
/// Rows of X and y stay paired. Rank 0 or different first-axis sizes: shape_error; a bad
/// test_fraction or an empty part: value_error. For more arrays, or X and y of different
/// element types (e.g. int64 labels), apply train_test_indices with take_rows to each.
template <class T>
TrainTestSplit<T> train_test_split(const xt::xarray<T>& X, const xt::xarray<T>& y, double test_fraction,
                                   std::uint64_t seed);

// ---- Mini-batches ---------------------------------------------------------------------------

/// Index batches over n_samples rows, epoch by epoch (like a PyTorch DataLoader's sampler):
///
///   BatchIterator batches(X.shape(0), 32, /*shuffle=*/true, /*seed=*/7);
///   for (std::size_t e = 0; e < epochs; ++e)
///       for (const auto& idx : batches.epoch(e)) {
///           auto xb = gather_batch(X, idx), yb = gather_batch(y, idx);  // (B, ...)
///           ...
///       }
///
/// With shuffle, epoch e uses the permutation drawn from a generator seeded with
/// (seed, e): each epoch has a different order, the same (seed, e) always gives the same
/// order, and any epoch can be reproduced on its own (e.g. when resuming from a
/// checkpoint). Without shuffle every epoch is 0, 1, ..., n-1. Batches hold batch_size
/// indices; the last one holds the remainder unless drop_last, which drops it.
/// batch_size 0, n_samples 0, or drop_last with fewer samples than one batch: value_error.
class BatchIterator {
public:
    BatchIterator(std::size_t n_samples, std::size_t batch_size, bool shuffle = true, std::uint64_t seed = 0,
                  bool drop_last = false);

    /// All batches of epoch e, in order.
    std::vector<std::vector<std::size_t>> epoch(std::size_t e) const;
    /// The sample order of epoch e (all n_samples indices, before cutting into batches).
    std::vector<std::size_t> order(std::size_t e) const;
    /// epoch(current_epoch()), then advances the epoch counter (starts at 0).
    std::vector<std::vector<std::size_t>> next_epoch() { return epoch(epoch_++); }
    std::size_t current_epoch() const { return epoch_; }
    void set_epoch(std::size_t e) { epoch_ = e; }

    /// Batches per epoch: ceil(n / batch_size), or floor with drop_last.
    std::size_t num_batches() const;
    std::size_t n_samples() const { return n_; }
    std::size_t batch_size() const { return batch_size_; }
    bool shuffle() const { return shuffle_; }
    bool drop_last() const { return drop_last_; }

private:
    std::size_t n_, batch_size_;
    bool shuffle_;
    std::uint64_t seed_;
    bool drop_last_;
    std::size_t epoch_ = 0;
};

/// The batch of rows `indices` of X: (B, ...) with B = indices.size(). As take_rows, with
/// errors naming gather_batch; an empty index list: value_error.
template <class T>
xt::xarray<T> gather_batch(const xt::xarray<T>& X, const std::vector<std::size_t>& indices);

// ---- Padding variable-length sequences ------------------------------------------------------

/// A padded batch and the true length of each sequence (in the order given), as the
/// recurrent layers take them.
template <class T>
struct PaddedBatch {
    xt::xarray<T> data;  // (B, T_max, F), or (T_max, B, F) if !batch_first
    std::vector<std::int64_t> lengths;  // (B)
};

/// Stacks sequences of shapes (T_i, F) or (T_i,) (F = 1) into one array padded at the end
/// with pad_value: auto [x, lengths] = pad_sequences(seqs) (or pad_sequences(seqs, -1)).
/// No sequences, or a sequence of length 0: value_error. Rank other than 1 or 2, or
/// different feature counts: shape_error.
template <class T>
PaddedBatch<T> pad_sequences(const std::vector<xt::xarray<T>>& seqs, std::type_identity_t<T> pad_value = T(0),
                             bool batch_first = true);

// ---- Vocabulary -----------------------------------------------------------------------------

enum class TokenOrder { sorted, first_appearance };

struct VocabularyOptions {
    std::vector<std::string> specials{};  // e.g. {"<pad>", "<unk>"}: ids 0, 1, ...
    std::string unk{};  // token for misses; empty: misses are errors
    TokenOrder order = TokenOrder::sorted;
};

/// A map between tokens (strings) and ids 0..size()-1 for embedding layers.
///
/// Ids: special tokens first, in the order given, then the other tokens in sorted order
/// (std::string byte order, which for UTF-8 is code-point order; like Python's
/// sorted(set(text))) or, with TokenOrder::first_appearance, in order of first appearance.
/// Either way the ids depend only on the set (or sequence) of tokens, never on hashing.
///
/// A character vocabulary is built from a text and splits it into UTF-8 characters (code
/// points; a byte that is not valid UTF-8 becomes a one-byte token, so any string
/// round-trips). encode(text) always splits into characters; encode(tokens) maps tokens.
///
/// Unknown tokens: if options.unk names a token (added to the specials if it is not one),
/// encode and id map misses to its id; otherwise they raise index_error naming the token
/// and its position.
class Vocabulary {
public:
    using Options = VocabularyOptions;

    /// An empty vocabulary (only useful to assign to or load into).
    Vocabulary() = default;
    /// Characters of `text`. Empty vocabulary (no text and no specials): value_error.
    static Vocabulary from_text(std::string_view text, const Options& options = {});
    /// Tokens of a list (duplicates counted once; a token equal to a special is that special).
    /// An empty token, duplicate specials or an empty vocabulary: value_error.
    static Vocabulary from_tokens(const std::vector<std::string>& tokens, const Options& options = {});

    std::size_t size() const { return tokens_.size(); }
    bool contains(std::string_view token) const;
    /// Id of a token (unk's id for a miss, if configured; otherwise index_error).
    std::int64_t id(std::string_view token) const;
    /// Token of an id; id outside [0, size()): index_error.
    const std::string& token(std::int64_t id) const;
    const std::vector<std::string>& tokens() const { return tokens_; }
    std::size_t num_specials() const { return num_specials_; }
    /// The unknown token's id, if configured.
    std::optional<std::int64_t> unk_id() const { return unk_id_; }

    /// Ids of the characters of `text`.
    std::vector<std::int64_t> encode(std::string_view text) const;
    /// Ids of tokens.
    std::vector<std::int64_t> encode(const std::vector<std::string>& tokens) const;
    std::vector<std::int64_t> encode(std::initializer_list<std::string> tokens) const {
        return encode(std::vector<std::string>(tokens));
    }
    /// Tokens of ids joined with `separator` (empty for characters). An id outside
    /// [0, size()): index_error naming it and its position.
    std::string decode(const std::vector<std::int64_t>& ids, std::string_view separator = "") const;
    std::vector<std::string> decode_tokens(const std::vector<std::int64_t>& ids) const;

    /// Writes a small text file (atomically): a "recur-vocabulary 1" line, "specials K",
    /// "unk ID" or "unk none", then one token per line in id order with backslash escapes
    /// (\\, \n, \r, \t, \xHH for other control bytes). Failure: io_error naming the file.
    void save(const std::string& path) const;
    /// Reads a file written by save; a missing or malformed file: io_error naming the file
    /// and line.
    static Vocabulary load(const std::string& path);

    bool operator==(const Vocabulary& o) const {
        return tokens_ == o.tokens_ && num_specials_ == o.num_specials_ && unk_id_ == o.unk_id_;
    }

private:
    static Vocabulary build(const std::vector<std::string>& tokens, const Options& options, const char* fn);
    void add(const std::string& token);
    std::int64_t lookup(std::string_view token, std::size_t position, const char* fn) const;

    std::vector<std::string> tokens_;
    std::map<std::string, std::int64_t, std::less<>> ids_;
    std::size_t num_specials_ = 0;
    std::optional<std::int64_t> unk_id_;
};

// ---- CSV ------------------------------------------------------------------------------------

struct CsvOptions {
    char delimiter = ',';
    bool header = true;  // the first non-blank record names the columns
    char quote = '"';
};

/// Reads numeric columns of a CSV file (RFC 4180: quoted fields may hold delimiters,
/// doubled quotes and line breaks). LF, CRLF and CR line endings, a UTF-8 byte-order mark
/// and blank lines (including a trailing one) are accepted; blank lines are skipped.
/// Fields are trimmed of spaces and tabs and parsed as decimal numbers ("1.5", "-2e3",
/// "+4"); "nan", "NaN", "inf", "-inf" parse too (NaN is rejected later by the scalers).
/// Columns are chosen by header name (exact match after trimming) or by 0-based index.
///
/// A missing or unreadable file, a name not in the header, an ambiguous name, an index
/// beyond the header, a short row, an empty or non-numeric cell, an unterminated quote or
/// no data rows: io_error naming the file (and the line and column). Choosing a column by
/// name with header = false, no columns, or a delimiter equal to the quote: value_error.
template <class T = float>
xt::xarray<T> read_csv_column(const std::string& path, const std::string& column, const CsvOptions& options = {});
/// Column by 0-based index. Shape (N,).
template <class T = float>
xt::xarray<T> read_csv_column(const std::string& path, std::size_t column, const CsvOptions& options = {});
/// Several columns as features, shape (N, F), in the order given.
template <class T = float>
xt::xarray<T> read_csv_columns(const std::string& path, const std::vector<std::string>& columns,
                               const CsvOptions& options = {});
template <class T = float>
xt::xarray<T> read_csv_columns(const std::string& path, const std::vector<std::size_t>& columns,
                               const CsvOptions& options = {});

/// Braced lists of names or indices: read_csv_columns(path, {"open", "close"}), (path, {1, 4}).
template <class T = float>
xt::xarray<T> read_csv_columns(const std::string& path, std::initializer_list<std::string> columns,
                               const CsvOptions& options = {}) {
    return read_csv_columns<T>(path, std::vector<std::string>(columns), options);
}
template <class T = float>
xt::xarray<T> read_csv_columns(const std::string& path, std::initializer_list<std::size_t> columns,
                               const CsvOptions& options = {}) {
    return read_csv_columns<T>(path, std::vector<std::size_t>(columns), options);
}

// ---- Explicit instantiations (src/data/) ----------------------------------------------------

#define RECUR_DATA_EXTERN_INDEXED(T)                                                                                  \
    extern template Windows<T> make_windows<T>(const xt::xarray<T>&, std::size_t, std::size_t, std::size_t,           \
                                               std::size_t);                                                          \
    extern template std::vector<xt::xarray<T>> split_sequential<T>(const xt::xarray<T>&, const std::vector<double>&); \
    extern template xt::xarray<T> take_rows<T>(const xt::xarray<T>&, const std::vector<std::size_t>&);                \
    extern template TrainTestSplit<T> train_test_split<T>(const xt::xarray<T>&, const xt::xarray<T>&, double,         \
                                                          std::uint64_t);                                             \
    extern template xt::xarray<T> gather_batch<T>(const xt::xarray<T>&, const std::vector<std::size_t>&);             \
    extern template PaddedBatch<T> pad_sequences<T>(const std::vector<xt::xarray<T>>&, T, bool);

#define RECUR_DATA_EXTERN_REAL(T)                                                                                \
    extern template xt::xarray<T> noisy_sine<T>(std::size_t, double, double, double, std::uint64_t);             \
    extern template class MinMaxScaler<T>;                                                                       \
    extern template class StandardScaler<T>;                                                                     \
    extern template xt::xarray<T> read_csv_column<T>(const std::string&, const std::string&, const CsvOptions&); \
    extern template xt::xarray<T> read_csv_column<T>(const std::string&, std::size_t, const CsvOptions&);        \
    extern template xt::xarray<T> read_csv_columns<T>(const std::string&, const std::vector<std::string>&,       \
                                                      const CsvOptions&);                                        \
    extern template xt::xarray<T> read_csv_columns<T>(const std::string&, const std::vector<std::size_t>&,       \
                                                      const CsvOptions&);

// float and double everywhere; std::int64_t (token ids) for windows, splits, batches, padding.
RECUR_DATA_EXTERN_INDEXED(float)
RECUR_DATA_EXTERN_INDEXED(double)
RECUR_DATA_EXTERN_INDEXED(std::int64_t)
RECUR_DATA_EXTERN_REAL(float)
RECUR_DATA_EXTERN_REAL(double)
#undef RECUR_DATA_EXTERN_INDEXED
#undef RECUR_DATA_EXTERN_REAL

}  // namespace recur::data
