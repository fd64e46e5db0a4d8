// recur/optim.hpp — optimizers, learning-rate schedules and gradient clipping.
//
// Everything here follows PyTorch 1.13 exactly: the update rules, the defaults, the checks
// of the hyper-parameters and the scheduler semantics are those of torch.optim and
// torch.nn.utils, and the tests compare five steps of every optimizer with numbers produced
// by torch in double (tests/fixtures/make_optim_references.py).
//
//     optim::Adam<float> opt(model.parameters(), {.lr = 1e-3});
//     optim::ReduceLROnPlateau<float> plateau(opt, {.factor = 0.5, .patience = 3});
//     for (epoch ...) {
//         for (batch ...) {
//             opt.zero_grad();
//             tape.backward(loss);
//             optim::clip_grad_norm(model.parameters(), 1.0);
//             opt.step();
//         }
//         plateau.step(validation_loss);
//     }
//
// An optimizer updates a fixed list of Parameters (one PyTorch parameter group). Every
// parameter has a gradient here (PyTorch skips parameters whose grad is None; a recur
// Parameter always has a grad array, zeros until backward adds into it), so every step
// updates every parameter and one step counter serves them all.
//
// State and checkpoints: state() returns everything a resumed run needs as named arrays
// (the pairs io::save_npz writes), load_state() takes them back. A run that saves the
// optimizer's (and its schedulers') state after step k, and resumes in a fresh process from
// the saved parameters and state, continues bit-identically. Names follow PyTorch's
// state_dict: "step", "lr", then "<i>.<buffer>" for the i-th parameter, e.g. "0.exp_avg",
// "0.exp_avg_sq", "1.momentum_buffer". Hyper-parameters other than the learning rate are
// not state: they come from the constructor. Scalars (lr, step, a scheduler's counters) are
// stored with encode_scalar: one element for T = double, three for T = float, because a
// float cannot hold a double learning rate or a large step count exactly (see below).
// load_state is all-or-nothing: names, shapes and values are checked first (value_error for
// an unknown, missing or repeated name or a bad value, shape_error for a shape), and nothing
// changes unless all of them pass.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>

#include "recur/error.hpp"
#include "recur/tape.hpp"

namespace recur::optim {

/// Named arrays: an optimizer's or scheduler's complete state (the same pairs as
/// io::NamedArray, so io::save_npz(path, opt.state()) stores it).
template <class T>
using State = std::vector<std::pair<std::string, xt::xarray<T>>>;

/// A double as a 1-D array of T whose elements, summed in double from first to last, give
/// it back exactly: {v} for T = double; for T = float, three floats (v rounded to float,
/// then the rounded remainders). Exact for 0, ±inf, nan, integers up to 2^53 and finite
/// values of magnitude between about 1e-23 and 3e38 (finite values beyond float's range
/// become ±inf).
template <class T>
xt::xarray<T> encode_scalar(double v);
/// The value encode_scalar stored: the sum in double of the elements of a 0-d or 1-D array
/// of one to three elements (shape_error naming `what` otherwise).
template <class T>
double decode_scalar(const xt::xarray<T>& a, const std::string& what);

// ---- Optimizer ------------------------------------------------------------------------------

/// The base of every optimizer: the parameters, the learning rate, the step counter and the
/// per-parameter buffers (allocated once, at construction: a step allocates nothing).
/// Neither copyable nor movable: schedulers hold a reference to their optimizer.
template <class T>
class Optimizer {
public:
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    /// One update of every parameter from its grad. shape_error (before any parameter
    /// changes) if a grad's shape differs from its parameter's, or a parameter changed shape
    /// since construction.
    virtual void step() = 0;
    /// Sets every parameter's grad to zeros (PyTorch 1.13's zero_grad(set_to_none=False)).
    void zero_grad();

    double lr() const { return lr_; }
    /// Sets the learning rate used from the next step on; value_error unless finite and >= 0.
    void set_lr(double lr);
    /// Number of step() calls so far (PyTorch's state "step").
    std::int64_t steps() const { return step_; }
    const std::vector<Parameter<T>*>& parameters() const { return params_; }
    /// "SGD", "Adam", "AdamW", "RMSprop".
    const char* name() const { return name_; }

