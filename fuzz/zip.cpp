// Structure-aware: the input is a list of members, from which a valid zip archive (stored,
// correct CRCs) is built, so that mutations reach recur's .npy parser inside .npz files and
// the checkpoint and module loaders instead of dying in libzip's CRC check. Input format,
// repeated until the bytes run out:
//     [1 byte: name length n] [n bytes: name] [2 bytes LE: size m] [m bytes: contents]
// (a member cut short by the end of the input keeps what is there).
#include <algorithm>

#include "fuzz/loaders.hpp"
#include "tests/zip_writer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static recur::fuzz::InputFile file("fuzz-zip.npz");
    std::vector<recur::testing::ZipMember> members;
    std::size_t pos = 0;
    auto take = [&](std::size_t n) {
        const std::size_t k = std::min(n, size - pos);
        const std::uint8_t* p = data + pos;
        pos += k;
        return std::vector<unsigned char>(p, p + k);
    };
    while (pos < size && members.size() < 64) {
        const std::size_t name_length = data[pos++];
        const auto name = take(name_length);
        const auto length = take(2);
        const std::size_t m = length.size() == 2 ? std::size_t(length[0]) | (std::size_t(length[1]) << 8) : 0;
        members.emplace_back(std::string(name.begin(), name.end()), take(m));
    }
    const auto archive = recur::testing::stored_zip(members);
    const std::string& path = file.write(archive.data(), archive.size());
    recur::fuzz::module_loaders(path);
    recur::fuzz::checkpoint_loaders(path);
    return 0;
}
