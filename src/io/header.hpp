// The header of a .npy file: the Python dict literal numpy writes (private to src/io/).
#pragma once

#include <string>
#include <string_view>

#include "recur/error.hpp"

namespace recur::io::detail {

struct Header {
    std::string descr;  // the type string, or the text of a structured description
    bool structured = false;  // descr is a list of fields
    bool fortran = false;
    Shape shape;
};

// Parses the header text (io_error "<ctx>: malformed .npy header (...)" otherwise).
Header parse_header(std::string_view text, const std::string& ctx);

}  // namespace recur::io::detail
