// Uses an installed recur::distributed: one process (an MPI singleton, no mpirun needed)
// trains with fit over an MpiCommunicator and reduces a gradient with GradReducer. Returns
// nonzero on any failure.
#include <cmath>
#include <cstdio>
#include <exception>

#include <recur/distributed.hpp>
#include <recur/recur.hpp>

using namespace recur;

int main() {
    try {
        distributed::MpiCommunicator comm;
        if (comm.size() != 1 || comm.rank() != 0) {
            std::fprintf(stderr, "install_consumer_distributed: expected one rank, got %d\n", comm.size());
            return 1;
        }
        nn::Linear<double> model(2, 1);
        optim::SGD<double> sgd(model.parameters(), {.lr = 0.1});
        const xt::xarray<double> x = {{1.0, 2.0}, {3.0, 4.0}, {5.0, 6.0}};  // (3 samples, 2)
        xt::xarray<double> y = {1.0, 0.0, 1.0};
        y.reshape({3, 1});
        const train::Dataset<double> data{x, y, {}};
        const train::LossFn<double> mse = [](const Var<double>& p, const Var<double>& t) { return nn::mse_loss(p, t); };
        const auto history = train::fit<double>(model, mse, sgd, data,
                                                {.epochs = 2, .batch_size = 2, .verbose = 0, .communicator = &comm});
        // GradReducer over one rank with weight 1 leaves the local gradient unchanged.
        distributed::GradReducer<double> reducer(comm, model.parameters());
        Tape<double> tape;
        reducer.attach(tape);
        model.zero_grad();
        reducer.begin(1.0);
        tape.backward(mse(model(tape.constant(data.x), {}), tape.constant(data.y)));
        const xt::xarray<double> local = model.parameters()[0]->grad();
        reducer.finish();
        const bool ok =
            history.epochs() == 2 && std::isfinite(history["loss"].back()) && model.parameters()[0]->grad() == local;
        std::puts(ok ? "install_consumer_distributed: OK" : "install_consumer_distributed: FAILED");
        return ok ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "install_consumer_distributed: exception: %s\n", e.what());
        return 1;
    }
}
