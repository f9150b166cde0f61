#include "mirrord/backend/http_client.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <glog/logging.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <mutex>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace memfuse::mirrord {
namespace {

// Debian's Abseil has its own string_view, which StrCat takes and
// std::string_view does not convert to.
absl::string_view Absl(std::string_view s) { return {s.data(), s.size()}; }

// A non-2xx body is only wanted for an error message: a server answering
// a read with megabytes of HTML must not cost megabytes.
constexpr size_t kMaxErrorBody = 64 << 10;

// Idle handles kept beyond this are closed: a burst of concurrent requests
// should not pin its connections (and the server's threads) forever.
constexpr size_t kMaxIdleHandles = 64;

// The one escaping rule, for names in paths and values in queries alike:
// only the bytes every URL parser passes through untouched go as they are.
bool IsPlainByte(unsigned char c) {
  return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-';
}

std::string Escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (IsPlainByte(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  return absl::ascii_tolower(static_cast<unsigned char>(c)) - 'a' + 10;
}

// `path` is sent as it is, so it must already be a valid relative URL path
// (what EncodePathName and EncodeQueryValue produce): a raw space or
// control byte would be rejected by curl as a transport error, which
// callers would retry forever.
bool IsEncodedRelativePath(std::string_view path) {
  if (path.empty() || path.front() == '/') return false;
  return std::all_of(path.begin(), path.end(), [](unsigned char c) {
    return c > 0x20 && c < 0x7F && c != '#';
  });
}

// curl_global_init is not thread-safe on older libcurl and must run before
// any other curl call; every HttpClient goes through here first.
absl::Status GlobalInit() {
  static std::once_flag once;
  static CURLcode result = CURLE_OK;
  std::call_once(once, [] { result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (result != CURLE_OK) {
    return absl::InternalError(
        absl::StrCat("curl_global_init: ", curl_easy_strerror(result)));
  }
  return absl::OkStatus();
}

// REQUIRES: GlobalInit() succeeded.
bool CurlSupportsHttps() {
  static const bool supported = [] {
    const curl_version_info_data* info = curl_version_info(CURLVERSION_NOW);
    for (const char* const* p = info->protocols; p != nullptr && *p != nullptr;
         ++p) {
      if (std::strcmp(*p, "https") == 0) return true;
    }
    return false;
  }();
  return supported;
}

// curl's timeouts are in milliseconds, 0 meaning "never": a zero or
// negative duration must not silently become "no timeout".
long TimeoutMs(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return 0;
  return static_cast<long>(std::clamp<int64_t>(
      absl::ToInt64Milliseconds(d), 1, std::numeric_limits<long>::max()));
}

struct UrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

// On failure curl_slist_append returns null and leaves the list as it was.
bool AppendHeader(Slist& list, const std::string& header) {
  curl_slist* head = curl_slist_append(list.get(), header.c_str());
  if (head == nullptr) return false;
  list.release();  // `head` is the same list, grown
  list.reset(head);
  return true;
}

// Where the body of one transfer goes. Only ReadInto has `out`; its choice
// between `out` and `body` waits for the first bytes, when the status line
// has been parsed.
struct BodySink {
  CURL* easy = nullptr;
  std::string* body = nullptr;
  absl::Span<char>* out = nullptr;
  enum class Target { kUndecided, kOut, kBody } target = Target::kUndecided;
  size_t body_cap = std::numeric_limits<size_t>::max();
  uint64_t placed = 0;  // bytes written into *out
};

// Called by curl from within curl_easy_perform, on the requesting thread.
// Every byte is accepted (returning less aborts the transfer and closes
// the connection), whatever is kept of it.
size_t WriteBody(char* data, size_t size, size_t nmemb, void* user) {
  auto* sink = static_cast<BodySink*>(user);
  const size_t n = size * nmemb;
  if (sink->target == BodySink::Target::kUndecided) {
    long status = 0;
    curl_easy_getinfo(sink->easy, CURLINFO_RESPONSE_CODE, &status);
    if (sink->out != nullptr && status >= 200 && status < 300) {
      sink->target = BodySink::Target::kOut;
    } else {
      sink->target = BodySink::Target::kBody;
      if (sink->out != nullptr) sink->body_cap = kMaxErrorBody;
    }
  }
  if (sink->target == BodySink::Target::kOut) {
    const size_t room = sink->out->size() - sink->placed;
    const size_t take = std::min(n, room);
    std::memcpy(sink->out->data() + sink->placed, data, take);
    sink->placed += take;
    return n;
  }
  const size_t room =
      sink->body_cap - std::min(sink->body_cap, sink->body->size());
  // No exception may unwind through curl's C frames: running out of
  // memory aborts the transfer (CURLE_WRITE_ERROR) instead.
  try {
    sink->body->append(data, std::min(n, room));
  } catch (...) {
    return 0;
  }
  return n;
}

}  // namespace

std::string EncodePathName(std::string_view name) { return Escape(name); }

std::string EncodeQueryValue(std::string_view value) { return Escape(value); }

std::string DecodePathName(std::string_view encoded) {
  std::string out;
  out.reserve(encoded.size());
  for (size_t i = 0; i < encoded.size(); ++i) {
    if (encoded[i] == '%' && i + 2 < encoded.size() &&
        absl::ascii_isxdigit(static_cast<unsigned char>(encoded[i + 1])) &&
        absl::ascii_isxdigit(static_cast<unsigned char>(encoded[i + 2]))) {
      out.push_back(static_cast<char>(HexValue(encoded[i + 1]) * 16 +
                                      HexValue(encoded[i + 2])));
      i += 2;
    } else {
      out.push_back(encoded[i]);
    }
  }
  return out;
}

void HttpClient::EasyDeleter::operator()(void* easy) const {
  curl_easy_cleanup(static_cast<CURL*>(easy));
}

absl::StatusOr<std::unique_ptr<HttpClient>> HttpClient::Create(
    std::string base_url, HttpOptions options) {
  if (absl::Status init = GlobalInit(); !init.ok()) return init;
  auto invalid = [&base_url](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid base URL \"", absl::CHexEscape(base_url), "\": ", Absl(why)));
  };
  const bool https = CurlSupportsHttps();
  if (!absl::StartsWithIgnoreCase(base_url, "http://") &&
      !(https && absl::StartsWithIgnoreCase(base_url, "https://"))) {
    return invalid(https ? "must start with http:// or https://"
                         : "must start with http://");
  }
  // curl reads "http:///x" as host "x"; nobody means that.
  if (base_url[base_url.find("://") + 3] == '/') return invalid("no host");
  std::unique_ptr<CURLU, UrlDeleter> url(curl_url());
  if (url == nullptr) return absl::ResourceExhaustedError("curl_url");
  if (CURLUcode rc = curl_url_set(url.get(), CURLUPART_URL, base_url.c_str(),
                                  /*flags=*/0);
      rc != CURLUE_OK) {
    return invalid(curl_url_strerror(rc));
  }
  auto has_part = [&url](CURLUPart part) {
    char* value = nullptr;
    const bool present =
        curl_url_get(url.get(), part, &value, /*flags=*/0) == CURLUE_OK &&
        value != nullptr && value[0] != '\0';
    curl_free(value);
    return present;
  };
  if (!has_part(CURLUPART_HOST)) return invalid("no host");
  auto part = [&url](CURLUPart which, unsigned flags) {
    char* value = nullptr;
    std::string out;
    if (curl_url_get(url.get(), which, &value, flags) == CURLUE_OK &&
        value != nullptr) {
      out = value;
    }
    curl_free(value);
    return out;
  };
  const std::string host = part(CURLUPART_HOST, 0);
  const std::string scheme = absl::AsciiStrToLower(part(CURLUPART_SCHEME, 0));
  int port = 0;
  if (!absl::SimpleAtoi(part(CURLUPART_PORT, CURLU_DEFAULT_PORT), &port) ||
      port <= 0 || port > 65535) {
    return invalid("bad port");
  }
  // Request paths are appended to the base URL: a query or fragment in it
  // would swallow them.
  if (has_part(CURLUPART_QUERY) || base_url.find('?') != std::string::npos) {
    return invalid("must not have a query");
  }
  if (has_part(CURLUPART_FRAGMENT) || base_url.find('#') != std::string::npos) {
    return invalid("must not have a fragment");
  }
  if (!absl::EndsWith(base_url, "/")) base_url.push_back('/');
  return std::unique_ptr<HttpClient>(
      new HttpClient(std::move(base_url), options, host,
                     static_cast<uint16_t>(port), scheme == "https"));
}

HttpClient::HttpClient(std::string base_url, HttpOptions options,
                       std::string host, uint16_t port, bool https)
    : base_url_(std::move(base_url)),
      options_(options),
      host_(std::move(host)),
      port_(port),
      https_(https) {}

absl::Status HttpClient::PinAddress() {
  in6_addr literal;
  if (host_.empty() || host_.front() == '[' ||
      inet_pton(AF_INET, host_.c_str(), &literal) == 1) {
    return absl::OkStatus();
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host_.c_str(), nullptr, &hints, &found);
      rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("resolving ", host_, ": ", gai_strerror(rc)));
  }
  std::vector<std::string> addresses;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = "";
    if (a->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr,
                text, sizeof(text));
      addresses.push_back(text);
    } else if (a->ai_family == AF_INET6) {
      inet_ntop(AF_INET6,
                &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, text,
                sizeof(text));
      addresses.push_back(absl::StrCat("[", text, "]"));
    }
  }
  freeaddrinfo(found);
  if (addresses.empty()) {
    return absl::UnavailableError(absl::StrCat("resolving ", host_,
                                               ": no IPv4 or IPv6 address"));
  }
  std::sort(addresses.begin(), addresses.end());
  addresses.erase(std::unique(addresses.begin(), addresses.end()),
                  addresses.end());
  resolve_ =
      absl::StrCat(host_, ":", port_, ":", absl::StrJoin(addresses, ","));
  return absl::OkStatus();
}

