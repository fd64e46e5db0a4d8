// The transport-independent part of distributed training (recur/parallel.hpp): GradReducer
// and fit over a Communicator, here a one-rank communicator written in the test (the MPI
// transport is tested through mpiexec in tests/distributed/).
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include <recur/recur.hpp>

#include "support.hpp"

using namespace recur;
using recur::testing::OneRank;
using recur::testing::raises;

namespace {

std::unique_ptr<nn::Sequential<double>> lstm_and_head() {
    manual_seed(3);
    auto model = std::make_unique<nn::Sequential<double>>();
    model->add(nn::recurrent_layer(
        std::make_unique<nn::LSTM<double>>(nn::LSTMOptions{.input_size = 3, .hidden_size = 4, .batch_first = true}),
        nn::Return::last));
    model->emplace<nn::Linear<double>>(4, 2);
    return model;
}

xt::xarray<double> inputs() {
    xt::xarray<double> x = xt::xarray<double>::from_shape({5, 6, 3});
    for (std::size_t k = 0; k < x.size(); ++k) x.data()[k] = std::sin(0.7 * static_cast<double>(k));
    return x;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(distributed)

BOOST_AUTO_TEST_CASE(the_reduced_gradient_is_the_weighted_sum_over_ranks) {
    // Two equal ranks (factor 2) with weight 0.25 each: the step's gradient is 0.5 g.
    auto model = lstm_and_head();
    OneRank comm;
    comm.factor = 2;
    recur::distributed::GradReducer<double> reducer(comm, model->parameters(), {.bucket_bytes = 64});
    BOOST_TEST(reducer.buckets() > 6u);  // every parameter is larger than 64 bytes: cut between rows
    Tape<double> plain;
    plain.backward(sum((*model)(plain.constant(inputs()), {})));
    std::vector<xt::xarray<double>> expected;
    for (auto* p : model->parameters()) expected.push_back(0.5 * p->grad());

    Tape<double> tape;
    reducer.attach(tape);
    for (int step = 0; step < 2; ++step) {
        model->zero_grad();
        reducer.begin(0.25);
        tape.clear();
        tape.backward(sum((*model)(tape.constant(inputs()), {})));
        reducer.finish();
    }
    const auto params = model->parameters();
    for (std::size_t i = 0; i < params.size(); ++i) BOOST_TEST(params[i]->grad() == expected[i]);
    BOOST_TEST(comm.allreduces.load() == 2 * static_cast<int>(reducer.buckets()));
}

BOOST_AUTO_TEST_CASE(a_bucket_is_reduced_as_soon_as_its_parameters_are_final) {
    auto model = lstm_and_head();
    OneRank comm;
    const auto params = model->parameters();
    recur::distributed::GradReducer<double> reducer(comm, params, {.bucket_bytes = 1 << 20});
    BOOST_TEST(reducer.buckets() == 1u);
    // Buckets follow the reverse parameter order: with small buckets the head's bias comes first.
    recur::distributed::GradReducer<double> small(comm, params, {.bucket_bytes = 8});
    small.begin(1.0);
    // Buckets of one element: the head's bias (2) is cut into buckets 0 and 1.
    small.ready(*params.back());  // the head's bias: buckets 0 and 1 are complete
    for (int k = 0; k < 2000 && comm.allreduces.load() < 2; ++k)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    BOOST_TEST(comm.allreduces.load() == 2, "buckets 0 and 1 went to the communicator before finish()");
    small.ready(*params[0]);  // the last buckets: ready, but bucket 2.. are not, so they wait their turn
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    BOOST_TEST(comm.allreduces.load() == 2);
    small.finish();
    BOOST_TEST(comm.allreduces.load() == static_cast<int>(small.buckets()));
}

BOOST_AUTO_TEST_CASE(a_parameter_larger_than_its_bucket_travels_in_row_blocks_as_its_rows_become_final) {
    // w (8, 4): 32 doubles in buckets of 8, the last of 4: from the end, rows [7, 8), [5, 7),
    // [3, 5), [1, 3), [0, 1) (reduced in the reverse order: the last rows last).
    Parameter<double> w(xt::xarray<double>::from_shape({8, 4}));
    OneRank comm;
    comm.factor = 3;
    recur::distributed::GradReducer<double> reducer(comm, {&w}, {.bucket_bytes = 64, .last_bucket_bytes = 32});
    BOOST_TEST(reducer.buckets() == 5u);
    auto reduced = [&](int n) {  // waits (bounded) until n buckets went to the communicator
        for (int k = 0; k < 2000 && comm.allreduces.load() < n; ++k)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return comm.allreduces.load();
    };
    w.grad() = xt::ones<double>({8, 4});
    reducer.begin(0.5);
    reducer.rows_ready(w, 3);  // rows [0, 3): the first two buckets
    BOOST_TEST(reduced(2) == 2);
    reducer.rows_ready(w, 6);  // rows [3, 6): only [3, 5) is whole
    BOOST_TEST(reduced(3) == 3);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    BOOST_TEST(comm.allreduces.load() == 3);
    reducer.ready(w);  // the rest
    reducer.finish();
    BOOST_TEST(comm.allreduces.load() == 5);
    BOOST_TEST((w.grad() == xt::xarray<double>(1.5 * xt::ones<double>({8, 4}))));
    // A model's training step, rows reported by linear: the same sums as reduced after backward.
    auto model = lstm_and_head();
    const auto params = model->parameters();
    recur::distributed::GradReducer<double> attached(comm, params, {.bucket_bytes = 256, .last_bucket_bytes = 64});
    std::vector<xt::xarray<double>> after;
    for (int pass = 0; pass < 2; ++pass) {  // detached, then attached
        Tape<double> tape;
        if (pass == 1) attached.attach(tape);
        model->zero_grad();
        attached.begin(1.0 / 3);
        tape.backward(sum((*model)(tape.constant(inputs()), {})));
        attached.finish();
        for (std::size_t i = 0; i < params.size(); ++i) {
            if (pass == 0)
                after.push_back(params[i]->grad());
            else
                BOOST_TEST(xt::allclose(params[i]->grad(), after[i], 1e-12, 1e-12));
        }
    }
}

BOOST_AUTO_TEST_CASE(buckets_follow_the_order_backward_finishes_the_parameters) {
    auto model = lstm_and_head();
    OneRank comm;
    const auto params = model->parameters();
    recur::distributed::GradReducer<double> reducer(comm, params, {.bucket_bytes = 64});
    BOOST_TEST((reducer.parameter_order() == std::vector<Parameter<double>*>(params.rbegin(), params.rend())));
    Tape<double> tape;
    reducer.attach(tape);
    reducer.begin(1);
    tape.backward(sum((*model)(tape.constant(inputs()), {})));
    reducer.finish();
    // The order the sweep finished them: the head first; the LSTM binds weight_hh at its first
    // step, after the input projection (a linear) that binds weight_ih and bias_ih, so the
    // sweep finishes weight_hh before them; and linear reports its bias before its weight's rows.
    const auto& order = reducer.parameter_order();
    const auto position = [&](std::size_t i) {
        return std::find(order.begin(), order.end(), params[i]) - order.begin();
    };
    const std::size_t weight_ih = 0, weight_hh = 1, bias_ih = 2, head_weight = 4;
    BOOST_TEST(position(head_weight) < position(weight_hh));
    BOOST_TEST(position(weight_hh) < position(bias_ih));
    BOOST_TEST(position(bias_ih) < position(weight_ih));
    BOOST_TEST((order != std::vector<Parameter<double>*>(params.rbegin(), params.rend())));
}

BOOST_AUTO_TEST_CASE(overlap_summarises_attached_and_detached_steps) {
    auto model = lstm_and_head();
    OneRank comm;
    const auto params = model->parameters();
    recur::distributed::GradReducer<double> reducer(comm, params, {.bucket_bytes = 64});
    Tape<double> tape;
    for (int step = 0; step < 5; ++step) {  // attached, detached, attached, ...
        if (step % 2 == 0)
            reducer.attach(tape);
        else
            reducer.detach(tape);
        model->zero_grad();
        reducer.begin(1);
        tape.clear();
        tape.backward(sum((*model)(tape.constant(inputs()), {})));
        reducer.finish();
    }
    std::vector<xt::xarray<double>> grads;
    for (auto* p : params) grads.push_back(p->grad());
    const int before = comm.allreduces.load();
    const auto o = reducer.overlap(3);
    BOOST_TEST(o.steps == 3u);
    BOOST_TEST(o.detached_steps == 2u);
    // The reference reduces every bucket 3 times, then one exchange of the step counts and one of the table.
    BOOST_TEST(comm.allreduces.load() - before == 3 * static_cast<int>(reducer.buckets()) + 2);
    BOOST_TEST(o.allreduce > 0.0);
    BOOST_TEST(o.exposed >= 0.0);
    BOOST_TEST(o.detached_exposed > 0.0);
    BOOST_TEST(o.imbalance == 0.0);  // one rank
    BOOST_TEST(o.hidden() == 1 - o.exposed / o.allreduce);
    for (std::size_t i = 0; i < params.size(); ++i) BOOST_TEST(params[i]->grad() == grads[i]);  // grads untouched
    reducer.reset_timers();
    BOOST_TEST(reducer.overlap(1).steps == 0u);
    BOOST_TEST(reducer.overlap(1).hidden() == 0.0);
    reducer.begin(1);
    BOOST_CHECK_EXCEPTION(reducer.overlap(), value_error, raises<value_error>("GradReducer::overlap", "finish()"));
    reducer.finish();
}

BOOST_AUTO_TEST_CASE(misuse_is_reported) {
    auto model = lstm_and_head();
    OneRank comm;
    BOOST_CHECK_EXCEPTION(recur::distributed::GradReducer<double>(comm, {}), value_error,
                          raises<value_error>("GradReducer", "no parameters"));
    auto p = model->parameters();
    p.push_back(p.front());
    BOOST_CHECK_EXCEPTION(recur::distributed::GradReducer<double>(comm, p), value_error,
                          raises<value_error>("listed twice"));
    recur::distributed::GradReducer<double> reducer(comm, model->parameters());
    BOOST_CHECK_EXCEPTION(reducer.finish(), value_error, raises<value_error>("GradReducer::finish"));
    reducer.begin(1);
    BOOST_CHECK_EXCEPTION(reducer.begin(1), value_error, raises<value_error>("GradReducer::begin"));
}

BOOST_AUTO_TEST_CASE(fit_over_one_rank_equals_fit_alone) {
    const xt::xarray<double> x = inputs();
    xt::xarray<double> y = xt::xarray<double>::from_shape({5, 2});
    for (std::size_t k = 0; k < y.size(); ++k) y.data()[k] = std::cos(static_cast<double>(k));
    const train::LossFn<double> mse = [](const Var<double>& p, const Var<double>& t) { return nn::mse_loss(p, t); };
    auto train = [&](recur::distributed::Communicator* comm) {
        auto model = lstm_and_head();
        optim::Adam<double> adam(model->parameters(), {.lr = 0.01});
        auto h = train::fit<double>(*model, mse, adam, {x, y, {}},
                                    {.epochs = 2, .batch_size = 2, .verbose = 0, .communicator = comm});
        std::vector<xt::xarray<double>> w;
        for (auto* p : model->parameters()) w.push_back(p->value());
        return std::pair{w, h};
    };
    OneRank comm;
    const auto [alone, h_alone] = train(nullptr);
    const auto [over, h_over] = train(&comm);
    BOOST_TEST((alone == over));
    BOOST_TEST(h_alone["loss"] == h_over["loss"]);
    for (const char* key :
         {"allreduce_seconds", "exposed_seconds", "imbalance_seconds", "allreduce_hidden", "comm_cpu_seconds"}) {
        BOOST_TEST(h_over.has(key));
        BOOST_TEST(!h_alone.has(key));
    }
    BOOST_TEST(h_over["imbalance_seconds"][0] == 0.0);  // one rank: no other to wait for
    BOOST_TEST(comm.allreduces.load() > 0);
}

BOOST_AUTO_TEST_SUITE_END()
