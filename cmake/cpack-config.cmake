# cpack-config.cmake -- read by cpack for each generator: a Debian package is laid out for
# the prefix /usr (configure with -DCMAKE_INSTALL_PREFIX=/usr).
if(CPACK_GENERATOR STREQUAL "DEB" AND NOT CPACK_PACKAGING_INSTALL_PREFIX STREQUAL "/usr")
  message(FATAL_ERROR "the Debian package needs a build configured with "
                      "-DCMAKE_INSTALL_PREFIX=/usr, not ${CPACK_PACKAGING_INSTALL_PREFIX}")
endif()
