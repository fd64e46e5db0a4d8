// Learning-rate schedules: StepLR and ReduceLROnPlateau (torch.optim.lr_scheduler, 1.13).
#include <cmath>
#include <limits>

#include "src/optim/common.hpp"

namespace recur::optim {

// ---- StepLR -----------------------------------------------------------------------------------

template <class T>
StepLR<T>::StepLR(Optimizer<T>& optimizer, std::int64_t step_size, double gamma)
    : optimizer_(optimizer), step_size_(step_size), gamma_(gamma) {
    if (step_size < 1)
        throw value_error("StepLR: invalid step_size value: " + std::to_string(step_size) + " (must be >= 1)");
    detail::require(std::isfinite(gamma) && gamma > 0, "StepLR", "gamma", gamma, "must be finite and > 0");
}

template <class T>
void StepLR<T>::step() {
    const std::int64_t epoch = last_epoch_ + 1;
    if (epoch % step_size_ == 0) optimizer_.set_lr(optimizer_.lr() * gamma_);
    last_epoch_ = epoch;
}

template <class T>
State<T> StepLR<T>::state() const {
    State<T> out;
    out.emplace_back("last_epoch", encode_scalar<T>(static_cast<double>(last_epoch_)));
    return out;
}

template <class T>
void StepLR<T>::load_state(const State<T>& state) {
    const auto entries = detail::index_state(state, {"last_epoch"}, "StepLR");
    last_epoch_ = detail::decode_count(*entries.at("last_epoch"), "StepLR", "last_epoch");
}

// ---- ReduceLROnPlateau ------------------------------------------------------------------------

template <class T>
ReduceLROnPlateau<T>::ReduceLROnPlateau(Optimizer<T>& optimizer, ReduceLROnPlateauOptions options)
    : optimizer_(optimizer), options_(options) {
    const char* who = "ReduceLROnPlateau";
    const auto& o = options_;
    if (o.mode != Mode::min && o.mode != Mode::max) throw value_error("ReduceLROnPlateau: unknown mode");
    if (o.threshold_mode != ThresholdMode::rel && o.threshold_mode != ThresholdMode::abs)
        throw value_error("ReduceLROnPlateau: unknown threshold_mode");
    detail::require(o.factor >= 0 && o.factor < 1, who, "factor", o.factor, "must be in [0, 1)");
    if (o.patience < 0)
        throw value_error("ReduceLROnPlateau: invalid patience value: " + std::to_string(o.patience) +
                          " (must be >= 0)");
    if (o.cooldown < 0)
        throw value_error("ReduceLROnPlateau: invalid cooldown value: " + std::to_string(o.cooldown) +
                          " (must be >= 0)");
    detail::require(std::isfinite(o.threshold), who, "threshold", o.threshold, "must be finite");
    detail::require(std::isfinite(o.min_lr) && o.min_lr >= 0, who, "min_lr", o.min_lr, "must be finite and >= 0");
    detail::require(std::isfinite(o.eps) && o.eps >= 0, who, "eps", o.eps, "must be finite and >= 0");
    best_ = o.mode == Mode::min ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
}

template <class T>
bool ReduceLROnPlateau<T>::is_better(double a, double best) const {
    const double th = options_.threshold;
    if (options_.mode == Mode::min)
        return options_.threshold_mode == ThresholdMode::rel ? a < best * (1. - th) : a < best - th;
    return options_.threshold_mode == ThresholdMode::rel ? a > best * (th + 1.) : a > best + th;
}

template <class T>
void ReduceLROnPlateau<T>::step(double metric) {
    ++last_epoch_;
    if (is_better(metric, best_)) {
        best_ = metric;
        num_bad_epochs_ = 0;
    } else {
        ++num_bad_epochs_;
    }
    if (in_cooldown()) {
        --cooldown_counter_;
        num_bad_epochs_ = 0;  // bad epochs in cooldown do not count
    }
    if (num_bad_epochs_ > options_.patience) {
        const double old_lr = optimizer_.lr();
        const double scaled = old_lr * options_.factor;
        const double new_lr = options_.min_lr > scaled ? options_.min_lr : scaled;  // Python's max
        if (old_lr - new_lr > options_.eps) optimizer_.set_lr(new_lr);
        cooldown_counter_ = options_.cooldown;
        num_bad_epochs_ = 0;
    }
}

template <class T>
State<T> ReduceLROnPlateau<T>::state() const {
    State<T> out;
    out.emplace_back("best", encode_scalar<T>(best_));
    out.emplace_back("num_bad_epochs", encode_scalar<T>(static_cast<double>(num_bad_epochs_)));
    out.emplace_back("cooldown_counter", encode_scalar<T>(static_cast<double>(cooldown_counter_)));
    out.emplace_back("last_epoch", encode_scalar<T>(static_cast<double>(last_epoch_)));
    return out;
}

template <class T>
void ReduceLROnPlateau<T>::load_state(const State<T>& state) {
    const std::string who = "ReduceLROnPlateau";
    const auto entries = detail::index_state(state, {"best", "num_bad_epochs", "cooldown_counter", "last_epoch"}, who);
    const double best = decode_scalar(*entries.at("best"), who + ": load_state: 'best'");
    if (std::isnan(best)) throw value_error(who + ": load_state: 'best' is nan");
    const auto bad = detail::decode_count(*entries.at("num_bad_epochs"), who, "num_bad_epochs");
    const auto cooldown = detail::decode_count(*entries.at("cooldown_counter"), who, "cooldown_counter");
    const auto epoch = detail::decode_count(*entries.at("last_epoch"), who, "last_epoch");
    best_ = best;
    num_bad_epochs_ = bad;
    cooldown_counter_ = cooldown;
    last_epoch_ = epoch;
}

template class StepLR<float>;
template class StepLR<double>;
template class ReduceLROnPlateau<float>;
template class ReduceLROnPlateau<double>;

}  // namespace recur::optim
