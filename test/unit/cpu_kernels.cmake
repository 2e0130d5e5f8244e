# runtime/cpu kernels: each forward against a naive reference, each backward
# against central finite differences in double, float against double, every
# ISA variant of attention; plus a timing printout (not asserted).
add_executable(cpu_kernels_test ${CMAKE_CURRENT_LIST_DIR}/cpu_kernels_test.cpp)
target_link_libraries(cpu_kernels_test PRIVATE llamart_cpu OpenMP::OpenMP_CXX
  ${OPENBLAS_LIBRARY} GTest::gtest_main)
gtest_discover_tests(cpu_kernels_test)
