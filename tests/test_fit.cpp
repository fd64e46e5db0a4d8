// The fit loop: learning, history, evaluate/predict, callbacks, bit-identical resume, errors.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <recur/recur.hpp>

#include "support.hpp"

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
    train::Dataset<double> d{xt::zeros<double>({n, std::size_t(6), std::size_t(1)}), xt::zeros<double>({n, std::size_t(1)}), {}};
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
    m->add(nn::recurrent_layer(std::make_unique<nn::LSTM<double>>(nn::LSTMOptions{.input_size = 1, .hidden_size = 6, .batch_first = true}),
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

using recur::testing::throws_with;

}  // namespace

BOOST_AUTO_TEST_SUITE(fit)

BOOST_AUTO_TEST_CASE(fit_learns_and_records_history) {
    manual_seed(1);
    nn::Sequential<double> model;
    auto& lin = model.emplace<nn::Linear<double>>(2, 1);
    optim::SGD<double> sgd(model.parameters(), {.lr = 0.1});
    const auto data = linear_data(200, 2);
    const auto h = train::fit<double>(model, mse, sgd, data,
                                      {.epochs = 30, .batch_size = 16, .validation_split = 0.25,
                                       .metrics = {train::mae<double>()}, .verbose = 0});
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
    for (std::size_t i = 0; i < 37; ++i) BOOST_TEST(pred(i, 0) == all.value()(i, 0), boost::test_tools::tolerance(1e-12));
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
    const train::FitOptions<double> base{.epochs = 4, .batch_size = 10, .validation_split = 0.2, .verbose = 0, .seed = 9};

    manual_seed(5);
    auto straight = sequence_model();
    optim::Adam<double> adam1(straight->parameters(), {.lr = 1e-2});
    train::fit<double>(*straight, mse, adam1, data, base);

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
    const auto a = straight->parameters(), b = resumed->parameters();
    BOOST_REQUIRE(a.size() == b.size());
    for (std::size_t k = 0; k < a.size(); ++k)
        for (std::size_t e = 0; e < a[k]->size(); ++e) BOOST_TEST(a[k]->value().data()[e] == b[k]->value().data()[e]);
    BOOST_TEST(adam1.steps() == adam3.steps());
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
    const auto h = train::fit<double>(model, mse, sgd, data,
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
    BOOST_TEST(throws_with<value_error>([&] { train::fit<double>(model, bad, sgd, data, {.epochs = 1, .batch_size = 10, .verbose = 0}); },
                                        {"fit", "epoch 1", "batch 2 of 3"}));
    calls = 0;
    const auto h = train::fit<double>(model, bad, sgd, data,
                                      {.epochs = 1, .batch_size = 10, .verbose = 0, .on_non_finite = train::NonFinite::skip_batch});
    BOOST_TEST(h["skipped_batches"].front() == 1.0);
    BOOST_TEST(std::isfinite(h["loss"].front()));
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
    BOOST_TEST(throws_with<value_error>([&] { fit({xt::zeros<double>({0, 2}), xt::zeros<double>({0, 1}), {}}, 4); }, {"fit", "empty"}));
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

BOOST_AUTO_TEST_SUITE_END()
