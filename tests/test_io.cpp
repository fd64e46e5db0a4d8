// numpy .npy/.npz I/O and module checkpoints (recur/io.hpp).
//
// Fixtures in tests/data are written by tests/data/make_npz_fixtures.py (numpy, PyTorch).
// With RECUR_IO_EXPORT_DIR=DIR set, the `export_for_numpy` case also writes files there for
//     /usr/bin/python3 tests/data/make_npz_fixtures.py --verify DIR
// which opens them with np.load.
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <recur/io.hpp>
#include <recur/nn/layers.hpp>
#include <recur/optim.hpp>
#include <recur/train.hpp>

#include "child_process.hpp"
#include "zip_writer.hpp"

using namespace recur;
namespace fs = std::filesystem;

namespace {

using Scalars = boost::mpl::list<float, double>;
using Bytes = std::vector<unsigned char>;

std::string data_file(const std::string& name) { return std::string(RECUR_TEST_DATA_DIR) + "/" + name; }

// A fresh directory under the system temp dir, removed with everything in it.
struct TempDir {
    fs::path path;
    TempDir() {
        static std::atomic<int> counter{0};
        path = fs::temp_directory_path() /
               ("recur-io-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1)));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string operator/(const std::string& name) const { return (path / name).string(); }
    std::size_t entries() const { return static_cast<std::size_t>(std::distance(fs::directory_iterator(path), {})); }
};

Bytes read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    BOOST_REQUIRE_MESSAGE(f, "cannot open " << path);
    return Bytes(std::istreambuf_iterator<char>(f), {});
}

// Writes a new file (removing any old one first: on ext4, truncating and rewriting a file
// forces a flush to disk on close, which makes thousands of rewrites slow).
void write_bytes(const std::string& path, const Bytes& b) {
    fs::remove(path);
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    BOOST_REQUIRE(f.good());
}

template <class T>
xt::xarray<T> make(const Shape& shape, std::function<double(std::size_t)> f) {
    xt::xarray<T> a = xt::xarray<T>::from_shape(shape);
    for (std::size_t k = 0; k < a.size(); ++k) a.data()[k] = static_cast<T>(f(k));
    return a;
}

template <class T, class U>
xt::xarray<T> convert(const xt::xarray<U>& a) {
    return make<T>(a.shape(), [&](std::size_t k) { return static_cast<double>(a.data()[k]); });
}

// Same shape and bit-identical elements.
template <class T>
bool identical(const xt::xarray<T>& a, const xt::xarray<T>& b) {
    return a.shape() == b.shape() && (a.size() == 0 || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// The values make_npz_fixtures.py uses.
const xt::xarray<double> kF2x3{{0.1, -2.5, 3.0}, {1e-300, 4.25, -0.0}};
xt::xarray<double> vec() {
    return make<double>({5}, [](std::size_t k) { return double(k) * 1.5 - 2.0; });
}
xt::xarray<double> cube() {
    return make<double>({2, 3, 4}, [](std::size_t k) { return double(k) * 0.5; });
}
xt::xarray<float> grid32() {
    return make<float>({3, 4}, [](std::size_t k) { return double((float(k) - 4.0f) / 8.0f); });
}

// Runs f; checks that it throws io_error whose message holds every part. Returns the message.
std::string expect_io_error(const std::function<void()>& f, std::initializer_list<std::string> parts = {}) {
    std::string msg;
    try {
        f();
        BOOST_ERROR("expected io_error, nothing was thrown");
        return "";
    } catch (const io_error& e) {
        msg = e.what();
    } catch (const std::exception& e) {
        BOOST_ERROR("expected io_error, got another exception: " << e.what());
        return "";
    } catch (...) {
        BOOST_ERROR("expected io_error, got a non-standard exception");
        return "";
    }
    for (const auto& p : parts)
        BOOST_TEST(msg.find(p) != std::string::npos, "message \"" << msg << "\" lacks \"" << p << "\"");
    return msg;
}

// ---- Test modules -------------------------------------------------------------------------

template <class T>
class Cell : public nn::Module<T> {
public:
    Cell() {
        this->register_parameter("weight", xt::xarray<T>::from_shape({2, 2}));
        this->register_parameter("bias", xt::xarray<T>::from_shape({2}));
    }
};

// Own parameters plus a child: names weight_ih_l0, bias_ih_l0, cell.weight, cell.bias.
template <class T>
class Tiny : public nn::Module<T> {
public:
    Tiny() {
        this->register_parameter("weight_ih_l0", xt::xarray<T>::from_shape({4, 3}));
        this->register_parameter("bias_ih_l0", xt::xarray<T>::from_shape({4}));
        this->register_module("cell", cell_);
    }

private:
    Cell<T> cell_;
};

using Spec = std::vector<std::pair<std::string, Shape>>;

template <class T>
class ListModule : public nn::Module<T> {
public:
    explicit ListModule(const Spec& spec) {
        for (const auto& [name, shape] : spec) this->register_parameter(name, xt::xarray<T>::from_shape(shape));
    }
};

// The parameters of torch.nn.LSTM(input, hidden, num_layers, bidirectional=True), in
// state_dict order.
Spec lstm_spec(std::size_t input, std::size_t hidden, std::size_t layers) {
    Spec s;
    for (std::size_t l = 0; l < layers; ++l) {
        for (std::string sfx : {"", "_reverse"}) {
            const std::string k = std::to_string(l) + sfx;
            const std::size_t in = l == 0 ? input : 2 * hidden;
            s.push_back({"weight_ih_l" + k, {4 * hidden, in}});
            s.push_back({"weight_hh_l" + k, {4 * hidden, hidden}});
            s.push_back({"bias_ih_l" + k, {4 * hidden}});
            s.push_back({"bias_hh_l" + k, {4 * hidden}});
        }
    }
    return s;
}

// value[k] = k * 0.25 - 1 + offset (exact in float), per parameter.
template <class T>
void fill(nn::Module<T>& m, double offset = 0.0) {
    for (auto& [name, p] : m.named_parameters())
        for (std::size_t k = 0; k < p->size(); ++k)
            p->value().data()[k] = static_cast<T>(double(k) * 0.25 - 1.0 + offset);
}

template <class T>
std::vector<xt::xarray<T>> snapshot(nn::Module<T>& m) {
    std::vector<xt::xarray<T>> out;
    for (auto& [name, p] : m.named_parameters()) out.push_back(p->value());
    return out;
}

template <class T>
bool unchanged(nn::Module<T>& m, const std::vector<xt::xarray<T>>& snap) {
    auto params = m.named_parameters();
    if (params.size() != snap.size()) return false;
    for (std::size_t k = 0; k < snap.size(); ++k)
        if (!identical(params[k].second->value(), snap[k])) return false;
    return true;
}

// A .npy file from a header text (padded like numpy) and raw data.
Bytes make_npy(const std::string& header, const Bytes& payload, unsigned char major = 1) {
    Bytes out = {0x93, 'N', 'U', 'M', 'P', 'Y', major, 0};
    const std::size_t len_bytes = major == 1 ? 2 : 4;
    std::string h = header;
    while ((8 + len_bytes + h.size() + 1) % 64 != 0) h += ' ';
    h += '\n';
    for (std::size_t k = 0; k < len_bytes; ++k) out.push_back(static_cast<unsigned char>(h.size() >> (8 * k)));
    out.insert(out.end(), h.begin(), h.end());
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
}

Bytes f8_payload(std::size_t n) {
    Bytes b(n * 8);
    for (std::size_t k = 0; k < n; ++k) {
        double v = double(k);
        std::memcpy(b.data() + 8 * k, &v, 8);
    }
    return b;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(io)

// ---- .npy ---------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(npy_bytes_match_numpy) {
    TempDir dir;
    auto same_as = [&](const std::string& fixture, auto array) {
        const std::string p = dir / fixture;
        recur::io::save_npy(p, array);
        BOOST_TEST((read_bytes(p) == read_bytes(data_file(fixture))),
                   fixture << ": recur's bytes differ from np.save's");
    };
    same_as("np_f32_2x3.npy", convert<float>(kF2x3));
    same_as("np_f64_2x3.npy", kF2x3);
    same_as("np_f64_vec.npy", vec());
    same_as("np_f64_scalar.npy", xt::xarray<double>(3.25));
    same_as("np_f64_empty.npy", xt::xarray<double>::from_shape({0, 3}));
}

BOOST_AUTO_TEST_CASE(npy_reads_numpy_files) {
    BOOST_TEST(identical(recur::io::load_npy<double>(data_file("np_f64_2x3.npy")), kF2x3));
    BOOST_TEST(identical(recur::io::load_npy<float>(data_file("np_f32_2x3.npy")), convert<float>(kF2x3)));
    // float32 file into double: exact widening of the stored floats
    BOOST_TEST(
        identical(recur::io::load_npy<double>(data_file("np_f32_2x3.npy")), convert<double>(convert<float>(kF2x3))));
    // float64 file into float: rounded
    BOOST_TEST(identical(recur::io::load_npy<float>(data_file("np_f64_2x3.npy")), convert<float>(kF2x3)));
    BOOST_TEST(identical(recur::io::load_npy<double>(data_file("np_f64_vec.npy")), vec()));

    auto s = recur::io::load_npy<double>(data_file("np_f64_scalar.npy"));
    BOOST_TEST(s.dimension() == 0u);
    BOOST_TEST(s.size() == 1u);
    BOOST_TEST(s() == 3.25);

    auto e = recur::io::load_npy<float>(data_file("np_f64_empty.npy"));
    BOOST_TEST((e.shape() == Shape{0, 3}));

    // Fortran order is transposed into recur's row-major layout.
    BOOST_TEST(identical(recur::io::load_npy<double>(data_file("np_f64_fortran.npy")), cube()));
    BOOST_TEST(identical(recur::io::load_npy<float>(data_file("np_f32_fortran.npy")), grid32()));
    // Format versions 2.0 and 3.0.
    BOOST_TEST(identical(recur::io::load_npy<double>(data_file("np_f64_v2.npy")), cube()));
    BOOST_TEST(identical(recur::io::load_npy<float>(data_file("np_f32_v3.npy")), grid32()));
}

BOOST_AUTO_TEST_CASE(npy_rejects_other_dtypes) {
    expect_io_error([] { recur::io::load_npy<double>(data_file("np_i64.npy")); },
                    {"np_i64.npy", "'<i8'", "int64", "float32"});
    expect_io_error([] { recur::io::load_npy<double>(data_file("np_f8_be.npy")); },
                    {"np_f8_be.npy", "'>f8'", "big-endian"});
    expect_io_error([] { recur::io::load_npy<float>(data_file("np_c16.npy")); },
                    {"np_c16.npy", "'<c16'", "complex128"});
    expect_io_error([] { recur::io::load_npy<float>(data_file("np_structured.npy")); },
                    {"np_structured.npy", "structured"});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(npy_roundtrip, T, Scalars) {
    TempDir dir;
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<xt::xarray<T>> cases = {
        xt::xarray<T>(T(-7.5)),
        make<T>({7}, [](std::size_t k) { return std::sin(double(k)); }),
        make<T>({3, 5}, [](std::size_t k) { return double(k) / 3.0; }),
        make<T>({2, 3, 4, 5}, [](std::size_t k) { return std::exp(double(k) / 20.0) - 3.0; }),
        make<T>({4},
                [&](std::size_t k) {
                    return std::vector<double>{inf, -inf, -0.0, 1e-310}[k];
                }),
        xt::xarray<T>::from_shape({3, 0, 2}),
    };
    for (std::size_t i = 0; i < cases.size(); ++i) {
        const std::string p = dir / ("a" + std::to_string(i) + ".npy");
        recur::io::save_npy(p, cases[i]);
        BOOST_TEST(identical(recur::io::load_npy<T>(p), cases[i]), "case " << i);
        BOOST_TEST(read_bytes(p).size() % 64 == (cases[i].size() * sizeof(T)) % 64);  // data 64-aligned
    }
    BOOST_TEST(dir.entries() == cases.size());  // no temporary files left
}

BOOST_AUTO_TEST_CASE(npy_truncated_and_garbage) {
    TempDir dir;
    const std::string good = dir / "good.npy";
    recur::io::save_npy(good, cube());
    const Bytes bytes = read_bytes(good);
    const std::string p = dir / "bad.npy";
    for (std::size_t n = 0; n < bytes.size(); ++n) {
        write_bytes(p, Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n)));
        expect_io_error([&] { recur::io::load_npy<double>(p); }, {p});
    }
    // trailing bytes
    Bytes longer = bytes;
    longer.push_back(0);
    write_bytes(p, longer);
    expect_io_error([&] { recur::io::load_npy<double>(p); }, {p, "(2, 3, 4)"});

    std::mt19937 rng(42);
    for (std::size_t n : {1u, 7u, 10u, 64u, 200u, 5000u}) {
        Bytes r(n);
        for (auto& b : r) b = static_cast<unsigned char>(rng());
        write_bytes(p, r);
        expect_io_error([&] { recur::io::load_npy<float>(p); }, {p});
        Bytes magic = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
        magic.insert(magic.end(), r.begin(), r.end());
        write_bytes(p, magic);
        expect_io_error([&] { recur::io::load_npy<float>(p); }, {p});
    }
    expect_io_error([&] { recur::io::load_npy<float>(dir / "does_not_exist.npy"); }, {"does_not_exist.npy"});
    expect_io_error([&] { recur::io::load_npy<float>(dir.path.string()); }, {"not a regular file"});
}

BOOST_AUTO_TEST_CASE(npy_malformed_headers) {
    TempDir dir;
    const std::string p = dir / "h.npy";
    auto rejects = [&](const Bytes& b, std::initializer_list<std::string> parts) {
        write_bytes(p, b);
        expect_io_error([&] { recur::io::load_npy<double>(p); }, parts);
    };
    const std::string ok = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }";
    write_bytes(p, make_npy(ok, f8_payload(6)));
    BOOST_TEST(recur::io::load_npy<double>(p)(1, 2) == 5.0);  // the helper itself makes valid files
    // Python-literal variants numpy's reader also accepts.
    write_bytes(p, make_npy("{\"shape\":(2,3),\"fortran_order\":False,\"descr\":\"<f8\"}", f8_payload(6)));
    BOOST_TEST(recur::io::load_npy<double>(p)(1, 2) == 5.0);
    write_bytes(p, make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 3L), }", f8_payload(6)));
    BOOST_TEST(recur::io::load_npy<double>(p)(1, 2) == 5.0);

