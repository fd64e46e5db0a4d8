// numpy .npy / .npz reading and writing, and module checkpoints (see recur/io.hpp).
//
// .npy layout: "\x93NUMPY", major and minor version bytes, the header length (uint16 LE for
// version 1, uint32 LE for versions 2 and 3), then the header: a Python dict literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with spaces and a final
// '\n' so that the data starts at a multiple of 64 bytes, then the data, little-endian.
// .npz: a zip archive of "<name>.npy" members. libzip reads (stored and deflated members,
// CRC checked) and builds archives in memory; files are written atomically here.
#include "recur/io.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace recur::io {

namespace {

namespace fs = std::filesystem;

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLen = 6;
constexpr std::size_t kAlign = 64;                  // numpy's ARRAY_ALIGN
constexpr std::size_t kGrowthAxisDigits = 21;       // numpy's GROWTH_AXIS_MAX_DIGITS
constexpr std::uint64_t kMaxHeaderLen = 1u << 20;   // far above anything numpy writes
constexpr std::size_t kMaxDims = 64;
constexpr std::size_t kReadChunk = std::size_t(1) << 22;

std::string squote(const std::string& s) { return "'" + s + "'"; }

std::string errno_text(int e) { return std::error_code(e, std::generic_category()).message(); }

// ---- Element types ------------------------------------------------------------------------

static_assert(std::numeric_limits<float>::is_iec559 && std::numeric_limits<double>::is_iec559);

// A plain little-endian number type of a .npy file: float32/64 or (u)int8..64.
struct Dtype {
    char kind = 'f';  // 'f', 'i' or 'u'
    std::size_t size = 8;
};

// "<f8", "=f4", "<i8", "|u1", ...; nullopt for anything else (big-endian, complex, ...).
std::optional<Dtype> plain_dtype(const std::string& d) {
    if (d.size() != 3) return std::nullopt;
    const char order = d[0], kind = d[1], digit = d[2];
    if (digit < '1' || digit > '8') return std::nullopt;
    const auto size = static_cast<std::size_t>(digit - '0');
    if (!(order == '<' || order == '=' || (order == '|' && size == 1))) return std::nullopt;
    if (kind == 'f' && (size == 4 || size == 8)) return Dtype{kind, size};
    if ((kind == 'i' || kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8)) return Dtype{kind, size};
    return std::nullopt;
}

std::string dtype_name(const Dtype& d) {
    return std::string(d.kind == 'f' ? "float" : d.kind == 'i' ? "int" : "uint") + std::to_string(8 * d.size);
}

// A readable name for a numpy type string ("<i8" -> "int64", ">f8" -> "big-endian float64").
std::string describe_descr(const std::string& descr) {
    if (descr.size() < 2) return "unknown type";
    std::size_t k = 0;
    std::string order;
    if (descr[0] == '<' || descr[0] == '>' || descr[0] == '=' || descr[0] == '|') {
        if (descr[0] == '>') order = "big-endian ";
        k = 1;
    }
    if (k >= descr.size()) return "unknown type";
    const char kind = descr[k];
    const std::string size = descr.substr(k + 1);
    bool digits = !size.empty() && size.size() <= 3 &&
                  std::all_of(size.begin(), size.end(), [](char c) { return c >= '0' && c <= '9'; });
    std::string bits = digits ? std::to_string(std::stoi(size) * 8) : "";
    switch (kind) {
        case 'f': return order + "float" + bits;
        case 'i': return order + "int" + bits;
        case 'u': return order + "uint" + bits;
        case 'c': return order + "complex" + bits;
        case 'b': return "bool";
        case 'O': return "Python object";
        case 'U': return "unicode string";
        case 'S': return "byte string";
        case 'V': return "void / raw bytes";
        case 'M': return "datetime";
        case 'm': return "timedelta";
        default: return "unknown type";
    }
}

// ---- Byte sources -------------------------------------------------------------------------

// Where a .npy stream comes from: a file or a zip member. read() returns fewer bytes than
// asked only at the end; errors throw io_error (already prefixed with the context).
class Source {
public:
    virtual ~Source() = default;
    virtual std::size_t read(void* buf, std::size_t n) = 0;
    // The stream's declared total size (file size, zip member size), if known.
    virtual std::optional<std::uint64_t> size() const = 0;
};

class FileSource final : public Source {
public:
    FileSource(const std::string& path, std::string ctx) : ctx_(std::move(ctx)) {
        fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO must not block
        if (fd_ < 0) throw io_error(ctx_ + ": cannot open: " + errno_text(errno));
        struct stat st {};
        if (::fstat(fd_, &st) != 0) {
            int e = errno;
            ::close(fd_);
            throw io_error(ctx_ + ": cannot stat: " + errno_text(e));
        }
        if (!S_ISREG(st.st_mode)) {
            ::close(fd_);
            throw io_error(ctx_ + ": not a regular file");
        }
        size_ = static_cast<std::uint64_t>(st.st_size);
    }
    ~FileSource() override { ::close(fd_); }
    FileSource(const FileSource&) = delete;
    FileSource& operator=(const FileSource&) = delete;

