// .npy streams: the header, the checks of the shape against the data, conversion to T, and
// the bytes np.save writes (see src/io/npy.hpp for the layout).
#include "src/io/npy.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>

#include "recur/io.hpp"
#include "src/io/atomic_file.hpp"
#include "src/io/common.hpp"
#include "src/io/dtype.hpp"
#include "src/io/header.hpp"

namespace recur::io {

namespace detail {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLen = 6;
constexpr std::size_t kAlign = 64;  // numpy's ARRAY_ALIGN
constexpr std::size_t kGrowthAxisDigits = 21;  // numpy's GROWTH_AXIS_MAX_DIGITS
constexpr std::uint64_t kMaxHeaderLen = 1u << 20;  // far above anything numpy writes
constexpr std::size_t kReadChunk = std::size_t(1) << 22;

static_assert(std::numeric_limits<float>::is_iec559 && std::numeric_limits<double>::is_iec559);

std::uint64_t read_le(const unsigned char* p, std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t k = 0; k < n; ++k) v |= std::uint64_t(p[k]) << (8 * k);
    return v;
}

// The element type of the file, if T can hold it: float32/float64 for float and double,
// any little-endian integer for std::int64_t. Otherwise io_error naming the dtype.
template <class T>
Dtype accepted_dtype(const Header& h, const std::string& ctx) {
    constexpr bool floating = std::is_floating_point_v<T>;
    const char* wanted = floating ? "only float32 ('<f4') and float64 ('<f8') can be read"
                                  : "only integer arrays ('<i8', '<i4', '|u1', ...) can be read as int64";
    if (h.structured)
        throw io_error(ctx + ": unsupported structured dtype " +
                       (h.descr.size() > 120 ? h.descr.substr(0, 120) + "..." : h.descr) + "; " + wanted);
    const std::optional<Dtype> d = plain_dtype(h.descr);
    if (!d || floating != (d->kind == 'f'))
        throw io_error(ctx + ": unsupported dtype " + squote(h.descr) + " (" + describe_descr(h.descr) + "); " +
                       wanted + (floating && d ? " (integer arrays: load_npz<std::int64_t>(path, {names}))" : ""));
    return *d;
}

// ---- Reading ------------------------------------------------------------------------------

// The element count of an array of `shape` whose elements take up to `item` bytes (the
// file's or recur's, whichever is larger), after checking everything that xtensor and the
// readers compute from the shape: the count, the byte count and every stride (in elements
// or bytes, as std::ptrdiff_t). A stride of axis d is the product of the extents after d,
// and a zero extent elsewhere does not bound it: (0, 2**32, 2**32) holds no element, yet its
// first stride is 2**64. So the bound applies to the product of the extents with zeros
// counted as ones, which is at least every stride and the count (numpy bounds its arrays
// the same way). Nothing is allocated or indexed before this passes.
std::size_t checked_count(const Shape& shape, std::size_t item, const std::string& ctx) {
    constexpr auto limit = static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max());
    std::size_t span = item, count = 1;  // span: item * product of max(extent, 1)
    for (std::size_t d : shape) {
        if (__builtin_mul_overflow(span, std::max<std::size_t>(d, 1), &span) || span > limit)
            throw io_error(ctx + ": shape " + shape_str(shape) + " is too large (its byte count or strides overflow)");
        count *= d;  // <= span / item: cannot overflow
    }
    return count;
}

// S: the file's element type (little-endian in `src`), T: recur's.
template <class S, class T>
void convert_rowmajor(const unsigned char* src, T* dst, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) {
        S v;
        if constexpr (std::endian::native == std::endian::little) {
            std::memcpy(&v, src + k * sizeof(S), sizeof(S));
        } else {
            using U = std::conditional_t<
                sizeof(S) == 1, std::uint8_t,
                std::conditional_t<sizeof(S) == 2, std::uint16_t,
                                   std::conditional_t<sizeof(S) == 4, std::uint32_t, std::uint64_t>>>;
            const auto u = static_cast<U>(read_le(src + k * sizeof(S), sizeof(S)));
            std::memcpy(&v, &u, sizeof(S));
        }
        dst[k] = static_cast<T>(v);  // NOLINT(bugprone-signed-char-misuse): an int8 dtype is signed
    }
}

