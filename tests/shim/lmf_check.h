/*
 * The C side of the test shim: assertion macros for test bodies written in plain C. Each macro reports a
 * failure through GoogleTest (ADD_FAILURE_AT, implemented in lmf_check.cc) with the file and line of
 * the check, and evaluates to 1 if the check passed, 0 if it failed, so a test can stop early:
 *
 *   if (!LMF_CHECK_OK(lmf_mezo_perturb(plan, 1, 1e-3f, NULL))) goto done;
 *
 * Checks never abort: a C function cannot unwind a C++ test. LMF_REQUIRE* return from the (void) test
 * function, for preconditions that leave nothing to clean up. LMF_SKIP marks the running test skipped
 * (GTEST_SKIP) and returns.
 *
 * A test case is a C function `void test_xxx(void)`, listed in tests/cases_*.h.
 */
#ifndef LMF_TESTS_SHIM_CHECK_H
#define LMF_TESTS_SHIM_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "lmfuse/lmfuse.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define LMF_T_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LMF_T_PRINTF(a, b)
#endif

/* Reports a failure (printf-style message) unless ok; returns ok (0 or 1). */
int lmf_t_check(int ok, const char *file, int line, const char *fmt, ...) LMF_T_PRINTF(4, 5);
int lmf_t_check_eq_i64(long long a, long long b, const char *ea, const char *eb, const char *file,
                       int line);
int lmf_t_check_eq_u64(unsigned long long a, unsigned long long b, const char *ea, const char *eb,
                       const char *file, int line);
int lmf_t_check_near(double a, double b, double tol, const char *ea, const char *eb, const char *file,
                     int line);
int lmf_t_check_str_eq(const char *a, const char *b, const char *ea, const char *eb, const char *file,
                       int line);
/* got must equal want; on a mismatch the message shows both status names and lmf_last_error(). */
int lmf_t_check_status(lmf_status_t got, lmf_status_t want, const char *expr, const char *file, int line);
/* A failing call: got must equal want, lmf_last_error() must be non-empty and, if needle is not NULL,
 * contain it (the argument's name). */
int lmf_t_check_fail(lmf_status_t got, lmf_status_t want, const char *needle, const char *expr,
                     const char *file, int line);
/* n bytes at a and b must be equal; reports the first differing byte and how many differ. */
int lmf_t_check_bytes_eq(const void *a, const void *b, size_t n, const char *what, const char *file,
                         int line);

/* Marks the running test skipped, with a reason. The test function must return right after. */
void lmf_t_skip(const char *file, int line, const char *reason);
/* An informational line in the test's output (not a failure). */
void lmf_t_note(const char *fmt, ...) LMF_T_PRINTF(1, 2);

#define LMF_CHECK(cond) lmf_t_check(!!(cond), __FILE__, __LINE__, "check failed: %s", #cond)
#define LMF_CHECK_MSG(cond, ...) lmf_t_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define LMF_CHECK_EQ_INT(a, b) \
  lmf_t_check_eq_i64((long long)(a), (long long)(b), #a, #b, __FILE__, __LINE__)
#define LMF_CHECK_EQ_U64(a, b) \
  lmf_t_check_eq_u64((unsigned long long)(a), (unsigned long long)(b), #a, #b, __FILE__, __LINE__)
#define LMF_CHECK_NEAR(a, b, tol) \
  lmf_t_check_near((double)(a), (double)(b), (double)(tol), #a, #b, __FILE__, __LINE__)
#define LMF_CHECK_STR_EQ(a, b) lmf_t_check_str_eq((a), (b), #a, #b, __FILE__, __LINE__)
#define LMF_CHECK_STATUS(expr, status) lmf_t_check_status((expr), (status), #expr, __FILE__, __LINE__)
#define LMF_CHECK_OK(expr) LMF_CHECK_STATUS(expr, LMF_OK)
/* Clears the thread's last error, runs expr, then checks status and message (see lmf_t_check_fail). */
#define LMF_CHECK_FAIL(expr, status, needle) \
  (lmf_clear_error(), lmf_t_check_fail((expr), (status), (needle), #expr, __FILE__, __LINE__))
#define LMF_CHECK_BYTES_EQ(a, b, n, what) lmf_t_check_bytes_eq((a), (b), (n), (what), __FILE__, __LINE__)

#define LMF_REQUIRE(cond) \
  do {                    \
    if (!LMF_CHECK(cond)) return; \
  } while (0)
#define LMF_REQUIRE_OK(expr) \
  do {                       \
    if (!LMF_CHECK_OK(expr)) return; \
  } while (0)
#define LMF_SKIP(reason)                        \
  do {                                          \
    lmf_t_skip(__FILE__, __LINE__, (reason));   \
    return;                                     \
  } while (0)

#ifdef __cplusplus
}
#endif

#endif