    std::size_t read(void* buf, std::size_t n) override {
        std::size_t got = 0;
        auto* p = static_cast<unsigned char*>(buf);
        while (got < n) {
            ssize_t r = ::read(fd_, p + got, n - got);
            if (r < 0) {
                if (errno == EINTR) continue;
                throw io_error(ctx_ + ": read error: " + errno_text(errno));
            }
            if (r == 0) break;
            got += static_cast<std::size_t>(r);
        }
        return got;
    }
    std::optional<std::uint64_t> size() const override { return size_; }

private:
    std::string ctx_;
    int fd_ = -1;
    std::uint64_t size_ = 0;
};

std::string zip_code_text(int code) {
    zip_error_t err;
    zip_error_init_with_code(&err, code);
    std::string s = zip_error_strerror(&err);
    zip_error_fini(&err);
    return s;
}

class ZipArchive {
public:
    ZipArchive(const std::string& path, const std::string& ctx) {
        {
            // libzip opens anything openable; say plainly when the path is not a file.
            std::error_code ec;
            auto st = fs::status(path, ec);
            if (!ec && fs::exists(st) && !fs::is_regular_file(st)) throw io_error(ctx + ": not a regular file");
        }
        int code = 0;
        za_ = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code);
        if (!za_) {
            if (code == ZIP_ER_NOZIP || code == ZIP_ER_INCONS)
                throw io_error(ctx + ": not a valid .npz (zip) archive: " + zip_code_text(code));
            throw io_error(ctx + ": cannot open: " + zip_code_text(code));
        }
    }
    ~ZipArchive() { zip_discard(za_); }
    ZipArchive(const ZipArchive&) = delete;
    ZipArchive& operator=(const ZipArchive&) = delete;
    zip_t* get() const { return za_; }

private:
    zip_t* za_ = nullptr;
};

class ZipMemberSource final : public Source {
public:
    ZipMemberSource(zip_t* za, zip_uint64_t index, std::string ctx) : ctx_(std::move(ctx)) {
        zip_stat_t st;
        zip_stat_init(&st);
        if (zip_stat_index(za, index, 0, &st) == 0 && (st.valid & ZIP_STAT_SIZE)) size_ = st.size;
        zf_ = zip_fopen_index(za, index, 0);
        if (!zf_) throw io_error(ctx_ + ": cannot open the archive member: " + zip_strerror(za));
    }
    ~ZipMemberSource() override { zip_fclose(zf_); }
    ZipMemberSource(const ZipMemberSource&) = delete;
    ZipMemberSource& operator=(const ZipMemberSource&) = delete;

    std::size_t read(void* buf, std::size_t n) override {
        std::size_t got = 0;
        auto* p = static_cast<unsigned char*>(buf);
        while (got < n) {
            zip_int64_t r = zip_fread(zf_, p + got, n - got);
            if (r < 0) throw io_error(ctx_ + ": corrupted archive member: " + zip_file_strerror(zf_));
            if (r == 0) break;
            got += static_cast<std::size_t>(r);
        }
        return got;
    }
    std::optional<std::uint64_t> size() const override { return size_; }

private:
    std::string ctx_;
    zip_file_t* zf_ = nullptr;
    std::optional<std::uint64_t> size_;
};

