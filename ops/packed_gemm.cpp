// Products by a packed weight (see packed_gemm.hpp): oneDNN matmul primitives, made once per
// shape, and weights reordered once per Parameter version into the layout the primitive asked
// for, or, for small bf16 products, into recur's pair layout (bf16_kernel.hpp). Both caches are
// per thread (no locks; data-parallel threads each pack their own copy).
#include "packed_gemm.hpp"

#include "bf16_kernel.hpp"
#include "gate_product.hpp"

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

#include "recur/error.hpp"

namespace recur {

namespace detail {

namespace {

using dnnl::memory;
using dt = memory::data_type;

std::atomic<std::uint64_t> packs{0};

dnnl::engine& cpu_engine() {
    static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    return engine;
}

dnnl::stream& thread_stream() {
    thread_local dnnl::stream stream(cpu_engine());
    return stream;
}

memory::dim dim(std::size_t v) { return static_cast<memory::dim>(v); }

// One matmul primitive: C (m x n, ldc) [+]= A (m x k, lda) B (k x n, packed) [+ bias (1 x n)].
struct Product {
    std::size_t m, n, k, lda, ldc;
    Precision precision;
    bool accumulate;
    bool plain_weights;  // B read row-major per call (bf16_gemm_tn) instead of packed
    bool with_bias;
    dnnl::matmul primitive;
    memory::desc weights;  // the layout it reads B in
    memory src, dst, wei, bias;  // wrappers whose handles are set per call (wei: plain weights only)
};

// A packed weight: op(W) (k x n) of `owner` at `version`, in oneDNN's layout `layout` (in
// `value`), or, with a zero `layout`, in recur's bf16 pair layout (in `pairs`, bf16_kernel.hpp).
struct Packed {
    const void* owner;
    std::uint64_t version;
    bool transposed;
    std::size_t k, n;
    memory::desc layout;
    memory value;
    std::vector<std::uint32_t> pairs;
    std::uint64_t used;  // for eviction
};

constexpr std::size_t max_products = 64, max_packed = 64;

[[noreturn]] void fail(const char* what, std::size_t m, std::size_t n, std::size_t k, Precision p,
                       const dnnl::error& e) {
    throw value_error(
        std::string("packed_gemm: ") + what + " for a " + precision_name(p) + " product (" + std::to_string(m) + " x " +
        std::to_string(k) + ") x (" + std::to_string(k) + " x " + std::to_string(n) + ") failed: " + e.what() +
        (p == Precision::bf16 ? " (bf16 needs a CPU with AVX-512; see README \"Reduced precision\")" : ""));
}

Product& product_for(Precision p, std::size_t m, std::size_t n, std::size_t k, std::size_t lda, std::size_t ldc,
                     bool accumulate, bool plain_weights = false, bool with_bias = false) {
    thread_local std::vector<Product> products;
    for (auto& pr : products)
        if (pr.m == m && pr.n == n && pr.k == k && pr.lda == lda && pr.ldc == ldc && pr.precision == p &&
            pr.accumulate == accumulate && pr.plain_weights == plain_weights && pr.with_bias == with_bias)
            return pr;
    const dt in = p == Precision::bf16 ? dt::bf16 : dt::f32;
    // bf16 sources are converted into a contiguous buffer: row stride k, or for bf16_gemm_tn
    // (plain weights) A^T's rows as they are, read transposed (strides 1, m); f32 read in place.
    const memory::dim src_ld = p == Precision::bf16 ? dim(k) : dim(lda);
    const memory::desc src_md({dim(m), dim(k)}, in, plain_weights ? memory::dims{1, dim(m)} : memory::dims{src_ld, 1});
    const memory::desc weights_any({dim(k), dim(n)}, in,
                                   plain_weights ? memory::format_tag::ab : memory::format_tag::any);
    const memory::desc dst_md({dim(m), dim(n)}, dt::f32, {dim(ldc), 1});
    const memory::desc bias_md({1, dim(n)}, dt::f32, {dim(n), 1});
    try {
        dnnl::primitive_attr attr;
        if (accumulate) {
            dnnl::post_ops ops;
            ops.append_sum(1.0f);
            attr.set_post_ops(ops);
        }
        const dnnl::matmul::desc desc = with_bias ? dnnl::matmul::desc(src_md, weights_any, bias_md, dst_md)
                                                  : dnnl::matmul::desc(src_md, weights_any, dst_md);
        dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
        if (products.size() == max_products) products.erase(products.begin());
        products.push_back({m, n, k, lda, ldc, p, accumulate, plain_weights, with_bias, dnnl::matmul(pd),
                            pd.weights_desc(), memory(src_md, cpu_engine(), DNNL_MEMORY_NONE),
                            memory(dst_md, cpu_engine(), DNNL_MEMORY_NONE),
                            memory(pd.weights_desc(), cpu_engine(), DNNL_MEMORY_NONE),
                            memory(bias_md, cpu_engine(), DNNL_MEMORY_NONE)});
    } catch (const dnnl::error& e) {
        fail("making the matmul primitive", m, n, k, p, e);
    }
    return products.back();
}

// The two caches of packed weights below (thread-local vectors of entries with a `used` stamp,
// up to max_packed): the entry `match` accepts, stamped `clock`, or null.
template <class Entry, class Match>
Entry* recently_used(std::vector<Entry>& cache, std::uint64_t clock, Match match) {
    for (auto& e : cache)
        if (match(e)) {
            e.used = clock;
            return &e;
        }
    return nullptr;
}

// `entry` added to such a cache, after evicting the least recently used one when it is full.
template <class Entry>
Entry& added(std::vector<Entry>& cache, Entry entry) {
    if (cache.size() == max_packed)
        cache.erase(std::min_element(cache.begin(), cache.end(),
                                     [](const Entry& a, const Entry& b) { return a.used < b.used; }));
    cache.push_back(std::move(entry));
    return cache.back();
}

// The cache entry of op(W) in `layout`, and whether it holds W's current version: the cached
// entry when W's owner and version match, else the same weight's older entry, or a new one
// (evicting the least recently used), which the caller fills and then marks with note_packed.
Packed& cached_slot(const WeightRef& w, bool transposed, std::size_t k, std::size_t n, const memory::desc& layout,
                    bool& current) {
    thread_local std::vector<Packed> cache;
    thread_local std::uint64_t clock = 0;
    ++clock;
    // A weight that is no Parameter's (owner null) has no identity to key on: lookups skip its
    // entry, which waits for eviction.
    Packed* e = w.owner == nullptr ? nullptr : recently_used(cache, clock, [&](const Packed& p) {
        return p.owner == w.owner && p.transposed == transposed && p.k == k && p.n == n && p.layout == layout;
    });
    current = e != nullptr && e->version == w.version;  // else the same weight at an older version: repacked in place
    return e ? *e : added(cache, Packed{w.owner, 0, transposed, k, n, layout, memory(), {}, clock});
}

void note_packed(Packed& slot, const WeightRef& w) {
    packs.fetch_add(1, std::memory_order_relaxed);
    slot.version = w.version;
}

// op(W) in `layout`, reordered by oneDNN when the cache has not got W's current version.
const memory& packed_for(const WeightRef& w, bool transposed, const memory::desc& layout, Precision p, std::size_t n,
                         std::size_t k) {
    bool current = false;
    Packed& slot = cached_slot(w, transposed, k, n, layout, current);
    if (current) return slot.value;
    // W as op(W) (k x n) in plain f32: W^T of an (n x k) row-major W, or W (k x n) itself.
    const memory::desc plain({dim(k), dim(n)}, dt::f32, transposed ? memory::dims{1, dim(k)} : memory::dims{dim(n), 1});
    try {
        if (!slot.value) slot.value = memory(layout, cpu_engine());
        memory source(plain, cpu_engine(), const_cast<float*>(w.data));
        dnnl::reorder(source, slot.value).execute(thread_stream(), source, slot.value);
        thread_stream().wait();
    } catch (const dnnl::error& e) {
        fail("packing the weight", 0, n, k, p, e);
    }
    note_packed(slot, w);
    return slot.value;
}

// op(W) (k x n) in recur's bf16 pair layout, packed when the cache has not got W's current
// version.
const std::uint32_t* pairs_for(const WeightRef& w, bool transposed, std::size_t n, std::size_t k) {
    bool current = false;
    Packed& slot = cached_slot(w, transposed, k, n, memory::desc(), current);
    if (!current) {
        slot.pairs.resize(bf16_pair_rows(k) * bf16_pair_stride(n));
        pack_bf16_pairs(w.data, transposed, k, n, slot.pairs.data());
        note_packed(slot, w);
    }
    return slot.pairs.data();
}

// A (m x k, lda) rounded to bf16 into per-thread buffer `slot` (0 or 1), row stride k: by
// vcvtneps2bf16 where the CPU has AVX512_BF16 (round_to_bf16), else to_bf16.
const std::uint16_t* to_bf16_rows(const float* a, std::size_t m, std::size_t k, std::size_t lda, int slot = 0) {
    thread_local std::vector<std::uint16_t> buffers[2];
    auto& buffer = buffers[slot];
    if (buffer.size() < m * k) buffer.resize(m * k);
    std::uint16_t* out = buffer.data();
    if (bf16_kernel_available()) {
        for (std::size_t r = 0; r < m; ++r) round_to_bf16(a + r * lda, k, out + r * k);
        return out;
    }
    for (std::size_t r = 0; r < m; ++r)
        for (std::size_t j = 0; j < k; ++j) out[r * k + j] = to_bf16(a[r * lda + j]);
    return out;
}

// Runs `pr` on bf16 A (and B when its weights are plain) [and the bias] into c.
void execute(Product& pr, const void* a, const memory& weights, float* c, std::size_t m, std::size_t n, std::size_t k,
             const float* bias = nullptr) {
    try {
        pr.src.set_data_handle(const_cast<void*>(a));
        pr.dst.set_data_handle(c);
        std::unordered_map<int, memory> args{
            {DNNL_ARG_SRC, pr.src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, pr.dst}};
        if (pr.with_bias) {
            pr.bias.set_data_handle(const_cast<float*>(bias));
            args.emplace(DNNL_ARG_BIAS, pr.bias);
        }
        pr.primitive.execute(thread_stream(), args);
        thread_stream().wait();
    } catch (const dnnl::error& e) {
        fail("running the matmul", m, n, k, pr.precision, e);
    }
}

// Whether a bf16 product runs on recur's kernel (bf16_kernel.hpp) rather than a oneDNN matmul:
// up to 2^19 multiply-adds. Measured one core (loaded machine), own / oneDNN time, AMX: S's
// recurrent products (16 x 256 x 64, 16 x 192 x 64 forward; 16 x 64 x 256 backward) 0.55-0.8,
// XS's 1 x 64 x 16 0.2-0.5, 32 x 256 x 64 0.4-0.9; from 2^20 on oneDNN's matmul was
// faster (16 x 512 x 128 2.1x, 64 x 256 x 64 tie or worse, M's 64 x 1024 x 256 1.7-4x).
bool own_bf16_product(std::size_t m, std::size_t n, std::size_t k) {
    return bf16_kernel_available() && double(m) * double(n) * double(k) <= double(1 << 19);
}

}  // namespace

void packed_gemm(Precision precision, std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t lda,
                 const WeightRef& w, bool transpose_w, bool accumulate, float* c, std::size_t ldc, const float* bias) {
    if (m == 0 || n == 0) return;
    if (bias && accumulate) throw value_error("packed_gemm: a bias is added only without accumulate");
    const bool own = precision == Precision::bf16 && own_bf16_product(m, n, k);
    if (bias && (k == 0 || own)) {  // C = the bias rows, then the product accumulated onto them
        bias_rows(c, m, n, ldc, bias);
        bias = nullptr;
        accumulate = true;
    }
    if (k == 0) {
        if (!accumulate)
            for (std::size_t r = 0; r < m; ++r) std::fill(c + r * ldc, c + r * ldc + n, 0.0f);
        return;
    }
    if (own) {
        bf16_pair_gemm(m, n, k, a, lda, pairs_for(w, transpose_w, n, k), accumulate, c, ldc);
        return;
    }
    Product& pr =
        product_for(precision, m, n, k, std::max(lda, k), std::max(ldc, n), accumulate, false, bias != nullptr);
    const memory& weights = packed_for(w, transpose_w, pr.weights, precision, n, k);
    const void* src = precision == Precision::bf16 ? static_cast<const void*>(to_bf16_rows(a, m, k, lda)) : a;
    execute(pr, src, weights, c, m, n, k, bias);
}

void bf16_gemm_tn(std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t lda, const float* b,
                  std::size_t ldb, bool accumulate, float* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
        if (!accumulate)
            for (std::size_t r = 0; r < m; ++r) std::fill(c + r * ldc, c + r * ldc + n, 0.0f);
        return;
    }
    Product& pr = product_for(Precision::bf16, m, n, k, k, std::max(ldc, n), accumulate, true);
    const std::uint16_t* at = to_bf16_rows(a, k, m, lda, 0);  // A (k x m), read as A^T by the primitive
    const std::uint16_t* bt = to_bf16_rows(b, k, n, ldb, 1);  // B (k x n)
    pr.wei.set_data_handle(const_cast<std::uint16_t*>(bt));
    execute(pr, at, pr.wei, c, m, n, k);
}

// Measured one core (busy machine), natural loops, packed / plain time: forward products at M
// (64 x 256 x 1024) 0.83-0.94 (inference 1.06-1.21x faster); at S (16 x 64 x 256) and for the
// backward's dpre w_hh at M the matmul primitive lost to dnnl_sgemm (training S 0.71-0.78x, M
// 0.88-0.96x with both products packed). So f32 packs only forward products of at least 2^22
// multiply-adds. RECUR_F32_GEMM=plain (read once) turns the f32 packed path off entirely, for
// measuring the two side by side in one binary.
bool plain_f32_product(std::size_t m, std::size_t n, std::size_t k, bool transpose_w) {
    static const bool plain = [] {
        const char* v = std::getenv("RECUR_F32_GEMM");
        return v != nullptr && std::string(v) == "plain";
    }();
    return plain || !transpose_w || double(m) * double(n) * double(k) < double(1 << 22);
}

const float* gate_panels(const WeightRef& w_ih, std::size_t in, const WeightRef& w_hh, std::size_t gates,
                         std::size_t hidden) {
    // One entry per (w_ih, w_hh) pair and shape; the least recently used goes beyond max_packed.
    struct Panels {
        const void *ih, *hh;
        std::uint64_t ih_version, hh_version;
        std::size_t in, gates, hidden;
        std::vector<float> buffer;
        const float* start;
        std::uint64_t used;
    };
    thread_local std::vector<Panels> cache;
    thread_local std::vector<float> uncached;
    thread_local std::uint64_t clock = 0;
    const std::size_t size = gate_product::packed_size<float>(gates, hidden, in + hidden);
    const auto pack_into = [&](std::vector<float>& buffer) {
        if (buffer.size() < size) buffer.resize(size);
        packs.fetch_add(1, std::memory_order_relaxed);
        return gate_product::pack(in ? w_ih.data : nullptr, in, w_hh.data, gates, hidden, buffer.data());
    };
    if (w_hh.owner == nullptr || (in && w_ih.owner == nullptr)) return pack_into(uncached);
    const void* ih = in ? w_ih.owner : nullptr;
    const std::uint64_t ih_version = in ? w_ih.version : 0;
    Panels* e = recently_used(cache, ++clock, [&](const Panels& p) {
        return p.ih == ih && p.hh == w_hh.owner && p.in == in && p.gates == gates && p.hidden == hidden;
    });
    if (e == nullptr) {
        e = &added(cache, Panels{ih, w_hh.owner, ih_version, w_hh.version, in, gates, hidden, {}, nullptr, clock});
    } else if (e->ih_version == ih_version && e->hh_version == w_hh.version) {
        return e->start;
    }
    // new, or an update: packed (again, in place)
    e->start = pack_into(e->buffer);
    e->ih_version = ih_version, e->hh_version = w_hh.version;
    return e->start;
}

std::uint64_t weight_packs() { return packs.load(std::memory_order_relaxed); }

}  // namespace detail

bool bf16_native() {
    const auto isa = dnnl::get_effective_cpu_isa();
    return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

}  // namespace recur
