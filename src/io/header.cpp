// The .npy header parser: a dict literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }.
#include "src/io/header.hpp"

#include <cstdint>
#include <limits>
#include <optional>

#include "src/io/common.hpp"

namespace recur::io::detail {

namespace {

constexpr std::size_t kMaxDims = 64;

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
            if (c == '[' || c == '(' || c == '{')
                stack.push_back(c == '[' ? ']' : c == '(' ? ')' : '}');
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

}  // namespace

Header parse_header(std::string_view text, const std::string& ctx) { return HeaderParser(text, ctx).parse(); }

}  // namespace recur::io::detail