    /// "step", "lr", then "<i>.<buffer>" for each parameter i and each buffer of the
    /// optimizer, each buffer of its parameter's shape.
    State<T> state() const;
    /// Restores what state() returned (entries in any order); all-or-nothing (see the top of
    /// this file).
    void load_state(const State<T>& state);

protected:
    /// Checks the parameter list (non-empty, no null, no repeats: value_error) and the lr.
    Optimizer(const char* name, std::vector<Parameter<T>*> params, double lr);
    /// Registers a per-parameter buffer (zeros of each parameter's shape) saved as
    /// "<i>.<name>"; returns its slot.
    std::size_t add_buffer(std::string name);
    T* buffer(std::size_t slot, std::size_t i) { return buffers_[slot].arrays[i].data(); }
    /// Checks every grad and buffer shape and advances the step counter; returns the new
    /// step number (1 on the first step).
    std::int64_t begin_step();

private:
    struct Buffer {
        std::string name;
        std::vector<xt::xarray<T>> arrays;  // one per parameter
    };
    const char* name_;
    std::vector<Parameter<T>*> params_;
    std::vector<Buffer> buffers_;
    double lr_;
    std::int64_t step_ = 0;
};

/// Options of SGD; lr has no default (as in PyTorch) and must be given.
struct SGDOptions {
    std::optional<double> lr;
    double momentum = 0;
    double dampening = 0;
    double weight_decay = 0;
    bool nesterov = false;
};

/// Stochastic gradient descent with optional momentum (PyTorch's formulation):
///   g = grad + weight_decay * p
///   b = g on the first step, else momentum * b + (1 - dampening) * g   (if momentum != 0)
///   g = g + momentum * b if nesterov, else b                           (if momentum != 0)
///   p = p - lr * g
/// Buffers: "momentum_buffer" when momentum != 0. value_error if lr is missing or < 0,
/// momentum or weight_decay < 0, or nesterov without momentum > 0 and dampening == 0.
template <class T>
class SGD : public Optimizer<T> {
public:
    SGD(std::vector<Parameter<T>*> params, SGDOptions options);
    void step() override;
    const SGDOptions& options() const { return options_; }

private:
    SGDOptions options_;
    std::size_t momentum_slot_ = 0;
};

struct AdamOptions {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0;
    bool amsgrad = false;
};

/// Adam (PyTorch's formulation, L2 weight decay added to the gradient); at step t:
///   g = grad + weight_decay * p
///   m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g^2
///   v_max = max(v_max, v)  (amsgrad; then v_max replaces v below)
///   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// Buffers: "exp_avg", "exp_avg_sq", and "max_exp_avg_sq" with amsgrad. value_error unless
/// lr, eps, weight_decay >= 0 and beta1, beta2 in [0, 1).
template <class T>
class Adam : public Optimizer<T> {
public:
    explicit Adam(std::vector<Parameter<T>*> params, AdamOptions options = {});
    void step() override;
    const AdamOptions& options() const { return options_; }

private:
    AdamOptions options_;
};

struct AdamWOptions {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 1e-2;
    bool amsgrad = false;
};

/// AdamW: Adam with decoupled weight decay; each step first does
///   p = p * (1 - lr * weight_decay)
/// then Adam's update without the L2 term. Same buffers and checks as Adam.
template <class T>
class AdamW : public Optimizer<T> {
public:
    explicit AdamW(std::vector<Parameter<T>*> params, AdamWOptions options = {});
    void step() override;
    const AdamWOptions& options() const { return options_; }

private:
    AdamWOptions options_;
};

struct RMSpropOptions {
    double lr = 1e-2;
    double alpha = 0.99;
    double eps = 1e-8;
    double weight_decay = 0;
    double momentum = 0;
    bool centered = false;
};

/// RMSprop (PyTorch's formulation; eps is added outside the square root):
///   g = grad + weight_decay * p
///   s = alpha * s + (1 - alpha) * g^2
///   a = alpha * a + (1 - alpha) * g;  d = sqrt(s - a^2) + eps   (centered)
///   d = sqrt(s) + eps                                           (otherwise)
///   b = momentum * b + g / d;  p = p - lr * b                   (momentum > 0)
///   p = p - lr * g / d                                          (otherwise)
/// Buffers: "square_avg", "momentum_buffer" when momentum > 0, "grad_avg" when centered.
/// value_error unless lr, alpha, eps, weight_decay, momentum >= 0.
template <class T>
class RMSprop : public Optimizer<T> {
public:
    explicit RMSprop(std::vector<Parameter<T>*> params, RMSpropOptions options = {});
    void step() override;
    const RMSpropOptions& options() const { return options_; }

private:
    RMSpropOptions options_;
    std::size_t momentum_slot_ = 0;
    std::size_t grad_avg_slot_ = 0;
};

// ---- Learning-rate schedules ----------------------------------------------------------------

/// Multiplies the optimizer's lr by gamma every step_size epochs: call step() once per epoch,
/// after that epoch's optimizer steps. Chainable like PyTorch's: it multiplies the current lr,
/// so changes made by others in between are kept. value_error unless step_size >= 1 and gamma
/// is finite and > 0. State: "last_epoch".
template <class T>
class StepLR {
public:
    StepLR(Optimizer<T>& optimizer, std::int64_t step_size, double gamma = 0.1);
    void step();
    /// Epochs stepped so far (0 after construction, as in PyTorch).
    std::int64_t last_epoch() const { return last_epoch_; }
    State<T> state() const;
    void load_state(const State<T>& state);

private:
    Optimizer<T>& optimizer_;
    std::int64_t step_size_;
    double gamma_;
    std::int64_t last_epoch_ = 0;
};

/// Whether a smaller (min) or a larger (max) metric is better.
enum class Mode { min, max };
/// How ReduceLROnPlateau's threshold applies: rel compares with best * (1 -/+ threshold),
/// abs with best -/+ threshold.
enum class ThresholdMode { rel, abs };

struct ReduceLROnPlateauOptions {
    Mode mode = Mode::min;
    double factor = 0.1;
    std::int64_t patience = 10;
    double threshold = 1e-4;
    ThresholdMode threshold_mode = ThresholdMode::rel;
    std::int64_t cooldown = 0;
    double min_lr = 0;
    double eps = 1e-8;
};

/// Reduces the lr by `factor` when a metric has stopped improving, exactly as PyTorch 1.13:
/// step(metric) counts an epoch as bad unless the metric is better than the best so far by
/// the threshold (a nan metric is never better); after more than `patience` bad epochs in a
/// row, lr = max(lr * factor, min_lr) (skipped if that changes lr by eps or less), and the
/// next `cooldown` epochs are not counted. value_error unless factor is in [0, 1), patience,
/// cooldown >= 0, min_lr >= 0 and finite, eps >= 0, threshold finite.
/// State: "best", "num_bad_epochs", "cooldown_counter", "last_epoch".
template <class T>
class ReduceLROnPlateau {
public:
    explicit ReduceLROnPlateau(Optimizer<T>& optimizer, ReduceLROnPlateauOptions options = {});
    void step(double metric);
    /// Whether metric a improves on `best` by the threshold.
    bool is_better(double a, double best) const;
    bool in_cooldown() const { return cooldown_counter_ > 0; }
    /// Best metric so far (inf for min, -inf for max before the first step).
    double best() const { return best_; }
    std::int64_t num_bad_epochs() const { return num_bad_epochs_; }
    std::int64_t cooldown_counter() const { return cooldown_counter_; }
    std::int64_t last_epoch() const { return last_epoch_; }
    const ReduceLROnPlateauOptions& options() const { return options_; }
    State<T> state() const;
    void load_state(const State<T>& state);

private:
    Optimizer<T>& optimizer_;
    ReduceLROnPlateauOptions options_;
    double best_;
    std::int64_t num_bad_epochs_ = 0;
    std::int64_t cooldown_counter_ = 0;
    std::int64_t last_epoch_ = 0;
};

// ---- Gradient clipping ----------------------------------------------------------------------

/// Scales all gradients together so that their joint norm (as if concatenated into one
/// vector) is at most max_norm, as torch.nn.utils.clip_grad_norm_: with total the norm
/// before clipping, every grad is multiplied by min(1, max_norm / (total + 1e-6)). Returns
/// total (0 for an empty list). norm_type is p > 0 or infinity (max |g|); the sum is taken
/// in double, rescaled when it would overflow or underflow.
/// A non-finite total (a nan or inf in some grad) is, by default as in PyTorch, returned and
/// applied: an inf total multiplies every grad by 0 (inf entries become nan), a nan total makes
/// every grad nan. With error_if_nonfinite it raises value_error instead and leaves the
/// grads unchanged. value_error also for max_norm < 0 or nan, or norm_type <= 0 or nan.
template <class T>
double clip_grad_norm(const std::vector<Parameter<T>*>& params, double max_norm, double norm_type = 2.0,
                      bool error_if_nonfinite = false);

/// Clamps every gradient element to [-clip_value, clip_value] (nan stays nan), as
/// torch.nn.utils.clip_grad_value_. value_error if clip_value < 0 or nan.
template <class T>
void clip_grad_value(const std::vector<Parameter<T>*>& params, double clip_value);

// ---- Instantiations (src/optim/) -------------------------------------------------------------

extern template xt::xarray<float> encode_scalar<float>(double);
extern template xt::xarray<double> encode_scalar<double>(double);
extern template double decode_scalar<float>(const xt::xarray<float>&, const std::string&);
extern template double decode_scalar<double>(const xt::xarray<double>&, const std::string&);
extern template class Optimizer<float>;
extern template class Optimizer<double>;
extern template class SGD<float>;
extern template class SGD<double>;
extern template class Adam<float>;
extern template class Adam<double>;
extern template class AdamW<float>;
extern template class AdamW<double>;
extern template class RMSprop<float>;
extern template class RMSprop<double>;
extern template class StepLR<float>;
extern template class StepLR<double>;
extern template class ReduceLROnPlateau<float>;
extern template class ReduceLROnPlateau<double>;
extern template double clip_grad_norm<float>(const std::vector<Parameter<float>*>&, double, double, bool);
extern template double clip_grad_norm<double>(const std::vector<Parameter<double>*>&, double, double, bool);
extern template void clip_grad_value<float>(const std::vector<Parameter<float>*>&, double);
extern template void clip_grad_value<double>(const std::vector<Parameter<double>*>&, double);

}  // namespace recur::optim