    rejects(make_npy(ok, f8_payload(5)), {"truncated", "(2, 3)", "48 bytes"});
    rejects(make_npy(ok, f8_payload(7)), {"(2, 3)"});
    rejects(make_npy("{'descr': '<f8', 'fortran_order': False}", {}), {"malformed"});
    rejects(make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}", f8_payload(6)),
            {"'extra'"});
    rejects(make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), 'shape': (6,)}", f8_payload(6)),
            {"twice"});
    rejects(make_npy("{'descr': '<f8', 'fortran_order': false, 'shape': (6,)}", f8_payload(6)), {"malformed"});
    rejects(make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (6)}", f8_payload(6)), {"malformed"});
    rejects(make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-6,)}", f8_payload(6)), {"malformed"});
    rejects(make_npy("{'descr': '<f8, 'fortran_order': False, 'shape': (6,)}", f8_payload(6)), {"malformed"});
    rejects(make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (6,)} x", f8_payload(6)), {"malformed"});
    rejects(make_npy("", {}), {"malformed"});
    // sizes that overflow: element count, byte count, digits
    rejects(make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 2), }", {}),
            {"too large"});
    rejects(make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,), }", {}), {"too large"});
    rejects(make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999999,), }", {}),
            {"malformed"});
    rejects(make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }", f8_payload(3)),
            {"truncated", "(1000000, 1000000)"});
    // versions and header lengths
    rejects(make_npy(ok, f8_payload(6), 4), {"version 4.0"});
    Bytes lying_len = make_npy(ok, f8_payload(6));
    lying_len[8] = 0xff;
    lying_len[9] = 0xff;
    rejects(lying_len, {"truncated"});
    Bytes huge_v2 = make_npy(ok, f8_payload(6), 2);
    huge_v2[11] = 0x7f;
    rejects(huge_v2, {"malformed"});
    Bytes nul = make_npy(ok, f8_payload(6));
    nul[20] = 0;
    rejects(nul, {"NUL"});
}