// Fortran-order data: element (i0, ..., ik) sits at offset i0 + s0 * (i1 + s1 * (...)).
template <class S, class T>
void convert_fortran(const unsigned char* src, T* dst, const Shape& shape, std::size_t n) {
    const std::size_t nd = shape.size();
    if (nd <= 1 || n == 0) {
        convert_rowmajor<S>(src, dst, n);
        return;
    }
    std::vector<std::size_t> stride(nd), idx(nd, 0);
    std::size_t s = 1;
    for (std::size_t d = 0; d < nd; ++d) {
        stride[d] = s;
        s *= shape[d];
    }
    std::size_t off = 0;
    for (std::size_t k = 0; k < n; ++k) {
        convert_rowmajor<S>(src + off * sizeof(S), dst + k, 1);
        // advance the row-major multi-index (last axis fastest) and the Fortran offset
        for (std::size_t d = nd; d-- > 0;) {
            if (++idx[d] < shape[d]) {
                off += stride[d];
                break;
            }
            off -= (shape[d] - 1) * stride[d];
            idx[d] = 0;
        }
    }
}

}  // namespace

template <class T>
xt::xarray<T> read_npy(Source& src, const std::string& ctx) {
    const std::optional<std::uint64_t> total = src.size();
    auto truncated = [&](const std::string& what) { return io_error(ctx + ": truncated .npy data (" + what + ")"); };

    unsigned char prefix[12];
    std::size_t got = src.read(prefix, 8);
    if (got < kMagicLen || std::memcmp(prefix, kMagic, kMagicLen) != 0)
        throw io_error(ctx + ": not a .npy file (no \\x93NUMPY magic)");
    if (got < 8) throw truncated("the file ends inside the version field");
    const unsigned major = prefix[6], minor = prefix[7];
    std::size_t len_bytes = 0;
    if (major == 1 && minor == 0)
        len_bytes = 2;
    else if ((major == 2 || major == 3) && minor == 0)
        len_bytes = 4;
    else
        throw io_error(ctx + ": unsupported .npy format version " + std::to_string(major) + "." +
                       std::to_string(minor));
    if (src.read(prefix + 8, len_bytes) < len_bytes) throw truncated("the file ends inside the header length");
    const std::uint64_t header_len = read_le(prefix + 8, len_bytes);
    const std::uint64_t data_start = 8 + len_bytes + header_len;
    if (header_len > kMaxHeaderLen)
        throw io_error(ctx + ": malformed .npy header (claims " + std::to_string(header_len) + " bytes)");
    if (total && data_start > *total)
        throw truncated("the header claims " + std::to_string(header_len) + " bytes, the file holds " +
                        std::to_string(*total - std::min<std::uint64_t>(*total, 8 + len_bytes)) + " after the prefix");
    std::string text(static_cast<std::size_t>(header_len), '\0');
    if (src.read(text.data(), text.size()) < text.size()) throw truncated("the file ends inside the header");
    if (text.find('\0') != std::string::npos) throw io_error(ctx + ": malformed .npy header (NUL byte)");
    const Header h = parse_header(text, ctx);
    const Dtype dtype = accepted_dtype<T>(h, ctx);

    const std::size_t count = checked_count(h.shape, std::max(dtype.size, sizeof(T)), ctx);
    const std::size_t nbytes = count * dtype.size;  // <= count * max(dtype.size, sizeof(T)), checked
    const std::string type_name = dtype_name(dtype);
    auto data_msg = [&](std::uint64_t present) {
        return "the header says shape " + shape_str(h.shape) + " of " + type_name + ", " + std::to_string(nbytes) +
               " bytes, but " + std::to_string(present) + " bytes of data follow it";
    };
    if (total) {
        const std::uint64_t present = *total - data_start;
        if (present < nbytes) throw truncated(data_msg(present));
        if (present > nbytes) throw io_error(ctx + ": corrupted .npy data (" + data_msg(present) + ")");
    }

    // Read in chunks so that memory grows only with the data actually present.
    std::vector<unsigned char> bytes;
    while (bytes.size() < nbytes) {
        const std::size_t old = bytes.size();
        const std::size_t want = std::min(nbytes - old, kReadChunk);
        bytes.resize(old + want);
        const std::size_t r = src.read(bytes.data() + old, want);
        if (r < want) throw truncated(data_msg(old + r));
    }
    unsigned char extra;
    if (src.read(&extra, 1) != 0)  // also makes libzip verify the member's CRC
        throw io_error(ctx + ": corrupted .npy data (more bytes than the header's shape " + shape_str(h.shape) +
                       " of " + type_name + " holds)");

    if (dtype.kind == 'u' && dtype.size == 8)  // uint64 into int64: every value must fit
        for (std::size_t k = 0; k < count; ++k)
            if (bytes[k * 8 + 7] & 0x80) throw io_error(ctx + ": uint64 value out of the range of int64");

    xt::xarray<T> out = xt::xarray<T>::from_shape(h.shape);
    T* dst = out.data();
    auto run = [&](auto tag) {
        using S = decltype(tag);
        if (h.fortran)
            convert_fortran<S>(bytes.data(), dst, h.shape, count);
        else
            convert_rowmajor<S>(bytes.data(), dst, count);
    };
    if constexpr (std::is_floating_point_v<T>) {
        if (dtype.size == 4)
            run(float{});
        else
            run(double{});
    } else {
        switch (dtype.kind == 'i' ? dtype.size : 16 + dtype.size) {
            case 1:
                run(std::int8_t{});
                break;
            case 2:
                run(std::int16_t{});
                break;
            case 4:
                run(std::int32_t{});
                break;
            case 8:
                run(std::int64_t{});
                break;
            case 17:
                run(std::uint8_t{});
                break;
            case 18:
                run(std::uint16_t{});
                break;
            case 20:
                run(std::uint32_t{});
                break;
            default:
                run(std::uint64_t{});
                break;
        }
    }
    return out;
}

