// Vocabulary: tokens <-> ids, character splitting, and its text file (see recur/data.hpp).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "recur/data.hpp"
#include "recur/io.hpp"

namespace recur::data {

namespace {

constexpr const char* kMagic = "recur-vocabulary 1";

// Length of the UTF-8 character starting at s[i], or 1 if the bytes there are not a valid
// (shortest-form, non-surrogate) UTF-8 sequence.
std::size_t utf8_length(std::string_view s, std::size_t i) {
    const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = b(i);
    std::size_t n = 1;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;  // no overlong forms
        if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;  // at most U+10FFFF
    } else {
        return 1;
    }
    if (i + n > s.size()) return 1;
    if (b(i + 1) < lo || b(i + 1) > hi) return 1;
    for (std::size_t k = 2; k < n; ++k)
        if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 1;
    return n;
}

std::vector<std::string> split_chars(std::string_view text) {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < text.size();) {
        const std::size_t n = utf8_length(text, i);
        out.emplace_back(text.substr(i, n));
        i += n;
    }
    return out;
}

// Backslash escapes for the file and for messages: \\ \n \r \t \xHH (other control bytes).
std::string escape(std::string_view s) {
    std::string out;
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (ch == '\\') {
            out += "\\\\";
        } else if (ch == '\n') {
            out += "\\n";
        } else if (ch == '\r') {
            out += "\\r";
        } else if (ch == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7F) {
            const char* hex = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += ch;
        }
    }
    return out;
}

int hex_digit(char h) {
    if (h >= '0' && h <= '9') return h - '0';
    if (h >= 'a' && h <= 'f') return h - 'a' + 10;
    if (h >= 'A' && h <= 'F') return h - 'A' + 10;
    return -1;
}

// Inverse of escape; false on a malformed escape.
bool unescape(std::string_view s, std::string& out) {
    out.clear();
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\') {
            out += s[i];
            continue;
        }
        if (++i >= s.size()) return false;
        const char c = s[i];
        if (c == '\\' || c == 'n' || c == 'r' || c == 't') {
            out += c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : '\\';
        } else if (c == 'x' && i + 2 < s.size() && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
            out += static_cast<char>(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
            i += 2;
        } else {
            return false;
        }
    }
    return true;
}

std::string squoted(std::string_view token) {
    std::string s(1, '\'');
    s += escape(token);
    s += '\'';
    return s;
}

}  // namespace

// ---- Building -------------------------------------------------------------------------------

void Vocabulary::add(const std::string& token) {
    ids_.emplace(token, static_cast<std::int64_t>(tokens_.size()));
    tokens_.push_back(token);
}

Vocabulary Vocabulary::build(const std::vector<std::string>& tokens, const Options& options, const char* fn) {
    const std::string where = std::string("Vocabulary::") + fn;
    std::vector<std::string> specials = options.specials;
    if (!options.unk.empty() && std::find(specials.begin(), specials.end(), options.unk) == specials.end())
        specials.push_back(options.unk);
    Vocabulary v;
    for (std::size_t k = 0; k < specials.size(); ++k) {
        if (specials[k].empty()) throw value_error(where + ": special token " + std::to_string(k) + " is empty");
        if (v.ids_.count(specials[k]))
            throw value_error(where + ": special token " + squoted(specials[k]) + " is listed twice");
        v.add(specials[k]);
    }
    v.num_specials_ = v.tokens_.size();
    if (!options.unk.empty()) v.unk_id_ = v.ids_.at(options.unk);

    std::vector<std::string> rest;
    std::set<std::string_view> seen;
    for (std::size_t k = 0; k < tokens.size(); ++k) {
        const std::string& t = tokens[k];
        if (t.empty()) throw value_error(where + ": token at position " + std::to_string(k) + " is empty");
        if (v.ids_.count(t) || !seen.insert(t).second) continue;
        rest.push_back(t);
    }
    if (options.order == TokenOrder::sorted) std::sort(rest.begin(), rest.end());
    for (const std::string& t : rest) v.add(t);
    if (v.tokens_.empty()) throw value_error(where + ": the vocabulary would be empty (no tokens and no specials)");
    return v;
}

Vocabulary Vocabulary::from_text(std::string_view text, const Options& options) {
    return build(split_chars(text), options, "from_text");
}

Vocabulary Vocabulary::from_tokens(const std::vector<std::string>& tokens, const Options& options) {
    return build(tokens, options, "from_tokens");
}

// ---- Lookup ---------------------------------------------------------------------------------

bool Vocabulary::contains(std::string_view token) const { return ids_.find(token) != ids_.end(); }

std::int64_t Vocabulary::lookup(std::string_view token, std::size_t position, const char* fn) const {
    const auto it = ids_.find(token);
    if (it != ids_.end()) return it->second;
    if (unk_id_) return *unk_id_;
    std::string msg = std::string("Vocabulary::") + fn + ": unknown token " + squoted(token);
    if (position != std::string::npos) msg += " at position " + std::to_string(position);
    throw index_error(msg + " (vocabulary of " + std::to_string(size()) +
                      " tokens without an unk token; set VocabularyOptions::unk to map misses to it)");
}

std::int64_t Vocabulary::id(std::string_view token) const { return lookup(token, std::string::npos, "id"); }

const std::string& Vocabulary::token(std::int64_t id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= tokens_.size())
        throw index_error("Vocabulary::token: id " + std::to_string(id) + " is out of range [0, " +
                          std::to_string(tokens_.size()) + ")");
    return tokens_[static_cast<std::size_t>(id)];
}