// ---- Header parsing -----------------------------------------------------------------------

struct Header {
    std::string descr;        // the type string, or the text of a structured description
    bool structured = false;  // descr is a list of fields
    bool fortran = false;
    Shape shape;
};

// A parser for the dict literal numpy writes. Accepts Python's literal syntax for the three
// keys (any whitespace, either quote, optional trailing commas, "3L" from Python 2).
class HeaderParser {
public:
    HeaderParser(std::string_view text, std::string ctx) : s_(text), ctx_(std::move(ctx)) {}

    Header parse() {
        std::optional<std::string> descr;
        bool descr_structured = false;
        std::optional<bool> fortran;
        std::optional<Shape> shape;

        ws();
        expect('{');
        for (;;) {
            ws();
            if (peek() == '}') {
                ++i_;
                break;
            }
            std::string key = string_literal();
            ws();
            expect(':');
            ws();
            if (key == "descr") {
                if (descr) fail("key 'descr' appears twice");
                if (peek() == '\'' || peek() == '"') {
                    descr = string_literal();
                } else {
                    std::size_t start = i_;
                    skip_value();
                    descr = std::string(s_.substr(start, i_ - start));
                    descr_structured = true;
                }
            } else if (key == "fortran_order") {
                if (fortran) fail("key 'fortran_order' appears twice");
                fortran = boolean();
            } else if (key == "shape") {
                if (shape) fail("key 'shape' appears twice");
                shape = tuple();
            } else {
                fail("unexpected key " + squote(key));
            }
            ws();
            if (peek() == ',') {
                ++i_;
            } else if (peek() != '}') {
                fail("expected ',' or '}'");
            }
        }
        ws();
        if (i_ != s_.size()) fail("unexpected text after the dict");
        if (!descr || !fortran || !shape) fail("the header lacks 'descr', 'fortran_order' or 'shape'");

        Header h;
        h.descr = *descr;
        h.structured = descr_structured;
        h.fortran = *fortran;
        h.shape = *shape;
        return h;
    }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw io_error(ctx_ + ": malformed .npy header (" + what + " at offset " + std::to_string(i_) + ")");
    }
    char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
    void ws() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
    }
    void expect(char c) {
        if (peek() != c) fail(std::string("expected '") + c + "'");
        ++i_;
    }
    std::string string_literal() {
        char q = peek();
        if (q != '\'' && q != '"') fail("expected a string");
        ++i_;
        std::string out;
        while (i_ < s_.size() && s_[i_] != q) {
            if (s_[i_] == '\\') fail("escape sequences are not supported");
            out += s_[i_++];
        }
        if (i_ >= s_.size()) fail("unterminated string");
        ++i_;
        return out;
    }
    bool boolean() {
        if (s_.substr(i_, 4) == "True") {
            i_ += 4;
            return true;
        }
        if (s_.substr(i_, 5) == "False") {
            i_ += 5;
            return false;
        }
        fail("expected True or False");
    }
    std::size_t integer() {
        if (peek() < '0' || peek() > '9') fail("expected a non-negative integer");
        std::uint64_t v = 0;
        while (peek() >= '0' && peek() <= '9') {
            const auto digit = static_cast<std::uint64_t>(peek() - '0');
            if (v > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) fail("dimension too large");
            v = v * 10 + digit;
            ++i_;
        }
        if (peek() == 'L' || peek() == 'l') ++i_;  // Python 2 long
        if (v > std::numeric_limits<std::size_t>::max()) fail("dimension too large");
        return static_cast<std::size_t>(v);
    }
    Shape tuple() {
        expect('(');
        Shape shape;
        ws();
        if (peek() == ')') {
            ++i_;
            return shape;
        }
        for (;;) {
            ws();
            if (shape.size() >= kMaxDims) fail("more than " + std::to_string(kMaxDims) + " dimensions");
            shape.push_back(integer());
            ws();
            if (peek() == ',') {
                ++i_;
                ws();
                if (peek() == ')') {
                    ++i_;
                    break;
                }
            } else if (peek() == ')') {
                if (shape.size() == 1) fail("a one-element tuple needs a trailing comma");
                ++i_;
                break;
            } else {
                fail("expected ',' or ')' in the shape");
            }
        }
        return shape;
    }
    // Skips a nested list/tuple literal (structured dtype descriptions), with strings.
    void skip_value() {
        std::string stack;
        do {
            char c = peek();
            if (c == '\0') fail("unterminated value");
            if (c == '\'' || c == '"') {
                string_literal();
                continue;
            }
            if (c == '[' || c == '(' || c == '{') stack.push_back(c == '[' ? ']' : c == '(' ? ')' : '}');
            else if (c == ']' || c == ')' || c == '}') {
                if (stack.empty() || stack.back() != c) fail("unbalanced brackets");
                stack.pop_back();
            } else if (stack.empty()) {
                fail("expected a string or a list");
            }
            ++i_;
        } while (!stack.empty());
    }

    std::string_view s_;
    std::string ctx_;
    std::size_t i_ = 0;
};

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
        throw io_error(ctx + ": unsupported dtype " + squote(h.descr) + " (" + describe_descr(h.descr) + "); " + wanted +
                       (floating && d ? " (integer arrays: load_npz<std::int64_t>(path, {names}))" : ""));
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
            using U = std::conditional_t<sizeof(S) == 1, std::uint8_t,
                      std::conditional_t<sizeof(S) == 2, std::uint16_t,
                      std::conditional_t<sizeof(S) == 4, std::uint32_t, std::uint64_t>>>;
            const auto u = static_cast<U>(read_le(src + k * sizeof(S), sizeof(S)));
            std::memcpy(&v, &u, sizeof(S));
        }
        dst[k] = static_cast<T>(v);
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

