// The element types of .npy files: numpy type strings ("<f4", "|u1", ...) and their names.
#include "src/io/dtype.hpp"

#include <algorithm>
#include <limits>

namespace recur::io::detail {

static_assert(std::numeric_limits<float>::is_iec559 && std::numeric_limits<double>::is_iec559);

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
        case 'f':
            return order + "float" + bits;
        case 'i':
            return order + "int" + bits;
        case 'u':
            return order + "uint" + bits;
        case 'c':
            return order + "complex" + bits;
        case 'b':
            return "bool";
        case 'O':
            return "Python object";
        case 'U':
            return "unicode string";
        case 'S':
            return "byte string";
        case 'V':
            return "void / raw bytes";
        case 'M':
            return "datetime";
        case 'm':
            return "timedelta";
        default:
            return "unknown type";
    }
}

}  // namespace recur::io::detail
