// fit / evaluate / predict with models that take several inputs (float arrays and id arrays):
// the same batches as a hand-written loop, bit for bit; errors naming the input; resume.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <filesystem>
#include <random>

#include <xtensor/xmath.hpp>

#include <recur/recur.hpp>

#include "support.hpp"

using namespace recur;
namespace fs = std::filesystem;
using recur::testing::throws_with;

namespace {

// Float features x (B, 2) and a category id (B,) in [0, 4): tanh(W [x, embed(category)]) -> (B, outputs).
struct TwoInput : train::Model<double> {
    nn::Embedding<double> embed{4, 3};
    nn::Linear<double> hidden{5, 8};
    nn::Linear<double> out;
    explicit TwoInput(std::size_t outputs = 1) : out(8, outputs) {
        register_module("embed", embed);
        register_module("hidden", hidden);
        register_module("out", out);
    }
    Var<double> forward(const train::Batch<double>& b) override {
        Var<double> h = concat(std::vector<Var<double>>{b.var("x"), embed(b.tape(), b.ids("category"))}, -1);
        return out(tanh(hidden(h)));
    }
};

// y = x0 - 0.5 x1 + offset[category]; `classes` also returns the category as the class target.
struct Data {
    xt::xarray<double> x, y;
    xt::xarray<std::int64_t> category;
};
Data make_data(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> nd(0.0, 1.0);
    std::uniform_int_distribution<std::int64_t> cat(0, 3);
    const double offset[4] = {-1.0, 0.0, 0.5, 2.0};
    Data d{xt::xarray<double>::from_shape({n, 2}), xt::xarray<double>::from_shape({n, 1}),
           xt::xarray<std::int64_t>::from_shape({n})};
    for (std::size_t i = 0; i < n; ++i) {
        d.x(i, 0) = nd(rng);
        d.x(i, 1) = nd(rng);
        d.category(i) = cat(rng);
        d.y(i, 0) = d.x(i, 0) - 0.5 * d.x(i, 1) + offset[d.category(i)];
    }
    return d;
}

train::MultiDataset<double> dataset(const Data& d) {
    return {train::Inputs<double>{{"x", d.x}, {"category", d.category}}, d.y};
}

const train::LossFn<double> mse = [](const Var<double>& p, const Var<double>& t) { return nn::mse_loss(p, t); };

bool same_bits(nn::Module<double>& a, nn::Module<double>& b) {
    const auto pa = a.parameters(), pb = b.parameters();
    if (pa.size() != pb.size()) return false;
    for (std::size_t k = 0; k < pa.size(); ++k)
        if (!std::equal(pa[k]->value().begin(), pa[k]->value().end(), pb[k]->value().begin())) return false;
    return true;
}

struct TempDir {
    fs::path path = fs::temp_directory_path() / ("recur_multi_input_" + std::to_string(::getpid()));
    TempDir() { fs::create_directories(path); }
    ~TempDir() { fs::remove_all(path); }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(multi_input)

// fit with shuffling and a validation split takes the same batches, in the same order, as a
// loop written by hand over BatchIterator and take_rows: the weights agree bit for bit.
BOOST_AUTO_TEST_CASE(fit_equals_a_hand_written_loop) {
    const Data d = make_data(60, 1);
    const train::FitOptions<double> o{.epochs = 3, .batch_size = 8, .validation_split = 0.25, .verbose = 0, .seed = 4};

    manual_seed(3);
    TwoInput fitted;
    optim::Adam<double> adam(fitted.parameters(), {.lr = 1e-2});
    const auto h = train::fit(fitted, mse, adam, dataset(d), o);

    manual_seed(3);
    TwoInput by_hand;
    optim::Adam<double> adam2(by_hand.parameters(), {.lr = 1e-2});
    const std::size_t n_train = 45;  // the last quarter validates
    const data::BatchIterator batches(n_train, 8, true, 4);
    double last_loss = 0, seen = 0;
    for (std::size_t e = 0; e < 3; ++e) {
        last_loss = seen = 0;
        for (const auto& idx : batches.epoch(e)) {
            Tape<double> tape;
            const train::Inputs<double> rows{{"x", data::take_rows(d.x, idx)},
                                             {"category", data::take_rows(d.category, idx)}};
            Var<double> l = mse(by_hand(train::Batch<double>(tape, rows)), tape.constant(data::take_rows(d.y, idx)));
            adam2.zero_grad();
            tape.backward(l);
            adam2.step();
            last_loss += static_cast<double>(idx.size()) * l.item();
            seen += static_cast<double>(idx.size());
        }
    }
    BOOST_TEST(same_bits(fitted, by_hand));
    BOOST_TEST(h["loss"].back() == last_loss / seen, boost::test_tools::tolerance(1e-12));

    // Validation: the last 15 samples, as evaluate sees them.
    std::vector<std::size_t> tail;
    for (std::size_t i = 45; i < 60; ++i) tail.push_back(i);
    const train::MultiDataset<double> val{
        {{"x", data::take_rows(d.x, tail)}, {"category", data::take_rows(d.category, tail)}},
        data::take_rows(d.y, tail)};
    BOOST_TEST(h["val_loss"].back() == train::evaluate(fitted, mse, val, 7).at("loss"),
               boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(evaluate_and_predict_match_one_pass_and_id_targets_train) {
    const Data d = make_data(90, 2);
    manual_seed(5);
    TwoInput model(4);  // classifies the category from (x, category): learnable exactly
    optim::Adam<double> adam(model.parameters(), {.lr = 3e-2});
    const train::LossFn<double> xent = [](const Var<double>& p, const Var<double>& t) {
        return nn::cross_entropy(p, t);
    };
    const train::MultiDataset<double> data{{{"x", d.x}, {"category", d.category}}, d.category};  // id targets
    const auto h =
        train::fit(model, xent, adam, data,
                   {.epochs = 30, .batch_size = 16, .metrics = {train::categorical_accuracy<double>()}, .verbose = 0});
    BOOST_TEST(h["categorical_accuracy"].back() == 1.0);

    const xt::xarray<double> pred = train::predict(model, data.x, 7);
    BOOST_TEST(pred.shape() == (Shape{90, 4}));
    model.eval();
    Tape<double> tape;
    const xt::xarray<double> all = model(train::Batch<double>(tape, data.x)).value();
    BOOST_TEST(xt::amax(xt::abs(pred - all))() < 1e-12);
    const auto ev = train::evaluate(model, xent, data, 11, {train::categorical_accuracy<double>()});
    BOOST_TEST(
        ev.at("loss") == nn::cross_entropy(tape.constant(all), tape.constant(xt::cast<double>(d.category))).item(),
        boost::test_tools::tolerance(1e-12));
    BOOST_TEST(ev.at("categorical_accuracy") == 1.0);
}

BOOST_AUTO_TEST_CASE(errors_name_the_input) {
    const Data d = make_data(10, 3);
    manual_seed(6);
    TwoInput model;
    optim::SGD<double> sgd(model.parameters(), {.lr = 0.1});
    const train::FitOptions<double> quiet{.verbose = 0};

    const xt::xarray<std::int64_t> short_ids = xt::zeros<std::int64_t>({9});
    const train::MultiDataset<double> mismatched{{{"x", d.x}, {"category", short_ids}}, d.y};
    BOOST_TEST(throws_with<shape_error>([&] { train::fit(model, mse, sgd, mismatched, quiet); },
                                        {"fit", "input 'category'", "(9,)", "input 'x'", "(10, 2)"}));
    BOOST_TEST(
        throws_with<shape_error>([&] { train::evaluate(model, mse, mismatched); }, {"evaluate", "input 'category'"}));
    BOOST_TEST(throws_with<shape_error>([&] { train::predict(model, mismatched.x); },
                                        {"predict", "input 'category'", "(9,)"}));
    const train::MultiDataset<double> short_y{dataset(d).x, xt::xarray<double>(xt::zeros<double>({8, 1}))};
    BOOST_TEST(throws_with<shape_error>([&] { train::fit(model, mse, sgd, short_y, quiet); },
                                        {"fit", "y", "(8, 1)", "(10, 2)"}));

    auto with_nan = d;
    with_nan.x(4, 1) = std::nan("");
    BOOST_TEST(throws_with<value_error>([&] { train::fit(model, mse, sgd, dataset(with_nan), quiet); },
                                        {"fit", "input 'x'", "sample 4"}));

    // The model reads an input that is not there, or an id input as floats.
    struct Misreads : train::Model<double> {
        nn::Linear<double> lin{2, 1};
        bool by_kind;
        explicit Misreads(bool kind) : by_kind(kind) { register_module("lin", lin); }
        Var<double> forward(const train::Batch<double>& b) override {
            return lin(by_kind ? b.var("category") : b.var("features"));
        }
    };
    Misreads wrong_name(false), wrong_kind(true);
    optim::SGD<double> s1(wrong_name.parameters(), {.lr = 0.1}), s2(wrong_kind.parameters(), {.lr = 0.1});
    BOOST_TEST(throws_with<index_error>([&] { train::fit(wrong_name, mse, s1, dataset(d), quiet); },
                                        {"'features'", "x, category"}));
    BOOST_TEST(throws_with<value_error>([&] { train::fit(wrong_kind, mse, s2, dataset(d), quiet); },
                                        {"'category'", "integer ids"}));

    // Data-parallel threads take single-input models only.
    BOOST_TEST(throws_with<value_error>([&] { train::fit(model, mse, sgd, dataset(d), {.verbose = 0, .threads = 2}); },
                                        {"fit", "threads", "single-input"}));
    train::Inputs<double> twice{{"x", d.x}};
    BOOST_TEST(throws_with<value_error>([&] { twice.add("x", d.x); }, {"Inputs", "'x'"}));
}

BOOST_AUTO_TEST_CASE(resumed_run_ends_with_the_same_weights) {
    TempDir dir;
    const std::string ckpt = (dir.path / "ckpt.npz").string();
    const Data d = make_data(50, 7), v = make_data(12, 8);
    const auto data = dataset(d), val = dataset(v);
    const train::FitOptions<double> base{
        .epochs = 4, .batch_size = 10, .multi_validation_data = &val, .verbose = 0, .seed = 2};

    manual_seed(9);
    TwoInput straight;
    optim::Adam<double> a1(straight.parameters(), {.lr = 1e-2});
    const auto h1 = train::fit(straight, mse, a1, data, base);

    manual_seed(9);
    TwoInput first;
    optim::Adam<double> a2(first.parameters(), {.lr = 1e-2});
    train::ModelCheckpoint<double> checkpoint({.path = ckpt});
    auto half = base;
    half.epochs = 2;
    half.callbacks = {&checkpoint};
    train::fit(first, mse, a2, data, half);

    manual_seed(10);  // another initialisation: everything must come from the checkpoint
    TwoInput resumed;
    optim::Adam<double> a3(resumed.parameters(), {.lr = 1e-2});
    auto rest = base;
    rest.initial_epoch = train::resume(ckpt, resumed, a3);
    BOOST_TEST(rest.initial_epoch == 2u);
    const auto h2 = train::fit(resumed, mse, a3, data, rest);
    BOOST_TEST(same_bits(straight, resumed));
    BOOST_TEST(h2["val_loss"].back() == h1["val_loss"].back());
}

BOOST_AUTO_TEST_SUITE_END()