// Reads one .npy stream and converts it to T. `ctx` prefixes every message.
template <class T>
xt::xarray<T> read_npy(Source& src, const std::string& ctx) {
    const std::optional<std::uint64_t> total = src.size();
    auto truncated = [&](const std::string& what) {
        return io_error(ctx + ": truncated .npy data (" + what + ")");
    };

    unsigned char prefix[12];
    std::size_t got = src.read(prefix, 8);
    if (got < kMagicLen || std::memcmp(prefix, kMagic, kMagicLen) != 0)
        throw io_error(ctx + ": not a .npy file (no \\x93NUMPY magic)");
    if (got < 8) throw truncated("the file ends inside the version field");
    const unsigned major = prefix[6], minor = prefix[7];
    std::size_t len_bytes = 0;
    if (major == 1 && minor == 0) len_bytes = 2;
    else if ((major == 2 || major == 3) && minor == 0) len_bytes = 4;
    else throw io_error(ctx + ": unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor));
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
    const Header h = HeaderParser(text, ctx).parse();
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
        if (h.fortran) convert_fortran<S>(bytes.data(), dst, h.shape, count);
        else convert_rowmajor<S>(bytes.data(), dst, count);
    };
    if constexpr (std::is_floating_point_v<T>) {
        if (dtype.size == 4) run(float{});
        else run(double{});
    } else {
        switch (dtype.kind == 'i' ? dtype.size : 16 + dtype.size) {
            case 1: run(std::int8_t{}); break;
            case 2: run(std::int16_t{}); break;
            case 4: run(std::int32_t{}); break;
            case 8: run(std::int64_t{}); break;
            case 17: run(std::uint8_t{}); break;
            case 18: run(std::uint16_t{}); break;
            case 20: run(std::uint32_t{}); break;
            default: run(std::uint64_t{}); break;
        }
    }
    return out;
}

