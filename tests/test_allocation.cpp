// No tensor allocation in the steady state: after warm-up steps, a training step of an LSTM or
// GRU (forward, backward through time, Adam step, clear) reuses every buffer of the tape, its
// gradient pool and the fused kernels' scratch. Counted by replacing the C allocation
// functions in this test binary (glibc's own entry points do the work): an allocation of 4 KiB
// or more is a tensor buffer; smaller ones are bookkeeping (vectors of handles) and are
// reported, not asserted. oneDNN's sgemm allocates inside each product of its own (a packing
// buffer, bookkeeping); those calls come from libdnnl's code and are counted apart (reported,
// not asserted). Under a sanitizer (ASan and TSan own malloc), nothing is counted.
#include <boost/test/unit_test.hpp>

#include <dlfcn.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include <recur/recur.hpp>

#include "support.hpp"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define RECUR_UNDER_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(RECUR_UNDER_SANITIZER)
#define RECUR_COUNT_ALLOCATIONS 0
#else
#define RECUR_COUNT_ALLOCATIONS 1
#endif

namespace {
std::atomic<bool> counting{false};
std::atomic<long> tensor_allocations{0}, small_allocations{0}, onednn_allocations{0};
constexpr std::size_t tensor_size = 4096;  // bytes
// Whether the allocation function was called from oneDNN's library.
[[maybe_unused]] bool from_onednn(const void* caller) {
    Dl_info info;
    return dladdr(caller, &info) != 0 && info.dli_fname != nullptr && std::strstr(info.dli_fname, "libdnnl") != nullptr;
}
#define NOTE(bytes) note(bytes, __builtin_return_address(0))
[[maybe_unused]] void note(std::size_t bytes, const void* caller) {
    thread_local bool inside = false;  // dladdr must not count (or recurse into) itself
    if (!counting.load(std::memory_order_relaxed) || inside) return;
    inside = true;
    if (from_onednn(caller))
        onednn_allocations.fetch_add(1, std::memory_order_relaxed);
    else
        (bytes >= tensor_size ? tensor_allocations : small_allocations).fetch_add(1, std::memory_order_relaxed);
    inside = false;
}
}  // namespace

#if RECUR_COUNT_ALLOCATIONS
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);

void* malloc(std::size_t n) {
    NOTE(n);
    return __libc_malloc(n);
}
void* calloc(std::size_t count, std::size_t n) {
    NOTE(count * n);
    return __libc_calloc(count, n);
}
void* realloc(void* p, std::size_t n) {
    NOTE(n);
    return __libc_realloc(p, n);
}
void* memalign(std::size_t alignment, std::size_t n) {
    NOTE(n);
    return __libc_memalign(alignment, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
    NOTE(n);
    return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
    NOTE(n);
    void* p = __libc_memalign(alignment, n);
    if (p == nullptr) return ENOMEM;
    *out = p;
    return 0;
}
}
#endif

using namespace recur;

