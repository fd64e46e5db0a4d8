// .npz archives (see src/io/npz.hpp) and the public save_npz / load_npz.
#include "src/io/npz.hpp"

#include <zip.h>

#include <map>
#include <memory>
#include <set>

#include "src/io/atomic_file.hpp"
#include "src/io/common.hpp"
#include "src/io/npy.hpp"
#include "src/io/source.hpp"

namespace recur::io {

namespace detail {

template <class T>
std::vector<NamedArray<T>> read_npz(const std::string& path, const std::string& ctx,
                                    const std::vector<std::string>* select) {
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
        if (!raw)
            throw io_error(ctx + ": cannot read the name of archive member " + std::to_string(i) + ": " +
                           zip_strerror(za.get()));
        const std::string name = raw;
        const bool npy =
            name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
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

template <class T>
std::vector<unsigned char> npz_bytes(const std::vector<ArrayRef<T>>& arrays, const std::string& ctx) {
    std::set<std::string> names;
    for (const auto& [name, a] : arrays) {
        if (name.empty()) throw io_error(ctx + ": an array name is empty");
        if (name.find('\0') != std::string::npos)
            throw io_error(ctx + ": array name " + squote(name) + " contains NUL");
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

template std::vector<NamedArray<float>> read_npz<float>(const std::string&, const std::string&,
                                                        const std::vector<std::string>*);
template std::vector<NamedArray<double>> read_npz<double>(const std::string&, const std::string&,
                                                          const std::vector<std::string>*);
template std::vector<NamedArray<std::int64_t>> read_npz<std::int64_t>(const std::string&, const std::string&,
                                                                      const std::vector<std::string>*);
template std::vector<unsigned char> npz_bytes<float>(const std::vector<ArrayRef<float>>&, const std::string&);
template std::vector<unsigned char> npz_bytes<double>(const std::vector<ArrayRef<double>>&, const std::string&);

}  // namespace detail

template <class T>
void save_npz(const std::string& path, const std::vector<NamedArray<T>>& arrays) {
    const std::string ctx = "save_npz " + path;
    std::vector<detail::ArrayRef<T>> refs;
    refs.reserve(arrays.size());
    for (const auto& [name, a] : arrays) refs.emplace_back(name, &a);
    detail::write_file_atomically(path, ctx, detail::npz_bytes(refs, ctx));
}

template <class T>
std::vector<NamedArray<T>> load_npz(const std::string& path) {
    return detail::read_npz<T>(path, "load_npz " + path);
}

template <class T>
std::vector<NamedArray<T>> load_npz(const std::string& path, const std::vector<std::string>& names) {
    return detail::read_npz<T>(path, "load_npz " + path, &names);
}

template void save_npz<float>(const std::string&, const std::vector<NamedArray<float>>&);
template void save_npz<double>(const std::string&, const std::vector<NamedArray<double>>&);
template std::vector<NamedArray<float>> load_npz<float>(const std::string&);
template std::vector<NamedArray<double>> load_npz<double>(const std::string&);
template std::vector<NamedArray<float>> load_npz<float>(const std::string&, const std::vector<std::string>&);
template std::vector<NamedArray<double>> load_npz<double>(const std::string&, const std::vector<std::string>&);
template std::vector<NamedArray<std::int64_t>> load_npz<std::int64_t>(const std::string&);
template std::vector<NamedArray<std::int64_t>> load_npz<std::int64_t>(const std::string&,
                                                                      const std::vector<std::string>&);

}  // namespace recur::io
