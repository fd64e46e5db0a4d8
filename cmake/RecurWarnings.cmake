# Warnings and sanitizers shared by every target of the project.
if(RECUR_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")  # one third-party cast pattern, see the file
    add_compile_options(-fsanitize-ignorelist=${PROJECT_SOURCE_DIR}/cmake/sanitizer_ignore.txt)
  endif()
endif()

function(recur_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wconversion -Wshadow)
  # clang's -Wconversion includes -Wsign-conversion, GCC's (for C++) does not: the same set on both.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    target_compile_options(${target} PRIVATE -Wno-sign-conversion)
  endif()
  # GCC before 12.3 reports false "uninitialized" warnings inside its own AVX-512 intrinsic
  # headers when xsimd inlines them (GCC bug 105593); they are not about our code.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 12.3)
    target_compile_options(${target} PRIVATE -Wno-uninitialized -Wno-maybe-uninitialized)
  endif()
  if(RECUR_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
