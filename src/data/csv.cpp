// Reading numeric columns of CSV files (see recur/data.hpp). The file is read whole, split
// into records (RFC 4180 quoting; LF, CRLF or CR line ends; blank lines skipped), then the
// chosen fields are parsed with std::from_chars (locale-independent, exact rounding).
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>

#include "recur/data.hpp"

namespace recur::data {

namespace {

struct Record {
    std::size_t line;  // 1-based line where the record starts
    std::vector<std::string> fields;
};

bool is_blank(char c, char delimiter) { return (c == ' ' || c == '\t') && c != delimiter; }

std::string trim(std::string_view s) {
    std::size_t b = 0, e = s.size();
    while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
    return std::string(s.substr(b, e - b));
}

std::string read_file(const std::string& path, const std::string& fn) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) throw io_error(fn + ": cannot open '" + path + "': " + std::strerror(errno));
    std::string text;
    char buf[1 << 16];
    for (;;) {
        const std::size_t n = std::fread(buf, 1, sizeof buf, f.get());
        text.append(buf, n);
        if (n < sizeof buf) break;
    }
    if (std::ferror(f.get())) throw io_error(fn + ": cannot read '" + path + "': " + std::strerror(errno));
    return text;
}

std::vector<Record> parse_records(std::string_view text, const CsvOptions& opt, const std::string& ctx) {
    std::vector<Record> records;
    std::size_t pos = 0, line = 1;
    const std::size_t n = text.size();
    if (text.substr(0, 3) == "\xEF\xBB\xBF") pos = 3;  // UTF-8 byte-order mark
    const auto end_of_line = [&](std::size_t p) { return p >= n || text[p] == '\n' || text[p] == '\r'; };
    const auto skip_line_end = [&] {  // consumes "\r\n", "\n" or "\r" at pos
        if (pos < n && text[pos] == '\r') ++pos;
        if (pos < n && text[pos] == '\n') ++pos;
        ++line;
    };
    while (pos < n) {
        Record rec{line, {}};
        bool quoted_any = false;
        for (;;) {
            std::string field;
            std::size_t p = pos;
            while (p < n && is_blank(text[p], opt.delimiter)) ++p;
            if (p < n && text[p] == opt.quote) {
                quoted_any = true;
                const std::size_t quote_line = line;
                pos = p + 1;
                for (;;) {
                    if (pos >= n)
                        throw io_error(ctx + ": line " + std::to_string(quote_line) +
                                       ": unterminated quoted field (no closing " + std::string(1, opt.quote) + ")");
                    const char c = text[pos];
                    if (c == opt.quote) {
                        if (pos + 1 < n && text[pos + 1] == opt.quote) {
                            field += c;
                            pos += 2;
                            continue;
                        }
                        ++pos;
                        break;
                    }
                    if (c == '\n' || (c == '\r' && (pos + 1 >= n || text[pos + 1] != '\n'))) ++line;
                    field += c;
                    ++pos;
                }
                while (pos < n && is_blank(text[pos], opt.delimiter)) ++pos;
                if (pos < n && text[pos] != opt.delimiter && !end_of_line(pos))
                    throw io_error(ctx + ": line " + std::to_string(line) + ": unexpected character '" +
                                   std::string(1, text[pos]) + "' after a closing quote");
            } else {
                while (pos < n && text[pos] != opt.delimiter && !end_of_line(pos)) field += text[pos++];
            }
            rec.fields.push_back(std::move(field));
            if (pos < n && text[pos] == opt.delimiter) {
                ++pos;
                continue;
            }
            skip_line_end();
            break;
        }
        const bool blank = !quoted_any && rec.fields.size() == 1 && trim(rec.fields[0]).empty();
        if (!blank) records.push_back(std::move(rec));
    }
    return records;
}

// Parses a whole (trimmed) field as a number of type T; false if it is not one.
template <class T>
bool parse_number(const std::string& field, T& out) {
    const char* b = field.data();
    const char* e = b + field.size();
    if (b != e && *b == '+' && e - b > 1 && (b[1] == '.' || (b[1] >= '0' && b[1] <= '9'))) ++b;
    if (b == e) return false;
    auto [ptr, ec] = std::from_chars(b, e, out);
    if (ptr != e) return false;
    if (ec == std::errc()) return true;
    if (ec != std::errc::result_out_of_range) return false;
    // Out of range for T. Within double's range: overflow for T = float is rejected, a
    // float underflow rounds to a subnormal or zero. Beyond double's range: a negative
    // exponent is an underflow (zero), anything else an overflow.
    double d = 0;
    const auto r = std::from_chars(b, e, d);
    if (r.ec == std::errc() && r.ptr == e) {
        if (std::abs(d) > static_cast<double>(std::numeric_limits<T>::max())) return false;
        out = static_cast<T>(d);
        return true;
    }
    const std::string_view s(b, static_cast<std::size_t>(e - b));
    const std::size_t x = s.find_first_of("eE");
    if (x == std::string_view::npos || x + 1 >= s.size() || s[x + 1] != '-') return false;
    out = s[0] == '-' ? -T(0) : T(0);
    return true;
}

struct Column {
    std::size_t index;
    std::string label;  // "'price' (index 2)" or "2"
};

