// distributed_training — data-parallel training of an LSTM across processes with MPI.
//
//   mpirun -np 2 build/examples/distributed_training        (as root: --allow-run-as-root)
//   mpirun -np 2 --bind-to core build/examples/distributed_training --epochs 6 --loop-epochs 11
//                                                            (the overlap figures, each rank on its own core)
//
// Task and model as in parallel_training: x (N, T, I) ~ N(0, 1), y_t = (x_t[0] + x_{t-1}[1]) / 2;
// LSTM(I -> H, `layers` layers, whole sequence) -> Linear(H -> 1), float32, Adam, MSE.
// Defaults are the benchmarks' M size: per-rank batch 64, T 100, I = H = 256.
// First the time of one reduction of the model's gradients: recur's fixed-order ring against
// MPI_Allreduce. Then runs, each from the same initial weights, on the same data:
//   1 rank x 1 thread       rank 0 alone (the others wait without spinning)
//   N ranks x 1 thread      every rank, train::fit with an MpiCommunicator
//   1 rank x N threads      rank 0 alone with FitOptions::threads = N (in-process data parallel)
// Per run: seconds per epoch, samples per second, speed-up over 1 rank, then fit's overlap
// figures (distributed::GradReducerOverlap, per step, medians; README "How the overlap is
// measured"): the reference time of the step's reductions after backward ("allreduce"), the
// reduction left once every rank's gradients were final ("exposed"), the first rank to
// finish its gradients waiting for the last ("imbalance", load imbalance, not
// communication), the share of the reduction hidden, 1 - exposed / allreduce, and the
// communication thread's processor time; the final loss, and the processor seconds
// per epoch of all the run's ranks and threads (on a busy machine the wall-clock figures
// measure the others' load; the processor time of equal work does not). The 1 rank x N
// threads run needs N processors per rank (mpirun --bind-to none); it is left out otherwise.
// Then a training loop of one's own with distributed::GradReducer, the mechanism fit uses,
// over --loop-epochs epochs (the first warms up) whose steps alternate between buckets
// reduced during backward (attached) and all after it (detached): the same figures over
// many steps, and the detached steps' wait, the reference measured inside training steps.
// The exit status is 0 when every run's loss fell below 80% of its first epoch's (or, with
// one epoch, when it ran).
//
//   distributed_training [--epochs 3] [--samples 512] [--batch 64] [--steps 100] [--input 256]
//                        [--hidden 256] [--layers 1] [--lr 0.003] [--bucket 1048576] [--last-bucket 65536]
//                        [--loop-epochs 6]
//                        [--fit 1]  (--fit 0: only the loop of one's own)
#include <algorithm>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include <recur/distributed.hpp>
#include <recur/recur.hpp>
#include <xtensor/xrandom.hpp>
#include <xtensor/xview.hpp>

#include "../common/example.hpp"

using namespace recur;

namespace {

struct Run {
    std::string label;
    int ranks = 1;
    double seconds_per_epoch = 0, samples_per_second = 0;
    distributed::GradReducerOverlap overlap;  // medians over the epochs after the first of fit's figures
    double cpu_per_epoch = 0;  // processor seconds of all the run's ranks and threads
    double first_loss = 0, final_loss = 0;
};

// Processor time of this process so far, all its threads (user + system).
double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    auto seconds = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec);
    };
    return seconds(u.ru_utime) + seconds(u.ru_stime);
}

}  // namespace

