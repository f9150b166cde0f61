// The HTTP transport of the remote mirror backend: a small libcurl client of
// one base URL, plus the one escaping rule used for names in URLs.
//
// The client knows nothing of the Invariant files API; it sends a request and
// hands back the status and body. Transport failures are errors: no answer
// in time is absl::DeadlineExceededError, a body cut short
// absl::DataLossError, anything else (refused, reset) absl::UnavailableError;
// every HTTP status, 4xx and 5xx included, is a response for the
// caller to map, because only the caller knows what a 400 or a 404 means.
//
// Thread-safety: the free functions touch no shared state. HttpClient is
// thread-safe: any number of threads may call Get/Put/Post/ReadInto at once,
// each request on a CURL handle of its own (so N threads have N requests in
// flight). mu_ guards only the pool of idle handles and is never held during
// a transfer. The client must outlive every call made on it.
#ifndef MEMFUSE_MIRRORD_BACKEND_HTTP_CLIENT_H_
#define MEMFUSE_MIRRORD_BACKEND_HTTP_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace memfuse::mirrord {

// Names in URL paths: one rule both ways. Bytes A-Z a-z 0-9 '.' '_' '-'
// go as they are; every other byte (space, '%', '?', '#', '/', UTF-8
// bytes, ...) as %XX with uppercase hex. Decoding turns each %XX (two hex
// digits, either case) back into its byte and leaves anything else
// (a '%' not followed by two hex digits, names other clients made) as is.
std::string EncodePathName(std::string_view name);
std::string DecodePathName(std::string_view encoded);
// A value in a query string (the server decodes these): the same escaping.
std::string EncodeQueryValue(std::string_view value);

struct HttpOptions {
  absl::Duration connect_timeout = absl::Seconds(4);
  absl::Duration total_timeout = absl::Seconds(30);  // per request
};

struct HttpResponse {
  long status = 0;     // HTTP status code
  std::string body;    // whole body (empty for ReadInto)
  uint64_t bytes = 0;  // ReadInto: bytes placed in `out`
};

// A thread-safe client of one base URL (e.g. "http://127.0.0.1:8080/"),
// reusing connections: a pool of CURL easy handles, one checked out per
// request, handles returned to the pool after use keep their connection
// alive. curl_global_init runs once per process (std::call_once).
class HttpClient {
 public:
  // `base_url` must be http:// (or https:// when libcurl supports it) with a
  // host and no query or fragment; a missing trailing '/' is added. Anything
  // else is InvalidArgumentError.
  static absl::StatusOr<std::unique_ptr<HttpClient>> Create(
      std::string base_url, HttpOptions options = {});

  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;
  ~HttpClient();

  // `path` is relative to the base URL and already encoded (may carry
  // "?query"). Transport failures (refused, reset, timeout, a body shorter
  // than its Content-Length, any CURLcode != CURLE_OK) are
  // errors as above, with curl's message and the method+path in them;
  // any HTTP status is returned as a response (the caller maps it).
  // A `path` that is not encoded and relative (a raw space or control byte,
  // '#', a leading '/') is InvalidArgumentError and nothing is sent: it is
  // a bug to fix, not a failure to retry.
  absl::StatusOr<HttpResponse> Get(std::string_view path);
  absl::StatusOr<HttpResponse> Put(std::string_view path,
                                   std::string_view body = {});
  absl::StatusOr<HttpResponse> Post(
      std::string_view path, std::string_view body,
      std::string_view content_type = "application/octet-stream");
  // GET whose 2xx body goes straight into `out` (no intermediate string),
  // at most out.size() bytes (the rest is discarded, but the transfer is
  // completed so the connection stays reusable); a non-2xx body goes to
  // response.body instead (capped at 64 KiB) for the error message.
  absl::StatusOr<HttpResponse> ReadInto(std::string_view path,
                                        absl::Span<char> out);

  // Requests sent (transfers started, failed ones included), for status
  // pages and benchmarks.
  uint64_t requests() const;
  const std::string& base_url() const;
  // The server's TCP port (the scheme's default when the URL has none), and
  // whether it is spoken to over TLS.
  uint16_t port() const { return port_; }
  bool https() const { return https_; }

  // Resolves the server's name now, once, and sends every later request to
  // the addresses found (curl's CURLOPT_RESOLVE), so that a confined agent
  // that may no longer read /etc/hosts or /etc/resolv.conf still reaches
  // it. A name whose addresses change later is not followed. Nothing to do
  // for an address literal. Call before any request is in flight.
  absl::Status PinAddress();

 private:
  enum class Method { kGet, kPut, kPost };

  // Owns one CURL easy handle (curl's CURL is void, so curl.h stays out of
  // this header).
  struct EasyDeleter {
    void operator()(void* easy) const;
  };
  using Easy = std::unique_ptr<void, EasyDeleter>;

  HttpClient(std::string base_url, HttpOptions options, std::string host,
             uint16_t port, bool https);

  // One transfer. `out` is null except for ReadInto.
  absl::StatusOr<HttpResponse> Perform(Method method, std::string_view path,
                                       std::string_view body,
                                       std::string_view content_type,
                                       absl::Span<char>* out);

  // An idle handle (its connection likely still open), or a new one.
  absl::StatusOr<Easy> Acquire() ABSL_LOCKS_EXCLUDED(mu_);
  void Release(Easy easy) ABSL_LOCKS_EXCLUDED(mu_);

  const std::string base_url_;  // ends with '/'
  const HttpOptions options_;
  const std::string host_;  // as in the URL ("[::1]" for IPv6 literals)
  const uint16_t port_;
  const bool https_;
  std::string resolve_;  // "host:port:addr,..." once PinAddress() found one
  std::atomic<uint64_t> requests_{0};

  absl::Mutex mu_;
  // Most recently used last: it is handed out first, as its connection is
  // the least likely to have been closed by the server's idle timeout.
  std::vector<Easy> idle_ ABSL_GUARDED_BY(mu_);
};

}  // namespace memfuse::mirrord

#endif  // MEMFUSE_MIRRORD_BACKEND_HTTP_CLIENT_H_
