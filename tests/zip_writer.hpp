// A minimal writer of zip archives with stored (uncompressed) members and correct CRC-32s:
// the tests and the structure-aware fuzz target use it to put arbitrary bytes (hostile .npy
// members) inside archives that libzip accepts, so that recur's own parsers see them.
//
// Layout (PKWARE APPNOTE 4.3): for each member a local header (signature 0x04034b50) and
// the bytes; then a central directory entry (0x02014b50) per member; then the end of
// central directory record (0x06054b50). All numbers little-endian; no zip64, so the
// archive must stay below 4 GiB and 65535 members.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace recur::testing {

using ZipMember = std::pair<std::string, std::vector<unsigned char>>;  // name, contents

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as zip stores it.
inline std::uint32_t crc32(const std::vector<unsigned char>& bytes) {
    static const std::array<std::uint32_t, 256> table = [] {
        std::array<std::uint32_t, 256> t{};
        for (std::uint32_t n = 0; n < 256; ++n) {
            std::uint32_t c = n;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }();
    std::uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : bytes) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/// A zip archive holding `members` stored, in order.
inline std::vector<unsigned char> stored_zip(const std::vector<ZipMember>& members) {
    std::vector<unsigned char> out, central;
    auto put = [](std::vector<unsigned char>& v, std::uint32_t x, int bytes) {
        for (int k = 0; k < bytes; ++k) v.push_back(static_cast<unsigned char>(x >> (8 * k)));
    };
    const std::uint32_t dos_date = (0u << 9) | (1u << 5) | 1u;  // 1980-01-01, time 00:00
    for (const auto& [name, data] : members) {
        const auto offset = static_cast<std::uint32_t>(out.size());
        const std::uint32_t crc = crc32(data);
        const auto size = static_cast<std::uint32_t>(data.size());
        const auto name_len = static_cast<std::uint32_t>(name.size());
        // The fields both headers share: version needed 2.0, flags, method 0 (stored), time,
        // date, crc, compressed and uncompressed size, name length, extra length.
        auto shared_fields = [&](std::vector<unsigned char>& v) {
            for (auto [value, bytes] : {std::pair<std::uint32_t, int>{20, 2},
                                        {0, 2},
                                        {0, 2},
                                        {0, 2},
                                        {dos_date, 2},
                                        {crc, 4},
                                        {size, 4},
                                        {size, 4},
                                        {name_len, 2},
                                        {0, 2}})
                put(v, value, bytes);
        };
        put(out, 0x04034b50u, 4);  // local header
        shared_fields(out);
        out.insert(out.end(), name.begin(), name.end());
        out.insert(out.end(), data.begin(), data.end());
        put(central, 0x02014b50u, 4);  // central directory entry: made-by version, the shared
        put(central, 20, 2);  // fields, comment length, disk number, internal and
        shared_fields(central);  // external attributes, the local header's offset
        put(central, 0, 2);
        put(central, 0, 2);
        put(central, 0, 2);
        put(central, 0, 4);
        put(central, offset, 4);
        central.insert(central.end(), name.begin(), name.end());
    }
    const auto central_offset = static_cast<std::uint32_t>(out.size());
    out.insert(out.end(), central.begin(), central.end());
    const auto count = static_cast<std::uint32_t>(members.size());
    put(out, 0x06054b50u, 4);
    put(out, 0, 2);
    put(out, 0, 2);
    put(out, count, 2);
    put(out, count, 2);
    put(out, static_cast<std::uint32_t>(central.size()), 4);
    put(out, central_offset, 4);
    put(out, 0, 2);
    return out;
}

}  // namespace recur::testing
