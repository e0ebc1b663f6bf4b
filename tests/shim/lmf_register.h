// Registers C test cases with GoogleTest. A cases_*.cc file includes this header and lists its cases:
//
//   LMF_CASE(Suite, Name, test_function)   // test_function: extern "C" void test_function(void)
//
// Each becomes TEST(Suite, Name), which runs the C function and reports a skip request (LMF_SKIP) as
// GTEST_SKIP.
#ifndef LMF_TESTS_SHIM_REGISTER_H
#define LMF_TESTS_SHIM_REGISTER_H

#include <gtest/gtest.h>

void lmf_run_c_case(void (*fn)(void));

#define LMF_CASE(suite, name, fn)  \
  extern "C" void fn(void);        \
  TEST(suite, name) { lmf_run_c_case(fn); }

#endif