// A zero extent makes the element count 0 but leaves the strides (products of the later
// extents) as large as they are: (0, 2**32, 2**32) once passed the size checks and overflowed
// computing strides (UBSan, xtensor/xstrides.hpp). Found by fuzz/npy.
BOOST_AUTO_TEST_CASE(npy_shapes_whose_strides_overflow) {
    TempDir dir;
    const std::string p = dir / "h.npy";
    auto header = [](const std::string& descr, const std::string& shape, bool fortran = false) {
        return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': " + shape +
               ", }";
    };
    const std::string two32 = "4294967296", two61 = "2305843009213693952";
    std::string many_twos = "(0";  // (0, 2, 2, ..., 2): 63 twos, 2**63 elements without the zero
    for (int k = 0; k < 63; ++k) many_twos += ", 2";
    many_twos += ")";
    const std::vector<std::pair<std::string, std::string>> hostile = {
        {"<f8", "(0, " + two32 + ", " + two32 + ")"},
        {"<f4", "(0, " + two32 + ", " + two32 + ")"},
        {"<f8", "(" + two32 + ", 0, " + two32 + ")"},
        {"<f8", "(" + two32 + ", " + two32 + ", 0)"},  // numpy refuses it too ("array is too big")
        {"<f8", "(0, " + two61 + ")"},  // 2**61 * 8 bytes = 2**64
        {"<f4", "(0, " + two61 + ")"},  // 2**63 bytes: beyond ptrdiff_t
        {"<f8", many_twos},
        // found by fuzz/npy (fuzz_npy, 5 minutes) with the old check
        {"<f4", "(0, 1, 18446547488, 0, 21, 18444294967296, 9223372036854775807)"},
    };
    for (const auto& [descr, shape] : hostile) {
        BOOST_TEST_CONTEXT(descr << " " << shape) {
            for (bool fortran : {false, true}) {
                write_bytes(p, make_npy(header(descr, shape, fortran), {}));
                expect_io_error([&] { recur::io::load_npy<double>(p); }, {p, "too large", shape});
                expect_io_error([&] { recur::io::load_npy<float>(p); }, {p, "too large"});
            }
            write_bytes(p, make_npy(header("<i8", shape), {}));
            expect_io_error([&] { recur::io::load_npy<std::int64_t>(p); }, {p, "too large"});
        }
    }
    // The bound is recur's element size as well as the file's: 2**60 float32 slots fit in a
    // float array (2**62 bytes), not in a double one (2**63 bytes).
    write_bytes(p, make_npy(header("<f4", "(0, 1152921504606846976)"), {}));
    BOOST_TEST((recur::io::load_npy<float>(p).shape() == Shape{0, std::size_t(1) << 60}));
    expect_io_error([&] { recur::io::load_npy<double>(p); }, {p, "too large"});

    // Large but valid empty shapes still load, with the shape they declare.
    write_bytes(p, make_npy(header("<f8", "(0, 1048576, 1048576)"), {}));
    auto e = recur::io::load_npy<double>(p);
    BOOST_TEST((e.shape() == Shape{0, 1u << 20, 1u << 20}));
    BOOST_TEST(e.size() == 0u);
    write_bytes(p, make_npy(header("<f8", "(1048576, 1048576, 0)", true), {}));
    BOOST_TEST((recur::io::load_npy<double>(p).shape() == Shape{1u << 20, 1u << 20, 0}));

    // The same headers inside an .npz: load_npz, and load into a module (left unchanged).
    const std::string z = dir / "h.npz";
    write_bytes(
        z, recur::testing::stored_zip({{"b.npy", make_npy(header("<f8", "(4,)"), f8_payload(4))},
                                       {"w.npy", make_npy(header("<f8", "(0, " + two32 + ", " + two32 + ")"), {})}}));
    expect_io_error([&] { recur::io::load_npz<double>(z); }, {z, "'w'", "too large"});
    expect_io_error([&] { recur::io::load_npz<float>(z, {"w"}); }, {z, "'w'", "too large"});
    ListModule<double> m({{"b", {4}}, {"w", {0, 2, 2}}});
    fill(m, 3.0);
    const auto snap = snapshot(m);
    expect_io_error([&] { recur::io::load(m, z); }, {z, "'w'", "too large"});
    BOOST_TEST(unchanged(m, snap));
}

