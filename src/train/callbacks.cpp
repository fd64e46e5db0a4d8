// Callbacks (early stopping, checkpoints, LR schedules) and checkpoint files.
#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

#include "recur/io.hpp"
#include "recur/train.hpp"
#include "src/optim/common.hpp"

namespace recur::train {

namespace {

double monitored(const char* who, const std::string& key, const std::map<std::string, double>& logs) {
    auto it = logs.find(key);
    if (it == logs.end()) {
        std::string known;
        for (const auto& [k, v] : logs) known += (known.empty() ? "" : ", ") + k;
        throw value_error(std::string(who) + ": monitored value '" + key + "' is not in the epoch logs (" + known +
                          "); validation values need validation data");
    }
    return it->second;
}

bool better(Mode mode, double current, double best, double min_delta) {
    return mode == Mode::min ? current < best - min_delta : current > best + min_delta;
}

}  // namespace

// ---- EarlyStopping ------------------------------------------------------------------------

template <class T>
EarlyStopping<T>::EarlyStopping(EarlyStoppingOptions o) : o_(std::move(o)) {
    if (o_.min_delta < 0) throw value_error("EarlyStopping: min_delta must be >= 0");
}

template <class T>
void EarlyStopping<T>::on_train_begin(TrainContext<T>&) {
    have_best_ = false;
    wait_ = 0;
    stopped_.reset();
    best_weights_.clear();
}

template <class T>
void EarlyStopping<T>::on_epoch_end(TrainContext<T>& ctx, const std::map<std::string, double>& logs) {
    const double current = monitored("EarlyStopping", o_.monitor, logs);
    if (!have_best_ || better(o_.mode, current, best_, o_.min_delta)) {
        best_ = current;
        best_epoch_ = ctx.epoch;
        have_best_ = true;
        wait_ = 0;
        if (o_.restore_best_weights) {
            best_weights_.clear();
            for (auto* p : ctx.model.parameters()) best_weights_.push_back(p->value());
        }
        return;
    }
    if (++wait_ >= o_.patience) {
        ctx.stop = true;
        stopped_ = ctx.epoch;
    }
}

template <class T>
void EarlyStopping<T>::on_train_end(TrainContext<T>& ctx) {
    if (!o_.restore_best_weights || best_weights_.empty()) return;
    const auto params = ctx.model.parameters();
    for (std::size_t k = 0; k < params.size(); ++k) params[k]->assign(best_weights_[k]);
}

// ---- Checkpoints --------------------------------------------------------------------------

// The largest epoch a checkpoint may name: every whole number up to 2**53 is exact in a
// double (and in the scalar encoding of optim::encode_scalar), and fits in std::size_t.
constexpr double kMaxEpoch = 9007199254740992.0;

template <class T>
void save_checkpoint(const std::string& path, nn::Module<T>& model, const optim::Optimizer<T>& optimizer,
                     std::size_t next_epoch) {
    std::vector<io::NamedArray<T>> arrays;
    for (auto& [name, p] : model.named_parameters()) arrays.emplace_back("model." + name, p->value());
    for (auto& [name, a] : optimizer.state()) arrays.emplace_back("optimizer." + name, a);
    arrays.emplace_back("epoch", optim::encode_scalar<T>(static_cast<double>(next_epoch)));
    io::save_npz(path, arrays);
}

// All-or-nothing, in three steps: read and check everything the file says (names, shapes,
// the epoch; io::load_npz has checked the arrays themselves), then load the optimizer state
// (which checks its own entries and values before changing anything: step, lr, buffers),
// then copy the weights into the parameters' buffers, which cannot fail. An error in the
// first two steps leaves model and optimizer as they were.
template <class T>
std::size_t resume(const std::string& path, nn::Module<T>& model, optim::Optimizer<T>& optimizer) {
    const std::string ctx = "resume " + path;
    std::map<std::string, xt::xarray<T>> model_arrays;
    optim::State<T> opt_state;
    std::optional<xt::xarray<T>> epoch_entry;
    for (auto& [name, a] : io::load_npz<T>(path)) {
        if (name.rfind("model.", 0) == 0)
            model_arrays.emplace(name.substr(6), std::move(a));
        else if (name.rfind("optimizer.", 0) == 0)
            opt_state.emplace_back(name.substr(10), std::move(a));
        else if (name == "epoch")
            epoch_entry = std::move(a);
        else
            throw io_error(ctx + ": unexpected array '" + name + "' (not a recur checkpoint?)");
    }
    if (!epoch_entry) throw io_error(ctx + ": no 'epoch' entry (not a recur checkpoint?)");
    double epoch = 0;
    try {
        epoch = optim::decode_scalar(*epoch_entry, ctx + ": 'epoch'");
    } catch (const error& e) {
        throw io_error(e.what());
    }
    if (!(epoch >= 0 && epoch <= kMaxEpoch && std::floor(epoch) == epoch))
        throw io_error(ctx + ": 'epoch' must be a whole number in [0, 2**53], got " + number_str(epoch));

    // The model: every parameter present with its shape, nothing else.
    auto named = model.named_parameters();
    std::vector<const xt::xarray<T>*> source;
    for (auto& [name, p] : named) {
        auto it = model_arrays.find(name);
        if (it == model_arrays.end())
            throw io_error(ctx + ": parameter '" + name + "' is missing (a checkpoint of another architecture?)");
        if (it->second.shape() != p->shape())
            throw io_error(ctx + ": parameter '" + name + "' has shape " + shape_str(it->second.shape()) +
                           " in the file, the model expects " + shape_str(p->shape()));
        source.push_back(&it->second);
    }
    for (auto& [name, a] : model_arrays) {
        bool known = false;
        for (auto& np : named) known = known || np.first == name;
        if (!known) throw io_error(ctx + ": the file has parameter '" + name + "', which the model does not");
    }

    try {
        optimizer.load_state(opt_state);  // checks everything, then commits
    } catch (const error& e) {
        throw io_error(ctx + ": optimizer state does not fit: " + e.what());
    }
    // Same shapes (checked above): plain copies into the existing buffers.
    for (std::size_t k = 0; k < named.size(); ++k)
        std::copy(source[k]->data(), source[k]->data() + source[k]->size(), named[k].second->value().data());
    return static_cast<std::size_t>(epoch);
}

template <class T>
ModelCheckpoint<T>::ModelCheckpoint(CheckpointOptions o) : o_(std::move(o)) {
    if (o_.path.empty()) throw value_error("ModelCheckpoint: path is empty");
}

template <class T>
void ModelCheckpoint<T>::on_epoch_end(TrainContext<T>& ctx, const std::map<std::string, double>& logs) {
    if (o_.save_best_only) {
        const double current = monitored("ModelCheckpoint", o_.monitor, logs);
        if (best_ && !better(o_.mode, current, *best_, 0.0)) return;
        best_ = current;
    }
    save_checkpoint(o_.path, ctx.model, ctx.optimizer, ctx.epoch + 1);
}

// ---- LRScheduler --------------------------------------------------------------------------

template <class T>
LRScheduler<T>::LRScheduler(optim::StepLR<T>& schedule) : step_(&schedule) {}

template <class T>
LRScheduler<T>::LRScheduler(optim::ReduceLROnPlateau<T>& schedule, std::string monitor)
    : plateau_(&schedule), monitor_(std::move(monitor)) {}

template <class T>
void LRScheduler<T>::on_epoch_end(TrainContext<T>&, const std::map<std::string, double>& logs) {
    if (step_) step_->step();
    if (plateau_) plateau_->step(monitored("LRScheduler", monitor_, logs));
}

template class EarlyStopping<float>;
template class EarlyStopping<double>;
template class ModelCheckpoint<float>;
template class ModelCheckpoint<double>;
template class LRScheduler<float>;
template class LRScheduler<double>;
template void save_checkpoint(const std::string&, nn::Module<float>&, const optim::Optimizer<float>&, std::size_t);
template void save_checkpoint(const std::string&, nn::Module<double>&, const optim::Optimizer<double>&, std::size_t);
template std::size_t resume(const std::string&, nn::Module<float>&, optim::Optimizer<float>&);
template std::size_t resume(const std::string&, nn::Module<double>&, optim::Optimizer<double>&);

}  // namespace recur::train
