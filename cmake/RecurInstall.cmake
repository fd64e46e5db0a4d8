# cmake --install: headers, the library, and a CMake package so that an out-of-tree project
# can find_package(recur) and link recur::recur.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS recur EXPORT recurTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/recur DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT recurTargets NAMESPACE recur:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/recur)
configure_package_config_file(cmake/recurConfig.cmake.in ${PROJECT_BINARY_DIR}/recurConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/recur)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/recurConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/recurConfig.cmake ${PROJECT_BINARY_DIR}/recurConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/recur)
