# The HTTP transport of the remote mirror backend (libcurl): HttpClient and
# the escaping of names in URLs. A library of its own so that its tests
# build without the rest of mirrord.
find_package(CURL REQUIRED)
add_library(memfuse_http_client STATIC
  ${CMAKE_CURRENT_LIST_DIR}/backend/http_client.cc
)
target_include_directories(memfuse_http_client PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(memfuse_http_client
  PUBLIC absl::status absl::statusor absl::span absl::synchronization
         absl::time
  PRIVATE CURL::libcurl absl::strings absl::cleanup glog::glog)
