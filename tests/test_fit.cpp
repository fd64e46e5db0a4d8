// The fit loop: learning, history, evaluate/predict, callbacks, bit-identical resume, errors.
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <recur/recur.hpp>

#include "child_process.hpp"
#include "support.hpp"
#include "zip_writer.hpp"

using namespace recur;
namespace fs = std::filesystem;

namespace {

// y = 2 x0 - x1 + 0.5 for x ~ N(0, 1): a problem a Linear layer solves exactly.
train::Dataset<double> linear_data(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    train::Dataset<double> d{xt::xarray<double>::from_shape({n, 2}), xt::xarray<double>::from_shape({n, 1}), {}};
    for (std::size_t i = 0; i < n; ++i) {
        d.x(i, 0) = nd(rng);
        d.x(i, 1) = nd(rng);
        d.y(i, 0) = 2 * d.x(i, 0) - d.x(i, 1) + 0.5;
    }
    return d;
}

// Sequences (N, T, 1) whose label is their mean, with per-sample lengths.
train::Dataset<double> sequence_data(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(-1, 1);
    std::uniform_int_distribution<std::int64_t> len(2, 6);
    train::Dataset<double> d{
        xt::zeros<double>({n, std::size_t(6), std::size_t(1)}), xt::zeros<double>({n, std::size_t(1)}), {}};
    for (std::size_t i = 0; i < n; ++i) {
        d.lengths.push_back(len(rng));
        for (std::int64_t t = 0; t < d.lengths.back(); ++t) {
            d.x(i, t, 0) = u(rng);
            d.y(i, 0) += d.x(i, t, 0) / static_cast<double>(d.lengths.back());
        }
    }
    return d;
}

std::unique_ptr<nn::Sequential<double>> sequence_model() {
    auto m = std::make_unique<nn::Sequential<double>>();
    m->add(nn::recurrent_layer(
        std::make_unique<nn::LSTM<double>>(nn::LSTMOptions{.input_size = 1, .hidden_size = 6, .batch_first = true}),
        nn::Return::last));
    m->emplace<nn::Dropout<double>>(0.3);
    m->emplace<nn::Linear<double>>(6, 1);
    return m;
}

const train::LossFn<double> mse = [](const Var<double>& p, const Var<double>& t) { return nn::mse_loss(p, t); };

struct TempDir {
    fs::path path = fs::temp_directory_path() / ("recur_train_" + std::to_string(::getpid()));
    TempDir() { fs::create_directories(path); }
    ~TempDir() { fs::remove_all(path); }
};

// sequence_model() from seed 5 trained with Adam(1e-2) as `options` say, never interrupted.
struct Run {
    std::unique_ptr<nn::Sequential<double>> model;
    std::unique_ptr<optim::Adam<double>> adam;
};
Run uninterrupted_run(const train::Dataset<double>& data, const train::FitOptions<double>& options) {
    manual_seed(5);
    Run run{sequence_model(), nullptr};
    run.adam = std::make_unique<optim::Adam<double>>(run.model->parameters(), optim::AdamOptions{.lr = 1e-2});
    train::fit<double>(*run.model, mse, *run.adam, data, options);
    return run;
}

using recur::testing::throws_with;

}  // namespace

BOOST_AUTO_TEST_SUITE(fit)

BOOST_AUTO_TEST_CASE(fit_learns_and_records_history) {
    manual_seed(1);
    nn::Sequential<double> model;
    auto& lin = model.emplace<nn::Linear<double>>(2, 1);
    optim::SGD<double> sgd(model.parameters(), {.lr = 0.1});
    const auto data = linear_data(200, 2);
    const auto h = train::fit<double>(
        model, mse, sgd, data,
        {.epochs = 30, .batch_size = 16, .validation_split = 0.25, .metrics = {train::mae<double>()}, .verbose = 0});
    BOOST_TEST(h.epochs() == 30u);
    BOOST_TEST(h["loss"].front() > 100 * h["loss"].back());
    BOOST_TEST(h["val_loss"].back() < 1e-8);
    BOOST_TEST(h["mae"].back() < 1e-4);
    BOOST_TEST(h.has("val_mae"));
    BOOST_TEST(h["lr"].back() == 0.1);
    BOOST_TEST(lin.weight().value()(0, 0) == 2.0, boost::test_tools::tolerance(1e-5));
    BOOST_TEST(lin.weight().value()(0, 1) == -1.0, boost::test_tools::tolerance(1e-5));
    BOOST_TEST(lin.bias()->value()(0) == 0.5, boost::test_tools::tolerance(1e-5));
    TempDir dir;
    h.write_csv((dir.path / "history.csv").string());
    std::ifstream in(dir.path / "history.csv");
    std::string header;
    std::getline(in, header);
    BOOST_TEST(header == "epoch,loss,mae,val_loss,val_mae,lr,seconds");
    std::size_t rows = 0;
    for (std::string line; std::getline(in, line);) ++rows;
    BOOST_TEST(rows == 30u);
}

