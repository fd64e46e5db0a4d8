// Products by a packed weight (see packed_gemm.hpp): oneDNN matmul primitives, made once per
// shape, and weights reordered once per Parameter version into the layout the primitive asked
// for. Both caches are per thread (no locks; data-parallel threads each pack their own copy).
#include "packed_gemm.hpp"

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
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

// One matmul primitive: C (m x n, ldc) [+]= A (m x k, lda) B (k x n, packed).
struct Product {
    std::size_t m, n, k, lda, ldc;
    Precision precision;
    bool accumulate;
    bool plain_weights;  // B read row-major per call (bf16_gemm_tn) instead of packed
    dnnl::matmul primitive;
    memory::desc weights;  // the layout it reads B in
    memory src, dst, wei;  // wrappers whose handles are set per call (wei: plain weights only)
};

// A packed weight: op(W) (k x n) of `owner` at `version`, in the layout `layout`.
struct Packed {
    const void* owner;
    std::uint64_t version;
    bool transposed;
    memory::desc layout;
    memory value;
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
                     bool accumulate, bool plain_weights = false) {
    thread_local std::vector<Product> products;
    for (auto& pr : products)
        if (pr.m == m && pr.n == n && pr.k == k && pr.lda == lda && pr.ldc == ldc && pr.precision == p &&
            pr.accumulate == accumulate && pr.plain_weights == plain_weights)
            return pr;
    const dt in = p == Precision::bf16 ? dt::bf16 : dt::f32;
    // bf16 sources are converted into a contiguous buffer: row stride k, or for bf16_gemm_tn
    // (plain weights) A^T's rows as they are, read transposed (strides 1, m); f32 read in place.
    const memory::dim src_ld = p == Precision::bf16 ? dim(k) : dim(lda);
    const memory::desc src_md({dim(m), dim(k)}, in, plain_weights ? memory::dims{1, dim(m)} : memory::dims{src_ld, 1});
    const memory::desc weights_any({dim(k), dim(n)}, in,
                                   plain_weights ? memory::format_tag::ab : memory::format_tag::any);
    const memory::desc dst_md({dim(m), dim(n)}, dt::f32, {dim(ldc), 1});
    try {
        dnnl::primitive_attr attr;
        if (accumulate) {
            dnnl::post_ops ops;
            ops.append_sum(1.0f);
            attr.set_post_ops(ops);
        }
        dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, weights_any, dst_md), attr, cpu_engine());
        if (products.size() == max_products) products.erase(products.begin());
        products.push_back({m, n, k, lda, ldc, p, accumulate, plain_weights, dnnl::matmul(pd), pd.weights_desc(),
                            memory(src_md, cpu_engine(), DNNL_MEMORY_NONE),
                            memory(dst_md, cpu_engine(), DNNL_MEMORY_NONE),
                            memory(pd.weights_desc(), cpu_engine(), DNNL_MEMORY_NONE)});
    } catch (const dnnl::error& e) {
        fail("making the matmul primitive", m, n, k, p, e);
    }
    return products.back();
}

// op(W) in `layout`: the cached packing when W's owner and version match, else a new one.
const memory& packed_for(const WeightRef& w, bool transposed, const memory::desc& layout, Precision p, std::size_t n,
                         std::size_t k) {
    thread_local std::vector<Packed> cache;
    thread_local std::uint64_t clock = 0;
    ++clock;
    Packed* slot = nullptr;
    if (w.owner != nullptr) {
        for (auto& e : cache)
            if (e.owner == w.owner && e.transposed == transposed && e.layout == layout) {
                if (e.version == w.version) {
                    e.used = clock;
                    return e.value;
                }
                slot = &e;  // the same weight at an older version: repack in place
                break;
            }
    }
    if (slot == nullptr) {
        if (cache.size() == max_packed) {  // evict the least recently used
            auto oldest = std::min_element(cache.begin(), cache.end(),
                                           [](const Packed& a, const Packed& b) { return a.used < b.used; });
            cache.erase(oldest);
        }
        try {
            cache.push_back({w.owner, 0, transposed, layout, memory(layout, cpu_engine()), 0});
        } catch (const dnnl::error& e) {
            fail("allocating the packed weight", 0, n, k, p, e);
        }
        slot = &cache.back();
    }
    // W as op(W) (k x n) in plain f32: W^T of an (n x k) row-major W, or W (k x n) itself.
    const memory::desc plain({dim(k), dim(n)}, dt::f32, transposed ? memory::dims{1, dim(k)} : memory::dims{dim(n), 1});
    try {
        memory source(plain, cpu_engine(), const_cast<float*>(w.data));
        dnnl::reorder(source, slot->value).execute(thread_stream(), source, slot->value);
        thread_stream().wait();
    } catch (const dnnl::error& e) {
        fail("packing the weight", 0, n, k, p, e);
    }
    packs.fetch_add(1, std::memory_order_relaxed);
    slot->version = w.version;
    slot->used = clock;
    // A weight that is no Parameter's (owner null) has no identity to key on: lookups skip its
    // entry, which waits for eviction.
    return slot->value;
}

// A (m x k, lda) rounded to bf16 into per-thread buffer `slot` (0 or 1), row stride k.
const std::uint16_t* to_bf16_rows(const float* a, std::size_t m, std::size_t k, std::size_t lda, int slot = 0) {
    thread_local std::vector<std::uint16_t> buffers[2];
    auto& buffer = buffers[slot];
    if (buffer.size() < m * k) buffer.resize(m * k);
    std::uint16_t* out = buffer.data();
    for (std::size_t r = 0; r < m; ++r)
        for (std::size_t j = 0; j < k; ++j) out[r * k + j] = to_bf16(a[r * lda + j]);
    return out;
}

// Runs `pr` on bf16 A (and B when its weights are plain) into c.
void execute(Product& pr, const void* a, const memory& weights, float* c, std::size_t m, std::size_t n, std::size_t k) {
    try {
        pr.src.set_data_handle(const_cast<void*>(a));
        pr.dst.set_data_handle(c);
        pr.primitive.execute(thread_stream(),
                             {{DNNL_ARG_SRC, pr.src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, pr.dst}});
        thread_stream().wait();
    } catch (const dnnl::error& e) {
        fail("running the matmul", m, n, k, pr.precision, e);
    }
}

}  // namespace

void packed_gemm(Precision precision, std::size_t m, std::size_t n, std::size_t k, const float* a, std::size_t lda,
                 const WeightRef& w, bool transpose_w, bool accumulate, float* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
        if (!accumulate)
            for (std::size_t r = 0; r < m; ++r) std::fill(c + r * ldc, c + r * ldc + n, 0.0f);
        return;
    }
    Product& pr = product_for(precision, m, n, k, std::max(lda, k), std::max(ldc, n), accumulate);
    const memory& weights = packed_for(w, transpose_w, pr.weights, precision, n, k);
    const void* src = precision == Precision::bf16 ? static_cast<const void*>(to_bf16_rows(a, m, k, lda)) : a;
    execute(pr, src, weights, c, m, n, k);
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

std::uint64_t weight_packs() { return packs.load(std::memory_order_relaxed); }

}  // namespace detail

bool bf16_native() {
    const auto isa = dnnl::get_effective_cpu_isa();
    return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

}  // namespace recur
