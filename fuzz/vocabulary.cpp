// Vocabulary files: Vocabulary::load. A loaded vocabulary must be consistent: ids 0..n-1 in
// token order, every token encodes to its id and decodes back, unk (if any) is a special.
#include "fuzz/fuzz.hpp"
#include "recur/data.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    using namespace recur;
    static fuzz::InputFile file("fuzz.vocab");
    const std::string& path = file.write(bytes, size);
    fuzz::loads(path, [&] {
        const auto v = data::Vocabulary::load(path);
        RECUR_FUZZ_CHECK(v.size() > 0 && v.num_specials() <= v.size());
        const auto ids = v.encode(v.tokens());
        for (std::size_t k = 0; k < ids.size(); ++k) RECUR_FUZZ_CHECK(ids[k] == static_cast<std::int64_t>(k));
        RECUR_FUZZ_CHECK(v.decode_tokens(ids) == v.tokens());
        if (v.unk_id()) RECUR_FUZZ_CHECK(*v.unk_id() >= 0 && static_cast<std::size_t>(*v.unk_id()) < v.num_specials());
    });
    return 0;
}
