# GPU unit tests: built wherever nvcc is, labelled `cuda`, skipped (with the
# driver's reason) where no device is visible.
if(LLAMA_HAVE_CUDA)
  add_executable(cuda_gemm_test cuda_gemm_test.cpp)
  target_link_libraries(cuda_gemm_test PRIVATE llamart_cuda GTest::gtest_main)
  add_test(NAME cuda_gemm_test COMMAND cuda_gemm_test)
  set_tests_properties(cuda_gemm_test PROPERTIES LABELS cuda
    SKIP_REGULAR_EXPRESSION "no CUDA device")
endif()
# The CUDA emulation layer (runtime/cuda/emulate.h) the GPU tests run on
# without a GPU: fibers, barriers, shuffles, ballots, per-thread stacks and
# floating-point state, on kernels written in the test; and its tensor-core
# and asynchronous-copy instructions (mma.sync, ldmatrix, cp.async, and
# sm_90a's wgmma with its shared memory descriptors) against plain matrix
# products.
add_executable(emulate_test ${CMAKE_CURRENT_LIST_DIR}/emulate_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/emulate_mma_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/emulate_wgmma_test.cpp)
target_compile_definitions(emulate_test PRIVATE LLAMA_CUDA_EMULATE)
target_include_directories(emulate_test PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(emulate_test PRIVATE GTest::gtest_main)
gtest_discover_tests(emulate_test)
# The kernel families of runtime/cuda/kernels (norms, elementwise, rope)
# under the emulator against the CPU runtime's kernels, at widths around the
# 16-byte pack.
add_executable(cuda_kernels_test ${CMAKE_CURRENT_LIST_DIR}/cuda_kernels_test.cpp)
target_compile_definitions(cuda_kernels_test PRIVATE LLAMA_CUDA_EMULATE)
target_link_libraries(cuda_kernels_test PRIVATE llamart_cpu OpenMP::OpenMP_CXX
  ${OPENBLAS_LIBRARY} GTest::gtest_main)
gtest_discover_tests(cuda_kernels_test)
# Cross-entropy and embedding (runtime/cuda/kernels) under the emulator
# against float64 references: vocabularies and widths around the pack,
# ignored/bad targets, in-place gradients, vocabulary shards, repeated ids,
# bitwise reproducibility.
add_executable(cuda_kernels_ce_embedding_test
  ${CMAKE_CURRENT_LIST_DIR}/cuda_kernels_ce_embedding_test.cpp)
target_compile_definitions(cuda_kernels_ce_embedding_test PRIVATE LLAMA_CUDA_EMULATE)
target_include_directories(cuda_kernels_ce_embedding_test PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(cuda_kernels_ce_embedding_test PRIVATE GTest::gtest_main)
gtest_discover_tests(cuda_kernels_ce_embedding_test)
# The tensor-core flash attention (runtime/cuda/kernels/flash_attention.cuh)
# under the emulator's mma/ldmatrix/cp.async against the CPU runtime's
# attention in double.
add_executable(cuda_kernels_attention_test
  ${CMAKE_CURRENT_LIST_DIR}/cuda_kernels_attention_test.cpp)
target_compile_definitions(cuda_kernels_attention_test PRIVATE LLAMA_CUDA_EMULATE)
target_include_directories(cuda_kernels_attention_test PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(cuda_kernels_attention_test PRIVATE llamart_cpu OpenMP::OpenMP_CXX
  ${OPENBLAS_LIBRARY} GTest::gtest_main)
gtest_discover_tests(cuda_kernels_attention_test)