int main(int argc, char** argv) {
    distributed::MpiCommunicator world;
    const int rank = world.rank(), size = world.size();
    const example::Args args(argc, argv);
    const auto epochs = static_cast<std::size_t>(args.get("epochs", 3));
    const auto samples = static_cast<std::size_t>(args.get("samples", 512));
    const auto batch = static_cast<std::size_t>(args.get("batch", 64));
    const auto steps = static_cast<std::size_t>(args.get("steps", 100));
    const auto input = static_cast<std::size_t>(args.get("input", 256));
    const auto hidden = static_cast<std::size_t>(args.get("hidden", 256));
    const auto layers = static_cast<std::size_t>(args.get("layers", 1));
    const double lr = args.get_double("lr", 3e-3);
    const auto bucket = static_cast<std::size_t>(args.get("bucket", 1 << 20));
    const auto last_bucket = static_cast<std::size_t>(args.get("last-bucket", 1 << 16));
    const auto loop_epochs = static_cast<std::size_t>(args.get("loop-epochs", 6));
    const bool fit_runs = args.get("fit", 1) != 0;  // --fit 0: the own loop alone
    if (loop_epochs < 2 || epochs == 0 || samples == 0 || batch == 0 || steps == 0 || input < 2 || hidden == 0 ||
        layers == 0) {
        if (rank == 0) std::cerr << "distributed_training: every setting must be >= 1, input and loop-epochs >= 2\n";
        return 2;
    }
    set_num_threads(1);

    // Every rank makes the same data (fit takes each rank's part of every global batch):
    // x ~ N(0, 1) of shape (N, T, I); y (N, T, 1) = (x[:, t, 0] + x[:, t - 1, 1]) / 2.
    train::Dataset<float> data;
    xt::random::default_engine_type engine(7);
    data.x = xt::random::randn<float>(Shape{samples, steps, input}, 0.0f, 1.0f, engine);
    data.y = 0.5f * xt::view(data.x, xt::all(), xt::all(), xt::range(0, 1));
    xt::view(data.y, xt::all(), xt::range(1, steps), 0) +=
        0.5f * xt::view(data.x, xt::all(), xt::range(0, steps - 1), 1);

    auto make_model = [&] {
        manual_seed(42);  // the same initial weights for every run
        auto model = std::make_unique<nn::Sequential<float>>();
        model->add(nn::recurrent_layer(
            std::make_unique<nn::LSTM<float>>(
                nn::LSTMOptions{.input_size = input, .hidden_size = hidden, .num_layers = layers, .batch_first = true}),
            nn::Return::sequences));
        model->emplace<nn::Linear<float>>(hidden, 1);
        return model;
    };
    const train::LossFn<float> mse = [](const Var<float>& p, const Var<float>& t) { return nn::mse_loss(p, t); };

    if (rank == 0)
        std::printf(
            "LSTM(%zu -> %zu, %zu layer%s) -> Linear(%zu -> 1), float32, per-rank batch %zu, T %zu, %zu samples, "
            "%zu epochs, %d ranks, %d processors per rank, buckets of at most %zu bytes, the last of %zu\n",
            input, hidden, layers, layers > 1 ? "s" : "", hidden, batch, steps, samples, epochs, size, num_procs(),
            bucket, last_bucket);

    if (rank == 0 && size > 1 && num_procs() < size)
        std::printf(
            "note: each rank may use %d processor(s) (mpirun binds a rank to a core by default); "
            "run with --bind-to none for the 1 rank x %d threads comparison\n",
            num_procs(), size);

    // The cost of one reduction of the model's gradients: recur's fixed-order ring against
    // MPI_Allreduce (whose order of additions Open MPI chooses), best and mean of 20.
    if (size > 1) {
        std::size_t elements = 0;
        const auto model = make_model();
        for (auto* p : model->parameters()) elements += p->size();
        std::vector<float> gradients(elements, 1.0f);
        auto time = [&](auto reduce) {
            double best = 1e30, sum = 0;
            for (int k = 0; k < 20; ++k) {
                world.barrier();
                const auto start = std::chrono::steady_clock::now();
                reduce();
                const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                best = std::min(best, s);
                sum += s / 20;
            }
            return std::pair{best, sum};
        };
        const auto ring = time([&] { world.allreduce_sum(std::span<float>(gradients)); });
        const auto mpi = time([&] {
            MPI_Allreduce(MPI_IN_PLACE, gradients.data(), static_cast<int>(gradients.size()), MPI_FLOAT, MPI_SUM,
                          world.comm());
        });
        if (rank == 0)
            std::printf(
                "allreduce of the %.2f MB of gradients: fixed-order ring %.3f ms (mean %.3f), MPI_Allreduce %.3f ms "
                "(mean %.3f)\n",
                4e-6 * static_cast<double>(gradients.size()), 1e3 * ring.first, 1e3 * ring.second, 1e3 * mpi.first,
                1e3 * mpi.second);
    }

    // Trains on `comm` (every rank of it) with `threads` threads per rank.
    auto train_on = [&](const std::string& label, distributed::Communicator& comm, std::size_t threads) {
        auto model = make_model();
        optim::Adam<float> adam(model->parameters(), {.lr = lr});
        const double cpu_before = cpu_seconds();
        const auto h = train::fit<float>(*model, mse, adam, data,
                                         {.epochs = epochs,
                                          .batch_size = batch,
                                          .verbose = 0,
                                          .seed = 1,
                                          .threads = threads,
                                          .communicator = &comm,
                                          .bucket_bytes = bucket,
                                          .last_bucket_bytes = last_bucket});
        Run r;
        r.label = label;
        r.ranks = comm.size();
        r.cpu_per_epoch = (cpu_seconds() - cpu_before) / static_cast<double>(h.epochs());
        comm.allreduce_sum(std::span<double>(&r.cpu_per_epoch, 1));  // over the run's ranks
        // The first epoch warms up buffers; average (times) or take the median (overlap
        // figures) of the others when there are.
        const std::size_t from = h.epochs() > 1 ? 1 : 0;
        auto median = [&](const std::string& key) {
            std::vector<double> v(h[key].begin() + static_cast<std::ptrdiff_t>(from), h[key].end());
            std::sort(v.begin(), v.end());
            return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
        };
        for (std::size_t e = from; e < h.epochs(); ++e) r.seconds_per_epoch += h["seconds"][e];
        r.seconds_per_epoch /= static_cast<double>(h.epochs() - from);
        r.overlap = {.steps = 1,
                     .allreduce = median("allreduce_seconds"),
                     .exposed = median("exposed_seconds"),
                     .imbalance = median("imbalance_seconds"),
                     .comm_cpu = median("comm_cpu_seconds")};
        r.samples_per_second = static_cast<double>(samples) / r.seconds_per_epoch;
        r.first_loss = h["loss"].front();
        r.final_loss = h["loss"].back();
        return r;
    };

    std::vector<Run> runs;
    if (rank == 0)
        std::printf("\n%-24s %9s %10s %9s %12s %11s %13s %7s %11s %11s %11s\n", "run", "s/epoch", "samples/s",
                    "speed-up", "allreduce ms", "exposed ms", "imbalance ms", "hidden", "comm cpu ms", "final loss",
                    "cpu s/epoch");
    // The overlap figures (ms per step) and the share hidden, "-" for one rank.
    auto overlap_text = [&](const distributed::GradReducerOverlap& o, const char* format) {
        char text[160];
        std::snprintf(text, sizeof text, format, 1e3 * o.allreduce, 1e3 * o.exposed, 1e3 * o.imbalance,
                      100 * o.hidden(), 1e3 * o.comm_cpu);
        return std::string(text);
    };
    auto print = [&](const Run& r) {
        if (rank != 0) return;
        const std::string figures = r.ranks == 1 ? std::string(12, ' ') + " -" + std::string(47, ' ')
                                                 : overlap_text(r.overlap, "%12.3f %11.3f %13.3f %6.0f%% %11.3f");
        std::printf("%-24s %9.3f %10.1f %8.2fx %s %11.5f %11.3f\n", r.label.c_str(), r.seconds_per_epoch,
                    r.samples_per_second, r.samples_per_second / runs.front().samples_per_second, figures.c_str(),
                    r.final_loss, r.cpu_per_epoch);
        std::fflush(stdout);
    };
    // Rank 0 alone (the others wait at the barrier, napping).
    auto alone = [&](const std::string& label, std::size_t threads) {
        if (rank == 0) {
            distributed::MpiCommunicator self(MPI_COMM_SELF);
            runs.push_back(train_on(label, self, threads));
            print(runs.back());
        }
        world.barrier();
    };
    const auto n = static_cast<std::size_t>(size);
    if (fit_runs) alone("1 rank x 1 thread", 1);
    if (fit_runs && size > 1) {
        runs.push_back(train_on(std::to_string(size) + " ranks x 1 thread", world, 1));
        print(runs.back());
        if (num_procs() >= size)
            alone("1 rank x " + std::to_string(size) + " threads", n);
        else if (rank == 0)
            std::printf("(1 rank x %d threads left out: a rank has %d processor(s); run with --bind-to none)\n", size,
                        num_procs());
    }

    // A loop of one's own: each rank its part of every global batch, GradReducer in between.
    // It also measures the overlap over many steps: they alternate between the reducer
    // attached to the tape (buckets reduced while backward runs) and detached (every bucket
    // after backward); the first epoch warms up, then overlap() takes the medians.
    {
        auto model = make_model();
        optim::Adam<float> adam(model->parameters(), {.lr = lr});
        distributed::GradReducer<float> reducer(world, model->parameters(),
                                                {.bucket_bytes = bucket, .last_bucket_bytes = last_bucket});
        Tape<float> tape({.retain_grads = false});
        const data::BatchIterator batches(samples, batch * n, true, 1);
        double loss_sum = 0, seconds = 0;
        std::size_t step = 0;
        for (std::size_t epoch = 0; epoch < loop_epochs; ++epoch) {
            if (epoch == 1) reducer.reset_timers();
            loss_sum = 0;
            const auto start = std::chrono::steady_clock::now();
            for (const auto& global : batches.epoch(epoch)) {
                const auto parts = train::DataParallel<float>::split(global.size(), n);  // contiguous, in rank order
                const bool mine = static_cast<std::size_t>(rank) < parts.size();
                std::vector<std::size_t> idx;
                if (mine)
                    idx.assign(
                        global.begin() + static_cast<std::ptrdiff_t>(parts[static_cast<std::size_t>(rank)].first),
                        global.begin() + static_cast<std::ptrdiff_t>(parts[static_cast<std::size_t>(rank)].second));
                if (epoch == 0 || step++ % 2 == 0)
                    reducer.attach(tape);
                else
                    reducer.detach(tape);
                adam.zero_grad();
                reducer.begin(mine ? static_cast<double>(idx.size()) / static_cast<double>(global.size()) : 0.0);
                double weighted_loss = 0;
                if (mine) {
                    tape.clear();
                    Var<float> loss = mse((*model)(tape.constant(data::gather_batch(data.x, idx)), {}),
                                          tape.constant(data::gather_batch(data.y, idx)));
                    weighted_loss = static_cast<double>(loss.item()) * static_cast<double>(idx.size());
                    tape.backward(loss);  // attached: buckets are reduced as their gradients become final
                }
                reducer.finish();  // every rank: the global batch's mean-loss gradient
                adam.step();
                world.allreduce_sum(std::span<double>(&weighted_loss, 1));
                loss_sum += weighted_loss;
            }
            seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        }
        const auto o = reducer.overlap(15);
        if (rank == 0) {
            std::printf(
                "\nown loop with GradReducer (%zu buckets), %d rank%s: %.3f s per epoch, last epoch's loss %.5f\n",
                reducer.buckets(), size, size > 1 ? "s" : "", seconds, loss_sum / static_cast<double>(samples));
            if (size > 1)
                std::printf(
                    "overlap, medians over %zu attached + %zu detached steps (ms per step): %s; detached steps "
                    "waited %.3f ms after backward (hidden against that reference: %.0f%%)\n",
                    o.steps, o.detached_steps,
                    overlap_text(o, "allreduce %.3f, exposed %.3f, imbalance %.3f, hidden %.0f%%, comm cpu %.3f")
                        .c_str(),
                    1e3 * o.detached_exposed,
                    o.detached_exposed > 0 ? 100 * (1 - o.exposed / o.detached_exposed) : 0.0);
        }
    }

    bool learned = true;
    for (const auto& r : runs) learned = learned && (epochs == 1 || r.final_loss < 0.8 * r.first_loss);
    double ok = learned ? 1 : 0;
    world.broadcast(std::span<double>(&ok, 1), 0);
    if (rank == 0)
        std::printf("\nthe loss of predicting 0 is 0.5; %s\n",
                    ok != 0 ? "every run's loss fell" : "some run's loss did not fall below 80% of its first epoch's");
    return ok != 0 ? 0 : 1;
}
