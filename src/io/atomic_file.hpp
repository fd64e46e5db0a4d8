// Files written atomically, surviving crashes (private to src/io/; the public face is
// io::write_atomically).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace recur::io::detail {

// Writes the bytes to `path` through a locked temporary file in the same directory, fsync and
// rename(), after removing the temporaries of dead writers of `path`; on failure removes the
// temporary file, leaves `path` untouched and throws io_error prefixed with `ctx`.
void write_file_atomically(const std::string& path, const std::string& ctx, const void* data, std::size_t size);
void write_file_atomically(const std::string& path, const std::string& ctx, const std::vector<unsigned char>& bytes);

}  // namespace recur::io::detail
