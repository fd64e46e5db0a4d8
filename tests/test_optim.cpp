// Optimizers, LR schedules and gradient clipping against PyTorch 1.13 (double): five steps of
// every optimizer under several option sets (tests/fixtures/optim/references.txt, written by
// tests/fixtures/make_optim_references.py), lr sequences of both schedules, clipping by norm
// and by value; then state round trips (bit-identical resume), load_state checks and the
// validation of hyper-parameters.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <xtensor/xoperation.hpp>

#include <recur/io.hpp>
#include <recur/optim.hpp>

using namespace recur;
namespace op = recur::optim;

namespace {

const std::string kReferences = RECUR_TEST_DATA_DIR "/../fixtures/optim/references.txt";

// ---- The reference file ------------------------------------------------------------------------

struct Line {
    std::string tag;
    std::vector<std::string> tokens;  // after the tag
};

struct Block {
    std::string kind, name, type;  // type: the optimizer class of an "optim" block
    std::map<std::string, std::string> opts;
    std::vector<Line> lines;

    bool has(const std::string& key) const { return opts.count(key) != 0; }
    double num(const std::string& key, double fallback) const {
        auto it = opts.find(key);
        return it == opts.end() ? fallback : std::strtod(it->second.c_str(), nullptr);
    }
    std::int64_t count(const std::string& key, std::int64_t fallback) const {
        return static_cast<std::int64_t>(num(key, static_cast<double>(fallback)));
    }
    bool flag(const std::string& key) const { return num(key, 0) != 0; }
    const Line* find(const std::string& tag) const {
        for (const auto& l : lines)
            if (l.tag == tag) return &l;
        return nullptr;
    }
};

std::vector<std::string> split(const std::string& s) {
    std::istringstream in(s);
    std::vector<std::string> out;
    for (std::string t; in >> t;) out.push_back(t);
    return out;
}

std::vector<Block> read_blocks() {
    std::ifstream in(kReferences);
    BOOST_REQUIRE_MESSAGE(in, "cannot open " << kReferences);
    std::vector<Block> blocks;
    Block* cur = nullptr;
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        auto t = split(line);
        if (!cur) {
            blocks.emplace_back();
            cur = &blocks.back();
            cur->kind = t.at(0);
            cur->name = t.at(1);
            for (std::size_t i = 2; i < t.size(); ++i) {
                const auto eq = t[i].find('=');
                if (eq == std::string::npos)
                    cur->type = t[i];
                else
                    cur->opts[t[i].substr(0, eq)] = t[i].substr(eq + 1);
            }
        } else if (t.at(0) == "end") {
            cur = nullptr;
        } else {
            cur->lines.push_back({t[0], {t.begin() + 1, t.end()}});
        }
    }
    BOOST_REQUIRE(cur == nullptr);
    return blocks;
}

std::vector<double> numbers(const std::vector<std::string>& tokens, std::size_t from) {
    std::vector<double> v;
    for (std::size_t i = from; i < tokens.size(); ++i) v.push_back(std::strtod(tokens[i].c_str(), nullptr));
    return v;
}

template <class T>
xt::xarray<T> make_array(const Shape& shape, const std::vector<double>& values) {
    xt::xarray<T> a = xt::xarray<T>::from_shape(shape);
    BOOST_REQUIRE_EQUAL(a.size(), values.size());
    for (std::size_t i = 0; i < values.size(); ++i) a.data()[i] = static_cast<T>(values[i]);
    return a;
}

// The arrays of an optim / clip block: initial parameters, grads and expectations per step.
struct Case {
    std::vector<Shape> shapes;
    std::vector<std::vector<double>> params;  // [i]
    std::map<int, std::vector<std::vector<double>>> grads;  // [t][i]
    std::map<int, std::vector<std::vector<double>>> expect;  // [t][i]
    std::map<int, double> setlr;  // [t]
    int steps = 0;
};

Case read_case(const Block& b) {
    Case c;
    for (const auto& l : b.lines) {
        if (l.tag == "param") {
            Shape s;
            for (const auto& d : split([&] {
                     std::string x = l.tokens.at(1);
                     for (auto& ch : x)
                         if (ch == ',') ch = ' ';
                     return x;
                 }()))
                s.push_back(static_cast<std::size_t>(std::stoul(d)));
            c.shapes.push_back(s);
            c.params.push_back(numbers(l.tokens, 2));
        } else if (l.tag == "grad" || l.tag == "expect") {
            const int t = std::stoi(l.tokens.at(0));
            auto& dst = (l.tag == "grad" ? c.grads : c.expect)[t];
            dst.push_back(numbers(l.tokens, 2));
            c.steps = std::max(c.steps, t);
        } else if (l.tag == "setlr") {
            c.setlr[std::stoi(l.tokens.at(0))] = std::strtod(l.tokens.at(1).c_str(), nullptr);
        }
    }
    return c;
}