template <class T>
std::vector<unsigned char> npy_bytes(const xt::xarray<T>& a) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
    const char* descr = sizeof(T) == 4 ? "<f4" : "<f8";
    // Exactly what numpy 1.24 writes: sorted keys, repr of the shape, room for the growth
    // axis to reach 21 digits, spaces up to a multiple of 64 bytes, then '\n'.
    std::string dict =
        std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape_str(a.shape()) + ", }";
    if (a.dimension() > 0) {
        const std::size_t digits = std::to_string(a.shape()[0]).size();
        if (digits < kGrowthAxisDigits) dict.append(kGrowthAxisDigits - digits, ' ');
    }
    std::size_t prefix_len = 10;
    std::size_t hlen = dict.size() + 1;
    std::size_t pad = kAlign - (prefix_len + hlen) % kAlign;
    unsigned char major = 1;
    if (hlen + pad > 0xffff) {  // only for absurd ranks; numpy switches to version 2.0 too
        major = 2;
        prefix_len = 12;
        pad = kAlign - (prefix_len + hlen) % kAlign;
    }
    const std::size_t header_field = hlen + pad;

    std::string head(kMagic, kMagicLen);
    head += static_cast<char>(major);
    head += '\0';
    for (std::size_t k = 0; k < prefix_len - 8; ++k) head += static_cast<char>((header_field >> (8 * k)) & 0xff);
    head += dict;
    head.append(pad, ' ');
    head += '\n';

    const std::size_t data_start = head.size();
    std::vector<unsigned char> out(data_start + a.size() * sizeof(T));
    std::memcpy(out.data(), head.data(), data_start);
    const T* p = a.data();
    for (std::size_t k = 0; k < a.size(); ++k) {
        using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
        U u;
        std::memcpy(&u, p + k, sizeof(T));
        unsigned char* q = out.data() + data_start + k * sizeof(T);
        for (std::size_t b = 0; b < sizeof(T); ++b) q[b] = static_cast<unsigned char>(u >> (8 * b));
    }
    return out;
}

template xt::xarray<float> read_npy<float>(Source&, const std::string&);
template xt::xarray<double> read_npy<double>(Source&, const std::string&);
template xt::xarray<std::int64_t> read_npy<std::int64_t>(Source&, const std::string&);
template std::vector<unsigned char> npy_bytes<float>(const xt::xarray<float>&);
template std::vector<unsigned char> npy_bytes<double>(const xt::xarray<double>&);

}  // namespace detail

template <class T>
void save_npy(const std::string& path, const xt::xarray<T>& a) {
    detail::write_file_atomically(path, "save_npy " + path, detail::npy_bytes(a));
}

template <class T>
xt::xarray<T> load_npy(const std::string& path) {
    const std::string ctx = "load_npy " + path;
    detail::FileSource src(path, ctx);
    return detail::read_npy<T>(src, ctx);
}

template void save_npy<float>(const std::string&, const xt::xarray<float>&);
template void save_npy<double>(const std::string&, const xt::xarray<double>&);
template xt::xarray<float> load_npy<float>(const std::string&);
template xt::xarray<double> load_npy<double>(const std::string&);
template xt::xarray<std::int64_t> load_npy<std::int64_t>(const std::string&);

}  // namespace recur::io