BOOST_AUTO_TEST_CASE(evaluate_and_predict_match_a_manual_pass) {
    manual_seed(2);
    auto model = sequence_model();
    const auto data = sequence_data(37, 3);
    const xt::xarray<double> pred = train::predict(*model, data.x, 8, data.lengths);
    BOOST_TEST(pred.shape() == (Shape{37, 1}));
    model->eval();
    Tape<double> t;
    auto all = (*model)(t.constant(data.x), data.lengths);
    for (std::size_t i = 0; i < 37; ++i)
        BOOST_TEST(pred(i, 0) == all.value()(i, 0), boost::test_tools::tolerance(1e-12));
    auto ev = train::evaluate<double>(*model, mse, data, 5, {train::mae<double>()});
    double m = 0, a = 0;
    for (std::size_t i = 0; i < 37; ++i) {
        m += (pred(i, 0) - data.y(i, 0)) * (pred(i, 0) - data.y(i, 0)) / 37;
        a += std::abs(pred(i, 0) - data.y(i, 0)) / 37;
    }
    BOOST_TEST(ev.at("loss") == m, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(ev.at("mae") == a, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(!model->training());  // evaluate/predict restore the mode they found
}

BOOST_AUTO_TEST_CASE(resumed_run_ends_with_the_same_weights) {
    TempDir dir;
    const std::string ckpt = (dir.path / "ckpt.npz").string();
    const auto data = sequence_data(64, 4);
    const train::FitOptions<double> base{
        .epochs = 4, .batch_size = 10, .validation_split = 0.2, .verbose = 0, .seed = 9};

    const auto straight = uninterrupted_run(data, base);

    manual_seed(5);
    auto first = sequence_model();
    optim::Adam<double> adam2(first->parameters(), {.lr = 1e-2});
    train::ModelCheckpoint<double> checkpoint({.path = ckpt});
    auto half = base;
    half.epochs = 2;
    half.callbacks = {&checkpoint};
    train::fit<double>(*first, mse, adam2, data, half);

    manual_seed(77);  // a different initialisation: everything must come from the checkpoint
    auto resumed = sequence_model();
    optim::Adam<double> adam3(resumed->parameters(), {.lr = 1e-2});
    auto rest = base;
    rest.initial_epoch = train::resume(ckpt, *resumed, adam3);
    BOOST_TEST(rest.initial_epoch == 2u);
    const auto h = train::fit<double>(*resumed, mse, adam3, data, rest);
    BOOST_TEST(h.epochs() == 2u);
    const auto a = straight.model->parameters(), b = resumed->parameters();
    BOOST_REQUIRE(a.size() == b.size());
    for (std::size_t k = 0; k < a.size(); ++k)
        for (std::size_t e = 0; e < a[k]->size(); ++e) BOOST_TEST(a[k]->value().data()[e] == b[k]->value().data()[e]);
    BOOST_TEST(straight.adam->steps() == adam3.steps());
}

// The same, for a job killed with SIGKILL: once in the middle of an epoch, then at random
// moments, restarted after each kill from its checkpoint (as a job scheduler would).
BOOST_AUTO_TEST_CASE(run_resumed_after_sigkill_ends_with_the_same_weights) {
    TempDir dir;
    const std::string ckpt = (dir.path / "ckpt.npz").string(), final_weights = (dir.path / "final.npz").string();
    const auto data = sequence_data(64, 4);
    const train::FitOptions<double> base{
        .epochs = 6, .batch_size = 10, .validation_split = 0.2, .verbose = 0, .seed = 9};

    const auto straight = uninterrupted_run(data, base);

    struct Event {
        std::int32_t paused;  // 1: stopped inside epoch `epoch`; 0: epoch `epoch` ended (checkpoint written)
        std::int32_t epoch;
    };
    using Send = recur::testing::ChildProcess::Send;
    struct Reporter : train::Callback<double> {
        const Send* send = nullptr;
        std::size_t current = 0;  // the epoch being trained
        void on_epoch_end(train::TrainContext<double>& ctx, const std::map<std::string, double>&) override {
            current = ctx.epoch + 1;
            const Event e{0, static_cast<std::int32_t>(ctx.epoch)};
            (*send)(&e, sizeof e);
        }
    };
    // One start of the job: resume if a checkpoint exists, train to the end, save the weights.
    // With pause_in_epoch >= 0 it stops for good at the third batch of that epoch.
    auto job = [&](int pause_in_epoch, const Send& send) {
        manual_seed(5);  // the first start's initialisation; later starts take the checkpoint's
        auto model = sequence_model();
        optim::Adam<double> opt(model->parameters(), {.lr = 1e-2});
        auto options = base;
        if (fs::exists(ckpt)) options.initial_epoch = train::resume(ckpt, *model, opt);
        train::ModelCheckpoint<double> checkpoint({.path = ckpt});
        Reporter reporter;
        reporter.send = &send;
        reporter.current = options.initial_epoch;
        options.callbacks = {&checkpoint, &reporter};
        int batches = 0;
        const train::LossFn<double> loss = [&](const Var<double>& p, const Var<double>& t) {
            if (static_cast<int>(reporter.current) == pause_in_epoch && ++batches == 3) {
                const Event e{1, pause_in_epoch};
                send(&e, sizeof e);
                for (;;) ::pause();
            }
            return mse(p, t);
        };
        train::fit<double>(*model, loss, opt, data, options);
        io::save(*model, final_weights);
    };

    // 1. Killed in the middle of epoch 2 (epochs 0 and 1 checkpointed).
    {
        recur::testing::ChildProcess child([&](const Send& send) { job(2, send); });
        Event e{};
        std::vector<int> ended;
        while (child.receive(e) && !e.paused) ended.push_back(e.epoch);
        BOOST_REQUIRE(e.paused == 1);
        BOOST_TEST((ended == std::vector<int>{0, 1}));
        child.kill();
        BOOST_REQUIRE(recur::testing::killed_by_sigkill(child.wait()));
    }
    // 2. Restarted and killed at a random moment after one more epoch, three times.
    std::mt19937 rng(3);
    std::uniform_int_distribution<int> delay_us(0, 2000);
    int killed = 0;
    for (int kill = 0; kill < 3; ++kill) {
        recur::testing::ChildProcess child([&](const Send& send) { job(-1, send); });
        Event e{};
        if (!child.receive(e)) break;  // nothing left to train
        std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
        child.kill();
        while (child.receive(e)) {
        }
        killed += recur::testing::killed_by_sigkill(child.wait());
    }
    BOOST_TEST_MESSAGE(killed << " of 3 restarts were killed before the end");
    // 3. Restarted and left to finish.
    {
        recur::testing::ChildProcess child([&](const Send& send) { job(-1, send); });
        Event e{};
        while (child.receive(e)) {
        }
        const int status = child.wait();
        BOOST_REQUIRE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    manual_seed(77);
    auto resumed = sequence_model();
    io::load(*resumed, final_weights);
    const auto a = straight.model->parameters(), b = resumed->parameters();
    BOOST_REQUIRE(a.size() == b.size());
    for (std::size_t k = 0; k < a.size(); ++k)
        for (std::size_t i = 0; i < a[k]->size(); ++i) BOOST_TEST(a[k]->value().data()[i] == b[k]->value().data()[i]);
}

BOOST_AUTO_TEST_CASE(early_stopping_stops_and_restores_the_best_weights) {
    manual_seed(6);
    nn::Sequential<double> model;
    model.emplace<nn::Linear<double>>(2, 1);
    optim::SGD<double> sgd(model.parameters(), {.lr = 0.05});
    train::EarlyStopping<double> stop({.monitor = "val_loss", .patience = 2, .restore_best_weights = true});
    // Validation targets are unrelated noise, so val_loss soon stops improving.
    auto data = linear_data(100, 7);
    auto val = linear_data(40, 8);
    for (auto& v : val.y) v = -v;
    const auto h = train::fit<double>(
        model, mse, sgd, data,
        {.epochs = 50, .batch_size = 10, .validation_data = &val, .callbacks = {&stop}, .verbose = 0});
    BOOST_TEST(h.epochs() < 50u);
    BOOST_REQUIRE(stop.stopped_epoch().has_value());
    BOOST_TEST(*stop.stopped_epoch() == stop.best_epoch() + 2);
    const double best = *std::min_element(h["val_loss"].begin(), h["val_loss"].end());
    BOOST_TEST(train::evaluate<double>(model, mse, val).at("loss") == best, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(non_finite_loss_stops_or_skips) {
    manual_seed(7);
    nn::Sequential<double> model;
    model.emplace<nn::Linear<double>>(2, 1);
    optim::SGD<double> sgd(model.parameters(), {.lr = 0.1});
    const auto data = linear_data(30, 9);
    int calls = 0;
    const train::LossFn<double> bad = [&](const Var<double>& p, const Var<double>& t) {
        Var<double> l = nn::mse_loss(p, t);
        return ++calls == 2 ? l * std::numeric_limits<double>::quiet_NaN() : l;
    };
    BOOST_TEST(throws_with<value_error>(
        [&] { train::fit<double>(model, bad, sgd, data, {.epochs = 1, .batch_size = 10, .verbose = 0}); },
        {"fit", "epoch 1", "batch 2 of 3"}));
    calls = 0;
    const auto h = train::fit<double>(
        model, bad, sgd, data,
        {.epochs = 1, .batch_size = 10, .verbose = 0, .on_non_finite = train::NonFinite::skip_batch});
    BOOST_TEST(h["skipped_batches"].front() == 1.0);
    BOOST_TEST(std::isfinite(h["loss"].front()));
}

// NonFinite::skip_batch skips the training batches holding a NaN or infinite sample (and
// validates on the finite samples): the run equals one on the data without those batches.
BOOST_AUTO_TEST_CASE(non_finite_samples_skip_their_batches) {
    auto data = linear_data(40, 12);
    data.x(5, 0) = std::nan("");  // training batch 1 of 3
    data.y(33, 0) = std::numeric_limits<double>::infinity();  // the validation split (30..39)
    const train::FitOptions<double> o{.epochs = 3,
                                      .batch_size = 10,
                                      .validation_split = 0.25,
                                      .verbose = 0,
                                      .shuffle = false,
                                      .on_non_finite = train::NonFinite::skip_batch};
    manual_seed(13);
    nn::Sequential<double> model;
    model.emplace<nn::Linear<double>>(2, 1);
    optim::SGD<double> sgd(model.parameters(), {.lr = 0.1});
    BOOST_TEST(throws_with<value_error>([&] { train::fit<double>(model, mse, sgd, data, {.verbose = 0}); },
                                        {"fit", "x", "sample 5"}));  // the default rejects it up front
    const auto h = train::fit<double>(model, mse, sgd, data, o);
    BOOST_TEST(h["skipped_batches"].back() == 1.0);
    BOOST_TEST(h["non_finite_batches"].back() == 1.0);
    BOOST_TEST(h["non_finite_samples"].back() == 1.0);

    auto rows = [&](const std::vector<std::size_t>& idx) {
        return train::Dataset<double>{data::take_rows(data.x, idx), data::take_rows(data.y, idx), {}};
    };
    const auto clean = rows({10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29});
    const auto clean_val = rows({30, 31, 32, 34, 35, 36, 37, 38, 39});
    manual_seed(13);
    nn::Sequential<double> twin;
    twin.emplace<nn::Linear<double>>(2, 1);
    optim::SGD<double> sgd2(twin.parameters(), {.lr = 0.1});
    auto o2 = o;
    o2.validation_split = 0;
    o2.validation_data = &clean_val;
    const auto h2 = train::fit<double>(twin, mse, sgd2, clean, o2);
    for (std::size_t k = 0; k < 2; ++k) BOOST_TEST(model.parameters()[k]->value() == twin.parameters()[k]->value());
    BOOST_TEST(h["val_loss"].back() == h2["val_loss"].back());
    BOOST_TEST(h["loss"].back() == h2["loss"].back());
    BOOST_TEST(!h2.has("skipped_batches"));
}

BOOST_AUTO_TEST_CASE(bad_input_is_reported) {
    manual_seed(8);
    nn::Sequential<double> model;
    model.emplace<nn::Linear<double>>(2, 1);
    optim::SGD<double> sgd(model.parameters(), {.lr = 0.1});
    auto data = linear_data(10, 10);
    auto fit = [&](const train::Dataset<double>& d, std::size_t batch) {
        train::fit<double>(model, mse, sgd, d, {.batch_size = batch, .verbose = 0});
    };
    train::Dataset<double> mismatched{data.x, xt::zeros<double>({9, 1}), {}};
    BOOST_TEST(throws_with<shape_error>([&] { fit(mismatched, 4); }, {"fit", "(10, 2)", "(9, 1)"}));
    BOOST_TEST(throws_with<value_error>(
        [&] {
            fit({xt::zeros<double>({0, 2}), xt::zeros<double>({0, 1}), {}}, 4);
        },
        {"fit", "empty"}));
    BOOST_TEST(throws_with<value_error>([&] { fit(data, 0); }, {"fit", "batch_size"}));
    auto with_nan = data;
    with_nan.x(3, 1) = std::nan("");
    BOOST_TEST(throws_with<value_error>([&] { fit(with_nan, 4); }, {"fit", "sample 3"}));

    // A checkpoint of another architecture: io_error naming the file and the parameter.
    TempDir dir;
    const std::string ckpt = (dir.path / "other.npz").string();
    nn::Sequential<double> other;
    other.emplace<nn::Linear<double>>(3, 1);
    optim::SGD<double> other_sgd(other.parameters(), {.lr = 0.1});
    train::save_checkpoint(ckpt, other, other_sgd, 1);
    const xt::xarray<double> before = model.parameters()[0]->value();
    BOOST_TEST(throws_with<io_error>([&] { train::resume(ckpt, model, sgd); }, {ckpt, "0.weight", "(1, 3)", "(1, 2)"}));
    BOOST_TEST(model.parameters()[0]->value() == before);  // unchanged
}

// Everything resume may change: the weights and the optimizer's state (step, lr, buffers).
template <class T>
std::vector<xt::xarray<T>> train_state(nn::Module<T>& model, const optim::Optimizer<T>& opt) {
    std::vector<xt::xarray<T>> out;
    for (auto* p : model.parameters()) out.push_back(p->value());
    for (const auto& [name, a] : opt.state()) out.push_back(a);
    return out;
}

template <class T>
bool same_state(const std::vector<xt::xarray<T>>& a, const std::vector<xt::xarray<T>>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t k = 0; k < a.size(); ++k)
        if (a[k].shape() != b[k].shape() || !std::equal(a[k].begin(), a[k].end(), b[k].begin(),
                                                        [](T x, T y) { return std::memcmp(&x, &y, sizeof(T)) == 0; }))
            return false;
    return true;
}

using Scalars = boost::mpl::list<float, double>;

// A checkpoint's scalars are checked before anything changes: an 'epoch' of inf or 1e30 once
// became 18446744073709551615 (UB) after the weights and the optimizer were overwritten.
BOOST_AUTO_TEST_CASE_TEMPLATE(resume_rejects_bad_scalars_and_changes_nothing, T, Scalars) {
    TempDir dir;
    const std::string good = (dir.path / "good.npz").string(), bad = (dir.path / "bad.npz").string();
    manual_seed(11);
    nn::Sequential<T> source;
    source.template emplace<nn::Linear<T>>(3, 2);
    optim::Adam<T> source_adam(source.parameters(), {.lr = 1e-2});
    for (auto* p : source.parameters()) p->grad().fill(T(0.5));
    source_adam.step();
    source_adam.step();
    train::save_checkpoint(good, source, source_adam, 7);

    nn::Sequential<T> model;
    model.template emplace<nn::Linear<T>>(3, 2);
    optim::Adam<T> adam(model.parameters(), {.lr = 0.5});
    const auto before = train_state<T>(model, adam);
    BOOST_TEST(!same_state(before, train_state<T>(source, source_adam)));

    // A checkpoint whose entry `name` is replaced by `value`.
    auto with = [&](const std::string& name, const xt::xarray<T>& value) {
        auto arrays = io::load_npz<T>(good);
        bool found = false;
        for (auto& [n, a] : arrays)
            if (n == name) {
                a = value;
                found = true;
            }
        BOOST_REQUIRE_MESSAGE(found, "no entry " << name);
        io::save_npz(bad, arrays);
    };
    auto rejected = [&](std::vector<std::string> parts) {
        parts.insert(parts.begin(), bad);
        BOOST_TEST(throws_with<io_error>([&] { train::resume(bad, model, adam); }, parts));
        BOOST_TEST(same_state(before, train_state<T>(model, adam)), "resume changed the model or the optimizer");
    };
    const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
    for (double epoch : {inf, -inf, nan, 1e30, -1.0, 2.5, 18446744073709551616.0, 9007199254740994.0}) {
        BOOST_TEST_CONTEXT("epoch " << epoch) {
            with("epoch", optim::encode_scalar<T>(epoch));
            rejected({"'epoch'"});
        }
    }
    with("epoch", xt::xarray<T>::from_shape({0}));
    rejected({"'epoch'", "(0,)"});
    with("epoch", xt::xarray<T>::from_shape({2, 2}));
    rejected({"'epoch'", "(2, 2)"});
    for (double step : {inf, nan, -1.0, 1e30, 0.5}) {
        BOOST_TEST_CONTEXT("step " << step) {
            with("optimizer.step", optim::encode_scalar<T>(step));
            rejected({"optimizer", "'step'"});
        }
    }
    for (double lr : {inf, nan, -1e-3}) {
        BOOST_TEST_CONTEXT("lr " << lr) {
            with("optimizer.lr", optim::encode_scalar<T>(lr));
            rejected({"optimizer", "'lr'"});
        }
    }
    with("optimizer.0.exp_avg", xt::zeros<T>({3, 2}));
    rejected({"optimizer", "'0.exp_avg'", "(3, 2)", "(2, 3)"});
    with("model.0.bias", xt::zeros<T>({3}));
    rejected({"'0.bias'", "(3,)", "(2,)"});

    // The good one loads everything, exactly (floats hold the epoch exactly in any case).
    BOOST_TEST(train::resume(good, model, adam) == 7u);
    BOOST_TEST(same_state(train_state<T>(model, adam), train_state<T>(source, source_adam)));
    BOOST_TEST(adam.steps() == 2);
    BOOST_TEST(adam.lr() == 1e-2);

    // Checkpoints written before the epoch was stored like the optimizer's scalars (one
    // element of T) still load.
    with("epoch", xt::xarray<T>(T(3)));  // 0-d, as they wrote it
    BOOST_TEST(train::resume(bad, model, adam) == 3u);
}

// A hostile array inside a checkpoint fails in io::load_npz, before anything changes.
BOOST_AUTO_TEST_CASE(resume_rejects_a_shape_whose_strides_overflow) {
    TempDir dir;
    const std::string good = (dir.path / "good.npz").string(), bad = (dir.path / "bad.npz").string();
    manual_seed(12);
    nn::Sequential<double> model;
    model.emplace<nn::Linear<double>>(2, 2);
    optim::SGD<double> sgd(model.parameters(), {.lr = 0.1, .momentum = 0.9});
    train::save_checkpoint(good, model, sgd, 1);
    // The members as .npy bytes, with the momentum buffer's header replaced.
    std::vector<recur::testing::ZipMember> members;
    for (const auto& [name, a] : io::load_npz<double>(good)) {
        const std::string npy = (dir.path / "member.npy").string();
        io::save_npy(npy, a);
        std::ifstream in(npy, std::ios::binary);
        std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), {});
        if (name == "optimizer.0.momentum_buffer") {
            const std::string h = "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296), }";
            std::string header = h;
            while ((10 + header.size() + 1) % 64 != 0) header += ' ';
            header += '\n';
            bytes = {0x93,
                     'N',
                     'U',
                     'M',
                     'P',
                     'Y',
                     1,
                     0,
                     static_cast<unsigned char>(header.size()),
                     static_cast<unsigned char>(header.size() >> 8)};
            bytes.insert(bytes.end(), header.begin(), header.end());
        }
        members.emplace_back(name + ".npy", std::move(bytes));
    }
    {
        const auto zip = recur::testing::stored_zip(members);
        std::ofstream out(bad, std::ios::binary);
        out.write(reinterpret_cast<const char*>(zip.data()), static_cast<std::streamsize>(zip.size()));
    }
    for (auto* p : model.parameters()) p->value().fill(4.0);
    const auto before = train_state<double>(model, sgd);
    BOOST_TEST(
        throws_with<io_error>([&] { train::resume(bad, model, sgd); },
                              {bad, "'optimizer.0.momentum_buffer'", "(0, 4294967296, 4294967296)", "too large"}));
    BOOST_TEST(same_state(before, train_state<double>(model, sgd)));
    BOOST_TEST(train::resume(good, model, sgd) == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