// Parameters made from a case's initial values, kept at stable addresses.
template <class T>
struct Params {
    std::vector<std::unique_ptr<Parameter<T>>> owned;
    std::vector<Parameter<T>*> ptrs;

    explicit Params(const Case& c) {
        for (std::size_t i = 0; i < c.shapes.size(); ++i) {
            owned.push_back(std::make_unique<Parameter<T>>(make_array<T>(c.shapes[i], c.params[i])));
            ptrs.push_back(owned.back().get());
        }
    }
    void set_grads(const Case& c, int t) {
        for (std::size_t i = 0; i < ptrs.size(); ++i) ptrs[i]->grad() = make_array<T>(c.shapes[i], c.grads.at(t)[i]);
    }
};

// The optimizer of an "optim" block; options the block does not name keep recur's defaults.
template <class T>
std::unique_ptr<op::Optimizer<T>> make_optimizer(const Block& b, const std::vector<Parameter<T>*>& ps) {
    std::set<std::string> known;
    auto num = [&](const std::string& k, double fallback) {
        known.insert(k);
        return b.num(k, fallback);
    };
    auto flag = [&](const std::string& k) {
        known.insert(k);
        return b.flag(k);
    };
    std::unique_ptr<op::Optimizer<T>> out;
    if (b.type == "SGD") {
        op::SGDOptions o;
        o.lr = num("lr", 0);
        o.momentum = num("momentum", o.momentum);
        o.dampening = num("dampening", o.dampening);
        o.weight_decay = num("weight_decay", o.weight_decay);
        o.nesterov = flag("nesterov");
        out = std::make_unique<op::SGD<T>>(ps, o);
    } else if (b.type == "Adam" || b.type == "AdamW") {
        auto fill = [&](auto o) {
            o.lr = num("lr", o.lr);
            o.beta1 = num("beta1", o.beta1);
            o.beta2 = num("beta2", o.beta2);
            o.eps = num("eps", o.eps);
            o.weight_decay = num("weight_decay", o.weight_decay);
            o.amsgrad = flag("amsgrad");
            return o;
        };
        if (b.type == "Adam")
            out = std::make_unique<op::Adam<T>>(ps, fill(op::AdamOptions{}));
        else
            out = std::make_unique<op::AdamW<T>>(ps, fill(op::AdamWOptions{}));
    } else if (b.type == "RMSprop") {
        op::RMSpropOptions o;
        o.lr = num("lr", o.lr);
        o.alpha = num("alpha", o.alpha);
        o.eps = num("eps", o.eps);
        o.weight_decay = num("weight_decay", o.weight_decay);
        o.momentum = num("momentum", o.momentum);
        o.centered = flag("centered");
        out = std::make_unique<op::RMSprop<T>>(ps, o);
    }
    BOOST_REQUIRE_MESSAGE(out, "unknown optimizer " << b.type);
    for (const auto& [k, v] : b.opts) BOOST_REQUIRE_MESSAGE(known.count(k), b.name << ": unknown option " << k);
    return out;
}

// Runs steps [from, to] of a case on existing parameters and optimizer.
template <class T>
void run_steps(const Case& c, Params<T>& ps, op::Optimizer<T>& opt, int from, int to) {
    for (int t = from; t <= to; ++t) {
        if (c.setlr.count(t)) opt.set_lr(c.setlr.at(t));
        ps.set_grads(c, t);
        opt.step();
    }
}

// max over elements of |a - b| / (|b| + floor); nan only matches nan.
template <class T>
double max_rel_error(const xt::xarray<T>& a, const std::vector<double>& b, double floor = 1e-3) {
    BOOST_REQUIRE_EQUAL(a.size(), b.size());
    double worst = 0;
    for (std::size_t i = 0; i < b.size(); ++i) {
        const auto x = static_cast<double>(a.data()[i]);
        if (std::isnan(b[i]) || std::isnan(x)) {
            if (std::isnan(b[i]) != std::isnan(x)) return std::numeric_limits<double>::infinity();
            continue;
        }
        if (x == b[i]) continue;
        worst = std::max(worst, std::fabs(x - b[i]) / (std::fabs(b[i]) + floor));
    }
    return worst;
}

template <class T>
bool bit_equal(const xt::xarray<T>& a, const xt::xarray<T>& b) {
    if (a.shape() != b.shape()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const T x = a.data()[i], y = b.data()[i];
        if (!(x == y || (std::isnan(x) && std::isnan(y)))) return false;
        if (std::signbit(x) != std::signbit(y)) return false;
    }
    return true;
}

template <class T>
bool state_equal(const op::State<T>& a, const op::State<T>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i].first != b[i].first || !bit_equal(a[i].second, b[i].second)) return false;
    return true;
}