HttpClient::~HttpClient() = default;

absl::StatusOr<HttpResponse> HttpClient::Get(std::string_view path) {
  return Perform(Method::kGet, path, {}, {}, nullptr);
}

absl::StatusOr<HttpResponse> HttpClient::Put(std::string_view path,
                                             std::string_view body) {
  return Perform(Method::kPut, path, body, "application/octet-stream", nullptr);
}

absl::StatusOr<HttpResponse> HttpClient::Post(std::string_view path,
                                              std::string_view body,
                                              std::string_view content_type) {
  return Perform(Method::kPost, path, body, content_type, nullptr);
}

absl::StatusOr<HttpResponse> HttpClient::ReadInto(std::string_view path,
                                                  absl::Span<char> out) {
  return Perform(Method::kGet, path, {}, {}, &out);
}

uint64_t HttpClient::requests() const {
  return requests_.load(std::memory_order_relaxed);
}

const std::string& HttpClient::base_url() const { return base_url_; }

absl::StatusOr<HttpClient::Easy> HttpClient::Acquire() {
  {
    absl::MutexLock lock(&mu_);
    if (!idle_.empty()) {
      Easy easy = std::move(idle_.back());
      idle_.pop_back();
      return easy;
    }
  }
  Easy easy(curl_easy_init());
  if (easy == nullptr) return absl::ResourceExhaustedError("curl_easy_init");
  return easy;
}

