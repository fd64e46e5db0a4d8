// Writes the seed corpora of the fuzz targets with recur itself:
//     make_corpus DIR        (DIR = fuzz/corpus; writes DIR/<target>/<seed>)
// Every seed is a file recur saved (or, for fuzz_zip, the members of one, in that target's
// input format), small enough to commit.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include "fuzz/models.hpp"
#include "recur/data.hpp"
#include "recur/nn/init.hpp"
#include "recur/io.hpp"
#include "recur/train.hpp"

namespace {

using namespace recur;
namespace fs = std::filesystem;
using Bytes = std::vector<unsigned char>;

Bytes read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& p, const Bytes& b) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    if (!out) throw io_error("make_corpus: cannot write " + p.string());
}

// fuzz_zip's input for the archive recur writes for `arrays`: per member, the name length,
// the name "<key>.npy", the size (2 bytes LE) and the .npy bytes save_npy writes.
template <class T>
Bytes member_list(const std::vector<io::NamedArray<T>>& arrays, const fs::path& scratch) {
    Bytes out;
    for (const auto& [key, a] : arrays) {
        io::save_npy((scratch / "member.npy").string(), a);
        const Bytes npy = read_bytes(scratch / "member.npy");
        const std::string name = key + ".npy";
        if (name.size() > 255 || npy.size() > 65535) throw value_error("make_corpus: member too large for fuzz_zip");
        out.push_back(static_cast<unsigned char>(name.size()));
        out.insert(out.end(), name.begin(), name.end());
        out.push_back(static_cast<unsigned char>(npy.size() & 0xff));
        out.push_back(static_cast<unsigned char>(npy.size() >> 8));
        out.insert(out.end(), npy.begin(), npy.end());
    }
    fs::remove(scratch / "member.npy");
    return out;
}

// A few steps of training, so that the optimizer state is not all zeros.
template <class T>
void train_a_little(nn::Sequential<T>& model, optim::Optimizer<T>& optimizer) {
    for (int step = 0; step < 2; ++step) {
        T g = T(0.25);
        for (auto* p : model.parameters()) {
            for (auto& v : p->grad()) v = (g = -g * T(0.9));
        }
        optimizer.step();
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: make_corpus DIR   (e.g. fuzz/corpus)\n";
        return 2;
    }
    const fs::path root = argv[1];
    for (const char* t : {"npy", "npz", "checkpoint", "zip", "csv", "vocabulary"}) fs::create_directories(root / t);
    const fs::path scratch = root / "zip";
    recur::manual_seed(1);

    // npy: the shapes and dtypes recur writes.
    const xt::xarray<double> m23{{0.1, -2.5, 3.0}, {1e-300, 4.25, -0.0}};
    io::save_npy((root / "npy/f64_2x3.npy").string(), m23);
    io::save_npy((root / "npy/f32_2x3.npy").string(), xt::xarray<float>(m23));
    io::save_npy((root / "npy/f64_scalar.npy").string(), xt::xarray<double>(3.25));
    io::save_npy((root / "npy/f32_empty_0x3.npy").string(), xt::xarray<float>::from_shape({0, 3}));
    io::save_npy((root / "npy/f64_2x1x2.npy").string(), xt::xarray<double>{{{1.0, 2.0}}, {{3.0, 4.0}}});
    io::save_npy((root / "npy/f64_empty_0x3x4.npy").string(), xt::xarray<double>::from_shape({0, 3, 4}));

    // npz: modules as io::save writes them, and named arrays.
    auto model32 = fuzz::small_model<float>();
    auto model64 = fuzz::small_model<double>();
    io::save(*model32, (root / "npz/module_f32.npz").string());
    io::save(*model64, (root / "npz/module_f64.npz").string());
    const std::vector<io::NamedArray<double>> named = {{"x", m23}, {"lengths", xt::xarray<double>{3.0, 1.0}}};
    io::save_npz((root / "npz/named_f64.npz").string(), named);

    // checkpoints: Adam and SGD (momentum), after two steps; optimizer and scheduler state.
    optim::Adam<float> adam(model32->parameters(), {.lr = 1e-3});
    train_a_little(*model32, adam);
    train::save_checkpoint((root / "checkpoint/adam_f32.npz").string(), *model32, adam, 3);
    auto sgd_model = fuzz::small_model<float>();
    optim::SGD<float> sgd(sgd_model->parameters(), {.lr = 0.1, .momentum = 0.9});
    train_a_little(*sgd_model, sgd);
    train::save_checkpoint((root / "checkpoint/sgd_f32.npz").string(), *sgd_model, sgd, 1);
    optim::RMSprop<float> rmsprop(sgd_model->parameters(), {});
    train_a_little(*sgd_model, rmsprop);
    optim::ReduceLROnPlateau<float> plateau(rmsprop);
    plateau.step(1.0);
    auto state = rmsprop.state();
    for (auto& entry : plateau.state()) state.push_back(entry);
    io::save_npz((root / "checkpoint/rmsprop_plateau_state_f32.npz").string(), state);

    // zip: the same archives as member lists.
    std::vector<io::NamedArray<float>> ckpt;
    for (auto& [name, p] : model32->named_parameters()) ckpt.emplace_back("model." + name, p->value());
    for (auto& [name, a] : adam.state()) ckpt.emplace_back("optimizer." + name, a);
    ckpt.emplace_back("epoch", optim::encode_scalar<float>(3));
    write_bytes(root / "zip/adam_f32_checkpoint", member_list(ckpt, scratch));
    std::vector<io::NamedArray<float>> module;
    for (auto& [name, p] : model32->named_parameters()) module.emplace_back(name, p->value());
    write_bytes(root / "zip/module_f32", member_list(module, scratch));
    write_bytes(root / "zip/named_f64", member_list(named, scratch));

    // csv: History::write_csv's files; the first byte is fuzz_csv's options byte (0: ',',
    // header, '"'; 8: no header).
    train::History history;
    history.append(0, {{"loss", 0.5}, {"val_loss", 0.75}, {"lr", 1e-3}});
    history.append(1, {{"loss", 0.25}, {"val_loss", 0.5}, {"lr", 1e-3}});
    history.write_csv((scratch / "history.csv").string());
    Bytes csv = read_bytes(scratch / "history.csv");
    fs::remove(scratch / "history.csv");
    csv.insert(csv.begin(), 0);
    write_bytes(root / "csv/history", csv);
    csv[0] = 8;
    write_bytes(root / "csv/history_no_header", csv);

    // vocabulary: characters (with escapes) and tokens with specials and unk.
    data::Vocabulary::from_text("hello, world\n\t\\ \xC3\xA9\x01").save((root / "vocabulary/chars").string());
    data::Vocabulary::from_tokens({"the", "cat", "sat"}, {.specials = {"<pad>"}, .unk = "<unk>"})
        .save((root / "vocabulary/tokens").string());
    std::cout << "wrote the seed corpora into " << root.string() << "\n";
    return 0;
}
