# ABFT GEMM verification (runtime/cpu/gemm_check.h): never fires on clean
# GEMMs, always fires on a flipped exponent bit, injection hits one element.
add_executable(gemm_check_test ${CMAKE_CURRENT_LIST_DIR}/gemm_check_test.cpp)
target_link_libraries(gemm_check_test PRIVATE llamart_cpu OpenMP::OpenMP_CXX
  ${OPENBLAS_LIBRARY} GTest::gtest_main)
gtest_discover_tests(gemm_check_test)