// Reads the members of an .npz archive: all of them in archive order, or only those named
// in `select` (in that order; members not selected are not read). `ctx` is e.g. "load m.npz".
template <class T>
std::vector<NamedArray<T>> read_npz(const std::string& path, const std::string& ctx,
                                    const std::vector<std::string>* select = nullptr) {
    ZipArchive za(path, ctx);
    const zip_int64_t n = zip_get_num_entries(za.get(), 0);
    if (n < 0) throw io_error(ctx + ": cannot list the archive: " + zip_strerror(za.get()));

    // The archive's keys first: names are checked before any data is read.
    std::vector<std::string> keys;
    std::map<std::string, zip_uint64_t> index_of;
    const std::string suffix = ".npy";
    for (zip_int64_t i = 0; i < n; ++i) {
        const auto index = static_cast<zip_uint64_t>(i);
        const char* raw = zip_get_name(za.get(), index, 0);
        if (!raw) throw io_error(ctx + ": cannot read the name of archive member " + std::to_string(i) + ": " +
                                 zip_strerror(za.get()));
        const std::string name = raw;
        const bool npy = name.size() >= suffix.size() &&
                         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
        if (!npy) {
            if (select) continue;  // np.load tolerates other members; so does a selective read
            throw io_error(ctx + ": archive member " + squote(name) + " is not an .npy array");
        }
        std::string key = name.substr(0, name.size() - suffix.size());
        if (!index_of.emplace(key, index).second)
            throw io_error(ctx + ": array " + squote(key) + " appears twice in the archive");
        keys.push_back(std::move(key));
    }
    if (select) {
        std::set<std::string> asked;
        for (const auto& key : *select) {
            if (!asked.insert(key).second) throw io_error(ctx + ": array " + squote(key) + " is requested twice");
            if (!index_of.count(key)) {
                std::string have;
                for (const auto& k : keys) have += (have.empty() ? "" : ", ") + k;
                throw io_error(ctx + ": no array " + squote(key) + " in the file (it has: " + have + ")");
            }
        }
        keys = *select;
    }

    std::vector<NamedArray<T>> out;
    out.reserve(keys.size());
    for (auto& key : keys) {
        const std::string member_ctx = ctx + ": array " + squote(key);
        ZipMemberSource src(za.get(), index_of.at(key), member_ctx);
        out.emplace_back(std::move(key), read_npy<T>(src, member_ctx));
    }
    return out;
}

// ---- Writing ------------------------------------------------------------------------------

template <class T>
std::vector<unsigned char> npy_bytes(const xt::xarray<T>& a) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
    const char* descr = sizeof(T) == 4 ? "<f4" : "<f8";
    // Exactly what numpy 1.24 writes: sorted keys, repr of the shape, room for the growth
    // axis to reach 21 digits, spaces up to a multiple of 64 bytes, then '\n'.
    std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape_str(a.shape()) + ", }";
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

// ---- Atomic files -------------------------------------------------------------------------
//
// A save of <dir>/<name> writes <dir>/.<name>.tmp-<pid>-<counter>-<random>, fsyncs it and
// renames it over the target. The writer holds an exclusive flock() on its temporary file
// from creation to rename; the kernel drops the lock when the process dies (SIGKILL and
// power loss included), so a temporary file of <name> whose lock can be taken belongs to a
// dead writer, and every save of <name> first removes those: temporaries of killed writers
// do not pile up, and a live writer's file is never touched. (On a file system without
// flock, nothing is removed.)

std::string temporary_prefix(const std::string& name) { return "." + name + ".tmp-"; }

// Removes the temporary files of `name` in `dir` whose writers are gone. Best effort: any
// error just leaves a file in place.
void remove_stale_temporaries(const fs::path& dir, const std::string& name) {
    const std::string prefix = temporary_prefix(name);
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string entry = it->path().filename().string();
        if (entry.compare(0, prefix.size(), prefix) != 0) continue;
        const int fd = ::open(it->path().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) continue;
        struct stat held {}, named {};
        // Locked: no live writer. Same inode under the name: it was not replaced meanwhile.
        if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &held) == 0 && S_ISREG(held.st_mode) &&
            ::lstat(it->path().c_str(), &named) == 0 && named.st_dev == held.st_dev && named.st_ino == held.st_ino)
            ::unlink(it->path().c_str());
        ::close(fd);
    }
}

