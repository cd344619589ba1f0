# Installation (cmake --install BUILD [--prefix DIR]) and packages (cpack).
#
# The default install holds what a C/C++ program needs and nothing else:
#   <libdir>/libstarkv.so.<major>, .so.<version> and the .so link
#   <includedir>/starkv/starkv.h
#   <bindir>/starkv                                  (the CLI, rpath $ORIGIN/../<libdir>)
#   <libdir>/cmake/starkv/starkv{Config,ConfigVersion,Targets*}.cmake   (find_package(starkv))
#   <libdir>/pkgconfig/starkv.pc                     (pkg-config starkv)
# starkv_internal, the tests, benchmarks and samples are not installed. The
# bindings install only as named components (`python`, used by setup.py), left
# out of the default install.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(STARKV_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/starkv)

install(TARGETS starkv EXPORT starkvTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/starkv DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")

file(RELATIVE_PATH _starkv_bin_to_lib /${CMAKE_INSTALL_BINDIR} /${CMAKE_INSTALL_LIBDIR})
set_target_properties(starkv_cli PROPERTIES INSTALL_RPATH "$ORIGIN/${_starkv_bin_to_lib}")
install(TARGETS starkv_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

install(EXPORT starkvTargets NAMESPACE starkv:: DESTINATION ${STARKV_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/starkvConfig.cmake.in
  ${PROJECT_BINARY_DIR}/starkvConfig.cmake INSTALL_DESTINATION ${STARKV_CMAKE_DIR})
# 0.x: a minor release may break the API (semver), but this project keeps the
# ABI within a major (abi/); SameMajorVersion matches that promise.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/starkvConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/starkvConfig.cmake ${PROJECT_BINARY_DIR}/starkvConfigVersion.cmake
  DESTINATION ${STARKV_CMAKE_DIR})

file(RELATIVE_PATH STARKV_PC_RELPREFIX /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" STARKV_PC_RELPREFIX "${STARKV_PC_RELPREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/starkv.pc.in ${PROJECT_BINARY_DIR}/starkv.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/starkv.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# ---- packages: cpack --config <build>/CPackConfig.cmake -----------------------
# One Debian package `starkv` (library, header, CLI, CMake and pkg-config files)
# and the same tree as a .tar.gz. Its Depends come from dpkg-shlibdeps.
set(CPACK_GENERATOR "TGZ;DEB")
set(CPACK_PACKAGE_NAME starkv)
set(CPACK_PACKAGE_VENDOR "starkv")
set(CPACK_PACKAGE_CONTACT "starkv maintainers <maintainers@starkv.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Embeddable LLM inference runtime with a stable C ABI")
set(CPACK_PACKAGE_DESCRIPTION "starkv runs llama-architecture models (GGUF, Hugging Face safetensors, starkv bundles) on the CPU behind a C11 ABI. This package holds the shared library, its header, the starkv command line, and the CMake and pkg-config files to build against it.")
set(CPACK_PACKAGE_HOMEPAGE_URL "https://github.com/starkv/starkv")
set(CPACK_RESOURCE_FILE_README ${PROJECT_SOURCE_DIR}/README.md)
set(CPACK_PACKAGE_FILE_NAME "starkv-${PROJECT_VERSION}-${CMAKE_SYSTEM_NAME}-${CMAKE_SYSTEM_PROCESSOR}")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
