# install.cmake -- what `cmake --install` puts where, and the Debian package (`cpack -G DEB`)
# built from the same rules. With the default prefix /usr/local:
#   /usr/local/bin/tallyd
#   /usr/local/share/man/man8/tallyd.8.gz
#   /usr/local/lib/systemd/system/tallyd.service    (systemd reads units there too)
#   /usr/local/share/doc/tally/examples/tallyd.env  (copy it to /etc/default/tallyd)
#   /usr/local/share/doc/tally/copyright
# With -DCMAKE_INSTALL_PREFIX=/usr (the package): /usr/bin, /usr/share/..., and the unit in
# /lib/systemd/system as Debian 12 packages have it.

# The unit directory: Debian 12's systemd.pc says /lib/systemd/system for packages; under
# any other prefix, PREFIX/lib/systemd/system.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(unitdir_default /lib/systemd/system)
else()
  set(unitdir_default lib/systemd/system)
endif()
set(TALLY_SYSTEMD_UNITDIR ${unitdir_default} CACHE STRING
    "where tallyd.service goes (relative: under the prefix)")

install(TARGETS tallyd RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${CMAKE_BINARY_DIR}/man/tallyd.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)

# The unit starts the installed binary: ExecStart follows the prefix.
file(READ ${CMAKE_SOURCE_DIR}/deploy/tallyd.service unit)
set(execstart "ExecStart=/usr/local/bin/tallyd")
string(FIND "${unit}" "\n${execstart}\n" at)
if(at LESS 0)
  message(FATAL_ERROR "deploy/tallyd.service has no line '${execstart}' to point at the install")
endif()
string(REPLACE "\n${execstart}\n" "\nExecStart=${CMAKE_INSTALL_FULL_BINDIR}/tallyd\n" unit "${unit}")
file(WRITE ${CMAKE_BINARY_DIR}/deploy/tallyd.service "${unit}")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             ${CMAKE_SOURCE_DIR}/deploy/tallyd.service)
install(FILES ${CMAKE_BINARY_DIR}/deploy/tallyd.service DESTINATION ${TALLY_SYSTEMD_UNITDIR})

# The environment example (it becomes /etc/default/tallyd, which the unit reads, once its
# token and password are set), the copyright and the package's changelog.
install(FILES ${CMAKE_SOURCE_DIR}/deploy/tallyd.env
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
install(FILES ${CMAKE_SOURCE_DIR}/packaging/debian/copyright DESTINATION ${CMAKE_INSTALL_DOCDIR})

# ---- The Debian package ----
set(TALLY_DEB_MAINTAINER "tally authors <tally@example.org>" CACHE STRING
    "Maintainer of the Debian package")
set(TALLY_DEB_RELEASE 1 CACHE STRING "Debian revision of the package")
set(TALLY_DEB_VERSION ${PROJECT_VERSION}-${TALLY_DEB_RELEASE})
string(TIMESTAMP TALLY_DEB_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
configure_file(${CMAKE_SOURCE_DIR}/packaging/debian/changelog.in
               ${CMAKE_BINARY_DIR}/packaging/changelog.Debian @ONLY)
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/packaging/changelog.Debian.gz
  COMMAND gzip -9nkf ${CMAKE_BINARY_DIR}/packaging/changelog.Debian
  DEPENDS ${CMAKE_BINARY_DIR}/packaging/changelog.Debian
  VERBATIM)
add_custom_target(deb-changelog ALL DEPENDS ${CMAKE_BINARY_DIR}/packaging/changelog.Debian.gz)
install(FILES ${CMAKE_BINARY_DIR}/packaging/changelog.Debian.gz
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME tally)
set(CPACK_PACKAGE_VENDOR "the tally authors")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "engagement-metrics collector for articles, on Redis")
set(CPACK_PACKAGE_DESCRIPTION
    "tallyd counts what readers do with an article (views, shares, comments) in
Redis and shows it back to them: one script tag on the publisher's pages, no
cookies, no stored addresses. It serves the counts as JSON, an embed script,
badges, a dashboard and Prometheus metrics.
.
This package holds the daemon, its manual page tallyd(8), a systemd unit and
an example of /etc/default/tallyd.")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${TALLY_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_RELEASE ${TALLY_DEB_RELEASE})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The libraries' packages come from dpkg-shlibdeps; adduser is for the postinst.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS adduser)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS redis-server)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_SOURCE_DIR}/packaging/debian/postinst)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES ON)
set(CPACK_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
set(CPACK_PROJECT_CONFIG_FILE ${CMAKE_SOURCE_DIR}/cmake/cpack-config.cmake)
include(CPack)