// Creates this writer's temporary file for `name` in `dir`, locked; returns its descriptor.
int create_temporary(const fs::path& dir, const std::string& name, fs::path& tmp, const std::string& ctx) {
    static std::atomic<std::uint64_t> counter{0};
    const auto stamp = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    for (int attempt = 0;; ++attempt) {
        tmp = dir / (temporary_prefix(name) + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1)) +
                     "-" + std::to_string(stamp % 1000000007u));
        const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0)
            throw io_error(ctx + ": cannot create a temporary file in " + squote(dir.string()) + ": " + errno_text(errno));
        // Between open and flock a cleaner may have taken the unheld lock and removed the
        // file: then the name no longer leads to our inode, and we start again.
        struct stat held {}, named {};
        if (::flock(fd, LOCK_EX) != 0 || (::fstat(fd, &held) == 0 && ::lstat(tmp.c_str(), &named) == 0 &&
                                          named.st_dev == held.st_dev && named.st_ino == held.st_ino))
            return fd;  // locked and ours (or flock unsupported: no cleaner removes it either)
        ::close(fd);
        if (attempt == 8) throw io_error(ctx + ": cannot keep a temporary file in " + squote(dir.string()));
    }
}

// Writes `bytes` to `path` through a locked temporary file in the same directory, fsync and
// rename(); on failure removes the temporary file and leaves `path` untouched.
void write_file_atomically(const std::string& path, const std::string& ctx, const void* data, std::size_t size) {
    const fs::path target(path);
    const std::string name = target.filename().string();
    if (name.empty() || name == "." || name == "..") throw io_error(ctx + ": not a file path");
    const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");

    remove_stale_temporaries(dir, name);
    fs::path tmp;
    const int fd = create_temporary(dir, name, tmp, ctx);
    auto fail = [&](const std::string& what, int e, bool close_fd) {
        ::unlink(tmp.c_str());
        if (close_fd) ::close(fd);
        return io_error(ctx + ": " + what + ": " + errno_text(e) + " (the previous file, if any, is unchanged)");
    };
    const auto* bytes = static_cast<const unsigned char*>(data);
    std::size_t done = 0;
    while (done < size) {
        const ssize_t r = ::write(fd, bytes + done, size - done);
        if (r < 0) {
            if (errno == EINTR) continue;
            throw fail("write failed", errno, true);
        }
        done += static_cast<std::size_t>(r);
    }
    if (::fsync(fd) != 0) throw fail("fsync failed", errno, true);
    // Rename while the lock is held, close after: the temporary name never exists unlocked
    // while its writer lives.
    if (::rename(tmp.c_str(), target.c_str()) != 0) throw fail("cannot replace the file", errno, true);
    ::close(fd);  // the data is on disk (fsync) and in place: nothing left to report
    // Make the rename durable; best effort.
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)::fsync(dfd);
        ::close(dfd);
    }
}

void write_file_atomically(const std::string& path, const std::string& ctx, const std::vector<unsigned char>& bytes) {
    write_file_atomically(path, ctx, bytes.data(), bytes.size());
}

template <class T>
using ArrayRef = std::pair<std::string, const xt::xarray<T>*>;

