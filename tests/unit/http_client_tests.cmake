# HttpClient's tests, apart from unit_tests so that they build without the
# daemons. They run a cpp-httplib server on 127.0.0.1.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
add_executable(http_client_tests
  ${CMAKE_CURRENT_LIST_DIR}/mirrord/backend/http_client_test.cc
)
target_link_libraries(http_client_tests PRIVATE
  memfuse_http_client PkgConfig::HTTPLIB GTest::gtest_main Threads::Threads
  absl::flat_hash_set absl::strings absl::synchronization absl::time)
gtest_discover_tests(http_client_tests
  DISCOVERY_TIMEOUT 30
  PROPERTIES TIMEOUT 60 LABELS unit)