std::vector<Block> blocks_of(const std::string& kind) {
    static const std::vector<Block> all = read_blocks();
    std::vector<Block> out;
    for (const auto& b : all)
        if (b.kind == kind) out.push_back(b);
    BOOST_REQUIRE(!out.empty());
    return out;
}

template <class T>
void compare_with_torch(double tol, double floor) {
    for (const Block& b : blocks_of("optim")) {
        const Case c = read_case(b);
        BOOST_REQUIRE_EQUAL(c.steps, 5);
        Params<T> ps(c);
        auto opt = make_optimizer<T>(b, ps.ptrs);
        double worst = 0;
        for (int t = 1; t <= c.steps; ++t) {
            run_steps(c, ps, *opt, t, t);
            for (std::size_t i = 0; i < ps.ptrs.size(); ++i)
                worst = std::max(worst, max_rel_error(ps.ptrs[i]->value(), c.expect.at(t)[i], floor));
        }
        BOOST_TEST(worst <= tol, b.name << " (" << b.type << "): max relative error " << worst);
        BOOST_TEST(opt->steps() == 5);
    }
}

// Runs a case 5 steps straight, and 3 steps + state() + a fresh optimizer (and fresh
// parameters holding the saved values) + load_state + 2 steps; the two must agree bit for bit.
// `through` may transform the saved state (e.g. a round trip through an .npz file).
template <class T>
void resume_bit_identical(const std::function<op::State<T>(const op::State<T>&)>& through) {
    for (const Block& b : blocks_of("optim")) {
        const Case c = read_case(b);
        Params<T> straight(c);
        auto opt = make_optimizer<T>(b, straight.ptrs);
        run_steps(c, straight, *opt, 1, 5);

        Params<T> first(c);
        auto opt1 = make_optimizer<T>(b, first.ptrs);
        run_steps(c, first, *opt1, 1, 3);
        const op::State<T> saved = through(opt1->state());

        Params<T> second(c);
        for (std::size_t i = 0; i < second.ptrs.size(); ++i) second.ptrs[i]->assign(first.ptrs[i]->value());
        auto opt2 = make_optimizer<T>(b, second.ptrs);
        opt2->load_state(saved);
        BOOST_TEST(opt2->steps() == 3);
        BOOST_TEST(opt2->lr() == opt1->lr());
        run_steps(c, second, *opt2, 4, 5);

        for (std::size_t i = 0; i < straight.ptrs.size(); ++i)
            BOOST_TEST(bit_equal(second.ptrs[i]->value(), straight.ptrs[i]->value()), b.name << " parameter " << i);
        BOOST_TEST(state_equal(opt2->state(), opt->state()), b.name << ": final states differ");
    }
}

// A tiny parameter set for the error tests.
template <class T>
struct Two {
    Parameter<T> a{xt::xarray<T>{{1, 2, 3}, {4, 5, 6}}};
    Parameter<T> b{xt::xarray<T>{0.5, -0.5}};
    std::vector<Parameter<T>*> ptrs() { return {&a, &b}; }
    void set_grads() {
        a.grad() = xt::xarray<T>{{0.1, -0.2, 0.3}, {0.4, 0.5, -0.6}};
        b.grad() = xt::xarray<T>{1.0, -2.0};
    }
};

template <class E, class F>
void expect_error(F f, const std::vector<std::string>& fragments) {
    try {
        f();
        BOOST_ERROR("no exception; expected one mentioning '" << fragments.front() << "'");
    } catch (const E& e) {
        const std::string msg = e.what();
        for (const auto& frag : fragments)
            BOOST_TEST(msg.find(frag) != std::string::npos, "'" << msg << "' should mention '" << frag << "'");
    }
}

std::vector<double> lr_sequence(const Line* l) { return numbers(l->tokens, 0); }