// Builds the .npz archive in memory with libzip (members stored, like np.savez).
template <class T>
std::vector<unsigned char> npz_bytes(const std::vector<ArrayRef<T>>& arrays, const std::string& ctx) {
    std::set<std::string> names;
    for (const auto& [name, a] : arrays) {
        if (name.empty()) throw io_error(ctx + ": an array name is empty");
        if (name.find('\0') != std::string::npos) throw io_error(ctx + ": array name " + squote(name) + " contains NUL");
        if (!names.insert(name).second) throw io_error(ctx + ": array name " + squote(name) + " appears twice");
    }
    std::vector<std::vector<unsigned char>> members;
    members.reserve(arrays.size());
    for (const auto& entry : arrays) members.push_back(npy_bytes(*entry.second));

    zip_error_t err;
    zip_error_init(&err);
    zip_source_t* buffer = zip_source_buffer_create(nullptr, 0, 0, &err);
    if (!buffer) {
        std::string msg = zip_error_strerror(&err);
        zip_error_fini(&err);
        throw io_error(ctx + ": cannot create the archive: " + msg);
    }
    // Our reference to the buffer; the archive takes another one when opened on it, so the
    // buffer (the finished archive) outlives zip_close.
    std::unique_ptr<zip_source_t, void (*)(zip_source_t*)> buffer_guard(buffer, zip_source_free);
    zip_t* za = zip_open_from_source(buffer, ZIP_TRUNCATE, &err);
    if (!za) {
        std::string msg = zip_error_strerror(&err);
        zip_error_fini(&err);
        throw io_error(ctx + ": cannot create the archive: " + msg);
    }
    zip_error_fini(&err);
    zip_source_keep(buffer);
    auto zip_fail = [&](const std::string& what) {
        std::string msg = ctx + ": " + what + ": " + zip_strerror(za);
        zip_discard(za);
        return io_error(msg);
    };
    for (std::size_t k = 0; k < arrays.size(); ++k) {
        zip_source_t* s = zip_source_buffer(za, members[k].data(), members[k].size(), 0);
        if (!s) throw zip_fail("cannot add array " + squote(arrays[k].first));
        const std::string member = arrays[k].first + ".npy";
        const zip_int64_t idx = zip_file_add(za, member.c_str(), s, ZIP_FL_ENC_UTF_8);
        if (idx < 0) {
            zip_source_free(s);
            throw zip_fail("cannot add array " + squote(arrays[k].first));
        }
        if (zip_set_file_compression(za, static_cast<zip_uint64_t>(idx), ZIP_CM_STORE, 0) != 0)
            throw zip_fail("cannot add array " + squote(arrays[k].first));
    }
    if (zip_close(za) != 0) throw zip_fail("cannot build the archive");

    auto source_fail = [&](const std::string& what) {
        return io_error(ctx + ": " + what + ": " + zip_error_strerror(zip_source_error(buffer)));
    };
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_source_stat(buffer, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) throw source_fail("cannot size the archive");
    if (zip_source_open(buffer) != 0) throw source_fail("cannot read back the archive");
    std::vector<unsigned char> out(static_cast<std::size_t>(st.size));
    std::size_t done = 0;
    while (done < out.size()) {
        const zip_int64_t r = zip_source_read(buffer, out.data() + done, out.size() - done);
        if (r <= 0) {
            zip_source_close(buffer);
            throw source_fail("cannot read back the archive");
        }
        done += static_cast<std::size_t>(r);
    }
    zip_source_close(buffer);
    return out;
}

template <class T>
std::vector<ArrayRef<T>> module_arrays(nn::Module<T>& m, const std::string& ctx) {
    std::vector<ArrayRef<T>> refs;
    std::set<std::string> names;
    for (auto& [name, p] : m.named_parameters()) {
        if (!names.insert(name).second) throw io_error(ctx + ": the module has two parameters named " + squote(name));
        refs.emplace_back(name, &p->value());
    }
    return refs;
}

}  // namespace

// ---- Public functions ---------------------------------------------------------------------

void write_atomically(const std::string& path, std::string_view contents, std::string_view who) {
    write_file_atomically(path, std::string(who) + " " + path, contents.data(), contents.size());
}

template <class T>
void save_npy(const std::string& path, const xt::xarray<T>& a) {
    write_file_atomically(path, "save_npy " + path, npy_bytes(a));
}

template <class T>
xt::xarray<T> load_npy(const std::string& path) {
    const std::string ctx = "load_npy " + path;
    FileSource src(path, ctx);
    return read_npy<T>(src, ctx);
}

template <class T>
void save_npz(const std::string& path, const std::vector<NamedArray<T>>& arrays) {
    const std::string ctx = "save_npz " + path;
    std::vector<ArrayRef<T>> refs;
    refs.reserve(arrays.size());
    for (const auto& [name, a] : arrays) refs.emplace_back(name, &a);
    write_file_atomically(path, ctx, npz_bytes(refs, ctx));
}

template <class T>
std::vector<NamedArray<T>> load_npz(const std::string& path) {
    return read_npz<T>(path, "load_npz " + path);
}

template <class T>
std::vector<NamedArray<T>> load_npz(const std::string& path, const std::vector<std::string>& names) {
    return read_npz<T>(path, "load_npz " + path, &names);
}

template <class T>
void save(nn::Module<T>& m, const std::string& path) {
    const std::string ctx = "save " + path;
    write_file_atomically(path, ctx, npz_bytes(module_arrays(m, ctx), ctx));
}

