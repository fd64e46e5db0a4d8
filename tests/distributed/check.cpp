// recur_distributed_check — the MPI tests, one mode per CTest test (tests/distributed/CMakeLists.txt
// launches it through mpiexec). Exit status 0 = the checks passed; the fault modes are
// expected to end the whole job with a non-zero status and the failing rank's message.
//
//   equivalence        N ranks x per-rank batch b against one process with batch N b, in double
//                      (<= 1e-12 relative) and float (float rounding), with and without
//                      threads inside the ranks; every rank's weights and History equal rank
//                      0's bit for bit; two runs bit-identical, also with dropout.
//   reducer            GradReducer in a loop of one's own equals the global batch's gradient.
//   mismatch           rank 1 builds another architecture: the job ends naming both shapes.
//   nan                rank 1's data holds a NaN: the job ends with rank 1's message.
//   bad_checkpoint     rank 1 resumes from a checkpoint of another architecture.
//   reference DIR      an uninterrupted run; rank 0 writes DIR/reference.npz.
//   killed DIR         checkpoints into DIR every epoch; rank 1 is SIGKILLed in epoch 3.
//   resume DIR         resumes from DIR's checkpoint and compares with DIR/reference.npz.
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>

#include <recur/distributed.hpp>
#include <recur/recur.hpp>

using namespace recur;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what, int rank) {
    if (ok) return;
    std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what.c_str());
    ++failures;
}

// LSTM(I -> H) over whole sequences -> [Dropout] -> Linear(H -> 1).
template <class T>
std::unique_ptr<nn::Sequential<T>> make_model(std::size_t input, std::size_t hidden, double dropout = 0) {
    manual_seed(11);  // the same initial weights in every call (fit broadcasts rank 0's anyway)
    auto model = std::make_unique<nn::Sequential<T>>();
    model->add(nn::recurrent_layer(
        std::make_unique<nn::LSTM<T>>(nn::LSTMOptions{.input_size = input, .hidden_size = hidden, .batch_first = true}),
        nn::Return::sequences));
    if (dropout > 0) model->template emplace<nn::Dropout<T>>(dropout);
    model->template emplace<nn::Linear<T>>(hidden, 1);
    return model;
}

constexpr std::size_t input = 3, hidden = 5, steps = 4;

// y_t = (x_t[0] + x_{t-1}[1]) / 2 for n samples.
template <class T>
train::Dataset<T> make_data(std::size_t n) {
    train::Dataset<T> d{
        xt::xarray<T>::from_shape({n, steps, input}), xt::xarray<T>::from_shape({n, steps, std::size_t(1)}), {}};
    std::mt19937_64 rng(5);
    std::normal_distribution<double> normal(0, 1);
    for (auto& v : d.x) v = static_cast<T>(normal(rng));
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t t = 0; t < steps; ++t)
            d.y(i, t, 0) = static_cast<T>(0.5 * (d.x(i, t, 0) + (t > 0 ? d.x(i, t - 1, 1) : T(0))));
    return d;
}

template <class T>
train::LossFn<T> mse() {
    return [](const Var<T>& p, const Var<T>& t) { return nn::mse_loss(p, t); };
}

template <class T>
std::vector<xt::xarray<T>> weights(nn::Module<T>& m) {
    std::vector<xt::xarray<T>> out;
    for (auto* p : m.parameters()) out.push_back(p->value());
    return out;
}

// max |a - b| / max |b| over all parameters.
template <class T>
double relative_difference(const std::vector<xt::xarray<T>>& a, const std::vector<xt::xarray<T>>& b) {
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i)
        for (std::size_t e = 0; e < a[i].size(); ++e) {
            diff = std::max(diff, std::abs(static_cast<double>(a[i].flat(e)) - static_cast<double>(b[i].flat(e))));
            scale = std::max(scale, std::abs(static_cast<double>(b[i].flat(e))));
        }
    return diff / scale;
}

// Whether every rank holds rank 0's values bit for bit.
template <class T>
bool same_on_every_rank(distributed::Communicator& comm, std::vector<T> values) {
    std::vector<T> rank0 = values;
    comm.broadcast(std::span<T>(rank0), 0);
    double differs = std::memcmp(rank0.data(), values.data(), values.size() * sizeof(T)) != 0 ? 1 : 0;
    comm.allreduce_sum(std::span<double>(&differs, 1));
    return differs == 0;
}

template <class T>
std::vector<T> flatten(const std::vector<xt::xarray<T>>& arrays) {
    std::vector<T> out;
    for (const auto& a : arrays) out.insert(out.end(), a.begin(), a.end());
    return out;
}

std::vector<double> flatten(const train::History& h) {
    std::vector<double> out;
    for (const auto& k : h.keys())
        if (k != "seconds" && k != "allreduce_seconds" && k != "exposed_seconds" && k != "imbalance_seconds" &&
            k != "allreduce_hidden" && k != "comm_cpu_seconds")
            for (double v : h[k]) out.push_back(v);
    return out;
}