namespace {

struct Counts {
    long tensors = 0, small = 0, onednn = 0;
};

// Runs `warm` steps, then counts the allocations of `steps` more.
template <class Step>
Counts count_steady_state(Step step, int warm = 2, int steps = 3) {
    for (int k = 0; k < warm; ++k) step();
    tensor_allocations = 0;
    small_allocations = 0;
    onednn_allocations = 0;
    counting = true;
    for (int k = 0; k < steps; ++k) step();
    counting = false;
    return {tensor_allocations.load() / steps, small_allocations.load() / steps, onednn_allocations.load() / steps};
}

template <class Module>
Counts training_step_counts(Module& m) {
    // B 16, T 20, I = H = 64: every tensor of the step is at least 4 KiB.
    xt::xarray<float> x = xt::xarray<float>::from_shape({16, 20, 64});
    for (std::size_t k = 0; k < x.size(); ++k)
        x.data()[k] = static_cast<float>(static_cast<double>(k * 37 % 101) / 50.0 - 1.0);
    optim::Adam<float> adam(m.parameters(), {.lr = 1e-3});
    Tape<float> tape({.retain_grads = false});
    return count_steady_state([&] {
        m.zero_grad();
        {
            Var<float> loss = sum(m(tape.view(x)).output);
            tape.backward(loss);
        }
        adam.step();
        tape.clear();
    });
}

// The shortest user code: a fresh tape with default options every step, the input copied in
// with tape.constant.
template <class Module>
Counts natural_step_counts(Module& m, const xt::xarray<float>& x) {
    optim::Adam<float> adam(m.parameters(), {.lr = 1e-3});
    return count_steady_state([&] {
        Tape<float> tape;
        m.zero_grad();
        tape.backward(sum(m(tape.constant(x)).output));
        adam.step();
    });
}

// Inference as a user writes it: a fresh non-recording tape per call.
template <class Module>
Counts inference_counts(Module& m, const xt::xarray<float>& x) {
    return count_steady_state([&] {
        Tape<float> tape({.record = false});
        Var<float> y = m(tape.constant(x)).output;
    });
}

xt::xarray<float> step_input() {  // B 16, T 20, I 64: every tensor of a step is at least 4 KiB
    xt::xarray<float> x = xt::xarray<float>::from_shape({16, 20, 64});
    for (std::size_t k = 0; k < x.size(); ++k)
        x.data()[k] = static_cast<float>(static_cast<double>(k * 37 % 101) / 50.0 - 1.0);
    return x;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(allocation)

BOOST_AUTO_TEST_CASE(a_fresh_tape_per_step_allocates_no_tensor) {
    if (!RECUR_COUNT_ALLOCATIONS) return;
    // A destroyed tape hands its nodes and buffers to the next tape of its thread.
    nn::LSTM<float> lstm({.input_size = 64, .hidden_size = 64, .batch_first = true});
    nn::GRU<float> gru({.input_size = 64, .hidden_size = 64, .batch_first = true});
    const xt::xarray<float> x = step_input();
    const Counts l = natural_step_counts(lstm, x), g = natural_step_counts(gru, x);
    BOOST_TEST(l.tensors == 0, "LSTM step: " << l.tensors << " tensor allocations");
    BOOST_TEST(g.tensors == 0, "GRU step: " << g.tensors << " tensor allocations");
    const Counts li = inference_counts(lstm, x), gi = inference_counts(gru, x);
    BOOST_TEST(li.tensors == 0, "LSTM inference: " << li.tensors << " tensor allocations");
    BOOST_TEST(gi.tensors == 0, "GRU inference: " << gi.tensors << " tensor allocations");
    BOOST_TEST_MESSAGE("small allocations per step: LSTM " << l.small << " / " << li.small << " (inference), GRU "
                                                           << g.small << " / " << gi.small);
    BOOST_TEST_MESSAGE("oneDNN sgemm's own packing buffers per step: LSTM "
                       << l.onednn << " / " << li.onednn << ", GRU " << g.onednn << " / " << gi.onednn);
}

BOOST_AUTO_TEST_CASE(steady_state_training_steps_allocate_no_tensor) {
    if (!RECUR_COUNT_ALLOCATIONS) {
        BOOST_TEST_MESSAGE("allocations are not counted under AddressSanitizer");
        return;
    }
    nn::LSTM<float> lstm({.input_size = 64, .hidden_size = 64, .batch_first = true});
    nn::GRU<float> gru({.input_size = 64, .hidden_size = 64, .batch_first = true});
    const Counts l = training_step_counts(lstm), g = training_step_counts(gru);
    BOOST_TEST(l.tensors == 0, "LSTM step: " << l.tensors << " tensor allocations");
    BOOST_TEST(g.tensors == 0, "GRU step: " << g.tensors << " tensor allocations");
    BOOST_TEST_MESSAGE("small (bookkeeping) allocations per step: LSTM " << l.small << ", GRU " << g.small);
}

BOOST_AUTO_TEST_CASE(a_gradient_reducer_adds_no_allocation_to_a_step) {
    if (!RECUR_COUNT_ALLOCATIONS) return;
    // The same LSTM step with distributed::GradReducer attached (buckets of 16 KiB, reduced on
    // its thread during backward) and with the tape's hooks doing nothing (the same products:
    // under a rows hook linear makes its weight gradient in blocks): the reducer allocates
    // nothing, small or large.
    nn::LSTM<float> lstm({.input_size = 64, .hidden_size = 64, .batch_first = true});
    recur::testing::OneRank comm;
    distributed::GradReducer<float> reducer(comm, lstm.parameters(), {.bucket_bytes = 1 << 14});
    xt::xarray<float> x = xt::xarray<float>::from_shape({16, 20, 64});
    for (std::size_t k = 0; k < x.size(); ++k)
        x.data()[k] = static_cast<float>(static_cast<double>(k * 37 % 101) / 50.0 - 1.0);
    optim::Adam<float> adam(lstm.parameters(), {.lr = 1e-3});
    Tape<float> tape({.retain_grads = false});
    const auto step = [&](bool reduce) {
        return [&, reduce] {
            lstm.zero_grad();
            if (reduce) reducer.begin(0.5);
            {
                Var<float> loss = sum(lstm(tape.view(x)).output);
                tape.backward(loss);
            }
            if (reduce) reducer.finish();
            adam.step();
            tape.clear();
        };
    };
    tape.on_grad_final([](Parameter<float>&, const xt::xarray<float>*) {});
    tape.on_grad_rows_final([](Parameter<float>&, std::size_t, std::size_t) {});
    const Counts without = count_steady_state(step(false));
    reducer.attach(tape);
    const Counts with = count_steady_state(step(true));
    BOOST_TEST(reducer.buckets() > 1u);
    BOOST_TEST(with.tensors == 0, with.tensors << " tensor allocations per step with the reducer");
    BOOST_TEST(with.small == without.small,
               "small allocations per step: " << with.small << " with the reducer, " << without.small << " without");
}

// fit's steps allocate no tensor in the steady state: two epochs of 4 batches and two of 8 (the
// same per-epoch work, twice the steps) make the same number of tensor allocations. Alone, and
// over a one-rank communicator (the gradient reducer in every step).
BOOST_AUTO_TEST_CASE(fit_steps_allocate_no_tensor_in_the_steady_state) {
    if (!RECUR_COUNT_ALLOCATIONS) return;
    const auto tensors_in_fit = [](std::size_t batches, distributed::Communicator* comm) {
        manual_seed(5);
        nn::Sequential<float> model;
        model.add(nn::recurrent_layer(std::make_unique<nn::LSTM<float>>(
                                          nn::LSTMOptions{.input_size = 64, .hidden_size = 32, .batch_first = true}),
                                      nn::Return::last));
        model.emplace<nn::Linear<float>>(32, 1);
        const std::size_t samples = 16 * batches;
        train::Dataset<float> data;
        data.x = xt::xarray<float>::from_shape({samples, 20, 64});
        data.y = xt::xarray<float>::from_shape({samples, 1});
        for (std::size_t k = 0; k < data.x.size(); ++k)
            data.x.data()[k] = static_cast<float>(static_cast<double>(k * 37 % 101) / 50.0 - 1.0);
        for (std::size_t k = 0; k < samples; ++k) data.y(k, 0) = static_cast<float>(k % 3) - 1.0f;
        optim::Adam<float> adam(model.parameters(), {.lr = 1e-3});
        const train::LossFn<float> mse = [](const Var<float>& p, const Var<float>& t) { return nn::mse_loss(p, t); };
        tensor_allocations = 0;
        counting = true;
        train::fit<float>(model, mse, adam, data, {.epochs = 2, .batch_size = 16, .verbose = 0, .communicator = comm});
        counting = false;
        return tensor_allocations.load();
    };
    (void)tensors_in_fit(4, nullptr);  // warms the thread's caches (a destroyed tape's storage)
    const long four = tensors_in_fit(4, nullptr), eight = tensors_in_fit(8, nullptr);
    BOOST_TEST(eight == four, "fit: " << four << " tensor allocations with 8 steps, " << eight << " with 16");
    recur::testing::OneRank comm;
    const long four_r = tensors_in_fit(4, &comm), eight_r = tensors_in_fit(8, &comm);
    BOOST_TEST(eight_r == four_r, "fit over a communicator: " << four_r << " with 8 steps, " << eight_r << " with 16");
}

BOOST_AUTO_TEST_CASE(the_counter_sees_a_tensor_allocation) {
    if (!RECUR_COUNT_ALLOCATIONS) return;
    // The check above could pass by counting nothing: a fresh tape's first step must count.
    nn::LSTM<float> lstm({.input_size = 64, .hidden_size = 64, .batch_first = true});
    xt::xarray<float> x = xt::zeros<float>({16, 20, 64});
    release_cached_tape_memory();  // nothing left by earlier tapes to reuse
    const Counts c = count_steady_state(
        [&] {
            Tape<float> fresh;
            fresh.backward(sum(lstm(fresh.view(x)).output));
        },
        0, 1);
    BOOST_TEST(c.tensors > 0);
}

BOOST_AUTO_TEST_SUITE_END()