template <class T>
void load(nn::Module<T>& m, const std::string& path) {
    const std::string ctx = "load " + path;
    // 1. Read and validate the whole file (nothing in the module changes yet).
    std::vector<NamedArray<T>> arrays = read_npz<T>(path, ctx);
    std::map<std::string, std::size_t> in_file;
    for (std::size_t k = 0; k < arrays.size(); ++k) in_file.emplace(arrays[k].first, k);

    // 2. Match against the module; report every problem at once.
    std::vector<std::string> problems, missing, unexpected;
    const auto params = m.named_parameters();
    std::set<std::string> wanted;
    std::vector<std::size_t> source(params.size());
    for (std::size_t k = 0; k < params.size(); ++k) {
        const auto& [name, p] = params[k];
        if (!wanted.insert(name).second) throw io_error(ctx + ": the module has two parameters named " + squote(name));
        auto it = in_file.find(name);
        if (it == in_file.end()) {
            missing.push_back(squote(name) + " " + shape_str(p->shape()));
            continue;
        }
        const auto& a = arrays[it->second].second;
        if (a.shape() != p->shape())
            problems.push_back("parameter " + squote(name) + " has shape " + shape_str(a.shape()) +
                               " in the file, the module expects " + shape_str(p->shape()));
        source[k] = it->second;
    }
    for (const auto& [name, a] : arrays)
        if (!wanted.count(name)) unexpected.push_back(squote(name) + " " + shape_str(a.shape()));
    auto join = [](const std::vector<std::string>& v) {
        std::string out;
        for (const auto& x : v) out += (out.empty() ? "" : ", ") + x;
        return out;
    };
    if (missing.size() == 1) problems.push_back("parameter " + missing[0] + " is missing from the file");
    if (missing.size() > 1) problems.push_back(std::to_string(missing.size()) + " parameters are missing from the file: " + join(missing));
    if (unexpected.size() == 1)
        problems.push_back("the file has an array " + unexpected[0] + " that the module has no parameter for");
    if (unexpected.size() > 1)
        problems.push_back("the file has " + std::to_string(unexpected.size()) +
                           " arrays that the module has no parameter for: " + join(unexpected));
    if (!problems.empty()) {
        std::string msg = ctx + ": ";
        for (std::size_t k = 0; k < problems.size(); ++k) msg += (k ? "; " : "") + problems[k];
        throw io_error(msg);
    }

    // 3. Commit: copy into the parameters' existing buffers (same shapes, checked above):
    //    nothing is allocated, nothing can fail, and the buffers keep their addresses.
    for (std::size_t k = 0; k < params.size(); ++k) {
        const xt::xarray<T>& from = arrays[source[k]].second;
        std::copy(from.data(), from.data() + from.size(), params[k].second->value().data());
    }
}

template void save_npy<float>(const std::string&, const xt::xarray<float>&);
template void save_npy<double>(const std::string&, const xt::xarray<double>&);
template xt::xarray<float> load_npy<float>(const std::string&);
template xt::xarray<double> load_npy<double>(const std::string&);
template void save_npz<float>(const std::string&, const std::vector<NamedArray<float>>&);
template void save_npz<double>(const std::string&, const std::vector<NamedArray<double>>&);
template std::vector<NamedArray<float>> load_npz<float>(const std::string&);
template std::vector<NamedArray<double>> load_npz<double>(const std::string&);
template std::vector<NamedArray<float>> load_npz<float>(const std::string&, const std::vector<std::string>&);
template std::vector<NamedArray<double>> load_npz<double>(const std::string&, const std::vector<std::string>&);
template xt::xarray<std::int64_t> load_npy<std::int64_t>(const std::string&);
template std::vector<NamedArray<std::int64_t>> load_npz<std::int64_t>(const std::string&);
template std::vector<NamedArray<std::int64_t>> load_npz<std::int64_t>(const std::string&, const std::vector<std::string>&);
template void save<float>(nn::Module<float>&, const std::string&);
template void save<double>(nn::Module<double>&, const std::string&);
template void load<float>(nn::Module<float>&, const std::string&);
template void load<double>(nn::Module<double>&, const std::string&);

}  // namespace recur::io