// Trains a fresh model; returns its weights and history.
template <class T>
std::pair<std::vector<xt::xarray<T>>, train::History> train_once(distributed::Communicator* comm, std::size_t batch,
                                                                 std::size_t threads, double dropout,
                                                                 std::size_t bucket_bytes = std::size_t(1) << 20) {
    auto model = make_model<T>(input, hidden, dropout);
    optim::Adam<T> adam(model->parameters(), {.lr = 0.01});
    const auto data = make_data<T>(23);
    auto h = train::fit<T>(*model, mse<T>(), adam, data,
                           {.epochs = 3,
                            .batch_size = batch,
                            .validation_split = 0.2,
                            .metrics = {train::mae<T>()},
                            .verbose = 0,
                            .seed = 3,
                            .threads = threads,
                            .communicator = comm,
                            .bucket_bytes = bucket_bytes});
    return {weights(*model), h};
}

template <class T>
void equivalence(distributed::Communicator& comm, double tolerance, const char* type) {
    const int rank = comm.rank();
    const std::size_t b = 4, n = static_cast<std::size_t>(comm.size());
    const std::string label = std::string(type) + ", " + std::to_string(n) + " ranks: ";
    const auto [single, single_history] = train_once<T>(nullptr, n * b, 1, 0);
    for (std::size_t threads : {1, 2}) {
        // A small bucket size: several buckets, reduced while backward runs.
        const auto [dist, history] = train_once<T>(&comm, b, threads, 0, 64);
        const double rel = relative_difference(dist, single);
        expect(rel <= tolerance,
               label + "weights differ from one process with batch N b by " + std::to_string(rel) + " (threads " +
                   std::to_string(threads) + ")",
               rank);
        const double dl =
            std::abs(history["loss"].back() - single_history["loss"].back()) / single_history["loss"].back();
        const double dv = std::abs(history["val_loss"].back() - single_history["val_loss"].back()) /
                          single_history["val_loss"].back();
        expect(dl <= 100 * tolerance && dv <= 100 * tolerance, label + "loss or val_loss differ from one process's",
               rank);
        expect(same_on_every_rank(comm, flatten(dist)), label + "the ranks' weights differ", rank);
        expect(same_on_every_rank(comm, flatten(history)), label + "the ranks' histories differ", rank);
        if (rank == 0)
            std::printf("%sthreads %zu: relative weight difference to one process %.3g, final loss %.6f vs %.6f\n",
                        label.c_str(), threads, rel, history["loss"].back(), single_history["loss"].back());
    }
    // Determinism: two runs bit-identical, with dropout too.
    for (double dropout : {0.0, 0.3}) {
        const auto first = train_once<T>(&comm, b, 1, dropout).first,
                   second = train_once<T>(&comm, b, 1, dropout).first;
        expect(flatten(first) == flatten(second), label + "two runs differ (dropout " + std::to_string(dropout) + ")",
               rank);
        expect(same_on_every_rank(comm, flatten(first)), label + "the ranks' weights differ with dropout", rank);
    }
}

// A loop of one's own with GradReducer: each rank's part of a batch, then the global gradient.
void reducer(distributed::Communicator& comm) {
    const int rank = comm.rank(), size = comm.size();
    auto model = make_model<double>(input, hidden);
    const auto data = make_data<double>(10);
    const auto parts = train::DataParallel<double>::split(10, static_cast<std::size_t>(size));
    const auto [first, last] = parts[static_cast<std::size_t>(rank)];
    distributed::GradReducer<double> reducer(comm, model->parameters(), {.bucket_bytes = 128});
    Tape<double> tape;
    reducer.attach(tape);
    for (int repeat = 0; repeat < 2; ++repeat) {  // the second step reuses every buffer
        model->zero_grad();
        std::vector<std::size_t> idx;
        for (std::size_t i = first; i < last; ++i) idx.push_back(i);
        const xt::xarray<double> x = data::gather_batch(data.x, idx), y = data::gather_batch(data.y, idx);
        tape.clear();
        Var<double> loss = nn::mse_loss((*model)(tape.constant(x), {}), tape.constant(y));
        reducer.begin(static_cast<double>(last - first) / 10.0);
        tape.backward(loss);
        reducer.finish();
    }
    auto global = weights(*model);
    for (std::size_t i = 0; i < global.size(); ++i) global[i] = model->parameters()[i]->grad();
    auto reference = make_model<double>(input, hidden);
    Tape<double> one;
    one.backward(nn::mse_loss((*reference)(one.constant(data.x), {}), one.constant(data.y)));
    std::vector<xt::xarray<double>> expected;
    for (auto* p : reference->parameters()) expected.push_back(p->grad());
    const double rel = relative_difference(global, expected);
    expect(rel <= 1e-12, "GradReducer's gradient differs from the global batch's by " + std::to_string(rel), rank);
    expect(reducer.buckets() > 1, "GradReducer made several buckets", rank);
    if (rank == 0) std::printf("reducer: %zu buckets, relative difference %.3g\n", reducer.buckets(), rel);
}

