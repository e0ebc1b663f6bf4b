// The C++ side of the test shim: C assertion functions that report through GoogleTest, the skip flag,
// and the registration of the C test cases listed in LMF_TEST_CASES (tests/cases_*.h) as TESTs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>

#include "lmf_check.h"

namespace {

std::string vformat(const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = std::vsnprintf(nullptr, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0) return fmt;
  std::string s(static_cast<size_t>(n) + 1, '\0');
  std::vsnprintf(&s[0], s.size(), fmt, ap);
  s.resize(static_cast<size_t>(n));
  return s;
}

std::string format(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string s = vformat(fmt, ap);
  va_end(ap);
  return s;
}

bool g_skip = false;
std::string g_skip_reason;

void fail_at(const char *file, int line, const std::string &msg) { ADD_FAILURE_AT(file, line) << msg; }

}  // namespace

extern "C" int lmf_t_check(int ok, const char *file, int line, const char *fmt, ...) {
  if (ok) return 1;
  va_list ap;
  va_start(ap, fmt);
  std::string msg = vformat(fmt, ap);
  va_end(ap);
  fail_at(file, line, msg);
  return 0;
}

extern "C" int lmf_t_check_eq_i64(long long a, long long b, const char *ea, const char *eb,
                                  const char *file, int line) {
  if (a == b) return 1;
  fail_at(file, line, format("expected %s == %s, got %lld vs %lld", ea, eb, a, b));
  return 0;
}

extern "C" int lmf_t_check_eq_u64(unsigned long long a, unsigned long long b, const char *ea,
                                  const char *eb, const char *file, int line) {
  if (a == b) return 1;
  fail_at(file, line, format("expected %s == %s, got 0x%llx vs 0x%llx", ea, eb, a, b));
  return 0;
}

extern "C" int lmf_t_check_near(double a, double b, double tol, const char *ea, const char *eb,
                                const char *file, int line) {
  if (std::fabs(a - b) <= tol) return 1;  // NaN fails
  fail_at(file, line, format("expected |%s - %s| <= %g, got %.9g vs %.9g (diff %.3g)", ea, eb, tol, a, b,
                             std::fabs(a - b)));
  return 0;
}

extern "C" int lmf_t_check_str_eq(const char *a, const char *b, const char *ea, const char *eb,
                                  const char *file, int line) {
  if (a && b && std::strcmp(a, b) == 0) return 1;
  fail_at(file, line, format("expected %s == %s, got \"%s\" vs \"%s\"", ea, eb, a ? a : "(null)",
                             b ? b : "(null)"));
  return 0;
}

extern "C" int lmf_t_check_status(lmf_status_t got, lmf_status_t want, const char *expr, const char *file,
                                  int line) {
  if (got == want) return 1;
  fail_at(file, line, format("%s returned %d (%s), expected %d (%s); lmf_last_error: \"%s\"", expr,
                             (int)got, lmf_status_string(got), (int)want, lmf_status_string(want),
                             lmf_last_error()));
  return 0;
}

extern "C" int lmf_t_check_fail(lmf_status_t got, lmf_status_t want, const char *needle, const char *expr,
                                const char *file, int line) {
  int ok = lmf_t_check_status(got, want, expr, file, line);
  const char *msg = lmf_last_error();
  if (msg == nullptr || msg[0] == '\0') {
    fail_at(file, line, format("%s: lmf_last_error() is empty after a failed call", expr));
    return 0;
  }
  if (needle && std::strstr(msg, needle) == nullptr) {
    fail_at(file, line, format("%s: lmf_last_error() \"%s\" does not name \"%s\"", expr, msg, needle));
    return 0;
  }
  return ok;
}

extern "C" int lmf_t_check_bytes_eq(const void *a, const void *b, size_t n, const char *what,
                                    const char *file, int line) {
  const unsigned char *x = static_cast<const unsigned char *>(a);
  const unsigned char *y = static_cast<const unsigned char *>(b);
  size_t first = n, count = 0;
  for (size_t i = 0; i < n; ++i) {
    if (x[i] != y[i]) {
      if (first == n) first = i;
      ++count;
    }
  }
  if (count == 0) return 1;
  fail_at(file, line, format("%s: %zu of %zu bytes differ; first at byte %zu (0x%02x vs 0x%02x)", what,
                             count, n, first, x[first], y[first]));
  return 0;
}

extern "C" void lmf_t_skip(const char *file, int line, const char *reason) {
  g_skip = true;
  g_skip_reason = format("%s (%s:%d)", reason ? reason : "", file, line);
}

extern "C" void lmf_t_note(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string msg = vformat(fmt, ap);
  va_end(ap);
  std::printf("[   NOTE   ] %s\n", msg.c_str());
  std::fflush(stdout);
}

// Runs one C test case, then turns a skip request into GTEST_SKIP (see lmf_register.h).
void lmf_run_c_case(void (*fn)(void)) {
  g_skip = false;
  g_skip_reason.clear();
  lmf_clear_error();
  fn();
  if (g_skip) GTEST_SKIP() << g_skip_reason;
}