op::ReduceLROnPlateauOptions plateau_options(const Block& b) {
    op::ReduceLROnPlateauOptions o;
    auto s = [&](const std::string& k, const std::string& fallback) {
        auto it = b.opts.find(k);
        return it == b.opts.end() ? fallback : it->second;
    };
    o.mode = s("mode", "min") == "max" ? op::Mode::max : op::Mode::min;
    o.threshold_mode = s("threshold_mode", "rel") == "abs" ? op::ThresholdMode::abs : op::ThresholdMode::rel;
    o.factor = b.num("factor", o.factor);
    o.patience = b.count("patience", o.patience);
    o.threshold = b.num("threshold", o.threshold);
    o.cooldown = b.count("cooldown", o.cooldown);
    o.min_lr = b.num("min_lr", o.min_lr);
    o.eps = b.num("eps", o.eps);
    return o;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(optim)

// ---- Optimizers vs PyTorch ----------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(optimizers_match_torch_in_double) { compare_with_torch<double>(1e-12, 1e-3); }

BOOST_AUTO_TEST_CASE(optimizers_match_torch_in_float) { compare_with_torch<float>(5e-6, 1e-2); }

BOOST_AUTO_TEST_CASE(defaults_are_pytorchs) {
    const op::AdamOptions a;
    BOOST_TEST(a.lr == 1e-3);
    BOOST_TEST(a.beta1 == 0.9);
    BOOST_TEST(a.beta2 == 0.999);
    BOOST_TEST(a.eps == 1e-8);
    BOOST_TEST(a.weight_decay == 0.0);
    BOOST_TEST(!a.amsgrad);
    const op::AdamWOptions w;
    BOOST_TEST(w.lr == 1e-3);
    BOOST_TEST(w.weight_decay == 1e-2);
    const op::RMSpropOptions r;
    BOOST_TEST(r.lr == 1e-2);
    BOOST_TEST(r.alpha == 0.99);
    BOOST_TEST(r.eps == 1e-8);
    BOOST_TEST(r.momentum == 0.0);
    BOOST_TEST(!r.centered);
    const op::SGDOptions s;
    BOOST_TEST(!s.lr.has_value());
    const op::ReduceLROnPlateauOptions p;
    BOOST_TEST((p.mode == op::Mode::min && p.threshold_mode == op::ThresholdMode::rel));
    BOOST_TEST(p.factor == 0.1);
    BOOST_TEST(p.patience == 10);
    BOOST_TEST(p.threshold == 1e-4);
    BOOST_TEST(p.cooldown == 0);
    BOOST_TEST(p.min_lr == 0.0);
    BOOST_TEST(p.eps == 1e-8);
}

BOOST_AUTO_TEST_CASE(zero_grad_and_accessors) {
    Two<double> two;
    two.set_grads();
    op::Adam<double> opt(two.ptrs());
    BOOST_TEST(std::string(opt.name()) == "Adam");
    BOOST_TEST(opt.parameters().size() == 2u);
    opt.zero_grad();
    BOOST_TEST(xt::all(xt::equal(two.a.grad(), 0.0)));
    BOOST_TEST(xt::all(xt::equal(two.b.grad(), 0.0)));
    opt.set_lr(0.25);
    BOOST_TEST(opt.lr() == 0.25);
    BOOST_TEST(opt.steps() == 0);
}

// ---- State --------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(resume_is_bit_identical_double) {
    resume_bit_identical<double>([](const op::State<double>& s) { return s; });
}

BOOST_AUTO_TEST_CASE(resume_is_bit_identical_float) {
    resume_bit_identical<float>([](const op::State<float>& s) { return s; });
}

BOOST_AUTO_TEST_CASE(resume_through_npz_file_float) {
    char tmpl[] = "/tmp/recur_optim_state_XXXXXX";
    const int fd = mkstemp(tmpl);
    BOOST_REQUIRE(fd >= 0);
    const std::string path = std::string(tmpl) + ".npz";
    resume_bit_identical<float>([&](const op::State<float>& s) {
        io::save_npz(path, s);
        return io::load_npz<float>(path);
    });
    std::remove(path.c_str());
    std::remove(tmpl);
}

