// ONNX models, raw bytes: io::import_onnx (recur::onnx). Hostile bytes may only raise an
// io_error naming the file; an imported model's parameters are read in full.
#include "fuzz/fuzz.hpp"
#include "recur/onnx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static recur::fuzz::InputFile file("fuzz.onnx");
    const std::string& path = file.write(data, size);
    recur::fuzz::loads(path, [&] {
        auto model = recur::io::import_onnx<float>(path);
        for (auto* p : model->parameters()) (void)recur::fuzz::touch(p->value());
    });
    return 0;
}