void HttpClient::Release(Easy easy) {
  // Drops this request's options (they point into its stack frame: error
  // buffer, headers, body) but keeps the connection and DNS caches, which
  // is the point of pooling.
  curl_easy_reset(easy.get());
  absl::MutexLock lock(&mu_);
  if (idle_.size() < kMaxIdleHandles) idle_.push_back(std::move(easy));
}

absl::StatusOr<HttpResponse> HttpClient::Perform(Method method,
                                                 std::string_view path,
                                                 std::string_view body,
                                                 std::string_view content_type,
                                                 absl::Span<char>* out) {
  const char* const method_name = method == Method::kGet   ? "GET"
                                  : method == Method::kPut ? "PUT"
                                                           : "POST";
  const std::string url = absl::StrCat(base_url_, Absl(path));
  auto describe = [&](std::string_view what) {
    return absl::StrCat(method_name, " ", url, ": ", Absl(what));
  };
  if (!IsEncodedRelativePath(path)) {
    return absl::InvalidArgumentError(
        describe("path is not an encoded relative path"));
  }
  if (content_type.find_first_of("\r\n") != std::string_view::npos) {
    return absl::InvalidArgumentError(describe("bad content type"));
  }

  absl::StatusOr<Easy> acquired = Acquire();
  if (!acquired.ok()) return acquired.status();
  Easy easy = std::move(acquired).value();
  absl::Cleanup release = [this, &easy] { Release(std::move(easy)); };
  CURL* const h = easy.get();

  CURLcode setopt_rc = CURLE_OK;
  auto set = [h, &setopt_rc](CURLoption option, auto value) {
    const CURLcode rc = curl_easy_setopt(h, option, value);
    if (setopt_rc == CURLE_OK) setopt_rc = rc;
  };
  char error[CURL_ERROR_SIZE] = "";
  HttpResponse response;
  BodySink sink;
  sink.easy = h;
  sink.body = &response.body;
  sink.out = out;

  set(CURLOPT_URL, url.c_str());
  set(CURLOPT_PROTOCOLS_STR, CurlSupportsHttps() ? "http,https" : "http");
  set(CURLOPT_HTTP_VERSION, long{CURL_HTTP_VERSION_1_1});
  // Signals (curl's default way to time out DNS) do not mix with threads.
  set(CURLOPT_NOSIGNAL, 1L);
  set(CURLOPT_CONNECTTIMEOUT_MS, TimeoutMs(options_.connect_timeout));
  set(CURLOPT_TIMEOUT_MS, TimeoutMs(options_.total_timeout));
  set(CURLOPT_TCP_KEEPALIVE, 1L);
  // The mirror is named explicitly; an http_proxy meant for something else
  // in mirrord's environment must not reroute it.
  set(CURLOPT_NOPROXY, "*");
  Slist pinned;
  if (!resolve_.empty()) {
    if (!AppendHeader(pinned, resolve_)) {
      return absl::ResourceExhaustedError("curl_slist_append");
    }
    set(CURLOPT_RESOLVE, pinned.get());
  }
  set(CURLOPT_FAILONERROR, 0L);  // every status is the caller's to map
  set(CURLOPT_ERRORBUFFER, error);
  set(CURLOPT_WRITEFUNCTION, &WriteBody);
  set(CURLOPT_WRITEDATA, &sink);

  Slist headers;
  // No "Expect: 100-continue": it would cost a round trip (or curl's 1 s
  // wait) on every large write.
  bool headers_ok = AppendHeader(headers, "Expect:");
  if (method != Method::kGet) {
    // POSTFIELDS sends the body from memory without a read callback; an
    // empty one must still be a valid pointer (null means "read from the
    // read callback", i.e. stdin) so that Content-Length: 0 is sent.
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    set(CURLOPT_POSTFIELDS, body.empty() ? "" : body.data());
    if (method == Method::kPut) set(CURLOPT_CUSTOMREQUEST, "PUT");
    // POSTFIELDS would otherwise announce a form; a PUT without a body
    // announces nothing.
    headers_ok = headers_ok &&
                 AppendHeader(headers, method == Method::kPut && body.empty()
                                           ? std::string("Content-Type:")
                                           : absl::StrCat("Content-Type: ",
                                                          Absl(content_type)));
  }
  if (!headers_ok) return absl::ResourceExhaustedError("curl_slist_append");
  set(CURLOPT_HTTPHEADER, headers.get());
  if (setopt_rc != CURLE_OK) {
    return absl::InternalError(describe(
        absl::StrCat("curl_easy_setopt: ", curl_easy_strerror(setopt_rc))));
  }

  requests_.fetch_add(1, std::memory_order_relaxed);
  const CURLcode rc = curl_easy_perform(h);
  if (rc != CURLE_OK) {
    // The error buffer says more ("transfer closed with 90 bytes remaining
    // to read") than the code's generic text, when curl filled it.
    // A server that did not answer in time and one that cut its answer
    // short are told apart from one that could not be reached: the caller
    // retries the last while a server restarts, but fails an operation on
    // the first two (EIO) rather than waiting on them again.
    const std::string what =
        describe(absl::StrCat(error[0] != '\0' ? error : curl_easy_strerror(rc),
                              " (curl error ", rc, ")"));
    absl::Status status;
    switch (rc) {
      case CURLE_OPERATION_TIMEDOUT:
        status = absl::DeadlineExceededError(what);
        break;
      case CURLE_PARTIAL_FILE:
        status = absl::DataLossError(what);
        break;
      default:
        status = absl::UnavailableError(what);
    }
    VLOG(1) << status;
    return status;
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
  response.bytes = sink.placed;
  VLOG(2) << method_name << " " << url << ": " << response.status;
  return response;
}

}  // namespace memfuse::mirrord