template <class T>
xt::xarray<T> read_columns(const std::string& path, const std::string& fn, const std::vector<std::string>* names,
                           const std::vector<std::size_t>* indices, const CsvOptions& opt, bool one) {
    const std::string ctx = fn + ": " + path;
    if (opt.delimiter == opt.quote || opt.delimiter == '\n' || opt.delimiter == '\r')
        throw value_error(fn + ": the delimiter must differ from the quote character and line breaks");
    if (names && !opt.header)
        throw value_error(fn + ": columns chosen by name need a header line (CsvOptions::header is false)");
    if ((names && names->empty()) || (indices && indices->empty())) throw value_error(fn + ": no columns requested");

    const std::vector<Record> records = parse_records(read_file(path, fn), opt, ctx);
    std::size_t first_data = 0;
    std::vector<std::string> header;
    if (opt.header) {
        if (records.empty()) throw io_error(ctx + ": the file is empty (expected a header line)");
        for (const std::string& h : records[0].fields) header.push_back(trim(h));
        first_data = 1;
    }

    std::vector<Column> cols;
    if (names) {
        for (const std::string& want : *names) {
            const std::string w = trim(want);
            std::vector<std::size_t> hits;
            for (std::size_t c = 0; c < header.size(); ++c)
                if (header[c] == w) hits.push_back(c);
            if (hits.empty()) {
                std::string list;
                for (std::size_t c = 0; c < header.size(); ++c) list += (c ? ", '" : "'") + header[c] + "'";
                throw io_error(ctx + ": no column '" + want + "' in the header (line " +
                               std::to_string(records[0].line) + ": " + list + ")");
            }
            if (hits.size() > 1)
                throw io_error(ctx + ": column name '" + want + "' is ambiguous (indices " + std::to_string(hits[0]) +
                               " and " + std::to_string(hits[1]) + ")");
            cols.push_back({hits[0], "'" + w + "' (index " + std::to_string(hits[0]) + ")"});
        }
    } else {
        for (std::size_t c : *indices) {
            std::string label = std::to_string(c);
            if (opt.header && c < header.size()) label = "'" + header[c] + "' (index " + std::to_string(c) + ")";
            if (opt.header && c >= header.size())
                throw io_error(ctx + ": column index " + std::to_string(c) + " is out of range: the header (line " +
                               std::to_string(records[0].line) + ") has " + std::to_string(header.size()) + " column" +
                               (header.size() == 1 ? "" : "s"));
            cols.push_back({c, label});
        }
    }

    const std::size_t N = records.size() - first_data, F = cols.size();
    if (N == 0) {
        std::string which;
        for (std::size_t j = 0; j < F; ++j) which += (j ? ", " : "") + cols[j].label;
        throw io_error(ctx + ": no data rows (column" + (F == 1 ? " " : "s ") + which + " is empty)");
    }
    xt::xarray<T> out = one ? xt::xarray<T>::from_shape({N}) : xt::xarray<T>::from_shape({N, F});
    T* o = out.data();
    for (std::size_t r = 0; r < N; ++r) {
        const Record& rec = records[first_data + r];
        for (std::size_t j = 0; j < F; ++j) {
            const Column& col = cols[j];
            const std::string where = ctx + ": line " + std::to_string(rec.line) + ", column " + col.label;
            if (col.index >= rec.fields.size())
                throw io_error(where + ": missing cell (the row has " + std::to_string(rec.fields.size()) + " field" +
                               (rec.fields.size() == 1 ? "" : "s") + ")");
            const std::string field = trim(rec.fields[col.index]);
            if (field.empty()) throw io_error(where + ": empty cell (missing value)");
            if (!parse_number(field, o[r * F + j]))
                throw io_error(where + ": cannot parse '" + field + "' as a number" +
                               (std::is_same_v<T, float> ? " (float)" : ""));
        }
    }
    return out;
}

}  // namespace

template <class T>
xt::xarray<T> read_csv_column(const std::string& path, const std::string& column, const CsvOptions& options) {
    const std::vector<std::string> names{column};
    return read_columns<T>(path, "read_csv_column", &names, nullptr, options, true);
}

template <class T>
xt::xarray<T> read_csv_column(const std::string& path, std::size_t column, const CsvOptions& options) {
    const std::vector<std::size_t> indices{column};
    return read_columns<T>(path, "read_csv_column", nullptr, &indices, options, true);
}

template <class T>
xt::xarray<T> read_csv_columns(const std::string& path, const std::vector<std::string>& columns,
                               const CsvOptions& options) {
    return read_columns<T>(path, "read_csv_columns", &columns, nullptr, options, false);
}

template <class T>
xt::xarray<T> read_csv_columns(const std::string& path, const std::vector<std::size_t>& columns,
                               const CsvOptions& options) {
    return read_columns<T>(path, "read_csv_columns", nullptr, &columns, options, false);
}

template xt::xarray<float> read_csv_column<float>(const std::string&, const std::string&, const CsvOptions&);
template xt::xarray<double> read_csv_column<double>(const std::string&, const std::string&, const CsvOptions&);
template xt::xarray<float> read_csv_column<float>(const std::string&, std::size_t, const CsvOptions&);
template xt::xarray<double> read_csv_column<double>(const std::string&, std::size_t, const CsvOptions&);
template xt::xarray<float> read_csv_columns<float>(const std::string&, const std::vector<std::string>&,
                                                   const CsvOptions&);
template xt::xarray<double> read_csv_columns<double>(const std::string&, const std::vector<std::string>&,
                                                     const CsvOptions&);
template xt::xarray<float> read_csv_columns<float>(const std::string&, const std::vector<std::size_t>&,
                                                   const CsvOptions&);
template xt::xarray<double> read_csv_columns<double>(const std::string&, const std::vector<std::size_t>&,
                                                     const CsvOptions&);

}  // namespace recur::data