BOOST_AUTO_TEST_CASE(state_names_and_shapes) {
    Two<double> two;
    op::Adam<double> adam(two.ptrs(), {.amsgrad = true});
    std::vector<std::string> names;
    for (const auto& [n, a] : adam.state()) names.push_back(n);
    const std::vector<std::string> expected = {
        "step", "lr", "0.exp_avg", "0.exp_avg_sq", "0.max_exp_avg_sq", "1.exp_avg", "1.exp_avg_sq", "1.max_exp_avg_sq"};
    BOOST_TEST(names == expected, boost::test_tools::per_element());
    BOOST_TEST(adam.state()[2].second.shape() == two.a.shape());
    BOOST_TEST(adam.state()[5].second.shape() == two.b.shape());

    op::SGD<double> plain(two.ptrs(), {.lr = 0.1});
    BOOST_TEST(plain.state().size() == 2u);  // no momentum: no buffers
    op::SGD<double> mom(two.ptrs(), {.lr = 0.1, .momentum = 0.9});
    BOOST_TEST(mom.state()[2].first == "0.momentum_buffer");
    op::RMSprop<double> rms(two.ptrs(), {.momentum = 0.5, .centered = true});
    names.clear();
    for (const auto& [n, a] : rms.state()) names.push_back(n);
    const std::vector<std::string> rms_expected = {
        "step",       "lr",           "0.square_avg",      "0.momentum_buffer",
        "0.grad_avg", "1.square_avg", "1.momentum_buffer", "1.grad_avg"};
    BOOST_TEST(names == rms_expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(scalars_survive_float_state_exactly) {
    for (double v : {1e-3, 0.1, 3e-4 * 0.1 * 0.1, 1.0 / 3.0, 12345678901.0, 9007199254740992.0, 0.0, -2.5e-7,
                     std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
        const auto f = op::encode_scalar<float>(v);
        BOOST_TEST(f.dimension() == 1u);
        BOOST_TEST(op::decode_scalar(f, "x") == v);
        const auto d = op::encode_scalar<double>(v);
        BOOST_TEST(d.size() == 1u);
        BOOST_TEST(op::decode_scalar(d, "x") == v);
    }
    BOOST_TEST(std::isnan(op::decode_scalar(op::encode_scalar<float>(std::nan("")), "x")));
    BOOST_TEST(op::decode_scalar(xt::xarray<double>(2.5), "x") == 2.5);  // 0-d is accepted
    BOOST_CHECK_THROW(op::decode_scalar(xt::xarray<double>{{1.0, 2.0}}, "x"), shape_error);
    BOOST_CHECK_THROW(op::decode_scalar(xt::xarray<double>::from_shape({0}), "x"), shape_error);

    // The float optimizer keeps a double lr and a large step count through state.
    Two<float> two;
    op::Adam<float> a(two.ptrs(), {.lr = 1e-3 * 0.1 * 0.3});
    auto st = a.state();
    for (auto& [n, arr] : st)
        if (n == "step") arr = op::encode_scalar<float>(123456789012.0);
    op::Adam<float> b(two.ptrs(), {});
    b.load_state(st);
    BOOST_TEST(b.lr() == 1e-3 * 0.1 * 0.3);
    BOOST_TEST(b.steps() == 123456789012);
}

BOOST_AUTO_TEST_CASE(load_state_checks_everything_first) {
    Two<double> two;
    two.set_grads();
    op::Adam<double> opt(two.ptrs(), {.lr = 0.01});
    opt.step();
    opt.step();
    const op::State<double> before = opt.state();
    auto with = [&](const std::function<void(op::State<double>&)>& edit) {
        op::State<double> s = before;
        // Make the candidate differ everywhere, so a partial load would show.
        for (auto& [n, a] : s)
            if (n != "step" && n != "lr") a += 1.0;
        edit(s);
        return s;
    };
    auto unchanged = [&] { BOOST_TEST(state_equal(opt.state(), before)); };

    expect_error<value_error>(
        [&] { opt.load_state(with([](auto& s) { s.emplace_back("2.exp_avg", xt::xarray<double>{1.0}); })); },
        {"Adam", "unknown", "'2.exp_avg'"});
    unchanged();
    expect_error<value_error>([&] { opt.load_state(with([](auto& s) { s.erase(s.begin() + 3); })); },
                              {"Adam", "missing", "'0.exp_avg_sq'"});
    unchanged();
    expect_error<value_error>([&] { opt.load_state(with([](auto& s) { s.push_back(s[2]); })); },
                              {"repeated", "'0.exp_avg'"});
    unchanged();
    expect_error<shape_error>(
        [&] {
            opt.load_state(with([](auto& s) { s[4].second = xt::xarray<double>{1.0, 2.0, 3.0}; }));
        },
        {"Adam", "'1.exp_avg'", "(3,)", "(2,)"});
    unchanged();
    expect_error<value_error>([&] { opt.load_state(with([](auto& s) { s[0].second = xt::xarray<double>{2.5}; })); },
                              {"'step'", "integer"});
    unchanged();
    expect_error<value_error>([&] { opt.load_state(with([](auto& s) { s[0].second = xt::xarray<double>{-1.0}; })); },
                              {"'step'"});
    unchanged();
    expect_error<value_error>([&] { opt.load_state(with([](auto& s) { s[1].second = xt::xarray<double>{-0.1}; })); },
                              {"'lr'", "-0.1"});
    unchanged();
    expect_error<shape_error>(
        [&] { opt.load_state(with([](auto& s) {
                  s[1].second = xt::xarray<double>{{0.1, 0.2}};
              })); }, {"'lr'"});
    unchanged();

    // Another optimizer's state is rejected by its names.
    op::SGD<double> sgd(two.ptrs(), {.lr = 0.1, .momentum = 0.9});
    BOOST_CHECK_THROW(sgd.load_state(before), value_error);
    // A good load (entries in any order) succeeds.
    op::State<double> shuffled(before.rbegin(), before.rend());
    op::Adam<double> fresh(two.ptrs(), {.lr = 0.5});
    fresh.load_state(shuffled);
    BOOST_TEST(state_equal(fresh.state(), before));
}

// ---- Validation -----------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(invalid_hyper_parameters_raise_value_error) {
    Two<double> t;
    const auto ps = t.ptrs();
    const double nan = std::nan("");
    expect_error<value_error>([&] { op::SGD<double>(ps, {}); }, {"SGD", "lr", "required"});
    expect_error<value_error>([&] { op::SGD<double>(ps, {.lr = -0.1}); }, {"SGD", "lr", "-0.1"});
    expect_error<value_error>([&] { op::SGD<double>(ps, {.lr = nan}); }, {"SGD", "lr", "nan"});
    expect_error<value_error>([&] { op::SGD<double>(ps, {.lr = 0.1, .momentum = -0.5}); }, {"SGD", "momentum", "-0.5"});
    expect_error<value_error>([&] { op::SGD<double>(ps, {.lr = 0.1, .weight_decay = -1}); },
                              {"SGD", "weight_decay", "-1"});
    expect_error<value_error>([&] { op::SGD<double>(ps, {.lr = 0.1, .nesterov = true}); },
                              {"SGD", "Nesterov", "momentum 0"});
    expect_error<value_error>(
        [&] { op::SGD<double>(ps, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}); },
        {"SGD", "Nesterov", "dampening 0.1"});
    expect_error<value_error>([&] { op::Adam<double>(ps, {.lr = -1}); }, {"Adam", "lr", "-1"});
    expect_error<value_error>([&] { op::Adam<double>(ps, {.beta1 = 1.0}); }, {"Adam", "beta1", "1"});
    expect_error<value_error>([&] { op::Adam<double>(ps, {.beta2 = -0.1}); }, {"Adam", "beta2", "-0.1"});
    expect_error<value_error>([&] { op::Adam<double>(ps, {.beta2 = nan}); }, {"Adam", "beta2", "nan"});
    expect_error<value_error>([&] { op::Adam<double>(ps, {.eps = -1e-8}); }, {"Adam", "eps", "-1e-08"});
    expect_error<value_error>([&] { op::Adam<double>(ps, {.weight_decay = -0.01}); },
                              {"Adam", "weight_decay", "-0.01"});
    expect_error<value_error>([&] { op::AdamW<double>(ps, {.beta1 = 1.5}); }, {"AdamW", "beta1", "1.5"});
    expect_error<value_error>([&] { op::AdamW<double>(ps, {.weight_decay = -0.01}); }, {"AdamW", "weight_decay"});
    expect_error<value_error>([&] { op::RMSprop<double>(ps, {.alpha = -0.9}); }, {"RMSprop", "alpha", "-0.9"});
    expect_error<value_error>([&] { op::RMSprop<double>(ps, {.momentum = -1}); }, {"RMSprop", "momentum"});
    expect_error<value_error>([&] { op::RMSprop<double>(ps, {.eps = -1}); }, {"RMSprop", "eps"});
    expect_error<value_error>([&] { op::RMSprop<double>(ps, {.lr = -1}); }, {"RMSprop", "lr"});
    // Parameter lists.
    expect_error<value_error>([&] { op::Adam<double>({}); }, {"Adam", "empty"});
    expect_error<value_error>([&] { op::Adam<double>({&t.a, nullptr}); }, {"Adam", "parameter 1", "null"});
    expect_error<value_error>([&] { op::Adam<double>({&t.a, &t.b, &t.a}); }, {"Adam", "parameter 2", "parameter 0"});
    // Learning rates set later.
    op::Adam<double> opt(ps);
    expect_error<value_error>([&] { opt.set_lr(-1e-3); }, {"Adam", "lr", "-0.001"});
    BOOST_CHECK_THROW(opt.set_lr(std::numeric_limits<double>::infinity()), value_error);
    BOOST_TEST(opt.lr() == 1e-3);
    // lr = 0 is allowed, as in PyTorch.
    BOOST_CHECK_NO_THROW(op::SGD<double>(ps, {.lr = 0.0}));
}

BOOST_AUTO_TEST_CASE(step_checks_grad_shapes_before_updating) {
    Two<double> t;
    t.set_grads();
    op::SGD<double> opt(t.ptrs(), {.lr = 0.1, .momentum = 0.9});
    const xt::xarray<double> a0 = t.a.value();
    t.b.grad() = xt::xarray<double>{1.0, 2.0, 3.0};
    expect_error<shape_error>([&] { opt.step(); }, {"SGD", "parameter 1", "(2,)", "(3,)"});
    BOOST_TEST(bit_equal(t.a.value(), a0));  // parameter 0 untouched
    BOOST_TEST(opt.steps() == 0);
}

// ---- Schedules ----------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(steplr_matches_torch) {
    for (const Block& b : blocks_of("steplr")) {
        Two<double> t;
        op::SGD<double> opt(t.ptrs(), {.lr = b.num("lr", 0)});
        op::StepLR<double> sched = b.has("gamma") ? op::StepLR<double>(opt, b.count("step_size", 0), b.num("gamma", 0))
                                                  : op::StepLR<double>(opt, b.count("step_size", 0));
        const auto expected = lr_sequence(b.find("lrs"));
        BOOST_REQUIRE_EQUAL(expected.size(), static_cast<std::size_t>(b.count("epochs", 0)));
        for (std::size_t e = 0; e < expected.size(); ++e) {
            sched.step();
            BOOST_TEST(opt.lr() == expected[e], b.name << " epoch " << e + 1);
        }
        BOOST_TEST(sched.last_epoch() == b.count("epochs", 0));
    }
}

