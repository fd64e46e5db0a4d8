# cmake --install: headers, the library, and a CMake package so that an out-of-tree project
# can find_package(recur) and link recur::recur (tests/install_consumer proves it).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# recur's public headers need C++20; the exported target carries that to consumers.
target_compile_features(recur PUBLIC cxx_std_20)

install(TARGETS recur EXPORT recurTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/recur DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The export carries recur's interface: include/, XTENSOR_USE_XSIMD, -march=native (when
# RECUR_NATIVE), xtensor and xsimd, and, because the library is static, its private link
# dependencies as $<LINK_ONLY:...> (BLAS::BLAS, OpenMP::OpenMP_CXX, PkgConfig::LIBZIP),
# which recurConfig.cmake finds again on the consumer's side.
install(EXPORT recurTargets NAMESPACE recur:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/recur)
configure_package_config_file(cmake/recurConfig.cmake.in ${PROJECT_BINARY_DIR}/recurConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/recur)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/recurConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/recurConfig.cmake ${PROJECT_BINARY_DIR}/recurConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/recur)
