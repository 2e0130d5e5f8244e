# Meta checkpoint folders (runtime/checkpoint/{torch_pickle,torch_zip,
# meta_folder}, the Meta import of runtime/interop/hf_weights). The inputs are
# written by real PyTorch: ctest's setup test meta_folder_fixtures runs the
# script once and the tests read LLAMA_META_FIXTURES; run by hand, the test
# binary runs the script itself.
set(LLAMA_TEST_PYTHON /usr/bin/python3) # Debian's python3-torch lives here
set(META_FIXTURE_SCRIPT ${CMAKE_CURRENT_SOURCE_DIR}/meta_folder_fixtures.py)
set(META_FIXTURE_DIR ${CMAKE_CURRENT_BINARY_DIR}/meta_fixtures)

add_executable(meta_folder_test meta_folder_test.cpp train_fixture.cpp)
target_link_libraries(meta_folder_test PRIVATE llamart_nomain GTest::gtest_main)
target_compile_definitions(meta_folder_test PRIVATE
  LLAMA_TEST_PYTHON="${LLAMA_TEST_PYTHON}"
  LLAMA_META_FIXTURE_SCRIPT="${META_FIXTURE_SCRIPT}")

add_test(NAME meta_folder_fixtures
  COMMAND ${LLAMA_TEST_PYTHON} ${META_FIXTURE_SCRIPT} ${META_FIXTURE_DIR})
set_tests_properties(meta_folder_fixtures PROPERTIES FIXTURES_SETUP meta_fixtures)
gtest_discover_tests(meta_folder_test PROPERTIES
  FIXTURES_REQUIRED meta_fixtures
  ENVIRONMENT LLAMA_META_FIXTURES=${META_FIXTURE_DIR})