BOOST_AUTO_TEST_CASE(reduce_lr_on_plateau_matches_torch) {
    for (const Block& b : blocks_of("plateau")) {
        Two<double> t;
        op::SGD<double> opt(t.ptrs(), {.lr = b.num("lr", 0)});
        op::ReduceLROnPlateau<double> sched(opt, plateau_options(b));
        const auto metrics = numbers(b.find("metrics")->tokens, 0);
        const auto expected = lr_sequence(b.find("lrs"));
        BOOST_REQUIRE_EQUAL(metrics.size(), expected.size());
        for (std::size_t e = 0; e < metrics.size(); ++e) {
            sched.step(metrics[e]);
            BOOST_TEST(opt.lr() == expected[e], b.name << " epoch " << e + 1 << " metric " << metrics[e]);
        }
        BOOST_TEST(sched.last_epoch() == static_cast<std::int64_t>(metrics.size()));
    }
}

BOOST_AUTO_TEST_CASE(schedule_state_round_trip) {
    for (const Block& b : blocks_of("plateau")) {
        const auto metrics = numbers(b.find("metrics")->tokens, 0);
        const auto expected = lr_sequence(b.find("lrs"));
        for (std::size_t cut = 1; cut < metrics.size(); cut += 3) {
            Two<float> t;
            op::SGD<float> opt(t.ptrs(), {.lr = b.num("lr", 0)});
            op::ReduceLROnPlateau<float> sched(opt, plateau_options(b));
            for (std::size_t e = 0; e < cut; ++e) sched.step(metrics[e]);
            const auto opt_state = opt.state();
            const auto sched_state = sched.state();

            op::SGD<float> opt2(t.ptrs(), {.lr = 123.0});
            op::ReduceLROnPlateau<float> sched2(opt2, plateau_options(b));
            opt2.load_state(opt_state);
            sched2.load_state(sched_state);
            BOOST_TEST(sched2.best() == sched.best());
            BOOST_TEST(sched2.num_bad_epochs() == sched.num_bad_epochs());
            BOOST_TEST(sched2.cooldown_counter() == sched.cooldown_counter());
            for (std::size_t e = cut; e < metrics.size(); ++e) {
                sched2.step(metrics[e]);
                BOOST_TEST(opt2.lr() == expected[e], b.name << " resumed after " << cut << ", epoch " << e + 1);
            }
        }
    }
    // StepLR
    Two<float> t;
    op::SGD<float> opt(t.ptrs(), {.lr = 0.1});
    op::StepLR<float> s(opt, 3, 0.5);
    for (int e = 0; e < 4; ++e) s.step();
    op::SGD<float> opt2(t.ptrs(), {.lr = 1.0});
    op::StepLR<float> s2(opt2, 3, 0.5);
    opt2.load_state(opt.state());
    s2.load_state(s.state());
    for (int e = 0; e < 6; ++e) {
        s.step();
        s2.step();
        BOOST_TEST(opt2.lr() == opt.lr());
    }
    BOOST_TEST(s2.last_epoch() == 10);
    BOOST_CHECK_THROW(s2.load_state({}), value_error);
    BOOST_CHECK_THROW(s2.load_state({{"last_epoch", xt::xarray<float>{-1.0f}}}), value_error);
}

