# cmake --install: headers, the library, and a CMake package so that an out-of-tree project
# can find_package(recur) and link recur::recur, and recur::distributed when it was built
# (tests/install_consumer proves both).
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
# recur::distributed in an export of its own: it names MPI::MPI_CXX, and recurConfig.cmake
# loads it only when MPI is found, so a consumer of recur::recur alone never needs MPI.
if(RECUR_DISTRIBUTED)
  install(TARGETS recur_distributed EXPORT recurDistributedTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT recurDistributedTargets NAMESPACE recur:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/recur)
endif()
# recur::onnx likewise: it names libonnx_proto and PkgConfig::PROTOBUF, which recurConfig.cmake
# finds (quietly unless the onnx component is required).
if(TARGET recur_onnx)
  install(TARGETS recur_onnx EXPORT recurOnnxTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT recurOnnxTargets NAMESPACE recur:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/recur)
  set(RECUR_PACKAGE_HAS_ONNX ON)
else()
  set(RECUR_PACKAGE_HAS_ONNX OFF)
endif()
set(RECUR_PACKAGE_HAS_DISTRIBUTED ${RECUR_DISTRIBUTED})  # read by recurConfig.cmake.in
configure_package_config_file(cmake/recurConfig.cmake.in ${PROJECT_BINARY_DIR}/recurConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/recur)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/recurConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/recurConfig.cmake ${PROJECT_BINARY_DIR}/recurConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/recur)