// fit with checkpoints every epoch into dir; `kill_at` > 0: rank 1 SIGKILLs itself at that
// loss evaluation (in epoch 3).
void checkpointed_run(distributed::MpiCommunicator& comm, const std::string& dir, bool resume, long kill_at) {
    auto model = make_model<double>(input, hidden);
    optim::Adam<double> adam(model->parameters(), {.lr = 0.01});
    const auto data = make_data<double>(23);
    train::ModelCheckpoint<double> checkpoint({.path = dir + "/checkpoint.npz"});
    std::size_t initial_epoch = 0;
    if (resume)
        distributed::run_or_abort(comm, [&] { initial_epoch = train::resume(dir + "/checkpoint.npz", *model, adam); });
    long calls = 0;
    const train::LossFn<double> loss = [&](const Var<double>& p, const Var<double>& t) {
        if (kill_at > 0 && comm.rank() == 1 && ++calls == kill_at) std::raise(SIGKILL);
        return nn::mse_loss(p, t);
    };
    train::fit<double>(*model, loss, adam, data,
                       {.epochs = 5,
                        .batch_size = 4,
                        .callbacks = {&checkpoint},
                        .verbose = 0,
                        .seed = 3,
                        .initial_epoch = initial_epoch,
                        .communicator = &comm});
    if (comm.rank() != 0) return;
    std::vector<io::NamedArray<double>> arrays;
    for (auto& [name, p] : model->named_parameters()) arrays.emplace_back(name, p->value());
    if (!resume) {
        io::save_npz(dir + "/reference.npz", arrays);
        return;
    }
    const auto reference = io::load_npz<double>(dir + "/reference.npz");
    bool same = reference.size() == arrays.size();
    for (std::size_t i = 0; same && i < arrays.size(); ++i)
        same = reference[i].first == arrays[i].first && reference[i].second == arrays[i].second;
    expect(same, "the resumed run's weights differ from the uninterrupted run's", 0);
    std::printf("resume from epoch %zu: weights %s the uninterrupted run's\n", initial_epoch + 1,
                same ? "equal" : "DIFFER from");
}

}  // namespace

int main(int argc, char** argv) {
    distributed::MpiCommunicator comm;
    const std::string mode = argc > 1 ? argv[1] : "";
    const std::string dir = argc > 2 ? argv[2] : ".";
    const int rank = comm.rank();
    if (mode == "equivalence") {
        equivalence<double>(comm, 1e-12, "double");
        equivalence<float>(comm, 2e-5, "float");
    } else if (mode == "reducer") {
        reducer(comm);
    } else if (mode == "mismatch") {
        auto model = make_model<double>(input, rank == 1 ? hidden + 1 : hidden);
        optim::SGD<double> sgd(model->parameters(), {.lr = 0.1});
        train::fit<double>(*model, mse<double>(), sgd, make_data<double>(8), {.verbose = 0, .communicator = &comm});
        expect(false, "fit trained models of different shapes", rank);
    } else if (mode == "nan") {
        auto model = make_model<double>(input, hidden);
        optim::SGD<double> sgd(model->parameters(), {.lr = 0.1});
        auto data = make_data<double>(8);
        if (rank == 1) data.x(5, 1, 2) = std::nan("");
        train::fit<double>(*model, mse<double>(), sgd, data, {.verbose = 0, .communicator = &comm});
        expect(false, "fit trained on a NaN", rank);
    } else if (mode == "bad_checkpoint") {
        auto model = make_model<double>(input, hidden);
        optim::SGD<double> sgd(model->parameters(), {.lr = 0.1});
        const std::string path = dir + "/checkpoint_rank" + std::to_string(rank) + ".npz";
        {
            auto other = make_model<double>(input, rank == 1 ? hidden + 2 : hidden);
            optim::SGD<double> o(other->parameters(), {.lr = 0.1});
            train::save_checkpoint(path, *other, o, 1);
        }
        std::size_t epoch = 0;
        distributed::run_or_abort(comm, [&] { epoch = train::resume(path, *model, sgd); });
        train::fit<double>(*model, mse<double>(), sgd, make_data<double>(8),
                           {.epochs = 3, .verbose = 0, .initial_epoch = epoch, .communicator = &comm});
        expect(false, "rank 1 resumed from a checkpoint of another architecture", rank);
    } else if (mode == "reference" || mode == "killed" || mode == "resume") {
        checkpointed_run(comm, dir, mode == "resume", mode == "killed" ? 2 * 3 + 2 : 0);  // 3 steps an epoch
    } else {
        if (rank == 0) std::fprintf(stderr, "usage: recur_distributed_check MODE [DIR] (see the top of check.cpp)\n");
        return 2;
    }
    double failed = failures;
    comm.allreduce_sum(std::span<double>(&failed, 1));
    if (rank == 0) std::printf("%s: %s\n", mode.c_str(), failed == 0 ? "OK" : "FAILED");
    return failed == 0 ? 0 : 1;
}