BOOST_AUTO_TEST_CASE(schedule_validation) {
    Two<double> t;
    op::SGD<double> opt(t.ptrs(), {.lr = 0.1});
    expect_error<value_error>([&] { op::StepLR<double>(opt, 0); }, {"StepLR", "step_size", "0"});
    expect_error<value_error>([&] { op::StepLR<double>(opt, 2, -0.5); }, {"StepLR", "gamma", "-0.5"});
    expect_error<value_error>([&] { op::ReduceLROnPlateau<double>(opt, {.factor = 1.0}); },
                              {"ReduceLROnPlateau", "factor", "1"});
    expect_error<value_error>([&] { op::ReduceLROnPlateau<double>(opt, {.patience = -1}); },
                              {"ReduceLROnPlateau", "patience", "-1"});
    expect_error<value_error>([&] { op::ReduceLROnPlateau<double>(opt, {.cooldown = -2}); }, {"cooldown", "-2"});
    expect_error<value_error>([&] { op::ReduceLROnPlateau<double>(opt, {.min_lr = -1e-3}); }, {"min_lr"});
    expect_error<value_error>([&] { op::ReduceLROnPlateau<double>(opt, {.eps = -1}); }, {"eps"});
    op::ReduceLROnPlateau<double> p(opt, {.mode = op::Mode::max});
    BOOST_TEST(p.best() == -std::numeric_limits<double>::infinity());
    BOOST_CHECK_THROW(p.load_state({{"best", xt::xarray<double>{1.0}}}), value_error);
}

