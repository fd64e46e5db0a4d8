// CSV files: read_csv_column(s) by index and by name. The first input byte picks the
// options (delimiter, header, quote); the rest is the file.
#include "fuzz/fuzz.hpp"
#include "recur/data.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    using namespace recur;
    static fuzz::InputFile file("fuzz.csv");
    if (size == 0) return 0;
    const std::uint8_t pick = bytes[0];
    data::CsvOptions options;
    options.delimiter = ",;\t |"[pick % 5];
    options.header = (pick & 0x08) == 0;
    options.quote = (pick & 0x10) ? '\'' : '"';
    const std::string& path = file.write(bytes + 1, size - 1);

    auto check_rows = [](const auto& a, std::size_t columns) {
        RECUR_FUZZ_CHECK(a.shape()[0] > 0);
        RECUR_FUZZ_CHECK(a.size() == a.shape()[0] * columns);
        (void)fuzz::touch(a);
    };
    fuzz::loads(path, [&] {
        check_rows(data::read_csv_columns<float>(path, {std::size_t(0), std::size_t(2)}, options), 2);
    });
    fuzz::loads(path, [&] { check_rows(data::read_csv_column<double>(path, std::size_t(1), options), 1); });
    if (options.header) {
        fuzz::loads(path, [&] { check_rows(data::read_csv_column<float>(path, "loss", options), 1); });
        fuzz::loads(path, [&] {
            check_rows(data::read_csv_columns<double>(path, std::vector<std::string>{"epoch", "val_loss"}, options), 2);
        });
    }
    return 0;
}