std::vector<std::int64_t> Vocabulary::encode(std::string_view text) const {
    std::vector<std::int64_t> ids;
    ids.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        const std::size_t n = utf8_length(text, i);
        ids.push_back(lookup(text.substr(i, n), i, "encode"));
        i += n;
    }
    return ids;
}

std::vector<std::int64_t> Vocabulary::encode(const std::vector<std::string>& tokens) const {
    std::vector<std::int64_t> ids(tokens.size());
    for (std::size_t k = 0; k < tokens.size(); ++k) ids[k] = lookup(tokens[k], k, "encode");
    return ids;
}

std::vector<std::string> Vocabulary::decode_tokens(const std::vector<std::int64_t>& ids) const {
    std::vector<std::string> out;
    out.reserve(ids.size());
    for (std::size_t k = 0; k < ids.size(); ++k) {
        const std::int64_t id = ids[k];
        if (id < 0 || static_cast<std::size_t>(id) >= tokens_.size())
            throw index_error("Vocabulary::decode: id " + std::to_string(id) + " at position " + std::to_string(k) +
                              " is out of range [0, " + std::to_string(tokens_.size()) + ")");
        out.push_back(tokens_[static_cast<std::size_t>(id)]);
    }
    return out;
}

std::string Vocabulary::decode(const std::vector<std::int64_t>& ids, std::string_view separator) const {
    std::string out;
    const std::vector<std::string> toks = decode_tokens(ids);
    for (std::size_t k = 0; k < toks.size(); ++k) {
        if (k) out += separator;
        out += toks[k];
    }
    return out;
}

// ---- File -------------------------------------------------------------------------------------

void Vocabulary::save(const std::string& path) const {
    std::ostringstream os;
    os << kMagic << "\nspecials " << num_specials_ << "\nunk ";
    if (unk_id_) {
        os << *unk_id_;
    } else {
        os << "none";
    }
    os << "\nsize " << tokens_.size() << "\n";
    for (const std::string& t : tokens_) os << escape(t) << "\n";
    io::write_atomically(path, os.str(), "Vocabulary::save");
}

Vocabulary Vocabulary::load(const std::string& path) {
    const std::string where = "Vocabulary::load " + path;
    std::ifstream f(path, std::ios::binary);
    if (!f) throw io_error(where + ": cannot open the file: " + std::strerror(errno));
    std::ostringstream ss;
    ss << f.rdbuf();
    if (f.bad()) throw io_error(where + ": reading the file failed");
    const std::string text = ss.str();

    std::vector<std::string> lines;
    for (std::size_t i = 0; i <= text.size();) {
        std::size_t j = text.find('\n', i);
        if (j == std::string::npos) {
            if (i < text.size()) lines.push_back(text.substr(i));
            break;
        }
        std::string line = text.substr(i, j - i);
        if (!line.empty() && line.back() == '\r') line.pop_back();  // tolerate CRLF
        lines.push_back(std::move(line));
        i = j + 1;
    }
    const auto fail = [&](std::size_t line, const std::string& what) {
        return io_error(where + ": line " + std::to_string(line) + ": " + what);
    };
    if (lines.empty() || lines[0] != kMagic)
        throw fail(1, "not a recur vocabulary file (expected '" + std::string(kMagic) + "')");
    // "key N" header lines.
    const auto number = [&](std::size_t line, const std::string& key, bool allow_none) -> std::optional<std::size_t> {
        if (lines.size() <= line - 1) throw fail(line, "missing '" + key + "' line (file truncated)");
        const std::string& l = lines[line - 1];
        const std::string prefix = key + " ";
        if (l.rfind(prefix, 0) != 0) throw fail(line, "expected '" + key + " ...', got '" + escape(l) + "'");
        const std::string v = l.substr(prefix.size());
        if (allow_none && v == "none") return std::nullopt;
        if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos)
            throw fail(line, "'" + escape(v) + "' is not a count");
        return static_cast<std::size_t>(std::stoull(v));
    };
    const std::size_t specials = *number(2, "specials", false);
    const std::optional<std::size_t> unk = number(3, "unk", true);
    const std::size_t size = *number(4, "size", false);
    if (lines.size() - 4 < size)
        throw fail(lines.size() + 1, "expected " + std::to_string(size) + " tokens, the file has " +
                                         std::to_string(lines.size() - 4) + " (file truncated)");
    for (std::size_t k = 4 + size; k < lines.size(); ++k)
        if (!lines[k].empty()) throw fail(k + 1, "unexpected text after the " + std::to_string(size) + " tokens");
    if (specials > size)
        throw fail(2, "specials " + std::to_string(specials) + " exceeds size " + std::to_string(size));
    if (unk && *unk >= specials)
        throw fail(
            3, "unk id " + std::to_string(*unk) + " is not one of the " + std::to_string(specials) + " special tokens");
    if (size == 0) throw fail(4, "the vocabulary is empty");

    Vocabulary v;
    std::string token;
    for (std::size_t k = 0; k < size; ++k) {
        const std::size_t line = 5 + k;
        if (!unescape(lines[line - 1], token)) throw fail(line, "malformed escape in '" + lines[line - 1] + "'");
        if (token.empty()) throw fail(line, "empty token");
        if (v.ids_.count(token)) throw fail(line, "token " + squoted(token) + " appears twice");
        v.add(token);
    }
    v.num_specials_ = specials;
    if (unk) v.unk_id_ = static_cast<std::int64_t>(*unk);
    return v;
}

}  // namespace recur::data