// ---- Clipping -----------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(clip_grad_norm_matches_torch) {
    for (const Block& b : blocks_of("clipnorm")) {
        const Case c = read_case(b);
        Params<double> ps(c);
        ps.set_grads(c, 1);
        const double total = op::clip_grad_norm(ps.ptrs, b.num("max_norm", 0), b.num("norm_type", 0));
        const double expected = std::strtod(b.find("total")->tokens.at(0).c_str(), nullptr);
        if (std::isnan(expected))
            BOOST_TEST(std::isnan(total), b.name);
        else if (std::isinf(expected))
            BOOST_TEST(total == expected, b.name);
        else
            BOOST_TEST(std::fabs(total - expected) <= 1e-12 * expected, b.name << ": " << total << " vs " << expected);
        for (std::size_t i = 0; i < ps.ptrs.size(); ++i) {
            const double err = max_rel_error(ps.ptrs[i]->grad(), c.expect.at(1)[i], 1e-12);
            BOOST_TEST(err <= 1e-12, b.name << " grad " << i << ": relative error " << err);
        }
        // The same in float.
        Params<float> pf(c);
        pf.set_grads(c, 1);
        const double total_f = op::clip_grad_norm(pf.ptrs, b.num("max_norm", 0), b.num("norm_type", 0));
        if (std::isfinite(expected)) BOOST_TEST(std::fabs(total_f - expected) <= 1e-6 * expected, b.name);
        for (std::size_t i = 0; i < pf.ptrs.size(); ++i)
            BOOST_TEST(max_rel_error(pf.ptrs[i]->grad(), c.expect.at(1)[i], 1e-3) <= 1e-5,
                       b.name << " float grad " << i);
    }
}

BOOST_AUTO_TEST_CASE(clip_grad_value_matches_torch) {
    for (const Block& b : blocks_of("clipvalue")) {
        const Case c = read_case(b);
        Params<double> ps(c);
        ps.set_grads(c, 1);
        op::clip_grad_value(ps.ptrs, b.num("clip_value", 0));
        for (std::size_t i = 0; i < ps.ptrs.size(); ++i)
            BOOST_TEST(max_rel_error(ps.ptrs[i]->grad(), c.expect.at(1)[i]) == 0.0, b.name << " grad " << i);
    }
}

BOOST_AUTO_TEST_CASE(clipping_edge_cases) {
    Two<double> t;
    t.set_grads();
    t.a.grad()(0, 1) = std::numeric_limits<double>::infinity();
    const xt::xarray<double> a0 = t.a.grad(), b0 = t.b.grad();
    // error_if_nonfinite: raise and leave the grads alone.
    expect_error<value_error>([&] { op::clip_grad_norm(t.ptrs(), 1.0, 2.0, true); }, {"clip_grad_norm", "inf"});
    BOOST_TEST(bit_equal(t.a.grad(), a0));
    BOOST_TEST(bit_equal(t.b.grad(), b0));
    // Arguments.
    BOOST_CHECK_THROW(op::clip_grad_norm(t.ptrs(), -1.0), value_error);
    BOOST_CHECK_THROW(op::clip_grad_norm(t.ptrs(), 1.0, 0.0), value_error);
    BOOST_CHECK_THROW(op::clip_grad_norm(t.ptrs(), 1.0, std::nan("")), value_error);
    BOOST_CHECK_THROW(op::clip_grad_value(t.ptrs(), -0.5), value_error);
    BOOST_TEST(op::clip_grad_norm(std::vector<Parameter<double>*>{}, 1.0) == 0.0);
    // Huge and tiny gradients: the 2-norm neither overflows nor underflows.
    for (double scale : {1e200, 1e-200}) {
        Parameter<double> p(xt::xarray<double>{0.0, 0.0});
        p.grad() = xt::xarray<double>{3.0 * scale, 4.0 * scale};
        const double total = op::clip_grad_norm(std::vector<Parameter<double>*>{&p}, 1e300);
        BOOST_TEST(std::fabs(total - 5.0 * scale) <= 1e-15 * 5.0 * scale);
    }
}

BOOST_AUTO_TEST_SUITE_END()
