# models/: LlamaConfig, presets, config import, parameter table.
add_executable(models_test ${CMAKE_CURRENT_SOURCE_DIR}/models_test.cpp)
target_link_libraries(models_test PRIVATE LlamaConfig GTest::gtest_main)
gtest_discover_tests(models_test)
