// recur/nn/losses.hpp — loss functions with torch.nn.functional's semantics.
//
// Each loss is composed from primitive ops, so its gradient falls out of the tape (to the
// input, and to the target wherever PyTorch defines one). Reductions are PyTorch's: `mean`
// averages over elements (over non-ignored targets for nll_loss / cross_entropy), `sum`
// adds, `none` returns the per-element losses.
//
// Class axis: nll_loss and cross_entropy take scores (..., C) with the class axis LAST and
// integer targets of shape (...): (N, C) with targets (N,) is exactly PyTorch's layout; a
// sequence batch is (B, T, C) with targets (B, T), which in PyTorch would be
// cross_entropy(logits.permute(0, 2, 1), targets). An unbatched (C,) with a () target works.
//
// Errors: shapes that do not fit raise shape_error naming the loss and both shapes; a target
// class outside [0, C) (other than ignore_index) or a float-valued target that is not an
// integer raises index_error naming the loss.
#pragma once

#include <cstdint>

#include <xtensor/xarray.hpp>

#include "recur/ops.hpp"

namespace recur::nn {

enum class Reduction { mean, sum, none };

/// (input - target)^2. input and target have the same shape.
template <class T>
Var<T> mse_loss(const Var<T>& input, const Var<T>& target, Reduction reduction = Reduction::mean);

/// |input - target| (mean absolute error). Gradient sign(input - target), 0 where they are equal
/// (as in PyTorch).
template <class T>
Var<T> l1_loss(const Var<T>& input, const Var<T>& target, Reduction reduction = Reduction::mean);

/// -(y log p + (1 - y) log(1 - p)) for probabilities p in [0, 1] (value_error otherwise) and
/// targets y of the same shape. Each log is clamped at -100 like PyTorch's, so p = 0 or 1
/// gives a finite loss. Gradient: exact derivative of that clamped expression, i.e. 0 from a
/// clamped log; PyTorch instead divides by max(p (1 - p), 1e-12), so the two differ only
/// where p or 1 - p is below about 1e-12 (and agree everywhere else).
template <class T>
Var<T> binary_cross_entropy(const Var<T>& probabilities, const Var<T>& target, Reduction reduction = Reduction::mean);

/// binary_cross_entropy(sigmoid(x), y) computed stably for any logit x:
/// max(x, 0) - x y + log(1 + e^-|x|). Gradient sigmoid(x) - y (also at x = 0); to the
/// target, -x.
template <class T>
Var<T> binary_cross_entropy_with_logits(const Var<T>& logits, const Var<T>& target,
                                        Reduction reduction = Reduction::mean);

/// -log_probs[..., t] for each target t of shape (...), log_probs (..., C) (class axis last).
/// Targets equal to ignore_index contribute 0 and are not counted: `mean` divides by the
/// number of other targets (NaN if there are none, like PyTorch), `none` has 0 there.
template <class T>
Var<T> nll_loss(const Var<T>& log_probs, const xt::xarray<std::int64_t>& targets, Reduction reduction = Reduction::mean,
                std::int64_t ignore_index = -100);
/// The same with float-valued targets (a batch's target array); they must be integers.
/// No gradient flows to them.
template <class T>
Var<T> nll_loss(const Var<T>& log_probs, const Var<T>& targets, Reduction reduction = Reduction::mean,
                std::int64_t ignore_index = -100);

/// nll_loss(log_softmax(logits, -1), targets): logits (..., C), class axis last. Stable for
/// logits of any magnitude.
template <class T>
Var<T> cross_entropy(const Var<T>& logits, const xt::xarray<std::int64_t>& targets,
                     Reduction reduction = Reduction::mean, std::int64_t ignore_index = -100);
template <class T>
Var<T> cross_entropy(const Var<T>& logits, const Var<T>& targets, Reduction reduction = Reduction::mean,
                     std::int64_t ignore_index = -100);

}  // namespace recur::nn