// The test helper that builds archives writes what libzip (and so np.load) reads.
BOOST_AUTO_TEST_CASE(zip_writer_makes_valid_archives) {
    TempDir dir;
    const std::string z = dir / "w.npz";
    write_bytes(z,
                recur::testing::stored_zip(
                    {{"a.npy", make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", f8_payload(6))},
                     {"e.npy", make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (0,), }", {})}}));
    const auto arrays = recur::io::load_npz<double>(z);
    BOOST_REQUIRE(arrays.size() == 2u);
    BOOST_TEST(arrays[0].first == "a");
    BOOST_TEST(arrays[0].second(1, 2) == 5.0);
    BOOST_TEST(arrays[1].second.size() == 0u);
    BOOST_TEST(recur::testing::crc32({'1', '2', '3', '4', '5', '6', '7', '8', '9'}) == 0xCBF43926u);  // the check value
}

// ---- .npz ---------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(npz_reads_numpy_archives) {
    for (const char* name : {"np_savez.npz", "np_savez_compressed.npz"}) {
        BOOST_TEST_CONTEXT(name) {
            auto arrays = recur::io::load_npz<double>(data_file(name));
            BOOST_REQUIRE(arrays.size() == 4u);
            BOOST_TEST(arrays[0].first == "a");
            BOOST_TEST(arrays[1].first == "b");
            BOOST_TEST(arrays[2].first == "c");
            BOOST_TEST(arrays[3].first == "d");
            BOOST_TEST(identical(arrays[0].second, convert<double>(convert<float>(kF2x3))));
            BOOST_TEST(identical(arrays[1].second, vec()));
            BOOST_TEST(arrays[2].second.dimension() == 0u);
            BOOST_TEST(arrays[2].second() == 3.25);
            BOOST_TEST(identical(arrays[3].second, cube()));
            auto f = recur::io::load_npz<float>(data_file(name));
            BOOST_TEST(identical(f[3].second, convert<float>(cube())));
        }
    }
}

BOOST_AUTO_TEST_CASE(npz_rejects_bad_archives) {
    expect_io_error([] { recur::io::load_npz<float>(data_file("np_savez_int.npz")); },
                    {"np_savez_int.npz", "'ids'", "'<i8'", "int64"});
    expect_io_error([] { recur::io::load_npz<float>(data_file("lying_header.npz")); },
                    {"lying_header.npz", "'w'", "truncated", "(100, 100)"});
    expect_io_error([] { recur::io::load_npz<float>(data_file("extra_data.npz")); }, {"extra_data.npz", "'w'", "(2,)"});
    expect_io_error([] { recur::io::load_npz<float>(data_file("not_npy_member.npz")); },
                    {"not_npy_member.npz", "'readme.txt'"});
    expect_io_error([] { recur::io::load_npz<float>(data_file("np_f64_vec.npy")); }, {"np_f64_vec.npy", "zip"});
    expect_io_error([] { recur::io::load_npz<float>(data_file("no_such_file.npz")); }, {"no_such_file.npz"});
    expect_io_error([] { recur::io::load_npz<float>(RECUR_TEST_DATA_DIR); }, {"not a regular file"});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(npz_roundtrip_keeps_order, T, Scalars) {
    TempDir dir;
    const std::string p = dir / "arrays.npz";
    std::vector<recur::io::NamedArray<T>> arrays = {
        {"zeta", make<T>({3, 2}, [](std::size_t k) { return double(k) - 2.5; })},
        {"alpha", xt::xarray<T>(T(0.5))},
        {"layer.0.weight", make<T>({4}, [](std::size_t k) { return 1.0 / double(k + 1); })},
        {"empty", xt::xarray<T>::from_shape({0})},
    };
    recur::io::save_npz(p, arrays);
    auto back = recur::io::load_npz<T>(p);
    BOOST_REQUIRE(back.size() == arrays.size());
    for (std::size_t k = 0; k < arrays.size(); ++k) {
        BOOST_TEST(back[k].first == arrays[k].first);
        BOOST_TEST(identical(back[k].second, arrays[k].second));
    }
    // the other precision
    using U = std::conditional_t<std::is_same_v<T, float>, double, float>;
    auto other = recur::io::load_npz<U>(p);
    BOOST_TEST(identical(other[0].second, convert<U>(arrays[0].second)));

    // bad names: nothing is written
    const std::string q = dir / "bad.npz";
    expect_io_error([&] { recur::io::save_npz<T>(q, {{"", arrays[0].second}}); }, {"bad.npz", "empty"});
    expect_io_error(
        [&] {
            recur::io::save_npz<T>(q, {{"x", arrays[0].second}, {"x", arrays[1].second}});
        },
        {"'x'", "twice"});
    BOOST_TEST(!fs::exists(q));
    BOOST_TEST(dir.entries() == 1u);
}

BOOST_AUTO_TEST_CASE(integer_arrays_and_selected_members) {
    using I = std::int64_t;
    // T = int64 reads every little-endian integer type numpy writes.
    auto ints = recur::io::load_npz<I>(data_file("np_ints.npz"));
    BOOST_REQUIRE(ints.size() == 8u);
    for (const auto& [name, a] : ints) {
        BOOST_TEST_CONTEXT(name) {
            BOOST_TEST((a.shape() == Shape{3}));
            const bool is_signed = name[0] == 'i';
            BOOST_TEST(a(0) == (is_signed ? I(-3) : I(0)));
            BOOST_TEST(a(1) == (is_signed ? I(0) : I(7)));
            BOOST_TEST(a(2) == (is_signed ? I(7) : I(200)));
        }
    }
    auto i64 = recur::io::load_npy<I>(data_file("np_i64.npy"));
    BOOST_TEST((i64.shape() == Shape{2, 3}));
    BOOST_TEST(i64(1, 2) == I(5));
    expect_io_error([] { recur::io::load_npy<I>(data_file("np_u64_big.npy")); }, {"np_u64_big.npy", "int64"});
    expect_io_error([] { recur::io::load_npy<I>(data_file("np_f64_vec.npy")); },
                    {"np_f64_vec.npy", "'<f8'", "integer"});
    expect_io_error([] { recur::io::load_npy<I>(data_file("np_f8_be.npy")); }, {"'>f8'"});

    // Selected members: float data and integer lengths side by side.
    auto w = recur::io::load_npz<double>(data_file("np_savez_int.npz"), {"w"});
    BOOST_REQUIRE(w.size() == 1u);
    BOOST_TEST(w[0].first == "w");
    BOOST_TEST(identical(w[0].second, vec()));
    auto ids = recur::io::load_npz<I>(data_file("np_savez_int.npz"), {"ids"});
    BOOST_REQUIRE(ids.size() == 1u);
    BOOST_TEST(ids[0].second(2) == I(2));
    auto two = recur::io::load_npz<float>(data_file("np_savez.npz"), {"d", "a"});  // the order asked for
    BOOST_REQUIRE(two.size() == 2u);
    BOOST_TEST(two[0].first == "d");
    BOOST_TEST(two[1].first == "a");
    BOOST_TEST(identical(two[0].second, convert<float>(cube())));
    // other members are not read, even ones that are not arrays
    BOOST_TEST(recur::io::load_npz<double>(data_file("not_npy_member.npz"), {"w"}).size() == 1u);
    expect_io_error([] { recur::io::load_npz<double>(data_file("np_savez_int.npz"), {"lengths"}); },
                    {"np_savez_int.npz", "no array 'lengths'", "w, ids"});
    expect_io_error([] { recur::io::load_npz<double>(data_file("np_savez_int.npz"), {"ids"}); }, {"'ids'", "'<i8'"});
    expect_io_error([] { recur::io::load_npz<double>(data_file("np_savez.npz"), {"a", "a"}); }, {"'a'", "twice"});
}

// ---- Modules ------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE_TEMPLATE(module_roundtrip, T, Scalars) {
    TempDir dir;
    const std::string p = dir / "m.npz";
    Tiny<T> a;
    fill(a, 0.125);
    recur::io::save(a, p);

    auto arrays = recur::io::load_npz<T>(p);
    std::vector<std::string> names;
    for (auto& [n, v] : arrays) names.push_back(n);
    BOOST_TEST((names == std::vector<std::string>{"weight_ih_l0", "bias_ih_l0", "cell.weight", "cell.bias"}));

    Tiny<T> b;
    fill(b, 7.0);
    std::vector<const T*> buffers;
    for (auto* q : b.parameters()) buffers.push_back(q->value().data());
    recur::io::load(b, p);
    BOOST_TEST(unchanged(b, snapshot(a)));
    for (std::size_t k = 0; k < buffers.size(); ++k) BOOST_TEST(b.parameters()[k]->value().data() == buffers[k]);

    // Cross precision: a float checkpoint into a double module and back.
    using U = std::conditional_t<std::is_same_v<T, float>, double, float>;
    Tiny<U> c;
    recur::io::load(c, p);
    auto ca = snapshot(a);
    auto cc = snapshot(c);
    for (std::size_t k = 0; k < ca.size(); ++k) BOOST_TEST(identical(cc[k], convert<U>(ca[k])));
    const std::string q = dir / "other.npz";
    recur::io::save(c, q);
    Tiny<T> d;
    recur::io::load(d, q);
    BOOST_TEST(unchanged(d, snapshot(a)));  // the values (multiples of 1/8) survive both ways

    // Overwriting a checkpoint replaces it and leaves no temporary file behind.
    fill(a, -3.0);
    recur::io::save(a, p);
    recur::io::load(b, p);
    BOOST_TEST(unchanged(b, snapshot(a)));
    BOOST_TEST(dir.entries() == 2u);
}

BOOST_AUTO_TEST_CASE(module_cross_precision_rounds) {
    TempDir dir;
    const std::string p = dir / "m.npz";
    ListModule<double> d({{"w", {3}}});
    d.parameters()[0]->value() = xt::xarray<double>{0.1, 1.0 / 3.0, 1e-40};
    recur::io::save(d, p);
    ListModule<float> f({{"w", {3}}});
    recur::io::load(f, p);
    BOOST_TEST(identical(f.parameters()[0]->value(), xt::xarray<float>{0.1f, 1.0f / 3.0f, static_cast<float>(1e-40)}));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(module_loads_torch_lstm, T, Scalars) {
    // torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True).state_dict(), via np.savez.
    ListModule<T> m(lstm_spec(3, 4, 2));
    recur::io::load(m, data_file("torch_lstm.npz"));

    auto arrays = recur::io::load_npz<T>(data_file("torch_lstm.npz"));
    auto params = m.named_parameters();
    BOOST_REQUIRE(arrays.size() == params.size());
    for (std::size_t k = 0; k < params.size(); ++k) {
        BOOST_TEST(arrays[k].first == params[k].first);  // PyTorch's state_dict order
        BOOST_TEST(arrays[k].second.shape() == params[k].second->shape());
    }
    auto value = [&](const std::string& name) -> const xt::xarray<T>& {
        for (auto& [n, p] : params)
            if (n == name) return p->value();
        BOOST_FAIL("no parameter " << name);
        throw;
    };
    BOOST_TEST((value("weight_ih_l1").shape() == Shape{16, 8}));
    BOOST_TEST((value("bias_hh_l0_reverse").shape() == Shape{16}));
    // Printed by make_npz_fixtures.py (float32 values, exact).
    BOOST_TEST(value("weight_ih_l0")(0, 0) == static_cast<T>(-0.00374341f));
    BOOST_TEST(value("weight_hh_l1_reverse")(15, 3) == static_cast<T>(0.11387974f));
    BOOST_TEST(value("bias_hh_l1")(15) == static_cast<T>(0.30913067f));
    BOOST_TEST(value("weight_ih_l1")(7, 6) == static_cast<T>(-0.17528123f));

    // A module of another size: every mismatch is reported, nothing changes.
    ListModule<T> wrong(lstm_spec(5, 4, 2));
    fill(wrong);
    auto snap = snapshot(wrong);
    expect_io_error(
        [&] { recur::io::load(wrong, data_file("torch_lstm.npz")); },
        {"torch_lstm.npz", "parameter 'weight_ih_l0' has shape (16, 3) in the file, the module expects (16, 5)",
         "parameter 'weight_ih_l0_reverse' has shape (16, 3) in the file, the module expects (16, 5)"});
    BOOST_TEST(unchanged(wrong, snap));
    // One layer only: the file has unexpected arrays.
    ListModule<T> one(lstm_spec(3, 4, 1));
    fill(one);
    snap = snapshot(one);
    expect_io_error([&] { recur::io::load(one, data_file("torch_lstm.npz")); }, {"'weight_ih_l1'", "no parameter"});
    BOOST_TEST(unchanged(one, snap));
}

BOOST_AUTO_TEST_CASE(module_load_mismatches_leave_module_unchanged) {
    TempDir dir;
    const std::string p = dir / "m.npz";
    ListModule<float> saved({{"weight_hh_l0", {16, 4}}, {"bias_hh_l0", {16}}});
    fill(saved);
    recur::io::save(saved, p);

    // The exact message for a single wrong shape.
    ListModule<float> m({{"weight_hh_l0", {16, 8}}, {"bias_hh_l0", {16}}});
    fill(m, 5.0);
    auto snap = snapshot(m);
    const std::string msg = expect_io_error([&] { recur::io::load(m, p); });
    BOOST_TEST(msg ==
               "load " + p + ": parameter 'weight_hh_l0' has shape (16, 4) in the file, the module expects (16, 8)");
    BOOST_TEST(unchanged(m, snap));

    // A parameter missing from the file.
    ListModule<float> more({{"weight_hh_l0", {16, 4}}, {"bias_hh_l0", {16}}, {"weight_hr_l0", {4, 4}}});
    fill(more, 5.0);
    snap = snapshot(more);
    expect_io_error([&] { recur::io::load(more, p); }, {p, "parameter 'weight_hr_l0' (4, 4) is missing from the file"});
    BOOST_TEST(unchanged(more, snap));

    // An array the module does not have.
    ListModule<float> fewer({{"weight_hh_l0", {16, 4}}});
    fill(fewer, 5.0);
    snap = snapshot(fewer);
    expect_io_error([&] { recur::io::load(fewer, p); }, {p, "array 'bias_hh_l0' (16,)", "no parameter"});
    BOOST_TEST(unchanged(fewer, snap));

    // Unsupported dtype in a numpy file.
    ListModule<double> ints({{"w", {5}}, {"ids", {3}}});
    fill(ints, 5.0);
    auto isnap = snapshot(ints);
    expect_io_error([&] { recur::io::load(ints, data_file("np_savez_int.npz")); },
                    {"np_savez_int.npz", "'ids'", "'<i8'"});
    BOOST_TEST(unchanged(ints, isnap));

    // A header that lies about its size.
    ListModule<double> w({{"w", {100, 100}}});
    fill(w, 5.0);
    isnap = snapshot(w);
    expect_io_error([&] { recur::io::load(w, data_file("lying_header.npz")); },
                    {"lying_header.npz", "'w'", "truncated"});
    BOOST_TEST(unchanged(w, isnap));

    // Missing file.
    expect_io_error([&] { recur::io::load(m, dir / "nope.npz"); }, {"nope.npz"});
    BOOST_TEST(unchanged(m, snapshot(m)));
}

BOOST_AUTO_TEST_CASE(module_load_truncated_files) {
    TempDir dir;
    const std::string good = dir / "good.npz";
    Tiny<double> saved;
    fill(saved, 0.5);
    recur::io::save(saved, good);
    const Bytes bytes = read_bytes(good);

    Tiny<double> m;
    fill(m, 9.0);
    const auto snap = snapshot(m);
    const std::string p = dir / "cut.npz";
    for (std::size_t n = 0; n < bytes.size(); ++n) {
        write_bytes(p, Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n)));
        expect_io_error([&] { recur::io::load(m, p); }, {p});
        BOOST_REQUIRE(unchanged(m, snap));
    }
}

// Flip each byte in turn: the load either fails cleanly (module unchanged) or, when the byte
// carried no data (a timestamp, an unused field), loads exactly the saved values.
BOOST_AUTO_TEST_CASE(module_load_corrupted_files) {
    TempDir dir;
    const std::string p = dir / "flip.npz";
    for (const std::string& source : {std::string("recur"), data_file("torch_lstm.npz")}) {
        ListModule<float> reference(source == "recur" ? Spec{{"a", {3, 2}}, {"b", {4}}} : lstm_spec(3, 4, 2));
        if (source == "recur") {
            fill(reference, 0.25);
            recur::io::save(reference, dir / "good.npz");
        } else {
            recur::io::load(reference, source);
        }
        const Bytes bytes = read_bytes(source == "recur" ? dir / "good.npz" : source);
        const auto good = snapshot(reference);

        ListModule<float> m(source == "recur" ? Spec{{"a", {3, 2}}, {"b", {4}}} : lstm_spec(3, 4, 2));
        std::size_t detected = 0;
        for (std::size_t k = 0; k < bytes.size(); ++k) {
            Bytes bad = bytes;
            bad[k] ^= 0x5a;
            write_bytes(p, bad);
            fill(m, 9.0);
            const auto snap = snapshot(m);
            bool ok = false;
            try {
                recur::io::load(m, p);
                ok = true;
            } catch (const io_error&) {
                ++detected;
                BOOST_REQUIRE_MESSAGE(unchanged(m, snap), "byte " << k << ": module changed by a failed load");
            }
            if (ok) BOOST_REQUIRE_MESSAGE(unchanged(m, good), "byte " << k << ": corrupted file loaded wrong values");
        }
        BOOST_TEST_MESSAGE(source << ": " << detected << " of " << bytes.size() << " byte flips detected");
        BOOST_TEST(detected > bytes.size() / 2);
    }
}

BOOST_AUTO_TEST_CASE(random_bytes_are_rejected) {
    TempDir dir;
    const std::string p = dir / "random.npz";
    Tiny<float> m;
    fill(m, 1.0);
    const auto snap = snapshot(m);
    std::mt19937 rng(7);
    for (std::size_t n : {0u, 1u, 4u, 22u, 100u, 1000u, 20000u}) {
        for (int variant = 0; variant < 3; ++variant) {
            Bytes b(n);
            for (auto& x : b) x = static_cast<unsigned char>(rng());
            if (variant == 1 && n >= 4) std::memcpy(b.data(), "PK\x03\x04", 4);  // local header magic
            if (variant == 2 && n >= 22) std::memcpy(b.data() + n - 22, "PK\x05\x06", 4);  // end of central dir
            write_bytes(p, b);
            expect_io_error([&] { recur::io::load(m, p); }, {p});
            expect_io_error([&] { recur::io::load_npz<double>(p); }, {p});
            BOOST_REQUIRE(unchanged(m, snap));
        }
    }
}

// ---- Atomic saves -------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(failed_save_keeps_previous_checkpoint) {
    TempDir dir;
    const std::string p = dir / "ckpt.npz";
    Tiny<float> small;
    fill(small, 0.5);
    recur::io::save(small, p);
    const Bytes before = read_bytes(p);
    BOOST_REQUIRE(before.size() < 4096);

    // A save that fails midway: the file-size limit makes write() fail with EFBIG after 4 KiB.
    ListModule<float> big({{"weight_ih_l0", {256, 64}}});
    fill(big);
    struct rlimit old {};
    BOOST_REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    if (old.rlim_max == RLIM_INFINITY || old.rlim_max > 4096) {
        auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = old;
        lim.rlim_cur = 4096;
        BOOST_REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
        std::string msg;
        bool threw = false;
        try {
            recur::io::save(big, p);
        } catch (const io_error& e) {
            threw = true;
            msg = e.what();
        }
        ::setrlimit(RLIMIT_FSIZE, &old);
        std::signal(SIGXFSZ, old_handler);
        BOOST_TEST(threw);
        BOOST_TEST(msg.find(p) != std::string::npos, msg);
        BOOST_TEST(msg.find("write failed") != std::string::npos, msg);
        BOOST_TEST((read_bytes(p) == before));
        BOOST_TEST(dir.entries() == 1u);  // the temporary file is gone
        Tiny<float> back;
        recur::io::load(back, p);
        BOOST_TEST(unchanged(back, snapshot(small)));
    } else {
        BOOST_TEST_MESSAGE("RLIMIT_FSIZE hard limit too low; skipped the mid-write failure");
    }

    // The target is a directory: the temporary file is written, the rename fails.
    fs::create_directory(dir / "sub.npz");
    expect_io_error([&] { recur::io::save(small, dir / "sub.npz"); }, {"sub.npz"});
    BOOST_TEST(fs::is_directory(dir / "sub.npz"));
    BOOST_TEST(dir.entries() == 2u);

    // The temporary file cannot be created: a missing directory, a read-only file system.
    expect_io_error([&] { recur::io::save(small, dir / "missing/ckpt.npz"); }, {"missing/ckpt.npz", "temporary file"});
    expect_io_error([&] { recur::io::save_npy(dir / "missing/a.npy", cube()); }, {"missing/a.npy"});
    expect_io_error([&] { recur::io::save_npz<double>(dir / "missing/a.npz", {{"a", cube()}}); }, {"missing/a.npz"});
    if (fs::exists("/proc/self"))
        expect_io_error([&] { recur::io::save(small, "/proc/self/recur_ckpt.npz"); }, {"/proc/self"});
    BOOST_TEST((read_bytes(p) == before));
    BOOST_TEST(dir.entries() == 2u);
}

// The process of the SIGKILL test below: saves states k = 0, 1, ... of a Linear(256, 512)
// model (1 MiB) and its optimizer, as a checkpoint and as a module file.
struct Writer {
    static constexpr double kStride = 1 << 20;  // > number of weights: k * kStride + i is exact and unique
    nn::Sequential<double> model;
    optim::SGD<double> sgd;
    train::History history;
    train::TrainContext<double> ctx;
    train::ModelCheckpoint<double> checkpoint;
    explicit Writer(const std::string& path)
        : sgd((model.emplace<nn::Linear<double>>(256, 512), model.parameters()), {.lr = 0.0}),
          ctx{model, sgd, history},
          checkpoint({.path = path}) {}
    // State k: weight element i = k * kStride + i, learning rate k; the checkpoint's
    // epoch is k + 1. Writes the checkpoint first, then the weights.
    void save(std::uint64_t k, const std::string& weights_path) {
        double i = 0;
        for (auto* p : model.parameters())
            for (auto& v : p->value()) v = static_cast<double>(k) * kStride + i++;
        sgd.set_lr(static_cast<double>(k));
        ctx.epoch = static_cast<std::size_t>(k);
        checkpoint.on_epoch_end(ctx, {});
        recur::io::save(model, weights_path);
    }
    // The k of the state the model holds, or -1 if it is not exactly one state.
    std::int64_t state() {
        const double k = std::floor(model.parameters()[0]->value().data()[0] / kStride);
        double i = 0;
        for (auto* p : model.parameters())
            for (double v : p->value())
                if (v != k * kStride + i++) return -1;
        return static_cast<std::int64_t>(k);
    }
};

// Temporary files of writers that died are removed by the next save of the same file; those
// of live writers (locked) and of other files stay.
BOOST_AUTO_TEST_CASE(saves_remove_stale_temporaries_of_dead_writers) {
    TempDir dir;
    const std::string p = dir / "m.npz";
    Tiny<float> m;
    fill(m, 0.5);
    auto touch = [&](const std::string& name) {
        std::ofstream(dir / name) << "partial";
        return dir / name;
    };
    touch(".m.npz.tmp-99999-0-1");  // a writer that was killed
    touch(".m.npz.tmp-1234-7-5");  // and another one
    touch(".other.npz.tmp-99999-0-1");  // another file's: not this save's business
    touch("m.npz.tmp-1");  // not a temporary name of ours
    const std::string live = touch(".m.npz.tmp-424242-0-0");
    const int fd = ::open(live.c_str(), O_RDONLY);  // a live writer holds its lock
    BOOST_REQUIRE(fd >= 0);
    BOOST_REQUIRE(::flock(fd, LOCK_EX) == 0);
    recur::io::save(m, p);
    BOOST_TEST(fs::exists(p));
    BOOST_TEST(!fs::exists(dir / ".m.npz.tmp-99999-0-1"));
    BOOST_TEST(!fs::exists(dir / ".m.npz.tmp-1234-7-5"));
    BOOST_TEST(fs::exists(live));
    BOOST_TEST(fs::exists(dir / ".other.npz.tmp-99999-0-1"));
    BOOST_TEST(fs::exists(dir / "m.npz.tmp-1"));
    ::close(fd);  // the writer died: its lock is gone
    recur::io::write_atomically(p, "x");
    BOOST_TEST(!fs::exists(live));
    BOOST_TEST(dir.entries() == 3u);
}

// SIGKILL at random moments while a process saves checkpoints in a loop (ModelCheckpoint and
// io::save, 1 MiB each): after every kill both files load, each holds exactly one state the
// writer saved (weights and optimizer state of the same step, never a mix), that state is
// the last one saved or the one being saved, and each file has at most one temporary file
// (that of the interrupted save), which its next save removes.
BOOST_AUTO_TEST_CASE(sigkill_during_saves_leaves_old_or_new_files) {
    constexpr std::size_t kKills = 60;
    TempDir dir;
    const std::string ckpt = dir / "ckpt.npz", weights = dir / "weights.npz";
    auto temporaries = [&](const std::string& name) {
        std::size_t n = 0;
        for (const auto& e : fs::directory_iterator(dir.path))
            n += e.path().filename().string().rfind("." + name + ".tmp-", 0) == 0;
        return n;
    };
    struct Saved {  // one message per finished round: both files hold state k
        std::int64_t k;
        std::int64_t microseconds;
    };

    Writer(ckpt).save(0, weights);
    std::int64_t done = 0;  // the last state both files are known to hold
    std::int64_t round_us = 20000;  // the last round's duration, as the child measured it
    std::size_t mid_save = 0;
    std::mt19937_64 rng(2024);
    for (std::size_t kill = 0; kill < kKills; ++kill) {
        const std::int64_t first = done + 1;
        recur::testing::ChildProcess child([&](const recur::testing::ChildProcess::Send& send) {
            Writer writer(ckpt);
            for (auto k = first;; ++k) {
                const auto start = std::chrono::steady_clock::now();
                writer.save(static_cast<std::uint64_t>(k), weights);
                const auto us =
                    std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
                const Saved saved{k, us.count()};
                send(&saved, sizeof saved);
            }
        });
        // Once the child has finished its first round (it is in its save loop, however long its
        // start took on a loaded machine), kill it at a random moment within the next two.
        Saved first_round{};
        BOOST_REQUIRE(child.receive(first_round));
        done = first_round.k;
        round_us = std::max<std::int64_t>(first_round.microseconds, 1000);
        std::uniform_int_distribution<std::int64_t> delay(0, 2 * round_us);
        std::this_thread::sleep_for(std::chrono::microseconds(delay(rng)));
        child.kill();
        for (Saved saved{}; child.receive(saved);) {
            done = saved.k;
            round_us = std::max<std::int64_t>(saved.microseconds, 1000);
        }
        BOOST_REQUIRE(recur::testing::killed_by_sigkill(child.wait()));

        const std::size_t left_ckpt = temporaries("ckpt.npz"), left_weights = temporaries("weights.npz");
        BOOST_REQUIRE_MESSAGE(left_ckpt <= 1 && left_weights <= 1,
                              "kill " << kill << ": " << left_ckpt << " and " << left_weights << " temporary files");
        mid_save += left_ckpt + left_weights;
        Writer reader(ckpt);
        const auto epoch = static_cast<std::int64_t>(train::resume(ckpt, reader.model, reader.sgd));
        const std::int64_t in_ckpt = reader.state();
        BOOST_REQUIRE_MESSAGE(in_ckpt == epoch - 1 && reader.sgd.lr() == double(in_ckpt),
                              "kill " << kill << ": the checkpoint mixes states");
        BOOST_REQUIRE_MESSAGE(in_ckpt == done || in_ckpt == done + 1,
                              "kill " << kill << ": checkpoint state " << in_ckpt << ", last saved " << done);
        recur::io::load(reader.model, weights);
        const std::int64_t in_weights = reader.state();
        BOOST_REQUIRE_MESSAGE(in_weights == done || in_weights == done + 1,
                              "kill " << kill << ": weights state " << in_weights << ", last saved " << done);
        BOOST_REQUIRE(in_weights <= in_ckpt);  // the checkpoint is written first
        done = in_weights;
    }
    BOOST_TEST_MESSAGE(kKills << " kills, " << mid_save << " temporary files left by them, " << done
                              << " states saved, last round " << round_us << " us");
    BOOST_TEST(mid_save > 0u);  // the kills did land inside saves
    // One more save of each file, by this process: nothing temporary is left.
    Writer(ckpt).save(static_cast<std::uint64_t>(done + 1), weights);
    BOOST_TEST(temporaries("ckpt.npz") + temporaries("weights.npz") == 0u);
    BOOST_TEST(dir.entries() == 2u);
}

BOOST_AUTO_TEST_CASE(write_atomically_text) {
    TempDir dir;
    const std::string p = dir / "log.csv";
    recur::io::write_atomically(p, "epoch,loss\n1,0.5\n");
    recur::io::write_atomically(p, "epoch,loss\n1,0.5\n2,0.25\n");
    const Bytes b = read_bytes(p);
    BOOST_TEST(std::string(b.begin(), b.end()) == "epoch,loss\n1,0.5\n2,0.25\n");
    recur::io::write_atomically(dir / "empty.txt", "");
    BOOST_TEST(fs::file_size(dir.path / "empty.txt") == 0u);
    expect_io_error([&] { recur::io::write_atomically(dir / "missing/log.csv", "x"); }, {"write", "missing/log.csv"});
    expect_io_error([&] { recur::io::write_atomically(dir.path.string() + "/", "x"); }, {"not a file path"});
    BOOST_TEST(dir.entries() == 2u);
}

// Writes files for `make_npz_fixtures.py --verify DIR` when RECUR_IO_EXPORT_DIR=DIR is set.
BOOST_AUTO_TEST_CASE(export_for_numpy) {
    const char* env = std::getenv("RECUR_IO_EXPORT_DIR");
    TempDir tmp;
    const fs::path dir = env ? fs::path(env) : tmp.path;
    fs::create_directories(dir);
    recur::io::save_npy((dir / "recur_f32_2x3.npy").string(), convert<float>(kF2x3));
    recur::io::save_npy((dir / "recur_f64_2x3.npy").string(), kF2x3);
    recur::io::save_npy((dir / "recur_f64_scalar.npy").string(), xt::xarray<double>(3.25));
    recur::io::save_npy((dir / "recur_f64_vec.npy").string(), vec());
    Tiny<float> f;
    fill(f);
    recur::io::save(f, (dir / "recur_module_f32.npz").string());
    Tiny<double> d;
    fill(d);
    recur::io::save(d, (dir / "recur_module_f64.npz").string());
    Tiny<double> back;
    recur::io::load(back, (dir / "recur_module_f64.npz").string());
    BOOST_TEST(unchanged(back, snapshot(d)));
    if (env) BOOST_TEST_MESSAGE("wrote files for make_npz_fixtures.py --verify " << env);
}

BOOST_AUTO_TEST_SUITE_END()
